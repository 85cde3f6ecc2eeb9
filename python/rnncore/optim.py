"""First-order optimizers with PyTorch's update rules: SGD, Adam, RMSProp.

An optimizer takes a module, or a list or tuple of modules: anything with
``parameters()`` (live views, updated in place) and ``grads`` (the accumulated
gradients, same keys and shapes) — the rnncore recurrent modules and ``rnncore.Linear``.
It keeps references to those views, so it follows every change made to the parameters
through them (``load_state_dict`` included). Updates run in each parameter's dtype.

A training step::

    opt = rc.optim.Adam([lstm, head], lr=1e-3)
    opt.zero_grad()
    ...  # forward_train, loss, backward (adds into the grads)
    rc.clip_grad_norm([lstm, head], 1.0)
    opt.step()

``state_dict()`` / ``load_state_dict()`` save and restore the hyper-parameters, the step
count and the per-parameter state (moments, momentum buffers), keyed
``"{module index}.{parameter name}"``; ``lr`` may be changed between steps (schedules).

Optimizers pickle with their modules: ``pickle.loads(pickle.dumps((model, opt)))`` gives a
copy of the optimizer that drives the copy of the model (pickle's memo), and so does
``copy.deepcopy``; a pickle of the optimizer alone carries copies of its modules.
``copy.copy(opt)`` drives the same modules with its own copy of the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _validation as v
from ._module import PICKLE_VERSION, check_pickle_version

__all__ = ["SGD", "Adam", "RMSProp"]


def _modules_of(params: Any) -> list[Any]:
    """The modules an optimizer drives, checked."""

    def is_module(obj: Any) -> bool:
        return callable(getattr(obj, "parameters", None)) and hasattr(obj, "grads")

    if is_module(params):
        modules = [params]
    elif isinstance(params, (list, tuple)):
        modules = list(params)
        if not modules:
            raise ValueError("params must hold at least one module, got an empty sequence")
        for i, m in enumerate(modules):
            if not is_module(m):
                raise TypeError(
                    f"params[{i}] must be a module (with parameters() and grads), "
                    f"got {type(m).__name__}"
                )
    else:
        raise TypeError(
            "params must be a module (with parameters() and grads) or a list/tuple of "
            f"modules, got {type(params).__name__}"
        )
    ids = [id(m) for m in modules]
    if len(set(ids)) != len(ids):
        raise ValueError("params lists the same module more than once")
    return modules


def _slots(modules: list[Any]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(key, parameter view, gradient view) for every parameter of every module."""
    slots = []
    for i, m in enumerate(modules):
        params, grads = m.parameters(), m.grads
        if list(params) != list(grads):
            raise ValueError(f"module {i}: parameters() and grads have different names")
        for name, p in params.items():
            g = grads[name]
            key = f"{i}.{name}"
            if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
                raise TypeError(f"{key}: parameters and gradients must be NumPy arrays")
            if p.dtype.kind != "f" or g.dtype != p.dtype or g.shape != p.shape:
                raise ValueError(
                    f"{key}: parameter {p.dtype}{p.shape} and gradient {g.dtype}{g.shape} "
                    "must be floating arrays of the same dtype and shape"
                )
            if not p.flags.writeable:
                raise ValueError(f"{key}: the parameter array is read-only")
            slots.append((key, p, g))
    return slots


def _nonneg(name: str, value: Any) -> float:
    return v.check_float(name, value, 0.0, math.inf, high_open=True)


class _Optimizer:
    """Shared machinery: parameter slots, step count, state, (de)serialization."""

    _buffers: tuple[str, ...] = ()

    def __init__(self, params: Any, hyper: dict[str, Any]):
        self._modules = _modules_of(params)
        self._slots = _slots(self._modules)
        self._hyper = self._check_hyper(hyper)
        self._step = 0
        self._state: dict[str, dict[str, np.ndarray]] = {key: {} for key, _, _ in self._slots}

    # ---------------------------------------------------------------- hyper
    def _check_hyper(self, hyper: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _expected_buffers(self) -> tuple[str, ...]:
        return self._buffers

    @property
    def lr(self) -> float:
        """The learning rate; may be set between steps (learning-rate schedules)."""
        return self._hyper["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self._hyper["lr"] = _nonneg("lr", value)

    @property
    def step_count(self) -> int:
        """The number of ``step()`` calls so far (restored by ``load_state_dict``)."""
        return self._step

    # ---------------------------------------------------------------- steps
    def step(self) -> None:
        """Updates every parameter in place from its accumulated gradient.

        The gradients are read, never modified.
        """
        self._step += 1
        for key, p, g in self._slots:
            self._update(p, g, self._state[key])

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def _decayed(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``g + weight_decay * p`` as a new array (``g`` itself without decay)."""
        wd = self._hyper["weight_decay"]
        return g + wd * p if wd != 0.0 else g

    def zero_grad(self) -> None:
        """Zeroes the accumulated gradients of every module (``module.zero_grad()``)."""
        for m in self._modules:
            if callable(getattr(m, "zero_grad", None)):
                m.zero_grad()
            else:
                for g in m.grads.values():
                    g[...] = 0

    # -------------------------------------------------------- serialization
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer (copies; later steps do not change it).

        Returns:
            ``{"type": class name, "hyper": {name: value}, "step": int,
            "state": {"{module index}.{parameter name}": {buffer name: array}}}``.
        """
        return {
            "type": type(self).__name__,
            "hyper": dict(self._hyper),
            "step": self._step,
            "state": {k: {n: a.copy() for n, a in s.items()} for k, s in self._state.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores a snapshot from ``state_dict()`` of the same optimizer class.

        Hyper-parameters (``lr`` included), the step count and the state arrays are
        replaced; nothing changes unless the whole snapshot is valid. Parameters without
        an entry in ``"state"`` get fresh state (as before their first step).

        Args:
            state_dict: the mapping ``state_dict()`` returned (arrays may be any real
                array-like; they are copied into the parameters' dtype).

        Raises:
            TypeError: not a mapping, a snapshot of another optimizer class, or
                entries of the wrong types.
            KeyError: missing top-level entries, or state for unknown parameters or with
                unknown buffer names.
            ValueError: invalid hyper-parameters or step, or arrays of the wrong shapes.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in ("type", "hyper", "step", "state") if k not in state_dict]
        if missing:
            raise KeyError(f"load_state_dict: missing entries {missing}")
        if state_dict["type"] != type(self).__name__:
            raise TypeError(
                f"load_state_dict: a {state_dict['type']!r} snapshot cannot be loaded into "
                f"{type(self).__name__}"
            )
        hyper = state_dict["hyper"]
        if not isinstance(hyper, Mapping) or set(hyper) != set(self._hyper):
            raise KeyError(
                f"load_state_dict: 'hyper' must have exactly the keys {sorted(self._hyper)}"
            )
        hyper = self._check_hyper(dict(hyper))
        step = v.check_int("state_dict['step']", state_dict["step"], 0)
        saved = state_dict["state"]
        if not isinstance(saved, Mapping):
            raise TypeError("load_state_dict: 'state' must be a mapping")
        shapes = {key: (p.shape, p.dtype) for key, p, _ in self._slots}
        unknown = [k for k in saved if k not in shapes]
        if unknown:
            raise KeyError(f"load_state_dict: state for unknown parameters {unknown}")
        allowed = set(self._buffers)
        new_state: dict[str, dict[str, np.ndarray]] = {key: {} for key in shapes}
        wrong = []
        for key, buffers in saved.items():
            if not isinstance(buffers, Mapping):
                raise TypeError(f"load_state_dict: state[{key!r}] must be a mapping")
            extra = [n for n in buffers if n not in allowed]
            if extra:
                raise KeyError(f"load_state_dict: state[{key!r}] has unknown buffers {extra}")
            shape, dtype = shapes[key]
            for name, arr in buffers.items():
                arr = v.real_array(f"state[{key!r}][{name!r}]", arr)
                if arr.shape != shape:
                    wrong.append(f"{key}/{name}: expected {shape}, got {arr.shape}")
                new_state[key][name] = np.array(arr, dtype=dtype, copy=True)
        if wrong:
            raise ValueError("load_state_dict: wrong shapes: " + "; ".join(wrong))
        self._hyper, self._step, self._state = hyper, step, new_state

    # ------------------------------------------------------------ copies, pickles
    def __getstate__(self) -> dict:
        """The pickled state: the modules (pickled as references) and ``state_dict()``."""
        return {
            "version": PICKLE_VERSION,
            "modules": list(self._modules),
            "state_dict": self.state_dict(),
        }

    def __setstate__(self, state: dict) -> None:
        """Rebuilds the optimizer from ``__getstate__``'s state, re-checked.

        Raises:
            ValueError: a pickle of a newer format version, or an invalid state.
        """
        state = check_pickle_version(f"rnncore.optim.{type(self).__name__}", state)
        self._modules = _modules_of(state["modules"])
        self._slots = _slots(self._modules)
        saved = state["state_dict"]
        self._hyper = self._check_hyper(dict(saved["hyper"]))
        self._step = 0
        self._state = {}
        self.load_state_dict(saved)

    def __copy__(self) -> _Optimizer:
        """An optimizer of the same modules with a copy of this one's state (no shared arrays)."""
        new = type(self).__new__(type(self))
        new.__setstate__(self.__getstate__())
        return new

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={val}" for k, val in self._hyper.items())
        return f"rnncore.optim.{type(self).__name__}({opts})"


class SGD(_Optimizer):
    """Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    With ``d = grad + weight_decay * p``:
    ``buf = d`` on the first step, then ``buf = momentum * buf + d``;
    ``d = d + momentum * buf`` (Nesterov) or ``d = buf``; then ``p -= lr * d``.
    Without momentum, ``p -= lr * d``. (PyTorch's ``dampening`` is 0 here.)

    Args:
        params: a module, or a list/tuple of modules (with ``parameters()`` and ``grads``).
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        nesterov: Nesterov momentum (needs ``momentum > 0``).

    Raises:
        TypeError: arguments of the wrong type. ValueError: out-of-range values,
        ``nesterov`` without momentum, an empty module list or a module listed twice.
    """

    _buffers = ("momentum_buffer",)

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(
            params,
            {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov},
        )

    def _check_hyper(self, hyper: dict[str, Any]) -> dict[str, Any]:
        out = {
            "lr": _nonneg("lr", hyper["lr"]),
            "momentum": _nonneg("momentum", hyper["momentum"]),
            "weight_decay": _nonneg("weight_decay", hyper["weight_decay"]),
            "nesterov": v.check_bool("nesterov", hyper["nesterov"]),
        }
        if out["nesterov"] and out["momentum"] == 0.0:
            raise ValueError("nesterov=True requires momentum > 0")
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        h = self._hyper
        d = self._decayed(p, g)
        mu = h["momentum"]
        if mu != 0.0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(d, copy=True)
            else:
                buf *= mu
                buf += d
            d = d + mu * buf if h["nesterov"] else buf
        p -= h["lr"] * d


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam`` (``amsgrad=False``).

    With ``g = grad + weight_decay * p`` (L2 penalty, not AdamW's decoupled decay) and
    ``t`` the step count: ``m = b1 * m + (1 - b1) * g``, ``v = b2 * v + (1 - b2) * g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    Args:
        params: a module, or a list/tuple of modules (with ``parameters()`` and ``grads``).
        lr: learning rate (>= 0).
        betas: ``(b1, b2)``, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).

    Raises:
        TypeError: arguments of the wrong type. ValueError: out-of-range values, an empty
        module list or a module listed twice.
    """

    _buffers = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    def _check_hyper(self, hyper: dict[str, Any]) -> dict[str, Any]:
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        return {
            "lr": _nonneg("lr", hyper["lr"]),
            "betas": (
                v.check_float("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                v.check_float("betas[1]", betas[1], 0.0, 1.0, high_open=True),
            ),
            "eps": _nonneg("eps", hyper["eps"]),
            "weight_decay": _nonneg("weight_decay", hyper["weight_decay"]),
        }

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        h = self._hyper
        b1, b2 = h["betas"]
        g = self._decayed(p, g)
        if not state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        m, s = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1.0 - b1) * g
        s *= b2
        s += (1.0 - b2) * np.square(g)
        step_size = h["lr"] / (1.0 - b1**self._step)
        denom = np.sqrt(s)
        denom /= math.sqrt(1.0 - b2**self._step)
        denom += h["eps"]
        p -= step_size * (m / denom)


class RMSProp(_Optimizer):
    """RMSProp (Hinton), as ``torch.optim.RMSprop`` with ``centered=False``.

    With ``g = grad + weight_decay * p``: ``s = alpha * s + (1 - alpha) * g^2``,
    ``a = sqrt(s) + eps``; with momentum ``buf = momentum * buf + g / a`` and
    ``p -= lr * buf``, else ``p -= lr * g / a``. ``s`` and ``buf`` start at 0.

    Args:
        params: a module, or a list/tuple of modules (with ``parameters()`` and ``grads``).
        lr: learning rate (>= 0).
        alpha: smoothing constant in ``[0, 1]``.
        eps: added to the denominator (>= 0).
        momentum: momentum factor (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).

    Raises:
        TypeError: arguments of the wrong type. ValueError: out-of-range values, an empty
        module list or a module listed twice.
    """

    _buffers = ("square_avg", "momentum_buffer")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        super().__init__(
            params,
            {
                "lr": lr,
                "alpha": alpha,
                "eps": eps,
                "momentum": momentum,
                "weight_decay": weight_decay,
            },
        )

    def _check_hyper(self, hyper: dict[str, Any]) -> dict[str, Any]:
        return {
            "lr": _nonneg("lr", hyper["lr"]),
            "alpha": v.check_float("alpha", hyper["alpha"], 0.0, 1.0, high_open=False),
            "eps": _nonneg("eps", hyper["eps"]),
            "momentum": _nonneg("momentum", hyper["momentum"]),
            "weight_decay": _nonneg("weight_decay", hyper["weight_decay"]),
        }

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        h = self._hyper
        g = self._decayed(p, g)
        s = state.get("square_avg")
        if s is None:
            s = state["square_avg"] = np.zeros_like(p)
        s *= h["alpha"]
        s += (1.0 - h["alpha"]) * np.square(g)
        avg = np.sqrt(s)
        avg += h["eps"]
        mu = h["momentum"]
        if mu > 0.0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.zeros_like(p)
            buf *= mu
            buf += g / avg
            p -= h["lr"] * buf
        else:
            p -= h["lr"] * (g / avg)
