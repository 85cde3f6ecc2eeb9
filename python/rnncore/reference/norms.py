"""The two normalizations (docs/normalization.md section 1).

``layer_norm`` and ``batch_norm`` (with ``batch_statistics``), their ``*_backward`` (the
formulas of spec section 1, for tests of the invariants), and ``update_running_stats``, the
PyTorch-BatchNorm update of the running statistics.
"""

from __future__ import annotations

import numpy as np

from ._types import Array

NORMS = (None, "layer", "batch", "batch_input")
BATCH_NORMS = ("batch", "batch_input")


def layer_norm(a: Array, gamma: Array, beta: Array | None = None, eps: float = 1e-5) -> Array:
    """Layer norm of every row (last axis): ``LN(a; gamma, beta)``, or ``LN0`` without ``beta``.

    Args:
        a: ``(..., N)``.
        gamma: Gains ``(N,)``.
        beta: Shifts ``(N,)`` or ``None`` (``LN0``, no shift).
        eps: ``epsilon`` added to the biased variance.

    Returns:
        ``gamma * (a - mean) / sqrt(var + eps) (+ beta)``, same shape as ``a``.
    """
    a = np.asarray(a, dtype=np.float64)
    mu = a.mean(axis=-1, keepdims=True)
    dev = a - mu
    var = (dev * dev).mean(axis=-1, keepdims=True)  # two passes, biased
    y = gamma * (dev / np.sqrt(var + eps))
    return y if beta is None else y + beta


def layer_norm_backward(
    a: Array, gamma: Array, dy: Array, eps: float = 1e-5
) -> tuple[Array, Array, Array]:
    """Backward of :func:`layer_norm` with the formulas of spec section 1.

    Args:
        a: The input ``(..., N)``.
        gamma: Gains ``(N,)``.
        dy: ``dL/dy``, same shape as ``a``.
        eps: As in the forward.

    Returns:
        ``(dL/da, dL/dgamma, dL/dbeta)``; the parameter gradients are summed over all rows.
    """
    a = np.asarray(a, dtype=np.float64)
    mu = a.mean(axis=-1, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=-1, keepdims=True)
    r = 1.0 / np.sqrt(var + eps)
    a_hat = (a - mu) * r
    g_hat = gamma * dy
    da = r * (
        g_hat - g_hat.mean(axis=-1, keepdims=True) - a_hat * (g_hat * a_hat).mean(-1, keepdims=True)
    )
    lead = tuple(range(a.ndim - 1))
    return da, (dy * a_hat).sum(axis=lead), dy.sum(axis=lead)


def batch_statistics(a: Array, mask: Array | None = None) -> tuple[Array, Array, int]:
    """Mean and biased variance of every column over the rows selected by ``mask``.

    Args:
        a: ``(..., N)``; all leading axes are "rows" (``(B, N)`` for one step,
            ``(T, B, N)`` for the sequence-wise statistics of ``batch_input``).
        mask: Boolean array of ``a.shape[:-1]`` selecting the active rows (``None``: all).

    Returns:
        ``(mean (N,), var (N,), n)``: the variance is biased (divided by ``n``) and computed in
        two passes; ``n`` is the number of active rows.
    """
    a = np.asarray(a, dtype=np.float64)
    rows = a.reshape(-1, a.shape[-1]) if mask is None else a[np.asarray(mask, dtype=bool)]
    n = rows.shape[0]
    if n == 0:
        raise ValueError("batch statistics of an empty set of rows")
    mean = rows.mean(axis=0)
    var = ((rows - mean) ** 2).mean(axis=0)
    return mean, var, n


def batch_norm(
    a: Array, gamma: Array, beta: Array | None, mean: Array, var: Array, eps: float = 1e-5
) -> Array:
    """``gamma * (a - mean) / sqrt(var + eps) + beta`` (columns along the last axis).

    With the batch statistics this is the training-mode batch norm; with the running statistics
    it is the eval-mode affine map.

    Args:
        a: ``(..., N)``.
        gamma: Gains ``(N,)``.
        beta: Shifts ``(N,)`` or ``None`` (no shift).
        mean: ``(N,)``.
        var: ``(N,)``, biased batch variance or running variance.
        eps: ``epsilon``.

    Returns:
        Same shape as ``a``.
    """
    y = gamma * ((np.asarray(a, dtype=np.float64) - mean) / np.sqrt(var + eps))
    return y if beta is None else y + beta


def batch_norm_backward(
    a: Array, gamma: Array, dy: Array, mask: Array | None = None, eps: float = 1e-5
) -> tuple[Array, Array, Array]:
    """Training-mode backward of :func:`batch_norm` with the batch statistics of the active
    rows (spec section 1); inactive rows get zero gradients and contribute nothing.

    Args:
        a: ``(B, N)`` (or ``(T, B, N)``; every leading index is a row).
        gamma: Gains ``(N,)``.
        dy: ``dL/dy``, same shape as ``a``.
        mask: Active rows (``a.shape[:-1]``), ``None`` for all.
        eps: As in the forward.

    Returns:
        ``(dL/da, dL/dgamma, dL/dbeta)``.
    """
    a = np.asarray(a, dtype=np.float64)
    m = np.ones(a.shape[:-1]) if mask is None else np.asarray(mask, dtype=np.float64)
    m = m[..., None]
    mean, var, n = batch_statistics(a, None if mask is None else np.asarray(mask, dtype=bool))
    r = 1.0 / np.sqrt(var + eps)
    a_hat = (a - mean) * r
    g_hat = m * gamma * dy
    lead = tuple(range(a.ndim - 1))
    da = m * r * (g_hat - g_hat.sum(axis=lead) / n - a_hat * (g_hat * a_hat).sum(axis=lead) / n)
    return da, (m * dy * a_hat).sum(axis=lead), (m * dy).sum(axis=lead)


def update_running_stats(
    running_mean: Array, running_var: Array, mean: Array, var: Array, n: int, momentum: float
) -> tuple[Array, Array]:
    """One PyTorch-BatchNorm update of the running statistics (spec section 1).

    ``run <- (1 - momentum) run + momentum stat``, the variance taking the unbiased batch
    variance ``var * n / (n - 1)``; with ``n < 2`` nothing changes.

    Args:
        running_mean: Current running mean.
        running_var: Current running variance.
        mean: Batch mean.
        var: Biased batch variance.
        n: Number of rows the statistics were taken over.
        momentum: ``bn_momentum``.

    Returns:
        New ``(running_mean, running_var)`` (new arrays).
    """
    if n < 2:
        return np.array(running_mean, dtype=np.float64), np.array(running_var, dtype=np.float64)
    new_mean = (1.0 - momentum) * running_mean + momentum * mean
    new_var = (1.0 - momentum) * running_var + momentum * (var * n / (n - 1))
    return new_mean, new_var
