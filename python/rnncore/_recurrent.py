"""What RNN, LSTM and GRU share: the compiled model, calls, tapes, BPTT, running statistics.

The module turns user layouts (batch-first, unbatched, any dtype and strides) into the
time-major arrays the compiled core takes and back; all computation happens in the core.
The cells differ only in their options and in the LSTM's ``(h, c)`` state pairs.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from typing import Any

import numpy as np

from . import _core, _limits, _stream, init
from . import _validation as v
from ._module import Module, TapeBase
from ._options import BATCH_NORMS, REGULARIZERS, RecurrentOptions

_MAX_SEED = 2**64 - 1
_HALF_WEIGHTS = ("weight_ih", "weight_hh", "weight_hr")  # the matrices half_weights() rounds
_MASK_STREAM = 0x6D61736B  # the mask generator's second seed word, apart from init's


class Tape(TapeBase):
    """What ``forward_train`` keeps for ``backward``. Opaque; usable once."""

    __slots__ = ("_core_tape", "_batch_first", "_unbatched", "_seed", "_parameters")

    def __init__(self, core_tape, module, batch_first, unbatched, seed, parameters):
        self._core_tape = core_tape
        self._parameters = parameters  # a copy of the flat parameters the call used
        self._module = module
        self._batch_first = batch_first
        self._unbatched = unbatched
        self._seed = seed

    @property
    def seed(self) -> int:
        """The seed the call's dropout and zoneout masks were drawn from.

        Passing it as ``seed=`` to another training-mode call replays the same masks.
        """
        return self._seed

    @property
    def consumed(self) -> bool:
        """Whether ``backward`` has used this tape."""
        return self._core_tape.consumed

    def __repr__(self) -> str:
        state = "consumed" if self.consumed else "unused"
        return f"<rnncore.Tape T={self._core_tape.steps} B={self._core_tape.batch} {state}>"


class RecurrentModule(Module):
    """The machinery of RNN, LSTM and GRU; a subclass names its cell and its states."""

    _cell: str = ""
    _tape_type = Tape
    _tape_description = "an rnncore Tape"

    _options_class = RecurrentOptions
    _own_attributes = Module._own_attributes | {"_model", "_mask_rng", "_half", "_row_bytes"}

    def __init__(self, options: RecurrentOptions, seed: int | None):
        """Builds the compiled model of ``options`` and draws its parameters from ``seed``."""
        self._build(options)
        # The masks of each training-mode call come from a seed drawn here.
        self._mask_rng = np.random.default_rng(None if seed is None else [seed, _MASK_STREAM])
        init_rng = np.random.default_rng(seed)
        init._fill_default_parameters(self._params, options, init_rng)
        if options.chrono is not None:  # replaces the gate biases set above
            init.chrono(self, options.chrono, init_rng)

    @classmethod
    def _check_options(cls, options: RecurrentOptions) -> None:
        if options.cell != cls._cell:
            raise ValueError(f"{cls.__name__} options must have cell={cls._cell!r}")

    def _build(self, options: RecurrentOptions, *, zero: bool = True) -> None:
        self._check_options(options)
        self._options = options
        self._model = _new_core_model(options, zero)
        self._bind_parameters(
            self._model.parameter_buffer(), self._model.gradient_buffer(), self._layout()
        )
        self.training = True
        self._half = False

    def _layout(self) -> list:
        """The compiled model's parameter layout under this module's parameter names."""
        return self._model.layout

    # ------------------------------------------------------------ copies, pickles
    def _extra_state(self) -> dict:
        return {"mask_rng": self._mask_rng.bit_generator.state, "half": self._half}

    def _set_extra_state(self, state: dict) -> None:
        self._mask_rng = _generator(state["mask_rng"])
        if v.check_bool("half", state["half"]):
            self._make_half()

    @property
    def options(self) -> RecurrentOptions:
        """The module's options (frozen; every constructor argument but ``seed``)."""
        return self._options

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype of parameters, states and results."""
        return self._options.np_dtype

    @property
    def norm_options(self) -> dict:
        """``ln_eps``, ``bn_eps``, ``bn_momentum`` and ``bn_gamma``, as resolved."""
        return self._options.norm_options

    def _grad_buffer(self) -> np.ndarray:
        return self._model.gradient_buffer()

    # ------------------------------------------------------------------ buffers
    def buffers(self) -> OrderedDict:
        """Copies of the running statistics of the batch norms, by name.

        ``norm="batch"``: ``(S, width)``, one row per time step seen in training;
        ``norm="batch_input"``: ``(width,)``. Empty for other norms.
        """
        out = OrderedDict()
        for name, stats, variance, one_row, _ in self._model.buffer_layout:
            arr = self._model.get_running(stats)[1 if variance else 0]
            out[name] = arr[0] if one_row else arr
        return out

    def _buffer_names(self) -> tuple[str, ...]:
        return tuple(entry[0] for entry in self._model.buffer_layout)

    def _check_buffers(self, arrays: dict, wrong: list) -> list:
        layout = {name: (stats, var, one_row, width)
                  for name, stats, var, one_row, width in self._model.buffer_layout}  # fmt: skip
        for k, arr in arrays.items():
            _, _, one_row, width = layout[k]
            if one_row:
                ok = arr.shape == (width,)
                want = f"({width},)"
            else:
                ok = arr.ndim == 2 and arr.shape[1] == width
                want = f"(S, {width})"
            if not ok:
                wrong.append(f"{k}: expected {want}, got {arr.shape}")
        # The mean and variance of one site share their rows: pair them up.
        sites = {}
        for k, (stats, var, _, _) in layout.items():
            sites.setdefault(stats, [None, None])[1 if var else 0] = k
        current = None
        pending = []
        for stats, (mean_key, var_key) in sites.items():
            if mean_key not in arrays and var_key not in arrays:
                continue
            if current is None:
                current = self.buffers()
            mean = arrays.get(mean_key, current[mean_key])
            var = arrays.get(var_key, current[var_key])
            mean2, var2 = np.atleast_2d(mean), np.atleast_2d(var)
            if mean2.shape != var2.shape and not wrong:
                wrong.append(
                    f"{mean_key} and {var_key} must have the same shape, "
                    f"got {mean.shape} and {var.shape}"
                )
            pending.append((stats, mean2, var2))
        return pending

    def _write_buffers(self, pending: list) -> None:
        for stats, mean, var in pending:
            self._model.set_running(
                stats,
                np.ascontiguousarray(mean, dtype=self.dtype),
                np.ascontiguousarray(var, dtype=self.dtype),
            )

    # ------------------------------------------------------------- half weights
    def half_weights(self):
        """An inference-only copy of this module with its weight matrices in float16.

        The weight matrices (``weight_ih``, ``weight_hh`` and ``weight_hr`` of every
        layer and direction) are rounded to IEEE float16, to nearest, and kept in that
        format as well; everything else (biases, normalization parameters, running
        statistics, states, arithmetic) stays float32. The steps of sequences of 1 or 2
        rows and streamed single steps of up to 8 sequences read the float16 copies, half
        the bytes of float32, which is what bounds their speed; other products use the
        rounded float32 values, so every call computes the same model.

        The rounding changes each weight by at most 2**-11 of its magnitude (weights
        below 6.1e-5 in magnitude lose relative precision; above 65504 they become
        infinite, which raises here). The copy starts in eval mode and stays there: its
        parameters are read-only, and ``train()``, ``forward_train``, ``backward`` and
        ``load_state_dict`` raise ``RuntimeError``. Later changes to this module do not
        reach the copy. Float32 modules only.

        Returns:
            A new module of the same class and options.
        """
        if self.dtype != np.float32:
            raise ValueError("half_weights() needs a float32 module (dtype='float32')")
        for name, p in self._params.items():
            # 65520 and above round to infinity in float16.
            if name.startswith(_HALF_WEIGHTS) and np.any(np.abs(p) >= 65520):
                raise ValueError(
                    f"half_weights(): {name} has values beyond the float16 range (65504)"
                )
        other = copy.copy(self)  # independent (Module.__copy__)
        other._make_half()
        return other

    def _make_half(self) -> None:
        """Turns this module into a half_weights() copy (rounding rounded values is exact)."""
        self._model.use_half_weights()
        flat = self._model.parameter_buffer()
        flat.flags.writeable = False
        self._bind_parameters(flat, self._model.gradient_buffer(), self._layout())
        self.training = False
        self._half = True

    def _check_writable(self, what: str) -> None:
        if self._half:
            raise RuntimeError(
                f"{what} is not available on a half_weights() copy, which is for inference "
                f"only; train the float32 module and call half_weights() again"
            )

    # -------------------------------------------------------------------- calls
    def _prepare_x(self, x, train):
        o = self._options  # read once: this runs on every call
        x = v.real_array("x", x)
        if x.ndim == 2:
            unbatched = True
            x = x[:, None, :]
        elif x.ndim == 3:
            unbatched = False
            if o.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            layout = "(B, T, input_size)" if o.batch_first else "(T, B, input_size)"
            raise ValueError(
                f"x must have shape {layout} or (T, input_size), got {x.ndim} dimensions"
            )
        steps, batch, features = x.shape
        if features != o.input_size:
            raise ValueError(
                f"x must have {o.input_size} features on its last axis, got {features}"
            )
        if steps < 1 or batch < 1:
            raise ValueError(f"x must have at least one time step and one sequence: {x.shape}")
        if steps * batch * self._row_bytes[train] > _limits.PHYSICAL_MEMORY:
            self._refuse_call(steps, batch, train)
        # A view in any dtype and strides: the core makes the one copy it needs.
        return x, unbatched

    def _state(self, name, value, batch, width, unbatched):
        if value is None:
            return None
        num_states = self._options.num_states
        if (  # the common case, a state returned by the previous call: used as it is
            type(value) is np.ndarray
            and not unbatched
            and value.dtype == self.dtype
            and value.shape == (num_states, batch, width)
            and value.flags.c_contiguous
        ):
            return value
        arr = v.real_array(name, value)
        if unbatched:
            v.check_shape(name, arr, (num_states, width))
            arr = arr[:, None, :]
        else:
            v.check_shape(name, arr, (num_states, batch, width))
        return arr

    def _prepare(self, x, hx, lengths, train):
        x, unbatched = self._prepare_x(x, train)
        steps, batch, _ = x.shape
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths is not supported with unbatched (2-D) x")
            lengths = v.lengths_array(lengths, batch, steps)
        h0, c0 = self._split_hx(hx)
        h0 = self._state("h_0", h0, batch, self._options.out_size, unbatched)
        c0 = self._state("c_0", c0, batch, self._options.hidden_size, unbatched)
        return x, h0, c0, lengths, unbatched

    def _split_hx(self, hx):
        # RNN and GRU: hx is one array-like (nested lists too); the LSTM splits a pair
        return hx, None

    def _split_grad_h(self, grad_h_n):
        return grad_h_n, None

    def _pack_states(self, h, c):
        return h

    def _to_user(self, out, h_n, c_n, unbatched):
        if unbatched:
            out = out[:, 0, :]
            h_n = h_n[:, 0, :]
            c_n = None if c_n is None else c_n[:, 0, :]
        elif self._options.batch_first:
            out = out.transpose(1, 0, 2)
        return out, h_n, c_n

    def _call_seed(self, seed) -> int:
        if seed is not None:
            return v.check_int("seed", seed, 0, _MAX_SEED)
        if self.training and self._options.regularized:
            return int(self._mask_rng.integers(0, 2**63))
        return 0

    def _run(self, x, hx, lengths, train, seed):
        x, h0, c0, lengths, unbatched = self._prepare(x, hx, lengths, train)
        seed = self._call_seed(seed)
        if self.training and self._options.norm in BATCH_NORMS and x.shape[1] < 2:
            raise ValueError(
                f"norm={self.norm!r} in training mode needs a batch of at least 2 sequences "
                f"(x has {x.shape[1]}); call .eval() to use the running statistics"
            )
        out, h_n, c_n, tape = self._model.forward(
            x, h0=h0, c0=c0, lengths=lengths, record=train, training=self.training, seed=seed
        )
        out, h_n, c_n = self._to_user(out, h_n, c_n, unbatched)
        return out, self._pack_states(h_n, c_n), tape, unbatched, seed

    @functools.cached_property
    def _row_bytes(self) -> tuple[int, int]:
        """A lower bound of the bytes a call allocates per row of ``(T*B)``, in eval and in
        training mode: one direction's input projections of a layer, ``(T, B, G*H)``, and
        the output ``(T, B, D*H_out)``; a training call keeps at least the input
        projections of every layer and direction on its tape."""
        o = self._options
        out = o.num_directions * o.out_size
        eval_mode = (o.gates * o.hidden_size + out) * o.np_dtype.itemsize
        training = (o.num_states * o.gates * o.hidden_size + out) * o.np_dtype.itemsize
        return (eval_mode, training)

    def _refuse_call(self, steps: int, batch: int, train: bool) -> None:
        """Raises MemoryError for a call that needs more memory than the machine has."""
        _limits.require_memory(
            steps * batch * self._row_bytes[train],
            lambda: f"a call with T={steps}, B={batch} on {self!r}",
        )

    def __call__(self, x, hx=None, lengths=None, *, seed=None):
        """Runs the module (inference: nothing is kept for backward).

        In training mode, dropout and zoneout (when set) draw fresh masks on every call;
        in eval mode they are off (zoneout uses its expectation).

        Args:
            x: ``(T, B, input_size)``, ``(B, T, input_size)`` with ``batch_first``, or
                unbatched ``(T, input_size)``; any real dtype and strides.
            hx: initial state ``(D * num_layers, B, H_out)`` (LSTM: a ``(h_0, c_0)``
                pair) or None for zeros.
            lengths: optional integer array ``(B,)`` with values in ``1..T``.
            seed: the seed of this call's dropout and zoneout masks (an int in
                ``0..2**64-1``); default: drawn from the module's generator, itself
                seeded by the constructor's ``seed``.

        Returns:
            ``(out, h_n)``; for the LSTM ``(out, (h_n, c_n))``.

        Raises:
            ValueError: wrong shapes or values. TypeError: wrong types.
        """
        out, states, _, _, _ = self._run(x, hx, lengths, False, seed)
        return out, states

    forward = __call__

    def forward_train(self, x, hx=None, lengths=None, *, seed=None):
        """Like calling the module, and also returns the tape ``backward`` needs.

        The tape keeps the seed of the call's masks, so ``backward`` replays them
        exactly (``tape.seed``), and a copy of the parameters, so that ``backward`` can
        refuse to mix this call's activations with parameters changed since.

        Returns:
            ``(out, h_n, tape)``; for the LSTM ``h_n`` is the ``(h_n, c_n)`` pair.
        """
        self._check_writable("forward_train()")
        parameters = self._model.parameter_buffer().copy()
        out, states, core_tape, unbatched, seed = self._run(x, hx, lengths, True, seed)
        tape = Tape(core_tape, self, self._options.batch_first, unbatched, seed, parameters)
        return out, states, tape

    def backward(self, tape, grad_out, grad_h_n=None, *, return_step_norms=False):
        """Backpropagation through time over what ``forward_train`` recorded.

        Args:
            tape: the tape from ``forward_train`` of this module; usable once.
            grad_out: gradient of the loss w.r.t. ``out`` (its shape), or None.
            grad_h_n: gradient w.r.t. ``h_n`` (LSTM: ``(grad_h_n, grad_c_n)``, either
                part None), or None.
            return_step_norms: also return the per-step gradient diagnostics.

        Returns:
            ``(grad_x, grad_hx)``: ``grad_x`` in the layout of ``x``, ``grad_hx`` in the
            structure of ``hx`` (LSTM: ``(grad_h_0, grad_c_0)``). Parameter gradients are
            ADDED into ``self.grads``. With ``return_step_norms``, a third element
            ``(D * num_layers, T)``: for each layer and direction (ordered as the
            states) and each time step t, the Euclidean norm over the batch and the
            units of dL/dh_t, the gradient of the loss with respect to that layer's
            step output h_t (the projected one for a projected LSTM). Plotted against
            t, it shows gradients vanishing or exploding through time.

        Raises:
            TypeError: ``tape`` is not a Tape. ValueError: the tape is used or belongs to
            another module, or a gradient has the wrong shape. RuntimeError: the
            parameters changed since ``forward_train`` (any write, bit for bit).
        """
        self._check_writable("backward()")
        self._check_tape(tape)
        if not _same_bits(tape._parameters, self._model.parameter_buffer()):
            raise RuntimeError(
                "backward(): the parameters changed after forward_train() recorded this "
                "tape (an optimizer step, load_state_dict, an initializer or a write "
                "through parameters()); its activations belong to the old parameters: "
                "call forward_train again"
            )
        steps, batch = tape._core_tape.steps, tape._core_tape.batch
        width = self._options.num_directions * self._options.out_size
        dout = None
        if grad_out is not None:
            dout = v.real_array("grad_out", grad_out)
            if tape._unbatched:
                v.check_shape("grad_out", dout, (steps, width))
                dout = dout[:, None, :]
            elif tape._batch_first:
                v.check_shape("grad_out", dout, (batch, steps, width))
                dout = dout.transpose(1, 0, 2)
            else:
                v.check_shape("grad_out", dout, (steps, batch, width))
        gh, gc = self._split_grad_h(grad_h_n)
        gh = self._state("grad_h_n", gh, batch, self._options.out_size, tape._unbatched)
        gc = self._state("grad_c_n", gc, batch, self._options.hidden_size, tape._unbatched)
        return_step_norms = v.check_bool("return_step_norms", return_step_norms)
        dx, dh0, dc0, norms = self._model.backward(
            tape._core_tape, grad_out=dout, grad_h_n=gh, grad_c_n=gc, step_norms=return_step_norms
        )
        if tape._unbatched:
            dx, dh0 = dx[:, 0, :], dh0[:, 0, :]
            dc0 = None if dc0 is None else dc0[:, 0, :]
        elif tape._batch_first:
            dx = dx.transpose(1, 0, 2)
        if return_step_norms:
            return dx, self._pack_states(dh0, dc0), norms
        return dx, self._pack_states(dh0, dc0)

    def stream(self, batch_size: int = 1, hx: Any = None):
        """A stream: step-by-step inference, the state kept between calls (eval mode).

        ``s = m.stream(); y = s.step(x_t)`` continues the sequence on every call; see
        ``rnncore.Stream``. Stepping through a sequence gives what ``m(x)`` gives.

        Args:
            batch_size: the number of rows (sequences) B.
            hx: the initial state, as for a call (``(num_layers, B, H_out)``; LSTM a
                ``(h_0, c_0)`` pair; ``(num_layers, H_out)`` when B is 1), or None for zeros.

        Raises:
            ValueError: a bidirectional module, a module in training mode, or a wrong
            ``hx``.
        """
        return _stream.new_stream(self, batch_size, hx)

    # -------------------------------------------------------------------- torch
    @classmethod
    def _from_torch_options(cls, module: Any, dtype: str):
        kwargs = dict(
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
            dtype=dtype,
        )
        kwargs.update(cls._torch_options(module))
        return cls(module.input_size, module.hidden_size, **kwargs)

    @classmethod
    def _torch_options(cls, module: Any) -> dict:
        return {}

    # -------------------------------------------------------------------- keras
    @classmethod
    def from_keras(cls, layer: Any):
        """Builds an equivalent module from a built Keras 3 layer, in eval mode.

        ``RNN``: ``keras.layers.SimpleRNN``; ``LSTM``: ``LSTM``; ``GRU``: ``GRU`` (either
        ``reset_after``); or ``keras.layers.RNN`` over the matching cell, or a
        ``Bidirectional(..., merge_mode="concat")`` of one. The module is batch-first, as
        Keras is; Keras' ``dropout`` / ``recurrent_dropout`` become ``input_dropout`` /
        ``recurrent_dropout``. A cell class takes the matching Keras cell.

        Raises:
            TypeError: ``layer`` is not the matching Keras class.
            ValueError: an option rnncore cannot represent (named in the message):
                activations other than tanh/sigmoid (SimpleRNN: tanh or relu),
                ``stateful``, another ``merge_mode``; or an unbuilt layer.
                (``go_backwards`` outside a Bidirectional becomes ``reverse=True``.)
        """
        from ._interop.keras_layers import module_from_keras  # noqa: PLC0415 - needs keras

        return module_from_keras(cls, layer)

    def __repr__(self) -> str:
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            opts.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            opts.append("bidirectional=True")
        if self._options.reverse:
            opts.append("reverse=True")
        opts += [f"{key}={value}" for key, value in self._options.cell_options.items()]
        if self.batch_first:
            opts.append("batch_first=True")
        for key in ("dropout", *REGULARIZERS):
            if getattr(self, key) > 0:
                opts.append(f"{key}={getattr(self, key)}")
        opts.append(f"dtype={self.dtype.name}")
        if self._half:
            opts.append("half_weights")
        return f"rnncore.{type(self).__name__}({', '.join(opts)})"


def _option(name: str) -> property:
    return property(lambda self: getattr(self._options, name), doc=f"The ``{name}`` option.")


# The options read as attributes (read-only: the compiled model was built from them).
for _name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
              "bidirectional", "reverse", "nonlinearity", "proj_size", "reset_after", "norm",
              "forget_bias", "update_bias", "chrono", "clip", "cell_clip", "peephole",
              "input_forget", *REGULARIZERS):  # fmt: skip
    setattr(RecurrentModule, _name, _option(_name))


def _new_core_model(o: RecurrentOptions, zero: bool = True):
    """The compiled model of the options: zero parameters, or unset ones (``zero=False``)."""
    core_class = _core.ModelF64 if o.np_dtype == np.float64 else _core.ModelF32
    return core_class(
        cell=o.cell,
        input_size=o.input_size,
        hidden_size=o.hidden_size,
        num_layers=o.num_layers,
        bidirectional=o.bidirectional,
        reverse=o.reverse,
        bias=o.bias,
        proj_size=o.proj_size,
        nonlinearity=o.nonlinearity,
        reset_after=o.reset_after,
        norm=o.norm or "none",
        ln_eps=o.ln_eps,
        bn_eps=o.bn_eps,
        bn_momentum=o.bn_momentum,
        dropout=o.dropout,
        input_dropout=o.input_dropout,
        recurrent_dropout=o.recurrent_dropout,
        zoneout=o.zoneout,
        zero_parameters=zero,
        **o.cell_options,  # only those set (the core's 0 is no clip): builds on any core
    )


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


def _generator(state: Any) -> np.random.Generator:
    """A NumPy generator in the pickled ``bit_generator.state`` ``state``."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"mask generator state: unknown bit generator {name!r}")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two flat arrays hold the same bytes (NaNs included): one memcmp."""
    return bool(_core.same_bytes(a, b))
