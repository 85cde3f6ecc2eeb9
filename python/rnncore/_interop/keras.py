"""``rnncore.from_keras`` (every recurrent layer of a Keras model) and ``lengths_from_mask``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from .._modules import GRU, LSTM, RNN
from .keras_layers import keras_cell_kind

_CLASSES = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def from_keras(model: Any) -> OrderedDict:
    """An rnncore module for every recurrent layer of a Keras model, in the model's order.

    The layers are ``SimpleRNN``, ``LSTM``, ``GRU`` (or ``keras.layers.RNN`` over one of
    their cells) and ``Bidirectional`` wrappers of them, each converted as
    ``rc.RNN.from_keras`` / ``rc.LSTM.from_keras`` / ``rc.GRU.from_keras`` would (one-layer,
    ``batch_first=True`` modules in eval mode); other layers are skipped. Nested models are
    walked too.

    Args:
        model: a ``keras.Model`` (``Sequential`` or functional), or one recurrent layer.

    Returns:
        An ordered dict layer name -> module (a nested model's layers are named
        ``"{model name}/{layer name}"``).

    Raises:
        ValueError: a recurrent layer rnncore cannot represent (the option is named), or
            one over a cell that is not SimpleRNN's, LSTM's or GRU's.
    """
    import keras  # noqa: PLC0415 - optional dependency

    out = OrderedDict()

    def visit(layer: Any, prefix: str) -> None:
        if isinstance(layer, keras.layers.Bidirectional):
            kind = keras_cell_kind(layer.forward_layer.cell)
        elif isinstance(layer, keras.layers.RNN):
            kind = keras_cell_kind(layer.cell)
        elif isinstance(layer, keras.Model):
            for sub in layer.layers:
                visit(sub, f"{prefix}{layer.name}/")
            return
        else:
            return
        if kind is None:
            raise ValueError(
                f"from_keras: layer {layer.name!r} ({type(layer).__name__}) is a recurrent "
                f"layer over a cell rnncore cannot represent; SimpleRNN, LSTM and GRU cells are"
            )
        out[f"{prefix}{layer.name}"] = _CLASSES[kind].from_keras(layer)

    if isinstance(model, keras.Model):
        for layer in model.layers:
            visit(layer, "")
    else:
        visit(model, "")
    return out


def lengths_from_mask(mask: Any) -> np.ndarray:
    """The ``lengths`` of a right-padding mask (a Keras mask, ``Masking`` layer's or given).

    A mask ``(B, T)`` (bool or 0/1; NumPy, PyTorch or Keras tensors) whose every row is
    ``True`` for its first ``n_b`` steps and ``False`` after is what rnncore's ``lengths``
    express: the Keras layer's outputs at the unmasked steps and its final states are the
    module's with ``lengths = [n_b]``.

    Returns:
        ``(B,)`` int64 lengths.

    Raises:
        ValueError: a mask that is not 2-D, a row that is not a prefix of ``True`` values
            (padding on the left, or holes: rnncore cannot represent those), or a row with
            no ``True`` at all (rnncore's lengths are at least 1).
    """
    if hasattr(mask, "detach"):  # a PyTorch tensor (Keras' torch backend), maybe on a GPU
        mask = mask.detach().cpu()
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (B, T), got {m.shape}")
    m = m.astype(bool)
    lengths = m.sum(axis=1).astype(np.int64)
    prefix = np.arange(m.shape[1])[None, :] < lengths[:, None]
    bad = np.flatnonzero((m != prefix).any(axis=1))
    if bad.size:
        raise ValueError(
            f"mask rows {bad.tolist()} are not right-padding masks (True for a first run of "
            f"steps, then False): rnncore's lengths cannot represent them"
        )
    if (lengths == 0).any():
        raise ValueError(
            f"mask rows {np.flatnonzero(lengths == 0).tolist()} mask every step; rnncore's "
            f"lengths are at least 1"
        )
    return lengths
