"""``rnncore.from_onnx``: the ONNX ``RNN``, ``LSTM`` and ``GRU`` operators as rnncore modules.

Each operator node of the model's main graph becomes one single-layer module with the
node's weights (ONNX's gate blocks permuted to rnncore's, ``B = [Wb | Rb]`` split into
``bias_ih`` and ``bias_hh``), ``direction``, ``layout`` and the cell options the attributes
give: ``clip`` becomes ``clip``, the LSTM's ``input_forget=1`` ``input_forget=True`` and
its peepholes ``P`` (``p_i, p_o, p_f``) ``peephole=True`` with ``weight_ci``,
``weight_co``, ``weight_cf``. What rnncore cannot compute yet raises ``ValueError`` naming
the attribute or input.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._modules import GRU, LSTM, RNN
from .gates import GATES, TORCH_FROM_ONNX, permute_blocks

_CELL_OF_OP = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
_CLASSES = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
# The default activations of one direction (ONNX's operator definitions).
_DEFAULT_ACTIVATIONS = {
    "rnn": ("tanh",),
    "lstm": ("sigmoid", "tanh", "tanh"),
    "gru": ("sigmoid", "tanh"),
}
# Positional inputs of the three operators.
_X, _W, _R, _B, _SEQUENCE_LENS, _INITIAL_H, _INITIAL_C, _P = range(8)


def from_onnx(model: Any, *, inputs: Mapping[str, Any] | None = None) -> OrderedDict:
    """Builds an rnncore module for every ``RNN``, ``LSTM`` and ``GRU`` node of an ONNX model.

    Args:
        model: an ``onnx.ModelProto``, or the path of an ``.onnx`` file.
        inputs: optional values of graph inputs (name -> array), for models that feed the
            weights ``W``, ``R``, ``B`` (or ``P``) as graph inputs rather than initializers.

    Returns:
        An ordered dict, in graph order: the node's name (``"{op_type}_{index}"`` for an
        unnamed node, ``index`` its position in ``graph.node``) -> a one-layer ``rc.RNN``,
        ``rc.LSTM`` or ``rc.GRU`` in eval mode. ``direction="bidirectional"`` gives
        ``bidirectional=True``, ``layout=1`` ``batch_first=True``; a node without ``B`` gives
        ``bias=False``; GRU ``linear_before_reset=1`` gives ``reset_after=True``, ``0``
        ``reset_after=False``; RNN ``activations=["Relu"]`` ``nonlinearity="relu"``;
        ``clip`` gives ``clip``; LSTM ``input_forget=1`` gives ``input_forget=True``, and a
        non-zero ``P`` ``peephole=True`` (``P``'s blocks ``p_i, p_o, p_f`` become
        ``weight_ci``, ``weight_co``, ``weight_cf``; an all-zero ``P`` is no peepholes).
        float64 weights give a float64 module, float32 and float16 ones a float32 module.
        The module's call is the operator's: ``sequence_lens`` is its ``lengths``,
        ``initial_h`` / ``initial_c`` its ``hx`` (rnncore's layouts: ``out`` is
        ``(T, B, D*H)`` where the operator's ``Y`` is ``(T, D, B, H)``).

    Raises:
        ValueError: a node rnncore cannot compute (yet): activations other than the
            defaults (RNN: ``Tanh`` or ``Relu``), ``activation_alpha`` / ``activation_beta``;
            a ``clip`` that is not a positive finite number;
            a weight that is neither an initializer, a ``Constant`` nor given in ``inputs``;
            inconsistent shapes; a duplicate node name.
        TypeError: ``model`` is neither a ModelProto nor a path.
    """
    import onnx  # noqa: PLC0415 - optional dependency
    from onnx import numpy_helper  # noqa: PLC0415

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}")
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = _constant_value(node)
            if value is not None:
                constants[node.output[0]] = value
    given = {k: np.asarray(val) for k, val in (inputs or {}).items()}
    graph_inputs = {i.name for i in graph.input}
    unknown = sorted(set(given) - graph_inputs)
    if unknown:
        raise ValueError(f"inputs names no graph input: {unknown}")

    def value_of(name: str, what: str, where: str) -> np.ndarray:
        if name in given:
            return given[name]
        if name in constants:
            return constants[name]
        if name in graph_inputs:
            raise ValueError(
                f"{where}: {what} ({name!r}) is a graph input: pass its value with "
                f"from_onnx(..., inputs={{{name!r}: array}})"
            )
        raise ValueError(
            f"{where}: {what} ({name!r}) is computed by the graph; from_onnx reads weights "
            f"from initializers, Constant nodes or inputs= only"
        )

    modules = OrderedDict()
    for index, node in enumerate(graph.node):
        if node.op_type not in _CELL_OF_OP or node.domain not in ("", "ai.onnx"):
            continue
        name = node.name or f"{node.op_type}_{index}"
        if name in modules:
            raise ValueError(f"two RNN/LSTM/GRU nodes are named {name!r}")
        modules[name] = _module_of_node(node, name, value_of)
    return modules


def _constant_value(node) -> np.ndarray | None:
    """The value of a ``Constant`` node, or None for a kind rnncore never reads."""
    from onnx import helper, numpy_helper  # noqa: PLC0415

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr))
    return None


def _attributes(node) -> dict:
    from onnx import helper  # noqa: PLC0415

    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        out[attr.name] = value
    return out


def _input(node, position: int) -> str:
    """The name of the node's input at ``position``, or "" when it is absent."""
    return node.input[position] if len(node.input) > position else ""


def _module_of_node(node, name: str, value_of):
    cell = _CELL_OF_OP[node.op_type]
    where = f"ONNX node {name!r} ({node.op_type})"
    attrs = _attributes(node)
    known = {
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "layout",
        "input_forget",
        "linear_before_reset",
    }
    unknown = sorted(set(attrs) - known)
    if unknown:
        raise ValueError(f"{where}: unknown attributes {unknown}")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: invalid direction {direction!r}")
    for attr, why in (
        ("activation_alpha", "rnncore's activations take no parameters"),
        ("activation_beta", "rnncore's activations take no parameters"),
    ):
        if attr in attrs:
            raise ValueError(f"{where}: attribute {attr} is not supported yet ({why})")
    options = {}
    if "clip" in attrs:
        clip = attrs["clip"]
        if not (isinstance(clip, float) and np.isfinite(clip) and clip > 0):
            raise ValueError(f"{where}: clip must be a positive finite number, got {clip!r}")
        options["clip"] = clip
    if "input_forget" in attrs:
        if cell != "lstm":
            raise ValueError(f"{where}: input_forget is an attribute of the LSTM only")
        if attrs["input_forget"] not in (0, 1):
            raise ValueError(f"{where}: invalid input_forget {attrs['input_forget']!r}")
        options["input_forget"] = bool(attrs["input_forget"])
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: invalid layout {layout!r}")
    num_dirs = 2 if direction == "bidirectional" else 1
    extra = {**_activation_options(cell, attrs.get("activations"), num_dirs, where), **options}
    if cell == "gru":
        lbr = attrs.get("linear_before_reset", 0)
        if lbr not in (0, 1):
            raise ValueError(f"{where}: invalid linear_before_reset {lbr!r}")
        extra["reset_after"] = bool(lbr)

    w = _float_array(value_of(_input(node, _W), "W", where), "W", where)
    r = _float_array(value_of(_input(node, _R), "R", where), "R", where)
    b_name = _input(node, _B)
    b = _float_array(value_of(b_name, "B", where), "B", where) if b_name else None
    p = None
    if cell == "lstm" and _input(node, _P):
        p = _float_array(value_of(_input(node, _P), "P", where), "P", where)
        if not np.any(p != 0):
            p = None  # all-zero peepholes are no peepholes
    g = GATES[cell]
    if w.ndim != 3 or w.shape[0] != num_dirs or w.shape[1] % g:
        raise ValueError(
            f"{where}: W must have shape ({num_dirs}, {g}*hidden_size, input_size), got {w.shape}"
        )
    hidden = w.shape[1] // g
    if attrs.get("hidden_size", hidden) != hidden:
        raise ValueError(f"{where}: hidden_size={attrs['hidden_size']} but W has {w.shape}")
    input_size = w.shape[2]
    if r.shape != (num_dirs, g * hidden, hidden):
        raise ValueError(
            f"{where}: R must have shape {(num_dirs, g * hidden, hidden)}, got {r.shape}"
        )
    if b is not None and b.shape != (num_dirs, 2 * g * hidden):
        raise ValueError(f"{where}: B must have shape {(num_dirs, 2 * g * hidden)}, got {b.shape}")
    if p is not None:
        if p.shape != (num_dirs, 3 * hidden):
            raise ValueError(f"{where}: P must have shape {(num_dirs, 3 * hidden)}, got {p.shape}")
        extra["peephole"] = True
    dtype = "float64" if w.dtype == np.float64 else "float32"
    module = _CLASSES[cell](
        input_size,
        hidden,
        bias=b is not None,
        batch_first=layout == 1,
        bidirectional=num_dirs == 2,
        reverse=direction == "reverse",
        dtype=dtype,
        **extra,
    )
    order = TORCH_FROM_ONNX[cell]
    state = {}
    for d in range(num_dirs):
        sfx = "_reverse" if d else ""
        state[f"weight_ih_l0{sfx}"] = permute_blocks(w[d], order)
        state[f"weight_hh_l0{sfx}"] = permute_blocks(r[d], order)
        if b is not None:
            state[f"bias_ih_l0{sfx}"] = permute_blocks(b[d, : g * hidden], order)
            state[f"bias_hh_l0{sfx}"] = permute_blocks(b[d, g * hidden :], order)
        if p is not None:  # ONNX's P is p_i, p_o, p_f
            p_i, p_o, p_f = np.split(p[d], 3)
            state[f"weight_ci_l0{sfx}"] = p_i
            state[f"weight_cf_l0{sfx}"] = p_f
            state[f"weight_co_l0{sfx}"] = p_o
    module.load_state_dict(state)
    return module.eval()


def _float_array(a: np.ndarray, what: str, where: str) -> np.ndarray:
    if a.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{where}: {what} must be float16, float32 or float64, got {a.dtype}")
    return a


def _activation_options(cell: str, activations, num_dirs: int, where: str) -> dict:
    """The module options of the ``activations`` attribute (RNN: the nonlinearity)."""
    default = _DEFAULT_ACTIVATIONS[cell]
    if activations is None:
        return {}
    names = [str(a).lower() for a in activations]
    per_dir = len(default)
    if len(names) != per_dir * num_dirs:
        raise ValueError(
            f"{where}: activations must list {per_dir * num_dirs} functions, got {activations}"
        )
    if cell == "rnn":
        if len(set(names)) != 1 or names[0] not in ("tanh", "relu"):
            raise ValueError(
                f"{where}: activations {activations} are not supported yet (rnncore's RNN "
                f"takes Tanh or Relu, the same in both directions)"
            )
        return {"nonlinearity": names[0]}
    if names != list(default) * num_dirs:
        raise ValueError(
            f"{where}: activations {activations} are not supported yet (rnncore's "
            f"{cell.upper()} uses the defaults {list(default)})"
        )
    return {}
