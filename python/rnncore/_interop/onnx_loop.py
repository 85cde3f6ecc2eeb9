"""One layer of a normalized, projected or zoneout module as ONNX ``Loop`` nodes.

The ONNX operators ``RNN`` / ``LSTM`` / ``GRU`` have no normalization, projection or zoneout,
so such a layer is written out as the equations of docs/normalization.md section 3, in eval
mode, one ``Loop`` per direction:

- before the loop, for all steps at once: ``A^x = x W_ih^T``, its normalization ``N_x`` (layer
  norm per row; eval batch norm with the running-statistics row ``min(t, S - 1)`` of each
  step ``t``; ``batch_input``'s single row) and the input bias;
- in the loop body, at iteration ``k``: ``A^h = h W_hh^T``, ``N_h`` (batch norm: the row
  ``min(k, S - 1)``, gathered with the loop's iteration counter), the gates, ``N_c`` of the
  LSTM's output path, the projection, zoneout's expectation ``s = p s_prev + (1 - p) s~``
  and, with ``lengths``, the mask: a sequence past its length keeps its state and outputs 0;
  the cell options as ``Clip`` nodes (``clip`` on every activation's input, the LSTM's
  ``cell_clip`` on the new cell value) and the LSTM's peepholes and coupled gates.

The reverse direction reads each sequence backwards from its own last valid step
(``ReverseSequence`` with the lengths), counts its steps from there, and its outputs are put
back in time order the same way.
"""

from __future__ import annotations

import numpy as np

from .onnx_graph import Graph, bn_rows, layer_norm


def loop_layer(
    g: Graph,
    module,
    params: dict,
    k: int,
    x: str,
    steps: str,
    lengths: str | None,
    active: str | None,
    h0s: list,
    c0s: list,
):
    """Layer ``k`` of ``module``: ``(out (T, B, D*H_out), [h_n per direction],
    [c_n per direction])``; ``h0s`` / ``c0s`` are the initial states ``(B, width)``."""
    o = module.options
    outs, h_n, c_n = [], [], []
    for d in range(o.num_directions):
        tag = f"_l{k}" + ("_reverse" if d else "")
        backward = d == 1 or o.reverse  # a reverse-only module's one direction too
        xd = _reverse(g, x, lengths) if backward else x
        xb = _input_term(g, o, params, tag, xd, steps)
        y, h_fin, c_fin = _loop(
            g, o, params, tag, xb, steps, active, h0s[d], c0s[d] if c0s else None
        )
        outs.append(_reverse(g, y, lengths) if backward else y)
        h_n.append(h_fin)
        if c_fin is not None:
            c_n.append(c_fin)
    out = outs[0] if len(outs) == 1 else g.op("Concat", outs, base=f"out_l{k}", axis=2)
    return out, h_n, c_n


def _reverse(g: Graph, x: str, lengths: str | None) -> str:
    """``x`` (T, B, ...) with each sequence's valid steps in reverse order (padding stays)."""
    if lengths is not None:
        return g.op("ReverseSequence", [x, lengths], base="reversed", batch_axis=1, time_axis=0)
    starts, ends = g.ints([-1], "starts"), g.ints([-(2**63)], "ends")
    axes, step = g.ints([0], "axes"), g.ints([-1], "steps")
    return g.op("Slice", [x, starts, ends, axes, step], base="reversed")


def _bias(params: dict, o, name: str) -> np.ndarray | None:
    return params[name] if o.bias else None


def _input_term(g: Graph, o, params: dict, tag: str, x: str, steps: str) -> str:
    """``N_x(x W_ih^T) + b_ih`` for every step, ``(T, B, G*H)`` (the LSTM and RNN add
    ``b_hh`` here too; the layer-normalized RNN normalizes the sum later: raw ``A^x``)."""
    ax = g.matmul_t(x, params[f"weight_ih{tag}"], f"ax{tag}")
    norm = o.norm
    if o.cell == "rnn" and norm == "layer":
        return ax
    if norm == "layer":
        ax = layer_norm(g, ax, params[f"ln_ih_weight{tag}"], None, o.ln_eps, f"ln_ih{tag}")
    elif norm == "batch":
        mean, scale = bn_rows(
            params[f"bn_ih_running_mean{tag}"],
            params[f"bn_ih_running_var{tag}"],
            params[f"bn_ih_weight{tag}"],
            o.bn_eps,
        )
        zero, one = g.ints(0, "zero"), g.ints(1, "one")
        rows = g.op("Min", [g.op("Range", [zero, steps, one]), g.ints(mean.shape[0] - 1)])
        mean_t = g.unsqueeze(g.op("Gather", [g.const(mean, f"bn_ih_mean{tag}"), rows], axis=0), [1])
        scale_t = g.unsqueeze(
            g.op("Gather", [g.const(scale, f"bn_ih_scale{tag}"), rows], axis=0), [1]
        )  # noqa: E501
        ax = g.op("Mul", [g.op("Sub", [ax, mean_t]), scale_t], base=f"bn_ih{tag}")
    elif norm == "batch_input":
        mean, scale = bn_rows(
            params[f"bn_ih_running_mean{tag}"],
            params[f"bn_ih_running_var{tag}"],
            params[f"bn_ih_weight{tag}"],
            o.bn_eps,
        )
        centred = g.op("Sub", [ax, g.const(mean, f"bn_ih_mean{tag}")])
        ax = g.op("Mul", [centred, g.const(scale, f"bn_ih_scale{tag}")], base=f"bn_ih{tag}")
    if not o.bias:
        return ax
    b = params[f"bias_ih{tag}"]
    if o.cell != "gru":  # Z = N_x + b_ih + N_h + b_hh: both biases before the loop
        b = b + params[f"bias_hh{tag}"]
    return g.add_const(ax, b, f"b{tag}")


def _recurrent_norm(b: Graph, o, params: dict, tag: str, a: str, k: str, site: str) -> str:
    """``N_h`` (``site="hh"``) or the LSTM's ``N_c`` (``"cell"``) at step ``k`` of the loop."""
    if o.norm == "layer":
        shift = params.get(f"ln_cell_bias{tag}") if site == "cell" else None
        return layer_norm(
            b, a, params[f"ln_{site}_weight{tag}"], shift, o.ln_eps, f"ln_{site}{tag}"
        )
    if o.norm == "batch":
        mean, scale = bn_rows(
            params[f"bn_{site}_running_mean{tag}"],
            params[f"bn_{site}_running_var{tag}"],
            params[f"bn_{site}_weight{tag}"],
            o.bn_eps,
        )
        row = b.op("Min", [k, b.ints(mean.shape[0] - 1, "last_row")], base=f"row_{site}{tag}")
        mean_k = b.op("Gather", [b.const(mean, f"bn_{site}_mean{tag}"), row], axis=0)
        scale_k = b.op("Gather", [b.const(scale, f"bn_{site}_scale{tag}"), row], axis=0)
        y = b.op("Mul", [b.op("Sub", [a, mean_k]), scale_k], base=f"bn_{site}{tag}")
        if site == "cell":
            y = b.add_const(y, params[f"bn_cell_bias{tag}"], f"bn_cell_bias{tag}")
        return y
    return a


def _step(b: Graph, o, params: dict, tag: str, xt: str, h: str, c: str | None, k: str):
    """One step of the cell: ``(h~, c~)`` from the step's input term and the state."""
    hs = o.hidden_size

    def clip(a: str) -> str:  # an activation's input, clamped to +-clip
        return b.clamp(a, o.clip, f"clip{tag}")

    if o.cell == "gru" and not o.reset_after:  # norm=None only (normalization 3.2)
        w_hh = params[f"weight_hh{tag}"]
        b_hh = _bias(params, o, f"bias_hh{tag}")
        ah_rz = b.add_const(
            b.matmul_t(h, w_hh[: 2 * hs], f"ah_rz{tag}"),
            None if b_hh is None else b_hh[: 2 * hs],
            f"b_hh_rz{tag}",
        )
        x_r, x_z, x_n = b.split(xt, 3, hs, f"x{tag}")
        h_r, h_z = b.split(ah_rz, 2, hs, f"h{tag}")
        r = b.op("Sigmoid", [clip(b.op("Add", [x_r, h_r]))], base=f"r{tag}")
        z = b.op("Sigmoid", [clip(b.op("Add", [x_z, h_z]))], base=f"z{tag}")
        rh = b.matmul_t(b.op("Mul", [r, h]), w_hh[2 * hs :], f"rh{tag}")
        rh = b.add_const(rh, None if b_hh is None else b_hh[2 * hs :], f"b_hn{tag}")
        n = b.op("Tanh", [clip(b.op("Add", [x_n, rh]))], base=f"n{tag}")
        return _gru_update(b, z, n, h, tag), None
    ah = b.matmul_t(h, params[f"weight_hh{tag}"], f"ah{tag}")
    if o.cell == "rnn" and o.norm == "layer":  # LN0 of the sum, then both biases
        pre = layer_norm(
            b, b.op("Add", [xt, ah]), params[f"ln_weight{tag}"], None, o.ln_eps, f"ln{tag}"
        )
        if o.bias:
            pre = b.add_const(pre, params[f"bias_ih{tag}"] + params[f"bias_hh{tag}"], f"b{tag}")
        act = "Relu" if o.nonlinearity == "relu" else "Tanh"
        return b.op(act, [clip(pre)], base=f"h{tag}"), None
    nh = _recurrent_norm(b, o, params, tag, ah, k, "hh")
    if o.cell == "gru":
        rec = b.add_const(nh, _bias(params, o, f"bias_hh{tag}"), f"b_hh{tag}")
        x_r, x_z, x_n = b.split(xt, 3, hs, f"x{tag}")
        h_r, h_z, h_n = b.split(rec, 3, hs, f"h{tag}")
        r = b.op("Sigmoid", [clip(b.op("Add", [x_r, h_r]))], base=f"r{tag}")
        z = b.op("Sigmoid", [clip(b.op("Add", [x_z, h_z]))], base=f"z{tag}")
        n = b.op("Tanh", [clip(b.op("Add", [x_n, b.op("Mul", [r, h_n])]))], base=f"n{tag}")
        return _gru_update(b, z, n, h, tag), None
    pre = b.op("Add", [xt, nh], base=f"z{tag}")
    if o.cell == "rnn":
        act = "Relu" if o.nonlinearity == "relu" else "Tanh"
        return b.op(act, [clip(pre)], base=f"h{tag}"), None
    zi, zf, zg, zo = b.split(pre, 4, hs, f"gates{tag}")

    def peep(a: str, cell: str, w: str) -> str:  # a + w_c{w} * cell (peepholes)
        if not o.peephole:
            return a
        weight = b.const(params[f"weight_c{w}{tag}"], f"w_c{w}{tag}")
        return b.op("Add", [a, b.op("Mul", [cell, weight])], base=f"a_{w}{tag}")

    zi, zf = peep(zi, c, "i"), peep(zf, c, "f")  # i and f see the previous cell value
    i = b.op("Sigmoid", [clip(zi)], base=f"i{tag}")
    if o.input_forget:  # coupled gates
        f = b.op("Sub", [b.scalar(1.0, "one_f"), i], base=f"f{tag}")
    else:
        f = b.op("Sigmoid", [clip(zf)], base=f"f{tag}")
    gg = b.op("Tanh", [clip(zg)], base=f"g{tag}")
    c_new = b.op("Add", [b.op("Mul", [f, c]), b.op("Mul", [i, gg])], base=f"c{tag}")
    c_new = b.clamp(c_new, o.cell_clip, f"cell_clip{tag}")
    og = b.op("Sigmoid", [clip(peep(zo, c_new, "o"))], base=f"o{tag}")  # o: the new cell
    nc = _recurrent_norm(b, o, params, tag, c_new, k, "cell")
    h_new = b.op("Mul", [og, b.op("Tanh", [nc])], base=f"h{tag}")
    if o.proj_size:
        h_new = b.matmul_t(h_new, params[f"weight_hr{tag}"], f"proj{tag}")
    return h_new, c_new


def _gru_update(b: Graph, z: str, n: str, h: str, tag: str) -> str:
    """``(1 - z) * n + z * h``."""
    keep = b.op("Mul", [z, h])
    new = b.op("Mul", [b.op("Sub", [b.scalar(1.0, "one_f"), z]), n])
    return b.op("Add", [new, keep], base=f"h{tag}")


def _loop(
    g: Graph,
    o,
    params: dict,
    tag: str,
    xb: str,
    steps: str,
    active: str | None,
    h0: str,
    c0: str | None,
):
    """The Loop of one direction: ``(Y (T, B, H_out), h_final, c_final or None)``."""
    from onnx import TensorProto, helper  # noqa: PLC0415 - optional dependency

    elem = helper.np_dtype_to_tensor_dtype(g.dtype)
    b = g.sub()
    k = b.name(f"k{tag}")
    cond = b.name(f"cond{tag}")
    h = b.name(f"h_prev{tag}")
    c = b.name(f"c_prev{tag}") if c0 is not None else None
    xt = b.op("Gather", [xb, k], base=f"x_t{tag}", axis=0)
    h_new, c_new = _step(b, o, params, tag, xt, h, c, k)
    if o.zoneout > 0:  # eval mode: the expectation of the zoneout masks
        p, q = b.scalar(o.zoneout, "zoneout"), b.scalar(1.0 - o.zoneout, "keep")
        h_new = b.op("Add", [b.op("Mul", [h, p]), b.op("Mul", [h_new, q])], base=f"h_zone{tag}")
        if c is not None:
            c_new = b.op("Add", [b.op("Mul", [c, p]), b.op("Mul", [c_new, q])], base=f"c_zone{tag}")
    if active is not None:  # past its length a sequence keeps its state and outputs 0
        act = b.op("Gather", [active, k], base=f"active_t{tag}", axis=0)
        y = b.op("Where", [act, h_new, b.scalar(0.0, "zero_f")], base=f"y{tag}")
        h_new = b.op("Where", [act, h_new, h], base=f"h_next{tag}")
        if c is not None:
            c_new = b.op("Where", [act, c_new, c], base=f"c_next{tag}")
    else:
        y = b.op("Identity", [h_new], base=f"y{tag}")
    cond_out = b.op("Identity", [cond], base=f"cond_out{tag}")

    def info(name, elem_type, dims):
        return helper.make_tensor_value_info(name, elem_type, dims)

    width, hs = o.out_size, o.hidden_size
    body_in = [
        info(k, TensorProto.INT64, []),
        info(cond, TensorProto.BOOL, []),
        info(h, elem, [None, width]),
    ]
    body_out = [info(cond_out, TensorProto.BOOL, []), info(h_new, elem, [None, width])]
    if c is not None:
        body_in.append(info(c, elem, [None, hs]))
        body_out.append(info(c_new, elem, [None, hs]))
    body_out.append(info(y, elem, [None, width]))
    body = helper.make_graph(b.nodes, f"step{tag}", body_in, body_out)
    true = g.const(True, "true", np.bool_)
    carried = [h0] + ([c0] if c0 is not None else [])
    outs = g.op(
        "Loop", [steps, true, *carried], n_out=len(carried) + 1, base=f"loop{tag}", body=body
    )
    if c0 is not None:
        return outs[2], outs[0], outs[1]
    return outs[1], outs[0], None
