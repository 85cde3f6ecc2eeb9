"""rnncore.Linear: the affine layer ``y = x W^T + b`` for read-out heads.

It follows the recurrent modules' conventions (live parameter views into one flat buffer,
a gradient buffer that ``backward`` adds into, single-use tapes, ``state_dict``), so that
optimizers and gradient clipping treat every module the same. The math is one NumPy
matrix product (BLAS) over all leading axes at once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from . import _core
from . import _validation as v


class LinearTape:
    """What ``Linear.forward_train`` keeps for ``Linear.backward``. Opaque; usable once.

    Args:
        module: the Linear that recorded it.
        x2d: the input as a contiguous ``(N, in_features)`` array (owned by the tape).
        weight: a copy of the weight at forward time, so that ``backward`` differentiates
            the function that was evaluated even if the weight changed in between.
        lead_shape: the leading axes of ``x`` (``x.shape[:-1]``).
    """

    __slots__ = ("_module", "_x2d", "_weight", "_lead_shape", "_consumed")

    def __init__(
        self, module: Linear, x2d: np.ndarray, weight: np.ndarray, lead_shape: tuple[int, ...]
    ):
        self._module = module
        self._x2d = x2d
        self._weight = weight
        self._lead_shape = lead_shape
        self._consumed = False

    @property
    def consumed(self) -> bool:
        """Whether ``backward`` has used this tape."""
        return self._consumed

    def __repr__(self) -> str:
        state = "consumed" if self._consumed else "unused"
        return f"<rnncore.LinearTape x.shape[:-1]={self._lead_shape} {state}>"


class Linear:
    """Affine map on the last axis: ``y = x W^T + b``, as ``torch.nn.Linear``.

    Parameters ``weight (out_features, in_features)`` and ``bias (out_features,)`` are live
    views into one flat buffer (and their gradients into another), like the recurrent
    modules. Initialization is PyTorch's: both drawn from ``U(-1/sqrt(in), 1/sqrt(in))``,
    reproducible with ``seed``.

    Args:
        in_features: size of the last axis of the input (>= 1).
        out_features: size of the last axis of the output (>= 1).
        bias: whether to add the learned bias ``b``.
        dtype: ``"float32"`` or ``"float64"`` (or the NumPy dtypes).
        seed: non-negative int for reproducible initialization, or None.

    Raises:
        TypeError: arguments of the wrong type. ValueError: sizes < 1, a negative seed or
        an unknown dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = "float32",
        seed: int | None = None,
    ):
        self.in_features = v.check_int("in_features", in_features, 1)
        self.out_features = v.check_int("out_features", out_features, 1)
        self.bias = v.check_bool("bias", bias)
        self.dtype = v.parse_dtype(dtype)
        if seed is not None:
            seed = v.check_int("seed", seed, 0)
        n_weight = self.out_features * self.in_features
        size = n_weight + (self.out_features if self.bias else 0)
        self._flat = np.zeros(size, dtype=self.dtype)
        self._flat_grad = np.zeros(size, dtype=self.dtype)
        self._params = self._views(self._flat)
        self._grads = self._views(self._flat_grad)
        self.training = True
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self._params["weight"][...] = rng.uniform(
            -bound, bound, size=(self.out_features, self.in_features)
        )
        if self.bias:
            self._params["bias"][...] = rng.uniform(-bound, bound, size=self.out_features)

    def _views(self, flat: np.ndarray) -> OrderedDict:
        n_weight = self.out_features * self.in_features
        out = OrderedDict()
        out["weight"] = flat[:n_weight].reshape(self.out_features, self.in_features)
        if self.bias:
            out["bias"] = flat[n_weight:]
        return out

    # ------------------------------------------------------------------ params
    def parameters(self) -> OrderedDict:
        """Live views of the parameters (writing into them changes the module).

        Returns:
            Ordered dict ``"weight" -> (out_features, in_features)`` and, with ``bias``,
            ``"bias" -> (out_features,)``.
        """
        return OrderedDict(self._params)

    @property
    def grads(self) -> OrderedDict:
        """Accumulated parameter gradients: same keys and shapes as ``parameters()``."""
        return OrderedDict(self._grads)

    def zero_grad(self) -> None:
        """Sets every accumulated gradient to zero."""
        self._flat_grad[...] = 0

    def num_parameters(self) -> int:
        """The number of trainable scalars.

        Returns:
            ``out_features * in_features`` (+ ``out_features`` with a bias).
        """
        return int(self._flat.size)

    def state_dict(self) -> OrderedDict:
        """Copies of the parameters, by name.

        Returns:
            Ordered dict name -> array copy.
        """
        return OrderedDict((k, p.copy()) for k, p in self._params.items())

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        """Copies arrays (or PyTorch tensors) into the parameters.

        Nothing is written unless every entry is valid.

        Args:
            state_dict: mapping name -> array-like of the parameter's shape.
            strict: when True, every parameter must be present and nothing else; when
                False, missing names are left unchanged and unknown names ignored.

        Raises:
            KeyError: missing or unexpected names (strict), all listed.
            ValueError: entries of the wrong shape, all listed.
            TypeError: ``state_dict`` is not a mapping, or entries are not real arrays.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        keys = list(state_dict.keys())
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in keys if k not in self._params]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        arrays, wrong = {}, []
        for k in keys:
            if k not in self._params:
                continue
            arr = v.real_array(f"state_dict[{k!r}]", state_dict[k])
            if arr.shape != self._params[k].shape:
                wrong.append(f"{k}: expected {self._params[k].shape}, got {arr.shape}")
            arrays[k] = arr
        if wrong:
            raise ValueError("load_state_dict: wrong shapes: " + "; ".join(wrong))
        for k, arr in arrays.items():
            self._params[k][...] = arr

    # -------------------------------------------------------------------- mode
    def train(self, mode: bool = True) -> Linear:
        """Sets training mode (``mode=False``: eval mode). Linear behaves the same in both.

        Args:
            mode: True for training, False for eval.

        Returns:
            self.

        Raises:
            TypeError: ``mode`` is not a bool.
        """
        self.training = v.check_bool("mode", mode)
        return self

    def eval(self) -> Linear:
        """Sets eval mode.

        Returns:
            self.
        """
        return self.train(False)

    # ------------------------------------------------------------------- calls
    def _prepare_x(self, x: Any) -> np.ndarray:
        arr = v.real_array("x", x)
        if arr.ndim < 1:
            raise ValueError(f"x must have at least 1 dimension (..., {self.in_features}), got 0")
        if arr.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} features on its last axis, got shape {arr.shape}"
            )
        return arr

    def _affine(self, x2d: np.ndarray, weight: np.ndarray) -> np.ndarray:
        # The core's kernels and thread pool, not NumPy's BLAS (see cpp/include/rnncore/dense.h).
        return _core.dense_forward(x2d, weight, self._params["bias"] if self.bias else None)

    def __call__(self, x: Any) -> np.ndarray:
        """Applies the layer (inference: nothing is kept for backward).

        Args:
            x: ``(..., in_features)``, at least 1-D, any real dtype and strides.

        Returns:
            ``(..., out_features)`` in the module's dtype.

        Raises:
            TypeError: ``x`` is not a real array. ValueError: wrong last axis or rank 0.
        """
        arr = self._prepare_x(x)
        x2d = np.ascontiguousarray(arr, dtype=self.dtype).reshape(-1, self.in_features)
        y = self._affine(x2d, self._params["weight"])
        return y.reshape(arr.shape[:-1] + (self.out_features,))

    forward = __call__

    def forward_train(self, x: Any) -> tuple[np.ndarray, LinearTape]:
        """Like calling the layer, and also returns the tape ``backward`` needs.

        The tape holds its own copies of ``x`` and of the weight: changing either afterwards
        does not change the gradients ``backward`` computes.

        Args:
            x: ``(..., in_features)``, at least 1-D, any real dtype and strides.

        Returns:
            ``(y, tape)``.

        Raises:
            TypeError: ``x`` is not a real array. ValueError: wrong last axis or rank 0.
        """
        arr = self._prepare_x(x)
        x2d = np.ascontiguousarray(arr, dtype=self.dtype)
        if np.may_share_memory(x2d, arr):  # never keep a view of the caller's array
            x2d = x2d.copy()
        x2d = x2d.reshape(-1, self.in_features)
        weight = self._params["weight"].copy()
        y = self._affine(x2d, weight)
        tape = LinearTape(self, x2d, weight, arr.shape[:-1])
        return y.reshape(arr.shape[:-1] + (self.out_features,)), tape

    def backward(self, tape: LinearTape, grad_y: Any) -> np.ndarray:
        """Backpropagation through the layer.

        ADDS ``dL/dW = grad_y^T x`` (summed over all leading axes) and ``dL/db`` into
        ``self.grads``.

        Args:
            tape: the tape from ``forward_train`` of this module; usable once.
            grad_y: gradient of the loss w.r.t. ``y`` (the shape of ``y``).

        Returns:
            ``grad_x``, the gradient w.r.t. ``x``, in the shape of ``x`` and the module's
            dtype.

        Raises:
            TypeError: ``tape`` is not a LinearTape, or ``grad_y`` not a real array.
            ValueError: the tape is used or belongs to another module, or ``grad_y`` has
            the wrong shape.
        """
        if not isinstance(tape, LinearTape):
            raise TypeError(f"tape must be a LinearTape from forward_train, got {type(tape)}")
        if tape._module is not self:
            raise ValueError("tape was recorded by another module")
        if tape._consumed:
            raise ValueError("tape has already been used by backward()")
        gy = v.real_array("grad_y", grad_y)
        v.check_shape("grad_y", gy, tape._lead_shape + (self.out_features,))
        gy2d = np.ascontiguousarray(gy, dtype=self.dtype).reshape(-1, self.out_features)
        tape._consumed = True
        grad_x = _core.dense_backward(
            tape._x2d,
            gy2d,
            tape._weight,
            self._grads["weight"],
            self._grads["bias"] if self.bias else None,
            True,
        )
        tape._x2d = tape._weight = None  # free the memory early
        return grad_x.reshape(tape._lead_shape + (self.in_features,))

    # ------------------------------------------------------------------- torch
    @classmethod
    def from_torch(cls, module: Any) -> Linear:
        """Builds an equivalent layer from a ``torch.nn.Linear`` (weights, dtype, mode).

        Args:
            module: a ``torch.nn.Linear``; float64 weights give a float64 layer, anything
                else float32.

        Returns:
            A new ``rnncore.Linear``.

        Raises:
            TypeError: ``module`` is not a ``torch.nn.Linear``.
        """
        import torch  # noqa: PLC0415 - torch is optional; imported only here

        if not isinstance(module, torch.nn.Linear):
            raise TypeError(f"from_torch expects a torch.nn.Linear, got {type(module)}")
        dtype = "float64" if module.weight.dtype == torch.float64 else "float32"
        m = cls(module.in_features, module.out_features, bias=module.bias is not None, dtype=dtype)
        m.load_state_dict(module.state_dict())
        m.train(bool(module.training))
        return m

    def __repr__(self) -> str:
        opts = [f"{self.in_features}", f"{self.out_features}"]
        if not self.bias:
            opts.append("bias=False")
        opts.append(f"dtype={self.dtype.name}")
        return f"rnncore.Linear({', '.join(opts)})"
