"""The forward pass of a whole module: ``reference_forward``.

It handles layouts, initial states, lengths, stacked layers and directions, the buffers to
start from and the masks of the call, and runs every layer-direction with :func:`run_direction`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._types import Array
from .cells import GATES, StepNorms, gru_cell, lstm_cell, rnn_cell
from .direction import _compose, _DirectionNorms, run_direction
from .masks import Masks
from .norms import BATCH_NORMS
from .params import _check_cell, _check_norm, init_buffers


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
    reverse: bool = False,
    clip: float | None = None,
    cell_clip: float | None = None,
    peephole: bool = False,
    input_forget: bool = False,
):
    """Float64 forward pass with the exact semantics of docs/api.md and docs/normalization.md.

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
        reverse: One direction that runs each sequence backward (not with ``bidirectional``).
        clip: Every gate activation's input clamped to ``[-clip, clip]`` (``None``: none).
        cell_clip: LSTM: the new cell value clamped to ``[-cell_clip, cell_clip]``.
        peephole: LSTM peepholes (``weight_ci``, ``weight_cf``, ``weight_co`` in ``params``).
        input_forget: LSTM: coupled gates, ``f = 1 - i``.

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
    if reverse and bidirectional:
        raise ValueError("reverse is for a one-direction module")
    for name, value in (("clip", clip), ("cell_clip", cell_clip)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")
    if cell != "lstm" and (cell_clip is not None or peephole or input_forget):
        raise ValueError("cell_clip, peephole and input_forget are LSTM options")

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
                    h_new = rnn_cell(xt, rec(st[0]), w_ih, w_hh, b_ih, b_hh, nonlinearity, nm, clip)
                    return (h_new,)

            elif cell == "gru":

                def step(xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, rec=rec):
                    return (
                        gru_cell(
                            xt, st[0], w_ih, w_hh, b_ih, b_hh, reset_after, nm, rec(st[0]), clip
                        ),
                    )

            else:
                w_hr = p[f"weight_hr_l{k}{sfx}"] if proj_size > 0 else None
                peep = None
                if peephole:
                    peep = tuple(p[f"weight_{w}_l{k}{sfx}"] for w in ("ci", "cf", "co"))

                def step(
                    xt, st, nm, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr, rec=rec,
                    peep=peep,
                ):  # fmt: skip
                    return lstm_cell(
                        xt, rec(st[0]), st[1], w_ih, w_hh, b_ih, b_hh, w_hr, nm,
                        clip=clip, cell_clip=cell_clip, peephole=peep, input_forget=input_forget,
                    )  # fmt: skip

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

            out_dir, final = run_direction(
                step, x_dir, state0, lens, bool(direction) or reverse, sn, zone
            )
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
