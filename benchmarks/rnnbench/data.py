"""The inputs every backend gets, and weights for when no backend creates them."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .cases import Case


def make_data(case: Case, seed: int) -> dict[str, np.ndarray]:
    """Inputs shared by all backends: ``x`` ``(T, B, D)`` and ``grad_out`` ``(T, B, H)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.T, case.B, case.input_size), dtype=np.float32)
    grad_out = rng.standard_normal((case.T, case.B, case.H), dtype=np.float32)
    return {"x": x, "grad_out": grad_out}


def numpy_params(case: Case, seed: int) -> dict[str, np.ndarray]:
    """PyTorch-style U(-1/sqrt(H), 1/sqrt(H)) weights, used when neither rnncore nor torch runs.

    Args:
        case: The case (only plain cells: weight/bias ih/hh of layer 0).
        seed: Random seed.

    Returns:
        Parameters by PyTorch name.
    """
    rng = np.random.default_rng(seed + 1)
    gh, d, h = case.spec.gates * case.H, case.input_size, case.H
    k = 1.0 / math.sqrt(h)
    shapes = {"weight_ih_l0": (gh, d), "weight_hh_l0": (gh, h), "bias_ih_l0": (gh,)}
    shapes["bias_hh_l0"] = (gh,)
    return {n: rng.uniform(-k, k, s).astype(np.float32) for n, s in shapes.items()}


def perturb_norm_params(params: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Moves normalization gains and shifts off their initial values (1 or 0.1, and 0).

    With every gain equal and every shift zero, a cross-check cannot see a gain applied to the
    wrong term, or a missing shift; the benchmark's timings do not depend on the values. Gains
    are multiplied by ``U(0.5, 1.5)``, shifts get ``U(-0.2, 0.2)`` added; running statistics
    and the plain weights are left alone.

    Args:
        params: Parameters by rnncore name.
        seed: Random seed.

    Returns:
        A new dictionary.
    """
    rng = np.random.default_rng(seed + 2)
    out = {}
    for name, v in params.items():
        v = np.array(v)
        if name.startswith(("ln_", "bn_")) and "_running_" not in name:
            if "_weight" in name:
                v = v * rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
            elif "_bias" in name:
                v = v + rng.uniform(-0.2, 0.2, v.shape).astype(v.dtype)
        out[name] = v
    return out
