"""Gradient clipping in place: by global L2 norm, or by value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _validation as v


def _grad_arrays(grads: Any, name: str = "grads") -> list[np.ndarray]:
    """The gradient arrays in ``grads``, each once, checked to be writable floating arrays.

    ``grads``: a module (its ``.grads``), a mapping of arrays, an array, or a list/tuple of
    any of those (nested).
    """
    found: list[np.ndarray] = []

    def visit(obj: Any, where: str) -> None:
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind != "f":
                raise TypeError(f"{where} must be a floating array, got dtype {obj.dtype}")
            if not obj.flags.writeable:
                raise ValueError(f"{where} is read-only: gradients are clipped in place")
            found.append(obj)
        elif isinstance(obj, Mapping):
            for key, val in obj.items():
                visit(val, f"{where}[{key!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, val in enumerate(obj):
                visit(val, f"{where}[{i}]")
        elif hasattr(obj, "grads") and callable(getattr(obj, "parameters", None)):
            visit(obj.grads, f"{where}.grads")
        else:
            raise TypeError(
                f"{where} must be a module, a dict of arrays, a NumPy array, or a list/tuple "
                f"of those, got {type(obj).__name__}"
            )

    visit(grads, name)
    # The same memory listed twice (a module and its grads dict) is clipped once.
    unique, seen = [], set()
    for a in found:
        key = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
        if key not in seen:
            seen.add(key)
            unique.append(a)
    return unique


def _sum_squares(f: np.ndarray) -> float:
    # einsum's own loop rather than np.dot: a BLAS dot may wake the BLAS library's threads,
    # which keep polling afterwards and compete with rnncore's for the cores.
    return float(np.einsum("i,i->", f, f))


def _global_norm(arrays: list[np.ndarray]) -> float:
    """sqrt(sum of the squares of every element), accumulated in float64.

    Squares of finite values that overflow (or underflow to 0) take a second, rescaled
    pass, so any finite input gets its true norm (inf only if the norm itself is).
    """
    flats = [a.reshape(-1).astype(np.float64, copy=False) for a in arrays]
    with np.errstate(over="ignore", under="ignore"):
        total = sum(_sum_squares(f) for f in flats)
    if math.isnan(total) or 1e-280 < total < math.inf:
        return math.sqrt(total)
    if total == math.inf and any(not np.isfinite(f).all() for f in flats):
        return math.inf  # an infinite gradient (a NaN would have made total NaN)
    top = max((float(np.max(np.abs(f))) for f in flats if f.size), default=0.0)
    if top == 0.0:
        return 0.0
    with np.errstate(under="ignore"):
        scaled = sum(_sum_squares(f / top) for f in flats)
    return top * math.sqrt(scaled)


def clip_grad_norm(grads: Any, max_norm: float) -> float:
    """Scales gradients in place so that their global L2 norm is at most ``max_norm``.

    The norm is taken over all the arrays together, ``sqrt(sum of all squares)``
    (accumulated in float64). As ``torch.nn.utils.clip_grad_norm_``, every array is
    multiplied by ``max_norm / (norm + 1e-6)`` when that factor is below 1 (i.e. when the
    norm exceeds ``max_norm``, up to the 1e-6 guard), and left alone otherwise.

    Unlike PyTorch's default, a non-finite norm (a NaN or infinite gradient) leaves every
    array untouched — scaling would turn all gradients into NaN — and is returned, so the
    caller can detect it (``math.isfinite``) and skip the step.

    An array listed more than once (a module and its ``grads`` dict) counts and is
    scaled once.

    Args:
        grads: a module (its ``.grads`` are used), a dict of arrays, a NumPy array, or a
            list/tuple of any of those; the arrays must be writable floating arrays.
        max_norm: the largest allowed global norm (>= 0).

    Returns:
        The global norm before clipping, as a float.

    Raises:
        TypeError: ``grads`` holds something else, or an array of a non-floating dtype;
            ``max_norm`` is not a number.
        ValueError: ``max_norm`` is negative or not finite, or an array is read-only.
    """
    max_norm = v.check_float("max_norm", max_norm, 0.0, math.inf, high_open=True)
    arrays = _grad_arrays(grads)
    norm = _global_norm(arrays)
    if not math.isfinite(norm):
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for a in arrays:
            a *= a.dtype.type(coef)
    return norm


def clip_grad_value(grads: Any, clip: float) -> None:
    """Clamps every gradient element to ``[-clip, clip]``, in place.

    NaN elements stay NaN.

    Args:
        grads: a module (its ``.grads`` are used), a dict of arrays, a NumPy array, or a
            list/tuple of any of those; the arrays must be writable floating arrays.
        clip: the largest allowed magnitude (>= 0).

    Raises:
        TypeError: ``grads`` holds something else, or an array of a non-floating dtype;
            ``clip`` is not a number.
        ValueError: ``clip`` is negative or not finite, or an array is read-only.
    """
    clip = v.check_float("clip", clip, 0.0, math.inf, high_open=True)
    for a in _grad_arrays(grads):
        np.clip(a, -clip, clip, out=a)
