"""Argument checking shared by the public classes: clear errors, no silent casts."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

_DTYPES = {np.dtype(np.float32): np.float32, np.dtype(np.float64): np.float64}


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_float(name: str, value: Any, low: float, high: float, *, high_open: bool) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


def check_finite(name: str, value: Any) -> float:
    """A finite real number as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def parse_dtype(dtype: Any) -> np.dtype:
    if dtype is None:  # np.dtype(None) would silently mean float64
        raise TypeError("dtype must be 'float32' or 'float64', got None")
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        # A string that names no dtype is a bad value; anything else a bad type.
        error = ValueError if isinstance(dtype, str) else TypeError
        raise error(f"dtype must be 'float32' or 'float64', got {dtype!r}") from e
    if dt not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


def to_numpy(value: Any) -> np.ndarray:
    """np.asarray that also takes PyTorch tensors (through .numpy())."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def real_array(name: str, value: Any) -> np.ndarray:
    """value as an ndarray of a real (integer or floating) dtype, without copying."""
    if type(value) is np.ndarray and value.dtype.kind in "iuf":  # the common case, first
        return value
    try:
        arr = to_numpy(value)
    except Exception as e:  # noqa: BLE001 - any failure to convert is a type error here
        raise TypeError(f"{name} must be an array of real numbers: {e}") from e
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must have a real (integer or floating) dtype, got {arr.dtype}")
    return arr


def check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")


def lengths_array(value: Any, batch: int, steps: int) -> np.ndarray:
    try:
        arr = to_numpy(value)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"lengths must be an integer array: {e}") from e
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must have an integer dtype, got {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(
            f"lengths must be in 1..T = 1..{steps}, got values in {arr.min()}..{arr.max()}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)
