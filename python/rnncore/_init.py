"""Parameter initialization (spec/normalization.md section 4)."""

from __future__ import annotations

import numpy as np


def glorot_uniform(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """U(-L, L), L = sqrt(6 / (rows + cols)), for a (rows, cols) weight block."""
    limit = np.sqrt(6.0 / (rows + cols))
    return rng.uniform(-limit, limit, size=(rows, cols))


def orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows or columns (whichever fit).

    QR of a Gaussian matrix with the signs of diag(R) folded into Q, which makes the
    distribution uniform (Haar) over orthogonal matrices.
    """
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


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
