"""The public recurrent modules: rnncore.RNN, rnncore.LSTM, rnncore.GRU.

Each constructor checks its arguments into one frozen options object
(``rnncore._options``); the machinery they share is ``rnncore._recurrent``.
"""

from __future__ import annotations

from typing import Any

from ._options import recurrent_options
from ._recurrent import RecurrentModule


class RNN(RecurrentModule):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.

    Layouts and semantics follow ``torch.nn.RNN``; see the package documentation.
    """

    _cell = "rnn"
    _torch_class = "RNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        norm: str | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        init: str = "default",
        reverse: bool = False,
        clip: float | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        **norm_options,
    ):
        super().__init__(*recurrent_options(
            "rnn", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, norm, dtype, seed, init, nonlinearity=nonlinearity, reverse=reverse,
            clip=clip, norm_options=norm_options,
            regularizers=dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                              zoneout=zoneout),
        ))  # fmt: skip

    @classmethod
    def _torch_options(cls, module) -> dict:
        return {"nonlinearity": module.nonlinearity}


_REGULARIZATION_DOC = """
    Regularization (training mode; masks drawn per call from a seedable generator and
    replayed exactly by ``backward``; inverted scaling):

    - ``dropout``: PyTorch's, on the outputs of every layer but the last.
    - ``input_dropout``: variational dropout of each layer's input (one mask per sequence,
      the same at every step; Keras' ``dropout``, Gal & Ghahramani 2016).
    - ``recurrent_dropout``: variational dropout of ``h_{t-1}`` where it enters the
      recurrent product (Keras' ``recurrent_dropout``).
    - ``zoneout``: each unit of h (and of the LSTM cell) keeps its previous value with this
      probability (Krueger et al. 2017); eval mode uses the expectation
      ``s_t = p s_{t-1} + (1 - p) s~_t``.
"""


class LSTM(RecurrentModule):
    """LSTM with gates i, f, g, o and optional projection, as ``torch.nn.LSTM``.

    ``hx`` and the returned state are ``(h, c)`` pairs. ``forget_bias`` is the initial
    forget-gate bias; ``chrono=T_max`` draws the gate biases by chrono initialization
    instead (``rnncore.init.chrono``).

    LSTM cell options (any norm, projection, direction, zoneout), with
    ``a = N_x(x W_ih^T) + N_h(h W_hh^T) + b_ih + b_hh`` split into ``a_i, a_f, a_g, a_o``:

    - ``peephole=True``: parameters ``weight_ci_l{k}``, ``weight_cf_l{k}``,
      ``weight_co_l{k}`` (``(hidden_size,)`` each; ``_reverse`` for the backward
      direction), after ``weight_hr`` in each layer's order; ``a_i += w_ci * c_{t-1}``,
      ``a_f += w_cf * c_{t-1}``, ``a_o += w_co * c_t`` (the new, un-normalized cell value).
      Drawn ``U(-1/sqrt(H), 1/sqrt(H))`` with either ``init``.
    - ``cell_clip``: the new cell value is clamped to ``[-cell_clip, cell_clip]`` right
      after its update (TFLite's cell clip), before the output gate's peephole, ``N_c``,
      the output and zoneout.
    - ``input_forget=True``: coupled gates, ``f = 1 - i`` (ONNX's ``input_forget``); the
      forget gate's blocks of the biases and normalization gains, and ``weight_cf``, are
      unused (zero gradient), and so are its rows of the weights but with
      ``norm="layer"``, whose statistics over the four gates still read them.
    """

    _cell = "lstm"
    _torch_class = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        norm: str | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        init: str = "default",
        reverse: bool = False,
        clip: float | None = None,
        peephole: bool = False,
        cell_clip: float | None = None,
        input_forget: bool = False,
        forget_bias: float = 1.0,
        chrono: float | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        **norm_options,
    ):
        super().__init__(*recurrent_options(
            "lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, norm, dtype, seed, init, proj_size=proj_size, reverse=reverse,
            forget_bias=forget_bias, clip=clip, peephole=peephole, cell_clip=cell_clip,
            input_forget=input_forget, norm_options=norm_options, chrono=chrono,
            regularizers=dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                              zoneout=zoneout),
        ))  # fmt: skip

    def _split_hx(self, hx):
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be None or a (h_0, c_0) pair for the LSTM")
        return hx[0], hx[1]

    def _split_grad_h(self, grad_h_n):
        if grad_h_n is None:
            return None, None
        if not isinstance(grad_h_n, (tuple, list)) or len(grad_h_n) != 2:
            raise TypeError("grad_h_n must be None or a (grad_h_n, grad_c_n) pair for the LSTM")
        return grad_h_n[0], grad_h_n[1]

    def _pack_states(self, h, c):
        return (h, c)

    @classmethod
    def _torch_options(cls, module) -> dict:
        return {"proj_size": module.proj_size}


class GRU(RecurrentModule):
    """GRU with gates r, z, n. ``reset_after=True`` is PyTorch's / cuDNN's form.

    ``update_bias`` is the initial z-gate bias; ``chrono=T_max`` draws it by chrono
    initialization instead (``rnncore.init.chrono``).
    """

    _cell = "gru"
    _torch_class = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        reset_after: bool = True,
        norm: str | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        init: str = "default",
        reverse: bool = False,
        clip: float | None = None,
        update_bias: float = 0.0,
        chrono: float | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        **norm_options,
    ):
        super().__init__(*recurrent_options(
            "gru", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, norm, dtype, seed, init, reset_after=reset_after, reverse=reverse,
            update_bias=update_bias, clip=clip,
            norm_options=norm_options, chrono=chrono,
            regularizers=dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                              zoneout=zoneout),
        ))  # fmt: skip


_REVERSE_DOC = """
    ``reverse=True``: one direction that runs backward in time, each sequence from its last
    valid step (``lengths``) to its first, as ONNX's ``direction="reverse"``; ``out`` stays
    in time order and ``h_n`` is the state after the first step. Not with
    ``bidirectional``; not streamable.
"""

_CLIP_DOC = """
    ``clip``: ONNX's clip, a positive finite number or None: the input of every gate
    activation is clamped to ``[-clip, clip]`` before the activation (RNN: the activation's
    input, after the layer norm of ``norm="layer"`` and the biases; GRU: the r and z
    pre-activations and the whole argument of the candidate's tanh; LSTM: ``a_i``, ``a_f``,
    ``a_g``, ``a_o`` after the peepholes, not the ``tanh`` of the cell state). The gradient
    is zero where a value was clamped.
"""

for _cls in (RNN, LSTM, GRU):
    _cls.__doc__ = (_cls.__doc__ or "") + _REGULARIZATION_DOC + _REVERSE_DOC + _CLIP_DOC
