"""One Keras 3 recurrent layer (or cell) as the options and weights of an rnncore module.

``module_from_keras(cls, layer)`` is ``RNN.from_keras`` / ``LSTM.from_keras`` /
``GRU.from_keras`` (and the cells'): it reads a built ``keras.layers.SimpleRNN``, ``LSTM``
or ``GRU`` (or ``keras.layers.RNN`` over the matching cell, or a ``Bidirectional`` wrapper of
one), checks that rnncore computes what the layer computes, and builds the module ``cls``
with its weights. It receives the class, so this module imports no rnncore class.

The equations match term by term (docs/normalization.md section 3): Keras' kernels are the
transposes of rnncore's matrices, its LSTM gates ``i, f, c, o`` are rnncore's ``i, f, g, o``
and its GRU gates ``z, r, h`` rnncore's ``r, z, n`` reordered. Keras' GRU with
``reset_after=True`` is PyTorch's GRU, its bias ``(2, 3H)`` the input and recurrent biases;
with ``reset_after=False`` it is rnncore's ``reset_after=False`` GRU, its ``(3H,)`` bias
``bias_ih`` (``bias_hh`` 0). The LSTM's and SimpleRNN's single bias is ``bias_ih``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .gates import TORCH_FROM_KERAS, permute_blocks

_KERAS_CELL = {"rnn": "SimpleRNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}
_KERAS_LAYER = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def keras_cell_kind(cell: Any) -> str | None:
    """``"rnn"``, ``"lstm"`` or ``"gru"`` for a Keras cell of exactly that class, else None."""
    import keras  # noqa: PLC0415 - optional dependency

    for kind, name in _KERAS_CELL.items():
        if type(cell) is getattr(keras.layers, name):
            return kind
    return None


def module_from_keras(cls: Any, layer: Any):
    """A new module of class ``cls`` computing what the Keras ``layer`` computes.

    Raises:
        TypeError: ``layer`` is not the Keras class matching ``cls``.
        ValueError: an option rnncore cannot represent (named), or an unbuilt layer.
    """

    kind = cls._cell
    is_cell = cls._torch_class.endswith("Cell")
    what = f"rnncore.{cls.__name__}.from_keras"
    if is_cell:
        if keras_cell_kind(layer) != kind:
            raise TypeError(f"{what} expects a keras.layers.{_KERAS_CELL[kind]}, got {type(layer)}")
        spec, params = _cell_spec(layer, kind, f"{what}: cell {layer.name!r}")
        for option in ("dropout", "recurrent_dropout"):
            if spec.pop(option) > 0:
                raise ValueError(
                    f"{what}: {option}={getattr(layer, option)} cannot be represented: "
                    f"rnncore's cells have no dropout (convert the layer to "
                    f"rnncore.{cls.__name__[:-4]}, which has input_dropout and "
                    f"recurrent_dropout)"
                )
        m = cls(**spec)
        m.load_state_dict(params)
        return m.eval()

    directions = _directions(layer, kind, what)
    specs = []
    state = {}
    for d, (rnn_layer, where) in enumerate(directions):
        spec, params = _cell_spec(rnn_layer.cell, kind, where)
        specs.append(spec)
        sfx = "_l0_reverse" if d else "_l0"
        state.update({f"{name}{sfx}": value for name, value in params.items()})
    if len(specs) == 2 and specs[0] != specs[1]:
        differ = sorted(k for k in specs[0] if specs[0][k] != specs[1][k])
        raise ValueError(
            f"{what}: the forward and backward layers of {layer.name!r} differ in {differ}; "
            f"rnncore's bidirectional layers share their options"
        )
    spec = specs[0]
    spec["input_dropout"] = spec.pop("dropout")
    # go_backwards outside a Bidirectional wrapper: a reverse module (whose out is in time
    # order, where Keras returns its outputs in the order it computed them, last step first)
    reverse = len(directions) == 1 and bool(directions[0][0].go_backwards)
    m = cls(**spec, batch_first=True, bidirectional=len(directions) == 2, reverse=reverse)
    m.load_state_dict(state)
    return m.eval()


def _directions(layer: Any, kind: str, what: str) -> list:
    """The ``(keras RNN layer, description)`` of each direction of ``layer``, checked."""
    import keras  # noqa: PLC0415 - optional dependency

    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode != "concat":
            raise ValueError(
                f"{what}: Bidirectional {layer.name!r} has merge_mode={layer.merge_mode!r}; "
                f"only merge_mode='concat' can be represented (rnncore concatenates the "
                f"directions' outputs)"
            )
        fwd, bwd = layer.forward_layer, layer.backward_layer
        for part, sub, backwards in (("forward", fwd, False), ("backward", bwd, True)):
            _check_rnn_layer(sub, kind, what, f"{layer.name!r} ({part} layer)")
            if bool(sub.go_backwards) != backwards:
                raise ValueError(
                    f"{what}: Bidirectional {layer.name!r}: its {part} layer has "
                    f"go_backwards={sub.go_backwards}; rnncore's bidirectional layers run the "
                    f"forward layer forwards and the backward layer backwards"
                )
        return [
            (fwd, f"{what}: {layer.name!r} (forward)"),
            (bwd, f"{what}: {layer.name!r} (backward)"),
        ]
    _check_rnn_layer(layer, kind, what, repr(getattr(layer, "name", layer)))
    return [(layer, f"{what}: {layer.name!r}")]


def _check_rnn_layer(layer: Any, kind: str, what: str, name: str) -> None:
    import keras  # noqa: PLC0415 - optional dependency

    if not isinstance(layer, keras.layers.RNN) or keras_cell_kind(layer.cell) != kind:
        raise TypeError(
            f"{what} expects a keras.layers.{_KERAS_LAYER[kind]} (or keras.layers.RNN over a "
            f"{_KERAS_CELL[kind]}, or a Bidirectional of one), got {type(layer)} for {name}"
        )
    if layer.stateful:
        raise ValueError(
            f"{what}: stateful=True cannot be represented ({name}): rnncore modules keep no "
            f"state between calls; convert a stateful=False layer and pass the state as hx"
        )


def _numpy(variable: Any) -> np.ndarray:
    import keras  # noqa: PLC0415 - optional dependency

    return np.asarray(keras.ops.convert_to_numpy(variable))


def _cell_spec(cell: Any, kind: str, where: str) -> tuple[dict, dict]:
    """The constructor options and the layer-0 parameters (no suffix) of a Keras cell."""
    import keras  # noqa: PLC0415 - optional dependency

    acts = keras.activations
    if not cell.built or getattr(cell, "kernel", None) is None:
        raise ValueError(
            f"{where}: the layer has no weights yet: build it first (call it once, or "
            f"layer.build(input_shape))"
        )
    spec = {}
    activation = cell.activation
    if kind == "rnn":
        names = {acts.tanh: "tanh", acts.relu: "relu"}
        if activation not in names:
            raise ValueError(
                f"{where}: activation={_name(activation)} cannot be represented: rnncore's "
                f"RNN takes activation 'tanh' or 'relu'"
            )
        spec["nonlinearity"] = names[activation]
    else:
        if activation is not acts.tanh:
            raise ValueError(
                f"{where}: activation={_name(activation)} cannot be represented: rnncore's "
                f"{kind.upper()} uses 'tanh'"
            )
        if cell.recurrent_activation is not acts.sigmoid:
            raise ValueError(
                f"{where}: recurrent_activation={_name(cell.recurrent_activation)} cannot be "
                f"represented: rnncore's {kind.upper()} uses 'sigmoid'"
            )
    kernel = _numpy(cell.kernel)
    recurrent = _numpy(cell.recurrent_kernel)
    dtype = "float64" if kernel.dtype == np.float64 else "float32"
    order = TORCH_FROM_KERAS[kind]
    width = recurrent.shape[1]
    params = {
        "weight_ih": permute_blocks(kernel.T, order),
        "weight_hh": permute_blocks(recurrent.T, order),
    }
    if cell.use_bias:
        bias = _numpy(cell.bias)
        if kind == "gru" and cell.reset_after:  # (2, 3H): input and recurrent biases
            params["bias_ih"] = permute_blocks(bias[0], order)
            params["bias_hh"] = permute_blocks(bias[1], order)
        else:  # one bias, added with the input term: bias_ih (the GRU's n block too)
            params["bias_ih"] = permute_blocks(bias, order)
            params["bias_hh"] = np.zeros(width, dtype=bias.dtype)
    if kind == "gru":
        spec["reset_after"] = bool(cell.reset_after)
    spec.update(
        input_size=int(kernel.shape[0]),
        hidden_size=int(cell.units),
        bias=bool(cell.use_bias),
        dtype=dtype,
        dropout=float(cell.dropout),
        recurrent_dropout=float(cell.recurrent_dropout),
    )
    return spec, params


def _name(fn: Any) -> str:
    return repr(getattr(fn, "__name__", fn))
