"""Gate orders: rnncore's (PyTorch's), Keras' and ONNX's, and permutations between them.

rnncore stores the gate blocks of ``weight_ih`` ``(G*H, I)``, ``weight_hh`` ``(G*H, H_out)``,
``bias_ih`` and ``bias_hh`` ``(G*H,)`` in PyTorch's order: LSTM ``i, f, g, o``, GRU
``r, z, n``. Keras stores the transposes, with LSTM blocks ``i, f, c, o`` (PyTorch's order)
and GRU blocks ``z, r, h``; ONNX stores ``(G*H, I)`` matrices with LSTM blocks ``i, o, f, c``
and GRU blocks ``z, r, h``.
"""

from __future__ import annotations

import numpy as np

#: cell -> the rnncore (torch) block that each ONNX block holds, in ONNX's order.
ONNX_FROM_TORCH = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
#: cell -> the ONNX block that each rnncore block holds, in rnncore's order.
TORCH_FROM_ONNX = {"rnn": (0,), "lstm": (0, 2, 3, 1), "gru": (1, 0, 2)}
#: cell -> the Keras block that each rnncore block holds, in rnncore's order.
TORCH_FROM_KERAS = {"rnn": (0,), "lstm": (0, 1, 2, 3), "gru": (1, 0, 2)}
#: the ONNX operator of each cell
ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
#: the number of gate blocks of each cell
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def permute_blocks(a: np.ndarray, order: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """The ``len(order)`` equal blocks of ``a`` along ``axis``, taken in ``order``.

    Returns:
        a new C-contiguous array (the values are copied, never rounded).
    """
    blocks = np.split(np.asarray(a), len(order), axis=axis)
    return np.ascontiguousarray(np.concatenate([blocks[i] for i in order], axis=axis))
