"""One time step of each cell, from the step input and the previous state.

``rnn_cell``, ``lstm_cell`` and ``gru_cell`` take an optional :class:`StepNorms` whose callables
are applied exactly where docs/normalization.md places ``N_x``, ``N_h``, ``N_c`` (and the RNN's
layer norm of the sum); with ``None`` they are identities and the cells are the plain
``norm=None`` cells.

The cell options of docs/api.md are arguments of the cells too: ``clip`` (ONNX's: the input of
every gate activation clamped to ``[-clip, clip]``), and for the LSTM ``peephole`` (the
``(w_ci, w_cf, w_co)`` vectors), ``cell_clip`` (TFLite's: the new cell value clamped to
``[-cell_clip, cell_clip]``) and ``input_forget`` (ONNX's coupled gates, ``f = 1 - i``).
``StepNorms.observe`` sees every clipped quantity before it is clipped (for tests that must
know how far from a clip boundary a point lies).
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
        observe: Not a norm: ``observe(what, a)`` is called with each quantity ``clip`` or
            ``cell_clip`` clamps, just before the clamp (``what`` is ``"gate"`` for an
            activation's input, ``"cell"`` for the LSTM's new cell value), whether or not a
            clip is set. Its return value is ignored.
    """

    x: NormFn | None = None
    h: NormFn | None = None
    c: NormFn | None = None
    pre: NormFn | None = None
    observe: Callable[[str, Array], None] | None = None

    def see(self, what: str, a: Array) -> None:
        """Shows ``a`` to ``observe`` (if set)."""
        if self.observe is not None:
            self.observe(what, a)

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


def clamp(a: Array, bound: float | None) -> Array:
    """``a`` clamped to ``[-bound, bound]``; ``bound=None`` leaves it as it is."""
    return a if bound is None else np.clip(a, -bound, bound)


def _gate_input(n: StepNorms, a: Array, clip: float | None) -> Array:
    """An activation's input: shown to ``n.observe``, then clamped to ``+-clip``."""
    n.see("gate", a)
    return clamp(a, clip)


def rnn_cell(
    x: Array,
    h: Array,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    nonlinearity: str = "tanh",
    norms: StepNorms | None = None,
    clip: float | None = None,
) -> Array:
    """One Elman RNN step: ``h_t = phi(clamp(A^x_t + b_ih + A^h_t + b_hh, clip))``.

    Args:
        x: Step input ``(B, in)``.
        h: Previous hidden state ``(B, H)``.
        w_ih: ``(H, in)``.
        w_hh: ``(H, H)``.
        b_ih: ``(H,)`` or ``None`` (no bias).
        b_hh: ``(H,)`` or ``None``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        norms: Normalization hooks (``x``, ``h``, ``pre``); ``None`` for the plain cell.
        clip: Clamp of the activation's input (after the layer norm of ``norm="layer"`` and
            the biases) to ``[-clip, clip]``; ``None``: no clamp.

    Returns:
        The new hidden state ``(B, H)``.
    """
    n = norms or _NO_NORMS
    width = w_hh.shape[0]
    pre = n.get("pre")(n.get("x")(x @ w_ih.T) + n.get("h")(h @ w_hh.T))
    pre = _gate_input(n, pre + _bias(b_ih, width) + _bias(b_hh, width), clip)
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
    clip: float | None = None,
    cell_clip: float | None = None,
    peephole: tuple[Array, Array, Array] | None = None,
    input_forget: bool = False,
) -> tuple[Array, Array]:
    """One LSTM step, gates ``i, f, g, o`` (docs/normalization.md section 3), with the options.

    With ``a = N_x(x W_ih^T) + N_h(h W_hh^T) + b_ih + b_hh`` split into ``a_i, a_f, a_g, a_o``::

        a_i += w_ci * c;  a_f += w_cf * c                   (peephole, the previous cell)
        i = sigmoid(clamp(a_i)); g = tanh(clamp(a_g))
        f = 1 - i (input_forget) or sigmoid(clamp(a_f))
        c~ = clamp(f * c + i * g, cell_clip)
        a_o += w_co * c~                                     (peephole, the NEW cell value)
        o = sigmoid(clamp(a_o)); h~ = o * tanh(N_c(c~)) (@ W_hr^T)

    where ``clamp`` is the clamp to ``[-clip, clip]``. ``tanh(N_c(c~))`` is not clipped.

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
        clip: Clamp of the gates' activation inputs, or ``None``.
        cell_clip: Clamp of the new cell value, or ``None``.
        peephole: ``(w_ci, w_cf, w_co)``, each ``(H,)``, or ``None``.
        input_forget: Couple the gates: ``f = 1 - i`` (the forget block of ``a``, and
            ``w_cf``, are then unused).

    Returns:
        ``(h_t, c_t)`` with shapes ``(B, H_out)`` and ``(B, H)``.
    """
    n = norms or _NO_NORMS
    width = w_ih.shape[0]
    hs = width // 4
    z = n.get("x")(x @ w_ih.T) + _bias(b_ih, width) + n.get("h")(h @ w_hh.T) + _bias(b_hh, width)
    a_i, a_f = z[:, 0 * hs : 1 * hs], z[:, 1 * hs : 2 * hs]
    a_g, a_o = z[:, 2 * hs : 3 * hs], z[:, 3 * hs : 4 * hs]
    if peephole is not None:
        w_ci, w_cf, w_co = peephole
        a_i, a_f = a_i + w_ci * c, a_f + w_cf * c
    i = sigmoid(_gate_input(n, a_i, clip))
    f = 1.0 - i if input_forget else sigmoid(_gate_input(n, a_f, clip))
    g = np.tanh(_gate_input(n, a_g, clip))
    c_new = f * c + i * g
    n.see("cell", c_new)
    c_new = clamp(c_new, cell_clip)
    if peephole is not None:
        a_o = a_o + w_co * c_new
    o = sigmoid(_gate_input(n, a_o, clip))
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
    clip: float | None = None,
) -> Array:
    """One GRU step, gates ``r, z, n`` (docs/normalization.md section 3).

    ``reset_after=True`` (PyTorch): ``n = tanh(X_n + r * (h W_hn^T + b_hn))``.
    ``reset_after=False`` (original GRU): ``n = tanh(X_n + (r * h) W_hn^T + b_hn)``.
    ``clip`` clamps the inputs of the three activations: the r and z pre-activations and the
    whole argument of the tanh above.

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
        clip: Clamp of the activations' inputs to ``[-clip, clip]``, or ``None``.

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
        r = sigmoid(_gate_input(n, xg[:, :hs] + hg[:, :hs], clip))
        z = sigmoid(_gate_input(n, xg[:, hs : 2 * hs] + hg[:, hs : 2 * hs], clip))
        cand = np.tanh(_gate_input(n, xg[:, 2 * hs :] + r * hg[:, 2 * hs :], clip))
    else:
        if norms is not None and (norms.x is not None or norms.h is not None):
            raise ValueError("reset_after=False is defined for norm=None only")
        hg = u @ w_hh[: 2 * hs].T + b_hh[: 2 * hs]
        r = sigmoid(_gate_input(n, xg[:, :hs] + hg[:, :hs], clip))
        z = sigmoid(_gate_input(n, xg[:, hs : 2 * hs] + hg[:, hs : 2 * hs], clip))
        a_n = xg[:, 2 * hs :] + (r * u) @ w_hh[2 * hs :].T + b_hh[2 * hs :]
        cand = np.tanh(_gate_input(n, a_n, clip))
    return (1.0 - z) * cand + z * h
