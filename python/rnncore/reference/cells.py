"""One time step of each cell, from the step input and the previous state.

``rnn_cell``, ``lstm_cell`` and ``gru_cell`` take an optional :class:`StepNorms` whose callables
are applied exactly where docs/normalization.md places ``N_x``, ``N_h``, ``N_c`` (and the RNN's
layer norm of the sum); with ``None`` they are identities and the cells are the plain
``norm=None`` cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._types import Array

GATES = {"rnn": 1, "lstm": 4, "gru": 3}

NormFn = Callable[[Array], Array]


def _identity(a: Array) -> Array:
    return a


@dataclass
class StepNorms:
    """Normalization hooks of one cell step (identity when left as ``None``).

    Attributes:
        x: ``N_x``, applied to ``A^x_t = x_t W_ih^T`` (width ``G*H``), before any bias.
        h: ``N_h``, applied to ``A^h_t = h_{t-1} W_hh^T`` (width ``G*H``), before any bias.
        c: ``N_c`` of the LSTM, applied to ``c_t`` on the output path only (width ``H``).
        pre: RNN only: applied to ``N_x(A^x) + N_h(A^h)`` before the biases (the layer-norm RNN
            normalizes the sum).
    """

    x: NormFn | None = None
    h: NormFn | None = None
    c: NormFn | None = None
    pre: NormFn | None = None

    def get(self, name: str) -> NormFn:
        """Returns the hook ``name`` or the identity."""
        fn = getattr(self, name)
        return _identity if fn is None else fn


_NO_NORMS = StepNorms()


def sigmoid(a: Array) -> Array:
    """Logistic sigmoid, computed without overflow for large ``|a|``."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _bias(b: Array | None, width: int) -> Array:
    return np.zeros(width) if b is None else b


def rnn_cell(
    x: Array,
    h: Array,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    nonlinearity: str = "tanh",
    norms: StepNorms | None = None,
) -> Array:
    """One Elman RNN step: ``h_t = phi(A^x_t + b_ih + A^h_t + b_hh)``.

    Args:
        x: Step input ``(B, in)``.
        h: Previous hidden state ``(B, H)``.
        w_ih: ``(H, in)``.
        w_hh: ``(H, H)``.
        b_ih: ``(H,)`` or ``None`` (no bias).
        b_hh: ``(H,)`` or ``None``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        norms: Normalization hooks (``x``, ``h``, ``pre``); ``None`` for the plain cell.

    Returns:
        The new hidden state ``(B, H)``.
    """
    n = norms or _NO_NORMS
    width = w_hh.shape[0]
    pre = n.get("pre")(n.get("x")(x @ w_ih.T) + n.get("h")(h @ w_hh.T))
    pre = pre + _bias(b_ih, width) + _bias(b_hh, width)
    if nonlinearity == "tanh":
        return np.tanh(pre)
    if nonlinearity == "relu":
        return np.maximum(pre, 0.0)
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def lstm_cell(
    x: Array,
    h: Array,
    c: Array,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    w_hr: Array | None = None,
    norms: StepNorms | None = None,
) -> tuple[Array, Array]:
    """One LSTM step, gates ``i, f, g, o`` (docs/normalization.md section 3).

    Args:
        x: Step input ``(B, in)``.
        h: Previous output state ``(B, H_out)`` (``H_out`` = ``proj_size`` or ``H``).
        c: Previous cell state ``(B, H)``.
        w_ih: ``(4H, in)``.
        w_hh: ``(4H, H_out)``.
        b_ih: ``(4H,)`` or ``None``.
        b_hh: ``(4H,)`` or ``None``.
        w_hr: Projection ``(proj_size, H)`` or ``None``.
        norms: Normalization hooks (``x``, ``h``, ``c``); ``None`` for the plain cell.

    Returns:
        ``(h_t, c_t)`` with shapes ``(B, H_out)`` and ``(B, H)``.
    """
    n = norms or _NO_NORMS
    width = w_ih.shape[0]
    hs = width // 4
    z = n.get("x")(x @ w_ih.T) + _bias(b_ih, width) + n.get("h")(h @ w_hh.T) + _bias(b_hh, width)
    i = sigmoid(z[:, 0 * hs : 1 * hs])
    f = sigmoid(z[:, 1 * hs : 2 * hs])
    g = np.tanh(z[:, 2 * hs : 3 * hs])
    o = sigmoid(z[:, 3 * hs : 4 * hs])
    c_new = f * c + i * g
    h_new = o * np.tanh(n.get("c")(c_new))
    if w_hr is not None:
        h_new = h_new @ w_hr.T
    return h_new, c_new


def gru_cell(
    x: Array,
    h: Array,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    reset_after: bool = True,
    norms: StepNorms | None = None,
    h_in: Array | None = None,
) -> Array:
    """One GRU step, gates ``r, z, n`` (docs/normalization.md section 3).

    ``reset_after=True`` (PyTorch): ``n = tanh(X_n + r * (h W_hn^T + b_hn))``.
    ``reset_after=False`` (original GRU): ``n = tanh(X_n + (r * h) W_hn^T + b_hn)``.

    Args:
        x: Step input ``(B, in)``.
        h: Previous hidden state ``(B, H)``.
        w_ih: ``(3H, in)``.
        w_hh: ``(3H, H)``.
        b_ih: ``(3H,)`` or ``None``.
        b_hh: ``(3H,)`` or ``None``.
        reset_after: Where the reset gate is applied (see above).
        norms: Normalization hooks (``x``, ``h``); only with ``reset_after=True``.
        h_in: The recurrent products' input when it differs from ``h`` (``h`` under a
            recurrent-dropout mask); the state update always uses ``h``.

    Returns:
        The new hidden state ``(B, H)``.
    """
    n = norms or _NO_NORMS
    width = w_ih.shape[0]
    hs = width // 3
    u = h if h_in is None else h_in
    b_ih = _bias(b_ih, width)
    b_hh = _bias(b_hh, width)
    xg = n.get("x")(x @ w_ih.T) + b_ih
    if reset_after:
        hg = n.get("h")(u @ w_hh.T) + b_hh
        r = sigmoid(xg[:, :hs] + hg[:, :hs])
        z = sigmoid(xg[:, hs : 2 * hs] + hg[:, hs : 2 * hs])
        cand = np.tanh(xg[:, 2 * hs :] + r * hg[:, 2 * hs :])
    else:
        if norms is not None and (norms.x is not None or norms.h is not None):
            raise ValueError("reset_after=False is defined for norm=None only")
        hg = u @ w_hh[: 2 * hs].T + b_hh[: 2 * hs]
        r = sigmoid(xg[:, :hs] + hg[:, :hs])
        z = sigmoid(xg[:, hs : 2 * hs] + hg[:, hs : 2 * hs])
        cand = np.tanh(xg[:, 2 * hs :] + (r * u) @ w_hh[2 * hs :].T + b_hh[2 * hs :])
    return (1.0 - z) * cand + z * h
