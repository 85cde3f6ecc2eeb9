"""What every rnncore module is: parameters in one flat buffer, gradients in another.

``Module`` is the one protocol the recurrent modules and ``Linear`` share, and what
optimizers, gradient clipping, copies and files rely on:

- the parameters are live NumPy views (by name, in a fixed order) into one flat buffer,
  and their gradients views into a second flat buffer of the same layout;
- ``state_dict()`` is copies of the parameters followed by the buffers (running
  statistics, for modules that have them), and ``load_state_dict`` checks a whole
  mapping before it writes anything;
- modules have a training mode, and ``from_torch`` builds one from its PyTorch
  counterpart;
- ``forward_train`` returns a tape that ``backward`` consumes once (tapes are never
  pickled or copied);
- ``pickle``, ``copy.deepcopy`` and ``copy.copy`` give an independent module (a copy of a
  module is always deep) with the same class, options, parameters, buffers, gradients,
  mode and other attributes. The pickled state is plain Python and NumPy objects and a
  format version (``PICKLE_VERSION``), never the compiled model.

A subclass provides its options class (``_options_class``), the allocation of its flat
buffers and layout (``_build``, which calls ``_bind_parameters``), and, if it has buffers,
``buffers``, ``_check_buffers`` and ``_write_buffers``; ``_extra_state`` and
``_set_extra_state`` carry what else it pickles, and ``_own_attributes`` names the
attributes the pickled state rebuilds (every other attribute is pickled as it is).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _validation as v

#: The format version of module and optimizer pickles. A pickle records the version it was
#: written in; this version and later ones read it, and refuse a newer one.
PICKLE_VERSION = 1

Layout = Iterable[tuple[str, tuple[int, ...], int]]  # (name, shape, offset) in the buffer


def flat_views(flat: np.ndarray, layout: Layout) -> OrderedDict:
    """Views of ``flat`` by name, reshaped as ``layout`` says."""
    out = OrderedDict()
    for name, shape, offset in layout:
        size = int(np.prod(shape))
        out[name] = flat[offset : offset + size].reshape(shape)
    return out


def check_pickle_version(what: str, state: Any) -> dict:
    """Checks the format version of a pickled state (of ``what``) and returns the state.

    Raises:
        ValueError: not a pickled state of this library, or one of a newer format version.
    """
    version = state.get("version") if isinstance(state, dict) else None
    if type(version) is not int or version < 1:
        raise ValueError(f"not a pickled state of {what}: no valid format version")
    if version > PICKLE_VERSION:
        raise ValueError(
            f"this pickle of {what} has format version {version}, newer than this rnncore "
            f"reads (format version {PICKLE_VERSION} and older): load it with a newer rnncore"
        )
    return state


class TapeBase:
    """What ``forward_train`` keeps for ``backward``: opaque, tied to its module, usable once."""

    __slots__ = ("_module",)

    def __reduce_ex__(self, protocol: Any):
        """Refuses pickling and copying (``copy.copy`` and ``copy.deepcopy`` too).

        Raises:
            TypeError: always.
        """
        raise TypeError(
            f"a tape cannot be pickled or copied: {type(self).__name__} holds the "
            "activations of one forward_train() call for one backward() of the module that "
            "recorded it; pickle or copy the module and call forward_train() on the copy"
        )

    @property
    def consumed(self) -> bool:  # pragma: no cover - every tape type defines it
        """Whether ``backward`` has used this tape."""
        raise NotImplementedError


class Module:
    """The parameter, gradient, state and mode protocol of every rnncore module."""

    #: The tape class ``backward`` takes, and what a wrong one is called in the error.
    _tape_type: type[TapeBase] = TapeBase
    _tape_description: str = "an rnncore tape"
    #: The ``torch.nn`` class that ``from_torch`` takes (its name).
    _torch_class: str = ""

    #: The options class of the module (``from_dict`` rebuilds pickled options).
    _options_class: Any = None
    #: The attributes the pickled state rebuilds; every other one is pickled as it is.
    _own_attributes: frozenset = frozenset({"training", "_options", "_params", "_grads"})

    training: bool
    _params: OrderedDict
    _grads: OrderedDict

    @classmethod
    def _check_options(cls, options: Any) -> None:
        """Raises ValueError if valid ``options`` do not describe a module of this class
        (before anything is allocated; ``_build`` checks them too)."""

    def _build(self, options: Any, *, zero: bool = True) -> None:  # pragma: no cover
        """Allocates the module of ``options``, training mode: zero parameters, or with
        ``zero=False`` parameters left unset, for a caller that writes every one of them
        (the model file loader); the gradients are zero either way."""
        raise NotImplementedError

    def _bind_parameters(self, params: np.ndarray, grads: np.ndarray, layout: Layout) -> None:
        """Makes the named views of the flat parameter and gradient buffers."""
        layout = list(layout)
        self._params = flat_views(params, layout)
        self._grads = flat_views(grads, layout)

    def _grad_buffer(self) -> np.ndarray:
        """The flat gradient buffer (every view in ``grads`` is a part of it)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- parameters
    def parameters(self) -> OrderedDict:
        """Ordered dict name -> live NumPy view (writing into it changes the model)."""
        return OrderedDict(self._params)

    @property
    def grads(self) -> OrderedDict:
        """Accumulated parameter gradients, same keys and shapes as ``parameters()``."""
        return OrderedDict(self._grads)

    def zero_grad(self) -> None:
        """Sets every accumulated gradient to zero."""
        self._grad_buffer()[...] = 0

    def num_parameters(self) -> int:
        """The number of trainable scalars."""
        return int(sum(p.size for p in self._params.values()))

    def buffers(self) -> OrderedDict:
        """Copies of the module's non-trainable state (none here), by name."""
        return OrderedDict()

    def state_dict(self) -> OrderedDict:
        """Copies of the parameters, then the buffers, by name."""
        state = OrderedDict((k, p.copy()) for k, p in self._params.items())
        state.update(self.buffers())
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        """Copies arrays (or PyTorch tensors) into the parameters and buffers.

        Nothing is written unless every entry is valid.

        Args:
            state_dict: mapping name -> array-like of the entry's shape.
            strict: when True, every parameter and buffer must be present and nothing
                else; when False, missing names are left unchanged and unknown names
                ignored.

        Raises:
            KeyError: missing or unexpected names (strict), all listed.
            ValueError: entries of the wrong shape, all listed.
            TypeError: ``state_dict`` is not a mapping, or entries are not real arrays.
        """
        self._check_writable("load_state_dict()")
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        buffer_names = self._buffer_names()
        expected = list(self._params) + list(buffer_names)
        keys = list(state_dict.keys())
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in keys if k not in self._params and k not in buffer_names]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        params, buffers, wrong = {}, {}, []
        for k in keys:
            if k in self._params:
                arr = v.real_array(f"state_dict[{k!r}]", state_dict[k])
                if arr.shape != self._params[k].shape:
                    wrong.append(f"{k}: expected {self._params[k].shape}, got {arr.shape}")
                params[k] = arr
            elif k in buffer_names:
                buffers[k] = v.real_array(f"state_dict[{k!r}]", state_dict[k])
        pending = self._check_buffers(buffers, wrong)
        if wrong:
            raise ValueError("load_state_dict: wrong shapes: " + "; ".join(wrong))
        for k, arr in params.items():
            self._params[k][...] = arr
        self._write_buffers(pending)

    def _buffer_names(self) -> tuple[str, ...]:
        """The names ``buffers()`` returns, without copying the buffers."""
        return ()

    def _check_buffers(self, arrays: dict, wrong: list) -> Any:
        """Checks the buffer entries of a state dict (appending problems to ``wrong``) and
        returns what ``_write_buffers`` writes once every entry has passed."""
        return None

    def _write_buffers(self, pending: Any) -> None:
        """Writes what ``_check_buffers`` returned."""

    def _check_writable(self, what: str) -> None:
        """Raises if the module's parameters may not be changed (``what`` names the call)."""

    # ---------------------------------------------------------------------- mode
    def train(self, mode: bool = True):
        """Sets training mode (or eval mode with ``mode=False``).

        Returns:
            self.

        Raises:
            TypeError: ``mode`` is not a bool.
        """
        mode = v.check_bool("mode", mode)
        if mode:
            self._check_writable("train()")
        self.training = mode
        return self

    def eval(self):
        """Sets eval mode.

        Returns:
            self.
        """
        return self.train(False)

    # --------------------------------------------------------------------- tapes
    def _check_tape(self, tape: Any) -> None:
        """Refuses a tape of the wrong type, of another module, or already used."""
        if not isinstance(tape, self._tape_type):
            raise TypeError(f"tape must be {self._tape_description}, got {type(tape).__name__}")
        if tape._module is not self:
            raise ValueError("tape was recorded by another module")
        if tape.consumed:
            raise ValueError("tape has already been used by backward()")

    # ------------------------------------------------------------ copies, pickles
    def __getstate__(self) -> dict:
        """The pickled state: plain Python and NumPy objects (copies) and the format version."""
        state = {
            "version": PICKLE_VERSION,
            "options": self._options.to_dict(),
            "state_dict": dict(self.state_dict()),
            "grads": self._grad_buffer().copy(),
            "training": self.training,
            "attributes": {
                k: val for k, val in self.__dict__.items() if k not in self._own_attributes
            },
        }
        state.update(self._extra_state())
        return state

    def __setstate__(self, state: dict) -> None:
        """Rebuilds the module from ``__getstate__``'s state (its options re-checked).

        Raises:
            ValueError: a pickle of a newer format version, or an invalid state.
        """
        state = check_pickle_version(f"rnncore.{type(self).__name__}", state)
        self._build(self._options_class.from_dict(state["options"]))
        self.load_state_dict(state["state_dict"])
        grads = v.real_array("grads", state["grads"])
        buffer = self._grad_buffer()
        if grads.shape != buffer.shape:
            raise ValueError(f"grads: expected {buffer.shape}, got {grads.shape}")
        buffer[...] = grads
        self.training = v.check_bool("training", state["training"])
        self._set_extra_state(state)
        self.__dict__.update(state.get("attributes", {}))

    def _extra_state(self) -> dict:
        """What else the subclass pickles (plain objects), merged into the state."""
        return {}

    def _set_extra_state(self, state: dict) -> None:
        """Restores ``_extra_state``'s entries (the module is otherwise restored)."""

    def __deepcopy__(self, memo: dict):
        """An independent copy (through the pickled state; other attributes deep-copied)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = self.__getstate__()
        state["attributes"] = copy.deepcopy(state["attributes"], memo)
        new.__setstate__(state)
        return new

    def __copy__(self):
        """The same as ``copy.deepcopy``: a copy of a module never shares memory with it."""
        return self.__deepcopy__({})

    # --------------------------------------------------------------------- torch
    @classmethod
    def from_torch(cls, module: Any):
        """Builds an equivalent module from its ``torch.nn`` counterpart (weights,
        options, mode); float64 weights give a float64 module, anything else float32.

        Raises:
            TypeError: ``module`` is not the matching ``torch.nn`` class.
        """
        import torch  # noqa: PLC0415 - torch is optional; imported only here

        expected = getattr(torch.nn, cls._torch_class)
        if not isinstance(module, expected):
            raise TypeError(
                f"from_torch expects a torch.nn.{cls._torch_class}, got {type(module)}"
            )
        weight = next(iter(module.parameters()))
        dtype = "float64" if weight.dtype == torch.float64 else "float32"
        m = cls._from_torch_options(module, dtype)
        m.load_state_dict(module.state_dict())
        m.train(bool(module.training))
        return m

    @classmethod
    def _from_torch_options(cls, module: Any, dtype: str):  # pragma: no cover - abstract
        """A new module with the options of the ``torch.nn`` module (weights not copied)."""
        raise NotImplementedError
