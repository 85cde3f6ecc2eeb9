"""Parameter initialization (spec/normalization.md section 4).

The weight initializers themselves live in the public ``rnncore.init``; these wrappers keep
the (rng, rows, cols) call form ``init_parameters`` uses, drawing the same numbers.
"""

from __future__ import annotations

import numpy as np

from . import init as _public


def glorot_uniform(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """U(-L, L), L = sqrt(6 / (rows + cols)), for a (rows, cols) weight block."""
    return _public.glorot_uniform((rows, cols), rng=rng)


def orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows or columns (whichever fit), Haar."""
    return _public.orthogonal((rows, cols), rng=rng)


def init_parameters(
    params, *, cell, hidden_size, gates, scheme, rng, forget_bias, update_bias, bn_gamma
):
    """Fills the live parameter views in place."""
    H = hidden_size
    for name, p in params.items():
        if name.startswith("ln_"):  # layer-norm gains 1, shifts 0
            p[...] = 1.0 if "_weight" in name else 0.0
            continue
        if name.startswith("bn_"):  # batch-norm gains bn_gamma, shifts 0
            p[...] = bn_gamma if "_weight" in name else 0.0
            continue
        if scheme == "torch":
            bound = 1.0 / np.sqrt(H)
            p[...] = rng.uniform(-bound, bound, size=p.shape)
            continue
        if name.startswith("weight_ih"):
            p[...] = np.concatenate([glorot_uniform(rng, H, p.shape[1]) for _ in range(gates)])
        elif name.startswith("weight_hh"):
            p[...] = np.concatenate([orthogonal(rng, H, p.shape[1]) for _ in range(gates)])
        elif name.startswith("weight_hr"):
            p[...] = glorot_uniform(rng, *p.shape)
        elif name.startswith("bias"):
            p[...] = 0.0
            if name.startswith("bias_ih"):
                if cell == "lstm":
                    p[H : 2 * H] = forget_bias  # f block (i, f, g, o)
                elif cell == "gru":
                    p[H : 2 * H] = update_bias  # z block (r, z, n)
        else:  # pragma: no cover - every name is handled above
            raise AssertionError(f"no initializer for {name}")
