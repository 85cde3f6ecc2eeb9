"""Names, shapes and initial values of the parameters and running-statistics buffers.

``param_names`` and ``buffer_names`` give PyTorch's names and order, ``init_norm_params`` and
``init_buffers`` the values of a new module, ``make_params`` random parameters for tests.
"""

from __future__ import annotations

import numpy as np

from ._types import Array
from .cells import GATES
from .norms import NORMS


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


PEEPHOLES = ("weight_ci", "weight_cf", "weight_co")


def param_names(
    cell: str,
    num_layers: int,
    bidirectional: bool,
    proj_size: int,
    bias: bool,
    norm: str | None = None,
    peephole: bool = False,
):
    """Parameter names in PyTorch's order, the LSTM's peepholes (if any) after the projection,
    the normalization parameters (if any) appended after each layer-direction's plain
    parameters.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        num_layers: Number of stacked layers.
        bidirectional: Whether there is a ``_reverse`` direction.
        proj_size: LSTM projection size (0 for none).
        bias: Whether the biases exist.
        norm: ``None``, ``"layer"``, ``"batch"`` or ``"batch_input"``.
        peephole: LSTM peepholes ``weight_ci``, ``weight_cf``, ``weight_co`` (each ``(H,)``).

    Returns:
        A list of names such as ``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``,
        ``weight_ci_l0``, ``ln_ih_weight_l0``.
    """
    cell = _check_cell(cell)
    norm = _check_norm(norm)
    if peephole and cell != "lstm":
        raise ValueError("peephole is for the LSTM only")
    names = []
    for k in range(num_layers):
        for suffix in _suffixes(bidirectional):
            names += [f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}"]
            if bias:
                names += [f"bias_ih_l{k}{suffix}", f"bias_hh_l{k}{suffix}"]
            if cell == "lstm" and proj_size > 0:
                names.append(f"weight_hr_l{k}{suffix}")
            if peephole:
                names += [f"{base}_l{k}{suffix}" for base in PEEPHOLES]
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
    peephole: bool = False,
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
        peephole: Also create the LSTM's peepholes, ``U(-scale, scale)``, drawn after the
            plain parameters and before the normalization parameters.

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
    if peephole:
        for name in param_names(cell, num_layers, bidirectional, proj_size, bias, None, True):
            if name.startswith(PEEPHOLES):
                params[name] = rng.uniform(-scale, scale, size=hidden_size)
    order = param_names(cell, num_layers, bidirectional, proj_size, bias, norm, peephole)
    if norm is None:
        return {name: params[name] for name in order}
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
    return {name: all_params[name] for name in order}
