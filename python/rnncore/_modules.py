"""The public recurrent modules: rnncore.RNN, rnncore.LSTM, rnncore.GRU.

They check arguments, own the mode and the parameter views, and turn user layouts
(batch-first, unbatched, any dtype and strides) into the time-major contiguous arrays
the compiled core takes. All computation happens in the core.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np

from . import _core, _init
from . import _validation as v

_MAX_DIM = 2**31 - 1
_MAX_BYTES = 2**40
_NORMS = (None, "layer", "batch", "batch_input")
_NORM_OPTIONS = {"ln_eps": 1e-5, "bn_eps": 1e-5, "bn_momentum": 0.1, "bn_gamma": None}
_BATCH_NORMS = ("batch", "batch_input")
_REGULARIZERS = ("input_dropout", "recurrent_dropout", "zoneout")
_MAX_SEED = 2**64 - 1


class Tape:
    """What ``forward_train`` keeps for ``backward``. Opaque; usable once."""

    __slots__ = ("_core_tape", "_module", "_batch_first", "_unbatched", "_seed")

    def __init__(self, core_tape, module, batch_first, unbatched, seed):
        self._core_tape = core_tape
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


class _RecurrentBase:
    """Shared machinery of RNN, LSTM and GRU."""

    _cell: str = ""
    _gates: int = 0

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first,
        dropout,
        bidirectional,
        norm,
        dtype,
        seed,
        init,
        *,
        nonlinearity="tanh",
        proj_size=0,
        reset_after=True,
        forget_bias=1.0,
        update_bias=0.0,
        norm_options=None,
        regularizers=None,
        chrono=None,
    ):
        self.input_size = v.check_int("input_size", input_size, 1)
        self.hidden_size = v.check_int("hidden_size", hidden_size, 1)
        self.num_layers = v.check_int("num_layers", num_layers, 1)
        self.bias = v.check_bool("bias", bias)
        self.batch_first = v.check_bool("batch_first", batch_first)
        self.bidirectional = v.check_bool("bidirectional", bidirectional)
        self.dropout = v.check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        self.dtype = v.parse_dtype(dtype)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.proj_size = v.check_int("proj_size", proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
                f"got {self.proj_size}"
            )
        self.reset_after = v.check_bool("reset_after", reset_after)
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        self.norm = norm
        options = dict(_NORM_OPTIONS)
        for key, value in (norm_options or {}).items():
            if key not in _NORM_OPTIONS:
                raise TypeError(f"unexpected keyword argument {key!r}")
            if key == "bn_gamma" and value is None:
                continue
            high = 1.0 if key == "bn_momentum" else np.inf
            options[key] = v.check_float(key, value, 0.0, high, high_open=key != "bn_momentum")
        if options["bn_gamma"] is None:  # spec: 0.1 for recurrent batch norm, 1 for batch_input
            options["bn_gamma"] = 1.0 if norm == "batch_input" else 0.1
        self.norm_options = options
        if norm is not None and self._cell == "gru" and not self.reset_after:
            raise ValueError("reset_after=False is only available with norm=None")
        if init not in ("default", "torch"):
            raise ValueError(f"init must be 'default' or 'torch', got {init!r}")
        if seed is not None:
            seed = v.check_int("seed", seed, 0)
        self._check_size()
        self.forget_bias = float(forget_bias)
        self.update_bias = float(update_bias)
        reg = dict(regularizers or {})
        for key in _REGULARIZERS:
            setattr(self, key, v.check_float(key, reg.get(key, 0.0), 0.0, 1.0, high_open=True))
        # The masks of each training-mode call come from a seed drawn here.
        self._mask_rng = np.random.default_rng(None if seed is None else [seed, 0x6D61736B])

        core_class = _core.ModelF64 if self.dtype == np.float64 else _core.ModelF32
        self._model = core_class(
            cell=self._cell,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            bias=self.bias,
            proj_size=self.proj_size,
            nonlinearity=self.nonlinearity,
            reset_after=self.reset_after,
            norm=norm or "none",
            ln_eps=options["ln_eps"],
            bn_eps=options["bn_eps"],
            bn_momentum=options["bn_momentum"],
            dropout=self.dropout,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
            zoneout=self.zoneout,
        )
        self._params = self._views(self._model.parameter_buffer())
        self._grads = self._views(self._model.gradient_buffer())
        self.training = True
        self._half = False
        init_rng = np.random.default_rng(seed)
        _init.init_parameters(
            self._params,
            cell=self._cell,
            hidden_size=self.hidden_size,
            gates=self._gates,
            scheme=init,
            rng=init_rng,
            forget_bias=self.forget_bias,
            update_bias=self.update_bias,
            bn_gamma=options["bn_gamma"],
        )
        self.chrono = chrono
        if chrono is not None:  # replaces the gate biases set above
            from . import init as public_init  # noqa: PLC0415 - it imports this module

            public_init.chrono(self, chrono, init_rng)

    def _check_size(self) -> None:
        """Refuses models whose parameter count cannot be allocated, naming the culprit."""
        for name in ("input_size", "hidden_size", "num_layers"):
            if getattr(self, name) > _MAX_DIM:
                raise ValueError(f"{name} must be at most {_MAX_DIM}, got {getattr(self, name)}")
        g, h, p = self._gates, self.hidden_size, self._out_size
        d = 2 if self.bidirectional else 1
        count = 0
        for k in range(self.num_layers):
            inp = self.input_size if k == 0 else d * p
            count += d * (g * h * (inp + p + 2) + self.proj_size * h)
        if count * self.dtype.itemsize > _MAX_BYTES:
            raise MemoryError(
                f"a model with input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers} has {count} parameters: too many to allocate"
            )

    # ------------------------------------------------------------------ params
    def _views(self, flat: np.ndarray) -> OrderedDict:
        out = OrderedDict()
        for name, shape, offset in self._model.layout:
            size = int(np.prod(shape))
            out[name] = flat[offset : offset + size].reshape(shape)
        return out

    def parameters(self) -> OrderedDict:
        """Ordered dict name -> live NumPy view (writing into it changes the model)."""
        return OrderedDict(self._params)

    @property
    def grads(self) -> OrderedDict:
        """Accumulated parameter gradients, same keys and shapes as ``parameters()``."""
        return OrderedDict(self._grads)

    def zero_grad(self) -> None:
        """Sets every accumulated gradient to zero."""
        self._model.gradient_buffer()[...] = 0

    def num_parameters(self) -> int:
        """The number of trainable scalars."""
        return int(sum(p.size for p in self._params.values()))

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

    def state_dict(self) -> OrderedDict:
        """Copies of the parameters, then the buffers, by name."""
        state = OrderedDict((k, p.copy()) for k, p in self._params.items())
        state.update(self.buffers())
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copies arrays (or PyTorch tensors) into the parameters.

        Args:
            state_dict: mapping name -> array-like of the parameter's shape.
            strict: when True, every parameter must be present and nothing else.

        Raises:
            KeyError: missing or unexpected names (strict), all listed.
            ValueError: entries of the wrong shape, all listed.
            TypeError: entries that are not real arrays.
        """
        self._refuse_if_half("load_state_dict()")
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        layout = {name: (stats, var, one_row, width)
                  for name, stats, var, one_row, width in self._model.buffer_layout}  # fmt: skip
        expected = list(self._params) + list(layout)
        keys = list(state_dict.keys())
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in keys if k not in self._params and k not in layout]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        arrays, wrong = {}, []
        for k in keys:
            if k in self._params:
                arr = v.real_array(f"state_dict[{k!r}]", state_dict[k])
                if arr.shape != self._params[k].shape:
                    wrong.append(f"{k}: expected {self._params[k].shape}, got {arr.shape}")
                arrays[k] = arr
            elif k in layout:
                arr = v.real_array(f"state_dict[{k!r}]", state_dict[k])
                _, _, one_row, width = layout[k]
                if one_row:
                    ok = arr.shape == (width,)
                    want = f"({width},)"
                else:
                    ok = arr.ndim == 2 and arr.shape[1] == width
                    want = f"(S, {width})"
                if not ok:
                    wrong.append(f"{k}: expected {want}, got {arr.shape}")
                arrays[k] = arr
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
        if wrong:
            raise ValueError("load_state_dict: wrong shapes: " + "; ".join(wrong))
        for k, arr in arrays.items():
            if k in self._params:
                self._params[k][...] = arr
        for stats, mean, var in pending:
            self._model.set_running(
                stats,
                np.ascontiguousarray(mean, dtype=self.dtype),
                np.ascontiguousarray(var, dtype=self.dtype),
            )

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
            if name.startswith("weight_") and np.any(np.abs(p) >= 65520):
                raise ValueError(
                    f"half_weights(): {name} has values beyond the float16 range (65504)"
                )
        other = copy.copy(self)
        other._model = self._model.copy()
        other._model.use_half_weights()
        flat = other._model.parameter_buffer()
        flat.flags.writeable = False
        other._params = other._views(flat)
        other._grads = other._views(other._model.gradient_buffer())
        other._mask_rng = copy.deepcopy(self._mask_rng)
        other.training = False
        other._half = True
        return other

    def _refuse_if_half(self, what: str) -> None:
        if self._half:
            raise RuntimeError(
                f"{what} is not available on a half_weights() copy, which is for inference "
                f"only; train the float32 module and call half_weights() again"
            )

    # -------------------------------------------------------------------- mode
    def train(self, mode: bool = True):
        """Sets training mode (or eval mode with ``mode=False``); returns self."""
        mode = v.check_bool("mode", mode)
        if mode:
            self._refuse_if_half("train()")
        self.training = mode
        return self

    def eval(self):
        """Sets eval mode; returns self."""
        return self.train(False)

    # ------------------------------------------------------------------- calls
    @property
    def _num_states(self) -> int:
        return self.num_layers * (2 if self.bidirectional else 1)

    @property
    def _out_size(self) -> int:
        return self.proj_size if self.proj_size else self.hidden_size

    def _prepare_x(self, x):
        x = v.real_array("x", x)
        if x.ndim == 2:
            unbatched = True
            x = x[:, None, :]
        elif x.ndim == 3:
            unbatched = False
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(
                f"x must have shape {layout} or (T, input_size), got {x.ndim} dimensions"
            )
        steps, batch, features = x.shape
        if features != self.input_size:
            raise ValueError(
                f"x must have {self.input_size} features on its last axis, got {features}"
            )
        if steps < 1 or batch < 1:
            raise ValueError(f"x must have at least one time step and one sequence: {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype), unbatched

    def _state(self, name, value, batch, width, unbatched):
        if value is None:
            return None
        if (  # the common case, a state returned by the previous call: used as it is
            type(value) is np.ndarray
            and not unbatched
            and value.dtype == self.dtype
            and value.shape == (self._num_states, batch, width)
            and value.flags.c_contiguous
        ):
            return value
        arr = v.real_array(name, value)
        if unbatched:
            v.check_shape(name, arr, (self._num_states, width))
            arr = arr[:, None, :]
        else:
            v.check_shape(name, arr, (self._num_states, batch, width))
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def _prepare(self, x, hx, lengths):
        x, unbatched = self._prepare_x(x)
        steps, batch, _ = x.shape
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths is not supported with unbatched (2-D) x")
            lengths = v.lengths_array(lengths, batch, steps)
        h0, c0 = self._split_hx(hx)
        h0 = self._state("h_0", h0, batch, self._out_size, unbatched)
        c0 = self._state("c_0", c0, batch, self.hidden_size, unbatched)
        return x, h0, c0, lengths, unbatched

    def _split_hx(self, hx):
        if hx is not None and isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be an array or None for {type(self).__name__}")
        return hx, None

    def _to_user(self, out, h_n, c_n, unbatched):
        if unbatched:
            out = out[:, 0, :]
            h_n = h_n[:, 0, :]
            c_n = None if c_n is None else c_n[:, 0, :]
        elif self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, h_n, c_n

    def _pack_states(self, h, c):
        return h

    @property
    def _regularized(self) -> bool:
        """Whether training-mode calls draw masks (dropout, zoneout)."""
        return any(getattr(self, k) > 0 for k in ("dropout", *_REGULARIZERS))

    def _call_seed(self, seed) -> int:
        if seed is not None:
            return v.check_int("seed", seed, 0, _MAX_SEED)
        if self.training and self._regularized:
            return int(self._mask_rng.integers(0, 2**63))
        return 0

    def _run(self, x, hx, lengths, train, seed):
        x, h0, c0, lengths, unbatched = self._prepare(x, hx, lengths)
        seed = self._call_seed(seed)
        if self.training and self.norm in _BATCH_NORMS and x.shape[1] < 2:
            raise ValueError(
                f"norm={self.norm!r} in training mode needs a batch of at least 2 sequences "
                f"(x has {x.shape[1]}); call .eval() to use the running statistics"
            )
        out, h_n, c_n, tape = self._model.forward(
            x, h0=h0, c0=c0, lengths=lengths, record=train, training=self.training, seed=seed
        )
        out, h_n, c_n = self._to_user(out, h_n, c_n, unbatched)
        return out, self._pack_states(h_n, c_n), tape, unbatched, seed

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
        exactly (``tape.seed``).

        Returns:
            ``(out, h_n, tape)``; for the LSTM ``h_n`` is the ``(h_n, c_n)`` pair.
        """
        self._refuse_if_half("forward_train()")
        out, states, core_tape, unbatched, seed = self._run(x, hx, lengths, True, seed)
        return out, states, Tape(core_tape, self, self.batch_first, unbatched, seed)

    def _split_grad_h(self, grad_h_n):
        if grad_h_n is not None and isinstance(grad_h_n, (tuple, list)):
            raise TypeError(f"grad_h_n must be an array or None for {type(self).__name__}")
        return grad_h_n, None

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
            another module, or a gradient has the wrong shape.
        """
        self._refuse_if_half("backward()")
        if not isinstance(tape, Tape):
            raise TypeError(f"tape must be an rnncore Tape, got {type(tape).__name__}")
        if tape._module is not self:
            raise ValueError("tape was recorded by another module")
        if tape.consumed:
            raise ValueError("tape has already been used by backward()")
        steps, batch = tape._core_tape.steps, tape._core_tape.batch
        width = (2 if self.bidirectional else 1) * self._out_size
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
            dout = np.ascontiguousarray(dout, dtype=self.dtype)
        gh, gc = self._split_grad_h(grad_h_n)
        gh = self._state("grad_h_n", gh, batch, self._out_size, tape._unbatched)
        gc = self._state("grad_c_n", gc, batch, self.hidden_size, tape._unbatched)
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

    # ------------------------------------------------------------------- torch
    @classmethod
    def from_torch(cls, module):
        """Builds an equivalent module from a ``torch.nn`` RNN/LSTM/GRU (weights, options, mode).

        Raises:
            TypeError: ``module`` is not the matching torch class.
        """
        import torch  # noqa: PLC0415 - torch is optional; imported only here

        expected = getattr(torch.nn, cls.__name__)
        if not isinstance(module, expected):
            raise TypeError(f"from_torch expects a torch.nn.{cls.__name__}, got {type(module)}")
        weight = next(iter(module.parameters()))
        dtype = "float64" if weight.dtype == torch.float64 else "float32"
        kwargs = dict(
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
            dtype=dtype,
        )
        kwargs.update(cls._torch_options(module))
        m = cls(module.input_size, module.hidden_size, **kwargs)
        m.load_state_dict(module.state_dict())
        m.train(bool(module.training))
        return m

    @classmethod
    def _torch_options(cls, module) -> dict:
        return {}

    def __repr__(self) -> str:
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            opts.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            opts.append("bidirectional=True")
        if self.batch_first:
            opts.append("batch_first=True")
        for key in ("dropout", *_REGULARIZERS):
            if getattr(self, key) > 0:
                opts.append(f"{key}={getattr(self, key)}")
        opts.append(f"dtype={self.dtype.name}")
        if self._half:
            opts.append("half_weights")
        return f"rnncore.{type(self).__name__}({', '.join(opts)})"


class RNN(_RecurrentBase):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.

    Layouts and semantics follow ``torch.nn.RNN``; see the package documentation.
    """

    _cell = "rnn"
    _gates = 1

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
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        **norm_options,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            norm, dtype, seed, init, nonlinearity=nonlinearity, norm_options=norm_options,
            regularizers=dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                              zoneout=zoneout),
        )  # fmt: skip

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


class LSTM(_RecurrentBase):
    """LSTM with gates i, f, g, o and optional projection, as ``torch.nn.LSTM``.

    ``hx`` and the returned state are ``(h, c)`` pairs. ``forget_bias`` is the initial
    forget-gate bias; ``chrono=T_max`` draws the gate biases by chrono initialization
    instead (``rnncore.init.chrono``).
    """

    _cell = "lstm"
    _gates = 4

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
        forget_bias: float = 1.0,
        chrono: float | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        **norm_options,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            norm, dtype, seed, init, proj_size=proj_size, forget_bias=forget_bias,
            norm_options=norm_options, chrono=chrono,
            regularizers=dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                              zoneout=zoneout),
        )  # fmt: skip

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


class GRU(_RecurrentBase):
    """GRU with gates r, z, n. ``reset_after=True`` is PyTorch's / cuDNN's form.

    ``update_bias`` is the initial z-gate bias; ``chrono=T_max`` draws it by chrono
    initialization instead (``rnncore.init.chrono``).
    """

    _cell = "gru"
    _gates = 3

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
        update_bias: float = 0.0,
        chrono: float | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        **norm_options,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            norm, dtype, seed, init, reset_after=reset_after, update_bias=update_bias,
            norm_options=norm_options, chrono=chrono,
            regularizers=dict(input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                              zoneout=zoneout),
        )  # fmt: skip


for _cls in (RNN, LSTM, GRU):
    _cls.__doc__ = (_cls.__doc__ or "") + _REGULARIZATION_DOC
