"""Independent pure-NumPy float64 reference of the rnncore forward pass.

Slow and simple on purpose: the self-check (``python -m rnncore``) and the test suite compare
the compiled core against it. Use it to read the equations in code, or to check a model.

Written from spec/api.md and spec/normalization.md (section 3, ``norm=None``), not from the C++
code, so that tests can compare the fast path against it. Everything is computed in float64 with
plain NumPy (no fused kernels, no hoisted GEMMs) and favours clarity over speed.

Structure, so that normalized cells can be slotted in later:

* ``rnn_cell``, ``lstm_cell``, ``gru_cell`` compute ONE time step from the step input and the
  previous state. They take an optional :class:`StepNorms` whose callables are applied exactly
  where spec/normalization.md places ``N_x``, ``N_h``, ``N_c`` (and the RNN's layer norm of the
  sum); with ``None`` they are identities and the cells are the plain ``norm=None`` cells.
* ``run_direction`` runs one direction of one layer over a (time-major) sequence with
  packed-sequence semantics for ``lengths``; it can ask a ``step_norms`` callback for the
  ``StepNorms`` of every step (the callback sees the layer, the direction, the step counter and
  the mask of active sequences, which is what per-time-step batch statistics need).
* ``reference_forward`` handles layouts, stacking and directions and returns what the public
  modules return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}

Array = np.ndarray
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
    """One LSTM step, gates ``i, f, g, o`` (spec/normalization.md section 3).

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
) -> Array:
    """One GRU step, gates ``r, z, n`` (spec/normalization.md section 3).

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

    Returns:
        The new hidden state ``(B, H)``.
    """
    n = norms or _NO_NORMS
    width = w_ih.shape[0]
    hs = width // 3
    b_ih = _bias(b_ih, width)
    b_hh = _bias(b_hh, width)
    xg = n.get("x")(x @ w_ih.T) + b_ih
    if reset_after:
        hg = n.get("h")(h @ w_hh.T) + b_hh
        r = sigmoid(xg[:, :hs] + hg[:, :hs])
        z = sigmoid(xg[:, hs : 2 * hs] + hg[:, hs : 2 * hs])
        cand = np.tanh(xg[:, 2 * hs :] + r * hg[:, 2 * hs :])
    else:
        if norms is not None and (norms.x is not None or norms.h is not None):
            raise ValueError("reset_after=False is defined for norm=None only")
        hg = h @ w_hh[: 2 * hs].T + b_hh[: 2 * hs]
        r = sigmoid(xg[:, :hs] + hg[:, :hs])
        z = sigmoid(xg[:, hs : 2 * hs] + hg[:, hs : 2 * hs])
        cand = np.tanh(xg[:, 2 * hs :] + (r * h) @ w_hh[2 * hs :].T + b_hh[2 * hs :])
    return (1.0 - z) * cand + z * h


def run_direction(
    step: Callable[[Array, tuple[Array, ...], StepNorms | None], tuple[Array, ...]],
    x: Array,
    state0: tuple[Array, ...],
    lengths: Array,
    reverse: bool,
    step_norms: Callable[[int, Array], StepNorms | None] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Runs one direction of one layer with packed-sequence semantics.

    At step ``k`` (``k = 0 .. T-1``) sequence ``b`` is active iff ``k < lengths[b]``; it reads
    time index ``k`` (forward) or ``lengths[b] - 1 - k`` (reverse, so the reverse direction
    starts at each sequence's own last element). Inactive sequences keep their state; their
    outputs stay zero.

    Args:
        step: ``step(x_t, state, norms) -> new_state``; ``new_state[0]`` is the output ``h_t``.
        x: Time-major input ``(T, B, in)``.
        state0: Initial state tuple, each ``(B, width)``.
        lengths: ``(B,)`` integers in ``1..T``.
        reverse: Whether this is the reverse direction.
        step_norms: Optional ``step_norms(k, active_mask) -> StepNorms``.

    Returns:
        ``(out, final_state)``: ``out`` is ``(T, B, H_out)`` (zero past each length) and
        ``final_state`` the state tuple at each sequence's own last valid step.
    """
    t_len, batch = x.shape[:2]
    state = tuple(s.copy() for s in state0)
    out = np.zeros((t_len, batch, state[0].shape[1]))
    rows = np.arange(batch)
    for k in range(t_len):
        active = k < lengths
        if not active.any():
            break
        pos = (lengths - 1 - k) if reverse else np.full(batch, k)
        pos = np.clip(pos, 0, t_len - 1)  # inactive rows read something valid, then discarded
        norms = None if step_norms is None else step_norms(k, active)
        new = step(x[pos, rows], state, norms)
        state = tuple(np.where(active[:, None], n, s) for n, s in zip(new, state))
        out[pos[active], rows[active]] = new[0][active]
    return out, state


def _check_cell(cell: str) -> str:
    c = cell.lower()
    if c not in GATES:
        raise ValueError(f"unknown cell {cell!r}")
    return c


def param_names(cell: str, num_layers: int, bidirectional: bool, proj_size: int, bias: bool):
    """Parameter names in PyTorch's order.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        num_layers: Number of stacked layers.
        bidirectional: Whether there is a ``_reverse`` direction.
        proj_size: LSTM projection size (0 for none).
        bias: Whether the biases exist.

    Returns:
        A list of names such as ``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``.
    """
    cell = _check_cell(cell)
    names = []
    for k in range(num_layers):
        for suffix in ("", "_reverse")[: 2 if bidirectional else 1]:
            names += [f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}"]
            if bias:
                names += [f"bias_ih_l{k}{suffix}", f"bias_hh_l{k}{suffix}"]
            if cell == "lstm" and proj_size > 0:
                names.append(f"weight_hr_l{k}{suffix}")
    return names


def make_params(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    proj_size: int,
    bias: bool,
    rng: np.random.Generator,
    scale: float | None = None,
) -> dict[str, Array]:
    """Random float64 parameters with PyTorch names and shapes (for ``load_state_dict``).

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        input_size: Features of the input.
        hidden_size: ``H``.
        num_layers: Number of stacked layers.
        bidirectional: Whether to create ``_reverse`` parameters.
        proj_size: LSTM projection size (0 for none; must be 0 for other cells).
        bias: Whether to create biases.
        rng: Random generator.
        scale: Entries are ``U(-scale, scale)``; default ``1/sqrt(hidden_size)`` (PyTorch's).

    Returns:
        An ordered dict name -> array.
    """
    cell = _check_cell(cell)
    if proj_size and cell != "lstm":
        raise ValueError("proj_size is for the LSTM only")
    g = GATES[cell]
    h_out = proj_size if proj_size > 0 else hidden_size
    d = 2 if bidirectional else 1
    if scale is None:
        scale = 1.0 / np.sqrt(hidden_size)
    params = {}
    for name in param_names(cell, num_layers, bidirectional, proj_size, bias):
        k = int(name.split("_l")[1].split("_")[0])
        if name.startswith("weight_ih"):
            shape = (g * hidden_size, input_size if k == 0 else d * h_out)
        elif name.startswith("weight_hh"):
            shape = (g * hidden_size, h_out)
        elif name.startswith("weight_hr"):
            shape = (proj_size, hidden_size)
        else:
            shape = (g * hidden_size,)
        params[name] = rng.uniform(-scale, scale, size=shape)
    return params


def reference_forward(
    cell: str,
    params,
    x,
    hx=None,
    lengths=None,
    *,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool = False,
    proj_size: int = 0,
    nonlinearity: str = "tanh",
    reset_after: bool = True,
    bias: bool = True,
    step_norms: Callable[[int, int, int, Array], StepNorms | None] | None = None,
):
    """Float64 forward pass with the exact semantics of spec/api.md.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        params: Mapping with PyTorch names (arrays or CPU tensors).
        x: ``(T, B, in)``, ``(B, T, in)`` with ``batch_first``, or unbatched ``(T, in)``.
        hx: Initial state(s) ``(L*D, B, H_out)`` (unbatched: ``(L*D, H_out)``); for the LSTM a
            pair ``(h_0, c_0)`` with ``c_0`` of width ``H``. ``None`` means zeros.
        lengths: Optional ``(B,)`` integers in ``1..T`` (not with unbatched input).
        num_layers: Number of stacked layers.
        bidirectional: Whether each layer has a reverse direction.
        batch_first: Layout of ``x`` and ``out`` (states are never batch-first).
        proj_size: LSTM projection size (0: none).
        nonlinearity: RNN nonlinearity, ``"tanh"`` or ``"relu"``.
        reset_after: GRU variant.
        bias: Whether the biases exist (they are read from ``params`` when ``True``).
        step_norms: Optional ``step_norms(layer, direction, k, active_mask) -> StepNorms``.

    Returns:
        ``(out, h_n)`` for RNN/GRU, ``(out, (h_n, c_n))`` for the LSTM, in float64.

    Raises:
        ValueError: On inconsistent shapes or lengths.
        KeyError: When a needed parameter is missing.
    """
    cell = _check_cell(cell)
    g = GATES[cell]
    d = 2 if bidirectional else 1
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    hidden = p["weight_hh_l0"].shape[0] // g
    h_out = proj_size if (cell == "lstm" and proj_size > 0) else hidden

    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == 2
    if unbatched:
        if lengths is not None:
            raise ValueError("lengths is not allowed with unbatched input")
        x = x[:, None, :]
    elif x.ndim != 3:
        raise ValueError("x must have 2 or 3 dimensions")
    elif batch_first:
        x = x.transpose(1, 0, 2)
    t_len, batch = x.shape[:2]

    def _state(s, width):
        if s is None:
            return np.zeros((num_layers * d, batch, width))
        s = np.asarray(s, dtype=np.float64)
        if unbatched:
            s = s[:, None, :]
        if s.shape != (num_layers * d, batch, width):
            raise ValueError(
                f"state has shape {s.shape}, expected {(num_layers * d, batch, width)}"
            )
        return s

    if cell == "lstm":
        h0, c0 = (None, None) if hx is None else hx
        h0, c0 = _state(h0, h_out), _state(c0, hidden)
    else:
        h0, c0 = _state(hx, h_out), None

    if lengths is None:
        lens = np.full(batch, t_len, dtype=np.int64)
    else:
        lens = np.asarray(lengths)
        if lens.shape != (batch,) or (lens < 1).any() or (lens > t_len).any():
            raise ValueError("lengths must be (B,) integers in 1..T")
        lens = lens.astype(np.int64)

    h_n = np.zeros_like(h0)
    c_n = None if c0 is None else np.zeros_like(c0)
    layer_in = x
    for k in range(num_layers):
        outs = []
        for direction in range(d):
            sfx = "_reverse" if direction else ""
            w_ih, w_hh = p[f"weight_ih_l{k}{sfx}"], p[f"weight_hh_l{k}{sfx}"]
            b_ih = p[f"bias_ih_l{k}{sfx}"] if bias else None
            b_hh = p[f"bias_hh_l{k}{sfx}"] if bias else None
            if cell == "rnn":

                def step(xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh):
                    return (rnn_cell(xt, st[0], w_ih, w_hh, b_ih, b_hh, nonlinearity, nm),)

            elif cell == "gru":

                def step(xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh):
                    return (gru_cell(xt, st[0], w_ih, w_hh, b_ih, b_hh, reset_after, nm),)

            else:
                w_hr = p[f"weight_hr_l{k}{sfx}"] if proj_size > 0 else None

                def step(xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr):
                    return lstm_cell(xt, st[0], st[1], w_ih, w_hh, b_ih, b_hh, w_hr, nm)

            idx = k * d + direction
            state0 = (h0[idx],) if c0 is None else (h0[idx], c0[idx])
            sn = None
            if step_norms is not None:

                def sn(step_k, active, k=k, direction=direction):
                    return step_norms(k, direction, step_k, active)

            out_dir, final = run_direction(step, layer_in, state0, lens, bool(direction), sn)
            outs.append(out_dir)
            h_n[idx] = final[0]
            if c_n is not None:
                c_n[idx] = final[1]
        layer_in = np.concatenate(outs, axis=2)

    out = layer_in
    if unbatched:
        out, h_n = out[:, 0], h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    elif batch_first:
        out = out.transpose(1, 0, 2)
    if cell == "lstm":
        return out, (h_n, c_n)
    return out, h_n
