"""rnncore.Linear: the affine layer ``y = x W^T + b`` for read-out heads.

It is a ``Module`` like the recurrent ones (live parameter views into one flat buffer, a
gradient buffer that ``backward`` adds into, single-use tapes, ``state_dict``), so that
optimizers and gradient clipping treat every module the same. The math is one product over
all leading axes at once, in the core's kernels and thread pool.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import _core
from . import _validation as v
from ._module import Module, TapeBase
from ._options import LinearOptions, linear_options


class LinearTape(TapeBase):
    """What ``Linear.forward_train`` keeps for ``Linear.backward``. Opaque; usable once.

    Args:
        module: the Linear that recorded it.
        x2d: the input as a contiguous ``(N, in_features)`` array (owned by the tape).
        weight: a copy of the weight at forward time, so that ``backward`` differentiates
            the function that was evaluated even if the weight changed in between.
        lead_shape: the leading axes of ``x`` (``x.shape[:-1]``).
    """

    __slots__ = ("_x2d", "_weight", "_lead_shape", "_consumed")

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


class Linear(Module):
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
        options, seed = linear_options(in_features, out_features, bias, dtype, seed)
        self._build(options)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self._params["weight"][...] = rng.uniform(
            -bound, bound, size=(self.out_features, self.in_features)
        )
        if self.bias:
            self._params["bias"][...] = rng.uniform(-bound, bound, size=self.out_features)

    _tape_type = LinearTape
    _tape_description = "a LinearTape from forward_train"
    _torch_class = "Linear"
    _options_class = LinearOptions
    _own_attributes = Module._own_attributes | {"_flat", "_flat_grad", "_backward_lock"}

    def _build(self, options: LinearOptions, *, zero: bool = True) -> None:
        self._options = options
        n_weight = self.out_features * self.in_features
        size = n_weight + (self.out_features if self.bias else 0)
        self._flat = (np.zeros if zero else np.empty)(size, dtype=self.dtype)
        self._flat_grad = np.zeros(size, dtype=self.dtype)
        layout = [("weight", (self.out_features, self.in_features), 0)]
        if self.bias:
            layout.append(("bias", (self.out_features,), n_weight))
        self._bind_parameters(self._flat, self._flat_grad, layout)
        self._backward_lock = threading.Lock()
        self.training = True

    @property
    def options(self) -> LinearOptions:
        """The layer's options (frozen; every constructor argument but ``seed``)."""
        return self._options

    @property
    def in_features(self) -> int:
        return self._options.in_features

    @property
    def out_features(self) -> int:
        return self._options.out_features

    @property
    def bias(self) -> bool:
        return self._options.bias

    @property
    def dtype(self) -> np.dtype:
        return self._options.np_dtype

    def _grad_buffer(self) -> np.ndarray:
        return self._flat_grad

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
        gy = v.real_array("grad_y", grad_y)
        # One backward at a time: each adds into the same gradients (and the same tape may
        # be offered twice).
        with self._backward_lock:
            self._check_tape(tape)
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
    def _from_torch_options(cls, module: Any, dtype: str) -> Linear:
        return cls(module.in_features, module.out_features, module.bias is not None, dtype)

    def __repr__(self) -> str:
        opts = [f"{self.in_features}", f"{self.out_features}"]
        if not self.bias:
            opts.append("bias=False")
        opts.append(f"dtype={self.dtype.name}")
        return f"rnncore.Linear({', '.join(opts)})"
