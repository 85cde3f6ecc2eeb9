"""The single-step cells: rnncore.RNNCell, rnncore.LSTMCell, rnncore.GRUCell.

A cell is one time step of one layer, as ``torch.nn.RNNCell`` / ``LSTMCell`` /
``GRUCell``: ``h' = cell(x, h)``. Each is a ``RecurrentModule`` over a one-layer,
unidirectional compiled model without dropout, so a cell computes exactly what the
matching module computes for one step (the same core call, bit for bit), and shares its
tapes, backward pass, copies, files and ``half_weights()``. Only the names differ: the
cell's parameters are the layer-0 names of the module without the ``_l0`` suffix
(``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``ln_ih_weight``, ...), which are
PyTorch's cell names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validation as v
from ._options import REGULARIZERS, RecurrentOptions, recurrent_options
from ._recurrent import RecurrentModule

#: The normalizations a cell offers (batch norms need statistics over whole sequences).
CELL_NORMS = (None, "layer")
# The options of a cell's compiled model that only a sequence module can set.
_SEQUENCE_OPTIONS = {
    "num_layers": 1,
    "batch_first": False,
    "bidirectional": False,
    "reverse": False,
    "dropout": 0.0,
    "proj_size": 0,
    "chrono": None,
    "clip": None,
    "cell_clip": None,
    "peephole": False,
    "input_forget": False,
    **{k: 0.0 for k in REGULARIZERS},
}
_SUFFIX = "_l0"


def _check_norm(what: str, norm: Any) -> None:
    if norm not in CELL_NORMS:
        raise ValueError(
            f"{what}: norm must be None or 'layer', got {norm!r} (the batch norms normalize "
            f"with the statistics of every time step of a sequence, which a cell does not see)"
        )


class _Cell(RecurrentModule):
    """One time step of a one-layer RNN, LSTM or GRU; a subclass names its cell."""

    # ------------------------------------------------------------ construction
    @classmethod
    def _check_options(cls, options: RecurrentOptions) -> None:
        # Constructors, pickles and model files all come through here (by _build).
        super()._check_options(options)
        what = cls.__name__
        _check_norm(what, options.norm)
        wrong = [f"{k}={getattr(options, k)!r}" for k, want in _SEQUENCE_OPTIONS.items()
                 if getattr(options, k) != want]  # fmt: skip
        if wrong:
            raise ValueError(
                f"{what} is one step of one layer: it has no {', '.join(wrong)} "
                f"(use rnncore.{what[:-4]} for those)"
            )

    def _layout(self) -> list:
        out = []
        for name, shape, offset in self._model.layout:
            if not name.endswith(_SUFFIX):  # pragma: no cover - one layer, one direction
                raise AssertionError(f"unexpected parameter {name} in a cell")
            out.append((name[: -len(_SUFFIX)], shape, offset))
        return out

    # -------------------------------------------------------------------- calls
    def _shapes(self, x: Any) -> tuple[np.ndarray, tuple[int, ...], str]:
        """``x`` checked, the shape of its states, and how to describe them in errors."""
        o = self._options
        x = v.real_array("x", x)
        if x.ndim not in (1, 2) or x.shape[-1] != o.input_size or x.size == 0:
            raise ValueError(
                f"x must have shape (B, {o.input_size}) or unbatched ({o.input_size},) "
                f"(one time step: B >= 1 rows of input_size={o.input_size} features), "
                f"got shape {x.shape}"
            )
        if x.ndim == 1:
            return x, (o.hidden_size,), f"(hidden_size,) = ({o.hidden_size},) for unbatched x"
        shape = (x.shape[0], o.hidden_size)
        return x, shape, f"(B, hidden_size) = {shape}"

    def _step_state(self, name: str, value: Any, shape: tuple[int, ...], want: str):
        """A state or gradient of one step, checked, with the module's leading state axis."""
        if value is None:
            return None
        arr = v.real_array(name, value)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
        return arr[None]

    def _step_inputs(self, x, hx):
        x, shape, want = self._shapes(x)
        return x[None], self._step_hx(hx, shape, want)

    def _step_hx(self, hx, shape, want):  # RNN, GRU: one array or None
        return self._step_state("hx", hx, shape, want)

    def _step_grad(self, grad_h, shape, want):
        return self._step_state("grad_h", grad_h, shape, want)

    def _step_result(self, states):  # RNN, GRU: h_n (1, ...) -> h'
        return states[0]

    def __call__(self, x, hx=None):
        """One time step (nothing is kept for backward).

        Args:
            x: ``(B, input_size)`` or unbatched ``(input_size,)``; any real dtype.
            hx: the state ``(B, hidden_size)`` (unbatched: ``(hidden_size,)``), or None
                for zeros; ``LSTMCell``: None or an ``(h, c)`` pair of such arrays.

        Returns:
            ``h'`` of the state's shape; ``LSTMCell``: ``(h', c')``.

        Raises:
            ValueError: wrong shapes. TypeError: wrong types.
        """
        x, hx = self._step_inputs(x, hx)
        _, states, _, _, _ = self._run(x, hx, None, False, None)
        return self._step_result(states)

    forward = __call__

    def forward_train(self, x, hx=None):
        """Like calling the cell, and also returns the tape ``backward`` needs.

        Returns:
            ``(h', tape)``; ``LSTMCell``: ``((h', c'), tape)``.
        """
        x, hx = self._step_inputs(x, hx)
        _, states, tape = super().forward_train(x, hx)
        return self._step_result(states), tape

    def backward(self, tape, grad_h):
        """Backpropagation through the step that ``forward_train`` recorded.

        Args:
            tape: the tape of this cell's ``forward_train``; usable once.
            grad_h: the gradient of the loss w.r.t. ``h'`` (its shape), or None for zero;
                ``LSTMCell``: None or a ``(grad_h, grad_c)`` pair, either part None.

        Returns:
            ``(grad_x, grad_hx)`` in the shapes of ``x`` and of the state (``LSTMCell``:
            ``grad_hx = (grad_h, grad_c)``); given even when ``hx`` was None. The
            parameter gradients are ADDED into ``self.grads``, so a loop over the steps
            of a sequence, backward from the last, accumulates the sequence's gradient.

        Raises:
            TypeError: ``tape`` is not a Tape, or a wrong type of gradient. ValueError:
            the tape is used or belongs to another module, or a gradient has the wrong
            shape. RuntimeError: the parameters changed since ``forward_train``.
        """
        self._check_writable("backward()")
        self._check_tape(tape)
        h = self._options.hidden_size
        if tape._unbatched:
            shape, want = (h,), f"(hidden_size,) = ({h},) for an unbatched step"
        else:
            shape = (tape._core_tape.batch, h)
            want = f"(B, hidden_size) = {shape}"
        grad = self._step_grad(grad_h, shape, want)
        dx, dhx = super().backward(tape, None, grad)
        return dx[0], self._step_result(dhx)

    # -------------------------------------------------------------------- torch
    @classmethod
    def _from_torch_options(cls, module: Any, dtype: str):
        kwargs = dict(bias=module.bias, dtype=dtype)
        kwargs.update(cls._torch_options(module))
        return cls(module.input_size, module.hidden_size, **kwargs)

    def _repr_options(self) -> list[str]:
        return []

    def __repr__(self) -> str:
        o = self._options
        opts = [f"{o.input_size}", f"{o.hidden_size}"]
        if not o.bias:
            opts.append("bias=False")
        opts += self._repr_options()
        if o.norm is not None:
            opts.append(f"norm={o.norm!r}")
        opts.append(f"dtype={o.dtype}")
        if self._half:
            opts.append("half_weights")
        return f"rnncore.{type(self).__name__}({', '.join(opts)})"


def _absent(name: str) -> property:
    def get(self):
        raise AttributeError(
            f"{type(self).__name__} has no {name!r}: a cell is one time step of one layer"
        )

    return property(get, doc=f"Not an option of a cell (``{name}`` is a module's).")


# A sequence module's options that a cell does not have (num_layers stays: it is 1).
for _name in _SEQUENCE_OPTIONS:
    if _name != "num_layers":
        setattr(_Cell, _name, _absent(_name))


class RNNCell(_Cell):
    """Elman RNN cell, ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, as
    ``torch.nn.RNNCell``; ``norm="layer"`` normalizes the sum before ``act``."""

    _cell = "rnn"
    _torch_class = "RNNCell"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        norm: str | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        init: str = "default",
        ln_eps: float = 1e-5,
    ):
        _check_norm("RNNCell", norm)
        super().__init__(*recurrent_options(
            "rnn", input_size, hidden_size, 1, bias, False, 0.0, False, norm, dtype, seed,
            init, nonlinearity=nonlinearity, norm_options={"ln_eps": ln_eps},
        ))  # fmt: skip

    @classmethod
    def _torch_options(cls, module) -> dict:
        return {"nonlinearity": module.nonlinearity}

    def _repr_options(self) -> list[str]:
        o = self._options
        return [] if o.nonlinearity == "tanh" else [f"nonlinearity={o.nonlinearity!r}"]


class LSTMCell(_Cell):
    """LSTM cell with gates i, f, g, o, as ``torch.nn.LSTMCell``: ``(h', c') = cell(x,
    (h, c))``. ``forget_bias`` is the initial forget-gate block of ``bias_ih``."""

    _cell = "lstm"
    _torch_class = "LSTMCell"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        norm: str | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        init: str = "default",
        forget_bias: float = 1.0,
        ln_eps: float = 1e-5,
    ):
        _check_norm("LSTMCell", norm)
        super().__init__(*recurrent_options(
            "lstm", input_size, hidden_size, 1, bias, False, 0.0, False, norm, dtype, seed,
            init, forget_bias=forget_bias, norm_options={"ln_eps": ln_eps},
        ))  # fmt: skip

    def _step_hx(self, hx, shape, want):
        if hx is None:
            return None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2 or hx[0] is None or hx[1] is None:
            raise TypeError(
                f"hx must be None or an (h, c) pair of arrays of shape {want} for the "
                f"LSTMCell, got {type(hx).__name__}"
            )
        return (
            self._step_state("hx[0] (h)", hx[0], shape, want),
            self._step_state("hx[1] (c)", hx[1], shape, want),
        )

    def _step_grad(self, grad_h, shape, want):
        if grad_h is None:
            return None
        if not isinstance(grad_h, (tuple, list)) or len(grad_h) != 2:
            raise TypeError(
                f"grad_h must be None or a (grad_h, grad_c) pair for the LSTMCell (either "
                f"part None), got {type(grad_h).__name__}"
            )
        return (
            self._step_state("grad_h[0] (h)", grad_h[0], shape, want),
            self._step_state("grad_h[1] (c)", grad_h[1], shape, want),
        )

    # The module-level state pairs the shared machinery passes around.
    def _split_hx(self, hx):
        return (None, None) if hx is None else hx

    def _split_grad_h(self, grad_h_n):
        return (None, None) if grad_h_n is None else grad_h_n

    def _pack_states(self, h, c):
        return (h, c)

    def _step_result(self, states):
        return (states[0][0], states[1][0])


class GRUCell(_Cell):
    """GRU cell with gates r, z, n, as ``torch.nn.GRUCell`` (``reset_after=True``);
    ``reset_after=False`` is the original GRU. ``update_bias`` is the initial z block of
    ``bias_ih``."""

    _cell = "gru"
    _torch_class = "GRUCell"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        norm: str | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        *,
        init: str = "default",
        update_bias: float = 0.0,
        ln_eps: float = 1e-5,
    ):
        _check_norm("GRUCell", norm)
        super().__init__(*recurrent_options(
            "gru", input_size, hidden_size, 1, bias, False, 0.0, False, norm, dtype, seed,
            init, reset_after=reset_after, update_bias=update_bias,
            norm_options={"ln_eps": ln_eps},
        ))  # fmt: skip

    def _repr_options(self) -> list[str]:
        return [] if self._options.reset_after else ["reset_after=False"]
