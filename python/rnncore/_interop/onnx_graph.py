"""A small builder of ONNX graphs (nodes, constants, unique names) and the normalizations.

``Graph`` collects the nodes of one graph; a Loop body is a ``Graph.sub()``, which shares
the names (unique across the whole model, as ONNX requires of nested graphs) and the
initializers (the body reads them from the outer scope). Constants are initializers of the
module's dtype unless given another dtype. ``layer_norm`` and ``affine_rows`` are the
normalizations of docs/normalization.md section 1 as ONNX nodes: layer norm in two passes
(mean, then the mean of the squared deviations), and the eval-mode batch norm's affine map.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Graph:
    """The nodes of one ONNX graph under construction."""

    def __init__(self, opset: int, dtype: np.dtype, *, _shared: dict | None = None):
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.nodes: list = []
        self._shared = _shared if _shared is not None else {"names": set(), "inits": []}

    @property
    def initializers(self) -> list:
        return self._shared["inits"]

    def sub(self) -> Graph:
        """A graph for a Loop body: its own nodes, the same names and initializers."""
        return Graph(self.opset, self.dtype, _shared=self._shared)

    def name(self, base: str) -> str:
        """A name not used anywhere in the model yet, derived from ``base``."""
        names = self._shared["names"]
        name, i = base, 1
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.add(name)
        return name

    def reserve(self, name: str) -> str:
        """Claims ``name`` exactly (graph inputs and outputs)."""
        if name in self._shared["names"]:
            raise AssertionError(f"name {name!r} used twice")  # pragma: no cover
        self._shared["names"].add(name)
        return name

    def const(self, value: Any, base: str = "const", dtype: Any = None) -> str:
        """An initializer holding ``value`` (in the module's dtype unless ``dtype``)."""
        from onnx import numpy_helper  # noqa: PLC0415 - optional dependency

        arr = np.array(value, dtype=dtype or self.dtype, order="C")  # 0-d stays 0-d
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values: Any, base: str = "ints") -> str:
        """An int64 initializer (shapes, axes, indices)."""
        return self.const(values, base, np.int64)

    def op(
        self,
        op_type: str,
        inputs: list,
        n_out: int = 1,
        base: str | None = None,
        outputs: list | None = None,
        node_name: str | None = None,
        **attrs,
    ) -> Any:
        """Adds a node; returns its output name (a list of names when ``n_out > 1``)."""
        from onnx import helper  # noqa: PLC0415 - optional dependency

        base = base or op_type.lower()
        if outputs is None:
            outputs = [self.name(base if n_out == 1 else f"{base}_{i}") for i in range(n_out)]
        node_name = self.name(node_name or f"{base}/{op_type}")
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attrs))
        return outputs[0] if n_out == 1 else outputs

    # ------------------------------------------------------------------ shortcuts
    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")])

    def reduce_mean(self, x: str, axis: int) -> str:
        """The mean over ``axis``, kept as an axis of size 1 (ReduceMean's axes became an
        input in opset 18)."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints([axis], "axes")], keepdims=1)
        return self.op("ReduceMean", [x], axes=[axis], keepdims=1)

    def split(self, x: str, parts: int, width: int, base: str = "split") -> list[str]:
        """``parts`` blocks of ``width`` columns along the last axis."""
        sizes = self.ints([width] * parts, "split_sizes")
        out = self.op("Split", [x, sizes], n_out=parts, base=base, axis=-1)
        return out if parts > 1 else [out]

    def matmul_t(self, x: str, weight: np.ndarray, base: str) -> str:
        """``x @ weight.T`` with the transposed weight stored as a constant."""
        return self.op("MatMul", [x, self.const(np.asarray(weight).T, f"{base}_T")], base=base)

    def add_const(self, x: str, value: np.ndarray | None, base: str) -> str:
        """``x + value``, or ``x`` itself when ``value`` is None."""
        if value is None:
            return x
        return self.op("Add", [x, self.const(value, base)], base=f"{x}_plus")

    def scalar(self, value: float, base: str = "scalar") -> str:
        return self.const(np.asarray(value), base)

    def clamp(self, x: str, bound: float | None, base: str = "clip") -> str:
        """``x`` clamped to ``[-bound, bound]`` (``Clip``), or ``x`` itself for None."""
        if bound is None:
            return x
        low, high = self.scalar(-bound, f"{base}_low"), self.scalar(bound, f"{base}_high")
        return self.op("Clip", [x, low, high], base=f"{x}_clipped")


def layer_norm(
    g: Graph, a: str, gain: np.ndarray, shift: np.ndarray | None, eps: float, base: str
) -> str:
    """``LN(a; gain, shift)`` over the last axis (``LN0`` without ``shift``), in two passes:
    ``(a - mean) / sqrt(mean((a - mean)^2) + eps) * gain (+ shift)``."""
    mean = g.reduce_mean(a, -1)
    centred = g.op("Sub", [a, mean], base=f"{base}_centred")
    var = g.reduce_mean(g.op("Mul", [centred, centred]), -1)
    std = g.op("Sqrt", [g.op("Add", [var, g.scalar(eps, f"{base}_eps")])])
    rstd = g.op("Reciprocal", [std])
    y = g.op("Mul", [g.op("Mul", [centred, rstd]), g.const(gain, f"{base}_gain")], base=base)
    return g.add_const(y, shift, f"{base}_shift")


def bn_rows(mean: np.ndarray, var: np.ndarray, gain: np.ndarray, eps: float):
    """The eval-mode batch norm as ``(a - mean) * scale``: ``scale = gain / sqrt(var + eps)``.

    ``norm="batch"`` buffers with no rows (a module never trained) become one row of mean 0
    and variance 1, which every step uses (normalization section 2). Computed in float64;
    the caller stores them in the module's dtype.

    Returns:
        ``(mean, scale)``, each ``(S, width)`` (or ``(width,)`` for one-row statistics).
    """
    mean = np.asarray(mean, np.float64)
    var = np.asarray(var, np.float64)
    if mean.ndim == 2 and mean.shape[0] == 0:
        mean, var = np.zeros((1, mean.shape[1])), np.ones((1, var.shape[1]))
    return mean, np.asarray(gain, np.float64) / np.sqrt(var + eps)


def time_mask(g: Graph, steps: str, lengths: str) -> str:
    """``(T, B, 1)`` bool: step ``t`` of sequence ``b`` is active (``t < lengths[b]``)."""
    zero, one = g.ints(0, "zero"), g.ints(1, "one")
    t = g.op("Range", [zero, steps, one], base="steps")
    active = g.op("Less", [g.unsqueeze(t, [1]), g.unsqueeze(lengths, [0])], base="active")
    return g.unsqueeze(active, [2])
