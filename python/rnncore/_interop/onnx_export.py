"""``rnncore.to_onnx``: a recurrent module as an ONNX model with rnncore's shapes.

Layers of plain float32 cells (``norm=None``, no projection, no zoneout, no ``cell_clip``)
become the standard ``RNN`` / ``LSTM`` / ``GRU`` operators, one per layer, so that every
runtime's fused kernel runs them (``clip``, the LSTM's ``input_forget`` and peepholes are
the operators' ``clip``, ``input_forget`` and ``P``); other layers become ``Loop`` nodes of
standard operators (``onnx_loop``), and so do float64 modules, which ONNX Runtime's fused
kernels do not take. The graph's inputs and
outputs have the shapes of the module's call, not the operators'.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import _core
from .gates import ONNX_FROM_TORCH, ONNX_OP, permute_blocks
from .onnx_graph import Graph, time_mask
from .onnx_loop import loop_layer

#: The opset ``to_onnx`` writes by default; 14 is the first with ``layout`` on the RNN ops.
DEFAULT_OPSET = 17
MIN_OPSET = 14


def to_onnx(
    module: Any,
    path: Any = None,
    *,
    lengths: bool = False,
    initial_state: bool = False,
    opset: int | None = None,
):
    """Writes a recurrent module as an ONNX model that computes its eval-mode call.

    Graph inputs: ``x`` ``(T, B, input_size)`` (``(B, T, input_size)`` for a batch-first
    module), with ``lengths=True`` ``lengths`` ``(B,)`` int64, with ``initial_state=True``
    ``h_0`` ``(D*num_layers, B, H_out)`` (and the LSTM's ``c_0``
    ``(D*num_layers, B, hidden_size)``). Outputs: ``out`` ``(T, B, D*H_out)`` (batch-first:
    ``(B, T, D*H_out)``), ``h_n`` (and ``c_n``). ``T`` and ``B`` are symbolic: one file takes
    any length and batch size. The values are those of ``module(x, hx, lengths)`` in eval
    mode, whatever the module's mode: running statistics for the batch norms, no dropout,
    zoneout's expectation.

    Args:
        module: an ``rc.RNN``, ``rc.LSTM`` or ``rc.GRU`` (any options).
        path: where to write the model (a path), or None to only return it.
        lengths: add the ``lengths`` input (values in ``1..T``, as the module's call).
        initial_state: add the ``h_0`` (and ``c_0``) inputs; without them the states start
            at zero.
        opset: the ONNX opset (default 17; 14 or newer).

    Returns:
        The ``onnx.ModelProto`` (checked with ``onnx.checker.check_model``).

    Raises:
        TypeError: ``module`` is not an rnncore RNN, LSTM or GRU (cells: export the
            one-layer module with the cell's weights).
        ValueError: an opset outside ``14 ..`` the installed onnx's newest.
    """
    import onnx  # noqa: PLC0415 - optional dependency
    from onnx import TensorProto, helper  # noqa: PLC0415

    from .._cells import _Cell  # noqa: PLC0415
    from .._recurrent import RecurrentModule  # noqa: PLC0415

    if not isinstance(module, RecurrentModule) or isinstance(module, _Cell):
        raise TypeError(
            f"to_onnx expects an rnncore RNN, LSTM or GRU, got {type(module).__name__}"
            + (
                " (a cell: load its weights into the one-layer module and export that)"
                if isinstance(module, _Cell)
                else ""
            )
        )
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else opset
    if type(opset) is not int or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int in {MIN_OPSET}..{newest}, got {opset!r}")
    lengths = bool(lengths)
    initial_state = bool(initial_state)
    o = module.options
    g = Graph(opset, o.np_dtype)
    elem = helper.np_dtype_to_tensor_dtype(o.np_dtype)
    params = {k: np.asarray(v) for k, v in module.state_dict().items()}

    # ------------------------------------------------------------------ inputs
    time_batch = ["B", "T"] if o.batch_first else ["T", "B"]
    x = g.reserve("x")
    inputs = [helper.make_tensor_value_info(x, elem, [*time_batch, o.input_size])]
    lens = None
    if lengths:
        lens = g.reserve("lengths")
        inputs.append(helper.make_tensor_value_info(lens, TensorProto.INT64, ["B"]))
    n_states = o.num_states
    is_lstm = o.cell == "lstm"
    h0 = c0 = None
    if initial_state:
        h0 = g.reserve("h_0")
        inputs.append(helper.make_tensor_value_info(h0, elem, [n_states, "B", o.out_size]))
        if is_lstm:
            c0 = g.reserve("c_0")
            inputs.append(helper.make_tensor_value_info(c0, elem, [n_states, "B", o.hidden_size]))
    xt = g.op("Transpose", [x], base="x_time_major", perm=[1, 0, 2]) if o.batch_first else x

    # ONNX Runtime's RNN/LSTM/GRU kernels are float32 only: float64 modules use the Loop.
    # TFLite's cell_clip has no ONNX attribute: such a layer is a Loop too.
    plain = (o.norm is None and o.proj_size == 0 and o.zoneout == 0 and o.cell_clip is None
             and o.np_dtype == np.float32)  # fmt: skip
    if plain:
        lens32 = g.op("Cast", [lens], base="lengths_int32", to=TensorProto.INT32) if lens else None
        steps = active = None
    else:
        shape = g.op("Shape", [xt], base="x_shape")
        steps = g.op("Gather", [shape, g.ints(0, "zero")], base="T", axis=0)
        active = time_mask(g, steps, lens) if lens else None
        batch = g.op("Slice", [shape, g.ints([1]), g.ints([2])], base="B")

    # ------------------------------------------------------------------ layers
    layer_in, h_parts, c_parts = xt, [], []
    d = o.num_directions
    for k in range(o.num_layers):
        if plain:
            layer_in, hk, ck = _standard_layer(
                g, module, params, k, layer_in, lens32, _slice(g, h0, k, d), _slice(g, c0, k, d)
            )
            h_parts.append(hk)
            c_parts += [ck] if ck else []
            continue
        h0s = [_state(g, h0, k * d + j, batch, o.out_size) for j in range(d)]
        c0s = [_state(g, c0, k * d + j, batch, o.hidden_size) for j in range(d)] if is_lstm else []
        layer_in, hk, ck = loop_layer(g, module, params, k, layer_in, steps, lens, active, h0s, c0s)
        h_parts += [g.unsqueeze(h, [0]) for h in hk]
        c_parts += [g.unsqueeze(c, [0]) for c in ck]

    # ------------------------------------------------------------------ outputs
    out = layer_in
    if lens is not None and plain:  # zero past each length, whatever the runtime leaves there
        active = time_mask(
            g, g.op("Gather", [g.op("Shape", [xt]), g.ints(0, "zero")], axis=0), lens
        )
        out = g.op("Where", [active, out, g.scalar(0.0, "zero_f")], base="out_masked")
    out_perm = [1, 0, 2] if o.batch_first else [0, 1, 2]
    g.op("Transpose", [out], outputs=[g.reserve("out")], perm=out_perm)
    g.op("Concat", h_parts, outputs=[g.reserve("h_n")], axis=0)
    width = d * o.out_size
    outputs = [
        helper.make_tensor_value_info("out", elem, [*time_batch, width]),
        helper.make_tensor_value_info("h_n", elem, [n_states, "B", o.out_size]),
    ]
    if is_lstm:
        g.op("Concat", c_parts, outputs=[g.reserve("c_n")], axis=0)
        outputs.append(helper.make_tensor_value_info("c_n", elem, [n_states, "B", o.hidden_size]))

    graph = helper.make_graph(
        g.nodes, f"rnncore_{o.cell}", inputs, outputs, initializer=g.initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="rnncore",
        producer_version=_core.__version__,
    )
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


def _slice(g: Graph, state: str | None, k: int, d: int) -> str | None:
    """Layer ``k``'s ``(D, B, width)`` part of a ``(D*num_layers, B, width)`` state input."""
    if state is None:
        return None
    starts, ends = g.ints([k * d], "starts"), g.ints([(k + 1) * d], "ends")
    return g.op("Slice", [state, starts, ends, g.ints([0], "axes")], base=f"{state}_l{k}")


def _state(g: Graph, state: str | None, index: int, batch: str, width: int) -> str:
    """The ``(B, width)`` initial state ``index`` of a state input, or zeros."""
    if state is not None:
        return g.op("Gather", [state, g.ints(index, "index")], base=f"{state}_{index}", axis=0)
    from onnx import numpy_helper  # noqa: PLC0415 - optional dependency

    shape = g.op("Concat", [batch, g.ints([width], "width")], base="state_shape", axis=0)
    zero = numpy_helper.from_array(np.zeros(1, dtype=g.dtype))
    return g.op("ConstantOfShape", [shape], base="zeros", value=zero)


def _standard_layer(
    g: Graph,
    module,
    params: dict,
    k: int,
    x: str,
    lens32: str | None,
    h0: str | None,
    c0: str | None,
):
    """Layer ``k`` as one ONNX RNN/LSTM/GRU node: ``(out (T, B, D*H), Y_h, Y_c or None)``."""
    o = module.options
    cell, hs, d = o.cell, o.hidden_size, o.num_directions
    order = ONNX_FROM_TORCH[cell]
    tags = [f"_l{k}", f"_l{k}_reverse"][:d]
    w = np.stack([permute_blocks(params[f"weight_ih{t}"], order) for t in tags])
    r = np.stack([permute_blocks(params[f"weight_hh{t}"], order) for t in tags])
    names = [x, g.const(w, f"W_l{k}"), g.const(r, f"R_l{k}")]
    if o.bias:
        b = np.stack(
            [
                np.concatenate(
                    [
                        permute_blocks(params[f"bias_ih{t}"], order),
                        permute_blocks(params[f"bias_hh{t}"], order),
                    ]
                )
                for t in tags
            ]
        )
        names.append(g.const(b, f"B_l{k}"))
    else:
        names.append("")
    names += [lens32 or "", h0 or ""]
    if cell == "lstm":
        names.append(c0 or "")
        if o.peephole:  # ONNX's P: p_i, p_o, p_f
            p = np.stack([np.concatenate([params[f"weight_c{w}{t}"] for w in "iof"]) for t in tags])
            names.append(g.const(p, f"P_l{k}"))
    while names[-1] == "":
        names.pop()
    direction = "bidirectional" if d == 2 else "reverse" if o.reverse else "forward"
    attrs = {"hidden_size": hs, "direction": direction}
    if cell == "rnn":
        attrs["activations"] = ["Relu" if o.nonlinearity == "relu" else "Tanh"] * d
    elif cell == "gru":
        attrs["linear_before_reset"] = int(o.reset_after)
    if o.clip is not None:
        attrs["clip"] = o.clip
    if o.input_forget:
        attrs["input_forget"] = 1
    n_out = 3 if cell == "lstm" else 2
    outs = g.op(
        ONNX_OP[cell], names, n_out=n_out, base=f"{cell}_l{k}", node_name=f"{cell}_l{k}", **attrs
    )  # from_onnx's names of the layers
    y = g.op("Transpose", [outs[0]], base=f"y_l{k}", perm=[0, 2, 1, 3])  # (T, B, D, H)
    out = g.op("Reshape", [y, g.ints([0, 0, d * hs], "shape")], base=f"out_l{k}")
    return out, outs[1], outs[2] if cell == "lstm" else None
