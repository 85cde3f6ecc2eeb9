"""Independent pure-NumPy float64 reference of the rnncore forward pass, normalized cells included.

Slow and simple on purpose: the self-check (``python -m rnncore``) and the test suite compare
the compiled core against it. Use it to read the equations in code, or to check a model.

Written from spec/api.md and spec/normalization.md (sections 1-3), not from the C++ code, so
that tests can compare the fast path against it. Everything is computed in float64 with plain
NumPy (no fused kernels, no hoisted GEMMs) and favours clarity over speed.

Structure:

* ``layer_norm``, ``batch_statistics``, ``batch_norm`` (and their ``*_backward``, the formulas of
  spec section 1, for tests of the invariants) and ``update_running_stats`` are the two
  normalizations.
* ``rnn_cell``, ``lstm_cell``, ``gru_cell`` compute ONE time step from the step input and the
  previous state. They take an optional :class:`StepNorms` whose callables are applied exactly
  where spec/normalization.md places ``N_x``, ``N_h``, ``N_c`` (and the RNN's layer norm of the
  sum); with ``None`` they are identities and the cells are the plain ``norm=None`` cells.
* ``run_direction`` runs one direction of one layer over a (time-major) sequence with
  packed-sequence semantics for ``lengths``; it can ask a ``step_norms`` callback for the
  ``StepNorms`` of every step (the callback sees the step counter and the mask of active
  sequences, which is what per-time-step batch statistics need).
* ``reference_forward`` handles layouts, stacking and directions, builds the ``StepNorms`` of
  ``norm="layer"|"batch"|"batch_input"`` (training or eval mode, running statistics) and
  returns what the public modules return (plus the updated buffers for the batch norms).
"""

from __future__ import annotations

import dataclasses
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


# ---------------------------------------------------------------------------------------------
# The two normalizations (spec/normalization.md section 1).

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
    h_in: Array | None = None,
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


def run_direction(
    step: Callable[[Array, tuple[Array, ...], StepNorms | None], tuple[Array, ...]],
    x: Array,
    state0: tuple[Array, ...],
    lengths: Array,
    reverse: bool,
    step_norms: Callable[[int, Array], StepNorms | None] | None = None,
    zone: Callable[[Array], tuple[Array, ...]] | None = None,
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
        zone: Optional zoneout: ``zone(positions) -> (d_h, d_c ...)``, one ``(B, width)``
            coefficient array per state component for the time positions the step reads;
            the new state is ``d * old + (1 - d) * new``.

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
        if zone is not None:
            new = tuple(d * old + (1.0 - d) * n for d, old, n in zip(zone(pos), state, new))
        state = tuple(np.where(active[:, None], n, s) for n, s in zip(new, state))
        out[pos[active], rows[active]] = new[0][active]
    return out, state


def _check_cell(cell: str) -> str:
    c = cell.lower()
    if c not in GATES:
        raise ValueError(f"unknown cell {cell!r}")
    return c


def _check_norm(norm: str | None) -> str | None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def _suffixes(bidirectional: bool) -> tuple[str, ...]:
    return ("", "_reverse")[: 2 if bidirectional else 1]


def _norm_param_specs(cell: str, norm: str | None, hidden_size: int) -> list[tuple[str, int]]:
    """``(base name, width)`` of the normalization parameters of one layer-direction."""
    g = GATES[cell]
    if norm == "layer":
        if cell == "rnn":
            return [("ln_weight", hidden_size)]
        specs = [("ln_ih_weight", g * hidden_size), ("ln_hh_weight", g * hidden_size)]
        if cell == "lstm":
            specs += [("ln_cell_weight", hidden_size), ("ln_cell_bias", hidden_size)]
        return specs
    if norm == "batch":
        specs = [("bn_ih_weight", g * hidden_size), ("bn_hh_weight", g * hidden_size)]
        if cell == "lstm":
            specs += [("bn_cell_weight", hidden_size), ("bn_cell_bias", hidden_size)]
        return specs
    if norm == "batch_input":
        return [("bn_ih_weight", g * hidden_size)]
    return []


def _buffer_specs(cell: str, norm: str | None, hidden_size: int) -> list[tuple[str, int]]:
    """``(part, width)`` of the running statistics of one layer-direction (ih, hh, cell)."""
    g = GATES[cell]
    if norm == "batch":
        specs = [("ih", g * hidden_size), ("hh", g * hidden_size)]
        return specs + ([("cell", hidden_size)] if cell == "lstm" else [])
    if norm == "batch_input":
        return [("ih", g * hidden_size)]
    return []


def param_names(
    cell: str,
    num_layers: int,
    bidirectional: bool,
    proj_size: int,
    bias: bool,
    norm: str | None = None,
):
    """Parameter names in PyTorch's order, the normalization parameters (if any) appended after
    each layer-direction's plain parameters.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        num_layers: Number of stacked layers.
        bidirectional: Whether there is a ``_reverse`` direction.
        proj_size: LSTM projection size (0 for none).
        bias: Whether the biases exist.
        norm: ``None``, ``"layer"``, ``"batch"`` or ``"batch_input"``.

    Returns:
        A list of names such as ``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``,
        ``ln_ih_weight_l0``.
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
    names = []
    for k in range(num_layers):
        for suffix in _suffixes(bidirectional):
            names += [f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}"]
            if bias:
                names += [f"bias_ih_l{k}{suffix}", f"bias_hh_l{k}{suffix}"]
            if cell == "lstm" and proj_size > 0:
                names.append(f"weight_hr_l{k}{suffix}")
            names += [f"{base}_l{k}{suffix}" for base, _ in _norm_param_specs(cell, norm, 1)]
    return names


def buffer_names(cell: str, num_layers: int, bidirectional: bool, norm: str | None) -> list[str]:
    """Names of the running-statistics buffers (empty unless ``norm`` is a batch norm).

    Order: per layer and direction, ``bn_ih_running_mean``, ``bn_ih_running_var``, then ``hh``,
    then ``cell`` (LSTM, ``norm="batch"``).
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
    names = []
    for k in range(num_layers):
        for suffix in _suffixes(bidirectional):
            for part, _ in _buffer_specs(cell, norm, 1):
                names += [f"bn_{part}_running_{s}_l{k}{suffix}" for s in ("mean", "var")]
    return names


def init_buffers(
    cell: str, hidden_size: int, num_layers: int, bidirectional: bool, norm: str | None
) -> dict[str, Array]:
    """The running statistics of a module that has never been trained.

    ``norm="batch"``: ``(0, width)`` arrays (no time step seen yet); ``norm="batch_input"``:
    mean zeros and variance ones of shape ``(G*H,)``; other norms: empty dict.
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
    bufs = {}
    for k in range(num_layers):
        for suffix in _suffixes(bidirectional):
            for part, width in _buffer_specs(cell, norm, hidden_size):
                pre = f"bn_{part}_running"
                if norm == "batch":
                    bufs[f"{pre}_mean_l{k}{suffix}"] = np.zeros((0, width))
                    bufs[f"{pre}_var_l{k}{suffix}"] = np.zeros((0, width))
                else:
                    bufs[f"{pre}_mean_l{k}{suffix}"] = np.zeros(width)
                    bufs[f"{pre}_var_l{k}{suffix}"] = np.ones(width)
    return bufs


def init_norm_params(
    cell: str,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    norm: str | None,
    bn_gamma: float | None = None,
) -> dict[str, Array]:
    """The initial normalization parameters (spec section 4): layer-norm gains 1 and shifts 0;
    batch-norm gains ``bn_gamma`` (default 0.1 for ``"batch"``, 1.0 for ``"batch_input"``) and
    shifts 0.

    Returns:
        A dict name -> array (empty for ``norm=None``).
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
    if bn_gamma is None:
        bn_gamma = 1.0 if norm == "batch_input" else 0.1
    out = {}
    for k in range(num_layers):
        for suffix in _suffixes(bidirectional):
            for base, width in _norm_param_specs(cell, norm, hidden_size):
                if base.endswith("_bias"):
                    value = 0.0
                elif base.startswith("bn_"):
                    value = bn_gamma
                else:
                    value = 1.0
                out[f"{base}_l{k}{suffix}"] = np.full(width, value)
    return out


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
    norm: str | None = None,
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
        norm: Also create the normalization parameters of this norm: gains ``U(0.5, 1.5)``
            (``U(0.05, 0.35)`` for ``norm="batch"``, whose gains start at 0.1) and shifts
            ``U(-0.5, 0.5)`` -- random rather than the initial values, so that a swapped or
            ignored gain shows. They are drawn after all plain parameters, so the plain values
            do not depend on ``norm``.

    Returns:
        An ordered dict name -> array, in :func:`param_names` order.
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
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
    if norm is None:
        return params
    extra = {}
    for name, init in init_norm_params(cell, hidden_size, num_layers, bidirectional, norm).items():
        if "_bias_" in name:
            low, high = -0.5, 0.5
        elif norm == "batch":
            low, high = 0.05, 0.35  # around the initial 0.1: large gains saturate the cell
        else:
            low, high = 0.5, 1.5
        extra[name] = rng.uniform(low, high, size=init.shape)
    all_params = {**params, **extra}
    return {
        name: all_params[name]
        for name in param_names(cell, num_layers, bidirectional, proj_size, bias, norm)
    }


def _compose(builtin: StepNorms | None, user: StepNorms | None) -> StepNorms | None:
    """``StepNorms`` applying ``builtin``'s hook first, then ``user``'s, field by field."""
    if builtin is None or user is None:
        return user if builtin is None else builtin
    fields = {}
    for name in ("x", "h", "c", "pre"):
        first, second = getattr(builtin, name), getattr(user, name)
        if first is None or second is None:
            fields[name] = second if first is None else first
        else:
            fields[name] = lambda a, f=first, s=second: s(f(a))
    return StepNorms(**fields)


class _DirectionNorms:
    """Builds the ``StepNorms`` of one layer-direction for ``norm`` and records the batch
    statistics a training-mode call takes, to update the running statistics afterwards.

    Hook names: ``ih`` -> ``N_x``, ``hh`` -> ``N_h``, ``cell`` -> ``N_c``, ``pre`` -> the
    layer-norm RNN's normalization of the sum (spec section 3).
    """

    _HOOK = {"ih": "x", "hh": "h", "cell": "c", "pre": "pre"}

    def __init__(self, cell, norm, p, bufs, tag, training, ln_eps, bn_eps, seq_input, observe=None):
        self.cell, self.norm, self.p, self.bufs, self.tag = cell, norm, p, bufs, tag
        self.training, self.ln_eps, self.bn_eps = training, ln_eps, bn_eps
        self.observe = observe
        self.stats: dict[str, dict[int, tuple[Array, Array, int]]] = {}
        self.seq_stats = None
        if norm == "batch_input":
            self._prepare_sequence_wise(*seq_input)

    def _prepare_sequence_wise(self, layer_in, lengths, w_ih):
        """``batch_input``: one set of statistics over all active ``(t, b)`` positions of the
        layer's input term ``A^x`` (the same positions for both directions)."""
        if self.training:
            a_x = layer_in @ w_ih.T  # (T, B, G*H)
            mask = np.arange(layer_in.shape[0])[:, None] < lengths[None, :]
            mean, var, n = batch_statistics(a_x, mask)
            self.stats["ih"] = {0: (mean, var, n)}
        else:
            mean = self.bufs[f"bn_ih_running_mean{self.tag}"]
            var = self.bufs[f"bn_ih_running_var{self.tag}"]
        self.seq_stats = (mean, var)

    def _ln_hook(self, part, step_k, active, gamma, beta):
        def fn(a):
            if self.observe is not None:
                mu = a.mean(axis=-1, keepdims=True)
                self.observe(part, step_k, a, active, mu, ((a - mu) ** 2).mean(-1, keepdims=True))
            return layer_norm(a, gamma, beta, self.ln_eps)

        return fn

    def _bn_hook(self, part, step_k, active, gamma, beta):
        def fn(a):
            if self.norm == "batch_input":
                mean, var = self.seq_stats
            elif self.training:
                mean, var, n = batch_statistics(a, active)
                self.stats.setdefault(part, {})[step_k] = (mean, var, n)
            else:
                run_mean = self.bufs[f"bn_{part}_running_mean{self.tag}"]
                run_var = self.bufs[f"bn_{part}_running_var{self.tag}"]
                if run_mean.shape[0] == 0:  # never trained: mean 0, variance 1
                    mean, var = np.zeros(run_mean.shape[1]), np.ones(run_mean.shape[1])
                else:  # steps beyond the longest training sequence reuse the last row
                    row = min(step_k, run_mean.shape[0] - 1)
                    mean, var = run_mean[row], run_var[row]
            if self.observe is not None:
                self.observe(part, step_k, a, active, mean, var)
            return batch_norm(a, gamma, beta, mean, var, self.bn_eps)

        return fn

    def __call__(self, step_k: int, active: Array) -> StepNorms | None:
        p, tag = self.p, self.tag
        if self.norm is None:
            return None
        if self.norm == "batch_input":
            gamma = p[f"bn_ih_weight{tag}"]
            return StepNorms(x=self._bn_hook("ih", step_k, active, gamma, None))
        if self.norm == "layer":
            if self.cell == "rnn":
                parts = [("pre", p[f"ln_weight{tag}"], None)]
            else:
                parts = [
                    ("ih", p[f"ln_ih_weight{tag}"], None),
                    ("hh", p[f"ln_hh_weight{tag}"], None),
                ]
            if self.cell == "lstm":
                parts.append(("cell", p[f"ln_cell_weight{tag}"], p[f"ln_cell_bias{tag}"]))
            make = self._ln_hook
        else:  # "batch": per-time-step statistics, gains shared over time
            parts = [("ih", p[f"bn_ih_weight{tag}"], None), ("hh", p[f"bn_hh_weight{tag}"], None)]
            if self.cell == "lstm":
                parts.append(("cell", p[f"bn_cell_weight{tag}"], p[f"bn_cell_bias{tag}"]))
            make = self._bn_hook
        hooks = {
            self._HOOK[part]: make(part, step_k, active, gamma, beta) for part, gamma, beta in parts
        }
        return StepNorms(**hooks)

    def update_buffers(self, bufs: dict[str, Array], steps: int, momentum: float) -> None:
        """Applies the recorded statistics to ``bufs`` (training mode only).

        ``norm="batch"``: every buffer of this direction first grows to at least ``steps`` rows
        (the longest sequence of the call; new rows mean 0, variance 1); then row ``k`` is
        updated with the statistics of step ``k`` when ``n >= 2`` sequences were active.
        """
        if not self.training or self.norm not in BATCH_NORMS:
            return
        for part, per_step in self.stats.items():
            mean_key = f"bn_{part}_running_mean{self.tag}"
            var_key = f"bn_{part}_running_var{self.tag}"
            run_mean, run_var = bufs[mean_key], bufs[var_key]
            if self.norm == "batch":
                rows, width = run_mean.shape
                if steps > rows:
                    run_mean = np.concatenate([run_mean, np.zeros((steps - rows, width))])
                    run_var = np.concatenate([run_var, np.ones((steps - rows, width))])
                for k, (mean, var, n) in per_step.items():
                    run_mean[k], run_var[k] = update_running_stats(
                        run_mean[k], run_var[k], mean, var, n, momentum
                    )
            else:
                mean, var, n = per_step[0]
                run_mean, run_var = update_running_stats(run_mean, run_var, mean, var, n, momentum)
            bufs[mean_key], bufs[var_key] = run_mean, run_var


def _initial_buffers(cell, hidden, num_layers, bidirectional, norm, p, buffers):
    """Buffers to start from: the never-trained ones, overridden by buffer entries of ``params``
    (a ``state_dict``), overridden by ``buffers``."""
    bufs = init_buffers(cell, hidden, num_layers, bidirectional, norm)
    given = {k: v for k, v in p.items() if k in bufs}
    if buffers is not None:
        unknown = sorted(set(buffers) - set(bufs))
        if unknown:
            raise KeyError(f"unexpected buffers for norm={norm!r}: {unknown}")
        given.update({k: np.asarray(v, dtype=np.float64) for k, v in buffers.items()})
    for name, value in given.items():
        want = bufs[name].shape
        ok = (
            value.shape == want
            if norm == "batch_input"
            else (value.ndim == 2 and value.shape[1] == want[1])
        )
        if not ok:
            raise ValueError(f"buffer {name} has shape {value.shape}, expected like {want}")
        bufs[name] = np.array(value, dtype=np.float64, copy=True)
    return bufs


@dataclass
class Masks:
    """The regularization of one call, as multiplicative masks (all optional).

    Keys are ``(layer, direction)`` except for ``layer_out`` (``layer``). Shapes use
    ``T, B``, the layer's input width ``in`` and ``H_out``, ``H`` of :func:`lstm_cell`.

    Attributes:
        input: variational input dropout ``(B, in)``: the layer input ``x_t`` of that
            direction is ``x_t * m`` at every step.
        recurrent: variational recurrent dropout ``(B, H_out)``: the recurrent products
            read ``h_{t-1} * m`` (the GRU's state update reads ``h_{t-1}``).
        zone_h: zoneout ``(T, B, H_out)``, by time position: ``h_t = d h_{t-1} + (1 - d) h~_t``
            with ``h~_t`` the cell's new value (for the LSTM ``o * tanh(N_c(c~_t))``).
        zone_c: the LSTM cell's zoneout ``(T, B, H)``: ``c_t = d c_{t-1} + (1 - d) c~_t``.
        layer_out: dropout of layer ``k``'s output ``(T, B, D * H_out)`` (not the last layer).
    """

    input: dict = dataclasses.field(default_factory=dict)
    recurrent: dict = dataclasses.field(default_factory=dict)
    zone_h: dict = dataclasses.field(default_factory=dict)
    zone_c: dict = dataclasses.field(default_factory=dict)
    layer_out: dict = dataclasses.field(default_factory=dict)


# Mask sites of the core's generator (cpp/src/regularize.h).
MASK_SITES = {"input": 1, "recurrent": 2, "zone_h": 3, "zone_c": 4, "layer_out": 5}


def draw_masks(
    hits: Callable[..., Array],
    cell: str,
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    steps: int,
    batch: int,
    proj_size: int = 0,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    training: bool = True,
) -> Masks:
    """The masks of one call, from the draws of a generator.

    Dropout (probability p) zeroes where an element's draw is a hit and scales the others by
    ``1 / (1 - p)``; zoneout keeps the previous value where it is a hit. The draws are laid
    out as in cpp/src/regularize.h: input ``(B, in)``, recurrent ``(B, H_out)``, zoneout
    ``(T, B, width)``, layer output ``(T, B, D * H_out)`` (direction 0). In eval mode only
    zoneout acts, with the expectation ``d = p``.

    Args:
        hits: ``hits(layer, direction, site, p, count) -> bool array (count,)`` (for rnncore's
            generator: ``_core.mask_hits`` with the call's seed).
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``; the other arguments describe the module.

    Returns:
        The :class:`Masks` of the call.
    """
    d = 2 if bidirectional else 1
    h_out = proj_size if (cell == "lstm" and proj_size > 0) else hidden_size
    masks = Masks()

    def dropout_mask(layer, direction, site, p, shape):
        hit = hits(layer, direction, MASK_SITES[site], p, int(np.prod(shape))).reshape(shape)
        return np.where(hit, 0.0, 1.0 / (1.0 - p))

    for k in range(num_layers):
        width_in = input_size if k == 0 else d * h_out
        for direction in range(d):
            key = (k, direction)
            if training and input_dropout > 0:
                masks.input[key] = dropout_mask(k, direction, "input", input_dropout,
                                                (batch, width_in))  # fmt: skip
            if training and recurrent_dropout > 0:
                masks.recurrent[key] = dropout_mask(k, direction, "recurrent", recurrent_dropout,
                                                    (batch, h_out))  # fmt: skip
            if zoneout > 0:
                widths = [("zone_h", h_out)] + ([("zone_c", hidden_size)] if cell == "lstm" else [])
                for site, width in widths:
                    shape = (steps, batch, width)
                    if training:
                        hit = hits(k, direction, MASK_SITES[site], zoneout, int(np.prod(shape)))
                        coef = hit.reshape(shape).astype(np.float64)
                    else:
                        coef = np.full(shape, zoneout)
                    getattr(masks, site)[key] = coef
        if training and dropout > 0 and k < num_layers - 1:
            masks.layer_out[k] = dropout_mask(k, 0, "layer_out", dropout, (steps, batch, d * h_out))
    return masks


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
    observe_norms: Callable[..., None] | None = None,
    norm: str | None = None,
    training: bool = True,
    buffers=None,
    ln_eps: float = 1e-5,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    masks: Masks | None = None,
):
    """Float64 forward pass with the exact semantics of spec/api.md and spec/normalization.md.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        params: Mapping with PyTorch names (arrays or CPU tensors), including the
            normalization parameters of ``norm`` (``ln_*`` / ``bn_*_weight`` / ``bn_cell_bias``;
            see :func:`param_names`, :func:`init_norm_params`). It may also hold buffers (a
            ``state_dict``); they are used when ``buffers`` does not give them.
        x: ``(T, B, in)``, ``(B, T, in)`` with ``batch_first``, or unbatched ``(T, in)``.
        hx: Initial state(s) ``(L*D, B, H_out)`` (unbatched: ``(L*D, H_out)``); for the LSTM a
            pair ``(h_0, c_0)`` with ``c_0`` of width ``H``. ``None`` means zeros.
        lengths: Optional ``(B,)`` integers in ``1..T`` (not with unbatched input).
        num_layers: Number of stacked layers.
        bidirectional: Whether each layer has a reverse direction.
        batch_first: Layout of ``x`` and ``out`` (states are never batch-first).
        proj_size: LSTM projection size (0: none).
        nonlinearity: RNN nonlinearity, ``"tanh"`` or ``"relu"``.
        reset_after: GRU variant (``False`` only with ``norm=None``).
        bias: Whether the biases exist (they are read from ``params`` when ``True``).
        step_norms: Optional ``step_norms(layer, direction, k, active_mask) -> StepNorms``; its
            hooks are applied AFTER the built-in normalization of ``norm`` at the same place
            (for tests that observe or perturb the normalized terms).
        observe_norms: Optional ``observe_norms(layer, direction, part, k, a, active, mean,
            var)``, called with every normalization's INPUT ``a`` (``(B, width)``; ``part`` is
            ``"ih"``, ``"hh"``, ``"cell"`` or ``"pre"``), the mask of active sequences and the
            statistics used (per row ``(B, 1)`` for layer norm; ``(width,)`` for batch norm:
            batch, sequence-wise or running statistics). For tests that need the conditioning.
        norm: ``None``, ``"layer"``, ``"batch"`` or ``"batch_input"``.
        training: Batch norms: use batch statistics and update the running statistics
            (``True``) or use the running statistics (``False``). Layer norm ignores it.
        buffers: Running statistics (names of :func:`buffer_names`; any subset) to start from;
            missing ones are taken from ``params`` or are the never-trained ones
            (:func:`init_buffers`). Never modified.
        ln_eps: Layer-norm epsilon.
        bn_eps: Batch-norm epsilon.
        bn_momentum: Momentum of the running statistics.
        masks: Regularization (dropout, zoneout) of the call, or None (see :class:`Masks`,
            :func:`draw_masks`). Used with time-major ``x`` positions.

    Returns:
        ``(out, h_n)`` for RNN/GRU, ``(out, (h_n, c_n))`` for the LSTM, in float64. For
        ``norm="batch"`` / ``"batch_input"`` a third element is added: the dict of buffers
        after the call (updated in training mode, an unchanged copy in eval mode).

    Raises:
        ValueError: On inconsistent shapes or lengths, a batch norm in training mode with
            fewer than 2 sequences, or ``reset_after=False`` with a norm.
        KeyError: When a needed parameter is missing.
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
    g = GATES[cell]
    d = 2 if bidirectional else 1
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    hidden = p["weight_hh_l0"].shape[0] // g
    h_out = proj_size if (cell == "lstm" and proj_size > 0) else hidden
    if norm is not None and cell == "gru" and not reset_after:
        raise ValueError("reset_after=False is defined for norm=None only")

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
    if norm in BATCH_NORMS and training and (unbatched or batch < 2):
        raise ValueError(
            f"norm={norm!r} in training mode needs a batch of at least 2 sequences, got "
            + ("unbatched input" if unbatched else f"B={batch}")
        )

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

    bufs = _initial_buffers(cell, hidden, num_layers, bidirectional, norm, p, buffers)
    new_bufs = {k: v.copy() for k, v in bufs.items()}

    h_n = np.zeros_like(h0)
    c_n = None if c0 is None else np.zeros_like(c0)
    masks = masks or Masks()
    layer_in = x
    for k in range(num_layers):
        outs = []
        for direction in range(d):
            sfx = "_reverse" if direction else ""
            w_ih, w_hh = p[f"weight_ih_l{k}{sfx}"], p[f"weight_hh_l{k}{sfx}"]
            b_ih = p[f"bias_ih_l{k}{sfx}"] if bias else None
            b_hh = p[f"bias_hh_l{k}{sfx}"] if bias else None
            key = (k, direction)
            # Variational input dropout: the same (B, in) mask at every step.
            x_dir = layer_in * masks.input[key][None] if key in masks.input else layer_in
            rm = masks.recurrent.get(key)

            def rec(h, rm=rm):  # the recurrent products' input
                return h if rm is None else h * rm

            if cell == "rnn":

                def step(xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, rec=rec):
                    return (rnn_cell(xt, rec(st[0]), w_ih, w_hh, b_ih, b_hh, nonlinearity, nm),)

            elif cell == "gru":

                def step(xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, rec=rec):
                    return (
                        gru_cell(xt, st[0], w_ih, w_hh, b_ih, b_hh, reset_after, nm, rec(st[0])),
                    )

            else:
                w_hr = p[f"weight_hr_l{k}{sfx}"] if proj_size > 0 else None

                def step(
                    xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr, rec=rec
                ):
                    return lstm_cell(xt, rec(st[0]), st[1], w_ih, w_hh, b_ih, b_hh, w_hr, nm)

            zone = None
            if key in masks.zone_h:
                zh, zc = masks.zone_h[key], masks.zone_c.get(key)
                rows_b = np.arange(batch)

                def zone(pos, zh=zh, zc=zc, rows_b=rows_b):
                    coefs = (zh[pos, rows_b],)
                    if zc is not None:
                        coefs += (zc[pos, rows_b],)
                    return coefs

            idx = k * d + direction
            state0 = (h0[idx],) if c0 is None else (h0[idx], c0[idx])
            dir_norms = _DirectionNorms(
                cell,
                norm,
                p,
                bufs,
                f"_l{k}{sfx}",
                training,
                ln_eps,
                bn_eps,
                seq_input=(x_dir, lens, w_ih),
                observe=None
                if observe_norms is None
                else (lambda *a, k=k, direction=direction: observe_norms(k, direction, *a)),
            )
            sn = None
            if norm is not None or step_norms is not None:

                def sn(step_k, active, k=k, direction=direction, dir_norms=dir_norms):
                    user = None if step_norms is None else step_norms(k, direction, step_k, active)
                    return _compose(dir_norms(step_k, active), user)

            out_dir, final = run_direction(step, x_dir, state0, lens, bool(direction), sn, zone)
            dir_norms.update_buffers(new_bufs, int(lens.max()), bn_momentum)
            outs.append(out_dir)
            h_n[idx] = final[0]
            if c_n is not None:
                c_n[idx] = final[1]
        layer_in = np.concatenate(outs, axis=2)
        if k in masks.layer_out:
            layer_in = layer_in * masks.layer_out[k]

    out = layer_in
    if unbatched:
        out, h_n = out[:, 0], h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    elif batch_first:
        out = out.transpose(1, 0, 2)
    state_out = (h_n, c_n) if cell == "lstm" else h_n
    if norm in BATCH_NORMS:
        return out, state_out, new_bufs
    return out, state_out
