"""ONNX graphs of one recurrent layer, built directly with ``onnx.helper``.

The weights come in PyTorch's layout (the layout rnncore uses too):
``weight_ih_l0`` ``(G*H, D)``, ``weight_hh_l0`` ``(G*H, H)``, ``bias_ih_l0`` and ``bias_hh_l0``
``(G*H,)``, gate blocks stacked along the first axis. ONNX stacks them in another order, so
the blocks are permuted here:

- LSTM: PyTorch ``i, f, g, o`` -> ONNX ``i, o, f, c``.
- GRU: PyTorch ``r, z, n`` -> ONNX ``z, r, h``; PyTorch's GRU applies the reset gate after
  the recurrent matrix product, which is ONNX's ``linear_before_reset=1``.
- RNN: one block, nothing to permute; ``activations`` is ``Tanh`` or ``Relu``.

Every graph takes ``X`` ``(T, B, D)`` and ``initial_h`` ``(1, B, H)`` (plus ``initial_c`` for
the LSTM) as inputs, holds the weights as initializers, and returns ``Y`` ``(T, 1, B, H)``
and ``Y_h`` ``(1, B, H)`` (plus ``Y_c``). Only unidirectional, single-layer graphs are built;
``sequence_lens`` is left out (every sequence has the full length).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# ONNX block order expressed as indices into PyTorch's block order.
_GATE_PERM = {
    "lstm": (0, 3, 1, 2),  # i, o, f, c  <-  torch i, f, g, o
    "gru": (1, 0, 2),  # z, r, h  <-  torch r, z, n
    "rnn": (0,),
}

_OP_TYPE = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}

# Opset 14 has the current LSTM/GRU/RNN definitions (layout attribute); IR version 8 is read
# by every onnxruntime release of the last years.
OPSET = 14
IR_VERSION = 8


def _reorder(a: np.ndarray, cell: str) -> np.ndarray:
    """Permutes the gate blocks of a ``(G*H, ...)`` or ``(G*H,)`` array from torch to ONNX order.

    Args:
        a: Array whose first axis holds the ``G`` gate blocks of ``H`` rows each.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.

    Returns:
        A new contiguous array with the blocks in ONNX order.
    """
    perm = _GATE_PERM[cell]
    blocks = np.split(np.asarray(a), len(perm), axis=0)
    return np.ascontiguousarray(np.concatenate([blocks[i] for i in perm], axis=0))


def build_rnn_model(
    cell: str,
    params: Mapping[str, np.ndarray],
    *,
    nonlinearity: str = "tanh",
    dtype=np.float32,
):
    """Builds an ONNX model of a one-layer, unidirectional LSTM, GRU or Elman RNN.

    Args:
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        params: PyTorch-layout parameters ``weight_ih_l0``, ``weight_hh_l0`` and optionally
            ``bias_ih_l0``, ``bias_hh_l0`` (missing biases mean zero).
        nonlinearity: ``"tanh"`` or ``"relu"``; only used by the ``"rnn"`` cell.
        dtype: ``np.float32`` or ``np.float64``.

    Returns:
        An ``onnx.ModelProto`` that passed ``onnx.checker.check_model``.

    Raises:
        ValueError: If ``cell``, ``nonlinearity`` or a parameter shape is invalid.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if cell not in _OP_TYPE:
        raise ValueError(f"cell must be one of {sorted(_OP_TYPE)}, got {cell!r}")
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        elem = TensorProto.FLOAT
    elif dtype == np.float64:
        elem = TensorProto.DOUBLE
    else:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")

    g = len(_GATE_PERM[cell])
    w_ih = np.asarray(params["weight_ih_l0"], dtype=dtype)
    w_hh = np.asarray(params["weight_hh_l0"], dtype=dtype)
    gh, d = w_ih.shape
    if gh % g:
        raise ValueError(f"weight_ih_l0 has {gh} rows, not a multiple of {g} gates")
    h = gh // g
    if w_hh.shape != (gh, h):
        raise ValueError(f"weight_hh_l0 must have shape {(gh, h)}, got {w_hh.shape}")
    b_ih = np.asarray(params.get("bias_ih_l0", np.zeros(gh)), dtype=dtype)
    b_hh = np.asarray(params.get("bias_hh_l0", np.zeros(gh)), dtype=dtype)

    w = _reorder(w_ih, cell)[None]  # (1, G*H, D)
    r = _reorder(w_hh, cell)[None]  # (1, G*H, H)
    b = np.concatenate([_reorder(b_ih, cell), _reorder(b_hh, cell)])[None]  # (1, 2*G*H)

    inputs = [
        helper.make_tensor_value_info("X", elem, ["T", "B", d]),
        helper.make_tensor_value_info("initial_h", elem, [1, "B", h]),
    ]
    outputs = [
        helper.make_tensor_value_info("Y", elem, ["T", 1, "B", h]),
        helper.make_tensor_value_info("Y_h", elem, [1, "B", h]),
    ]
    # Positional inputs: X, W, R, B, sequence_lens (omitted), initial_h[, initial_c].
    node_inputs = ["X", "W", "R", "B", "", "initial_h"]
    node_outputs = ["Y", "Y_h"]
    attrs = {"hidden_size": h, "direction": "forward"}
    if cell == "lstm":
        inputs.append(helper.make_tensor_value_info("initial_c", elem, [1, "B", h]))
        outputs.append(helper.make_tensor_value_info("Y_c", elem, [1, "B", h]))
        node_inputs.append("initial_c")
        node_outputs.append("Y_c")
    elif cell == "gru":
        attrs["linear_before_reset"] = 1
    else:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        attrs["activations"] = ["Tanh" if nonlinearity == "tanh" else "Relu"]

    node = helper.make_node(_OP_TYPE[cell], node_inputs, node_outputs, **attrs)
    graph = helper.make_graph(
        [node],
        f"rnncore_bench_{cell}",
        inputs,
        outputs,
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(r, "R"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="rnncore-bench",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def make_session(model, threads: int):
    """Creates an onnxruntime CPU session for ``model`` with ``threads`` intra-op threads.

    Args:
        model: An ``onnx.ModelProto``.
        threads: Number of intra-op threads (inter-op parallelism is off: one node).

    Returns:
        An ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )
