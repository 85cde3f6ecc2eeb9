"""Parameter initializers: weight matrices and the gate biases of LSTMs and GRUs.

The weight initializers return new float64 arrays; assign them into a module's live
parameter views (``m.parameters()[name][...] = orthogonal(...)``), which casts to the
module's dtype. The bias initializers write into a module's parameters in place.

Every ``rng`` argument may be None (fresh entropy from the operating system), an int seed,
or a ``numpy.random.Generator`` (used and advanced, so successive calls differ).

Example:
    >>> import rnncore as rc
    >>> lstm = rc.LSTM(8, 32, seed=0)
    >>> rc.init.chrono(lstm, t_max=100, rng=0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _validation as v
from ._module import Module

__all__ = [
    "chrono",
    "forget_gate_bias",
    "glorot_normal",
    "glorot_uniform",
    "orthogonal",
    "update_gate_bias",
]


# --------------------------------------------------------------------------- helpers
def _as_rng(rng: Any) -> np.random.Generator:
    """None, an int seed or a Generator as a Generator."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
        raise TypeError(
            f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
        )
    return np.random.default_rng(v.check_int("rng", rng, 0))


def _as_shape(shape: Any) -> tuple[int, ...]:
    """A weight shape: a sequence of at least two positive ints."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be a tuple of ints, got {type(shape).__name__}")
    dims = tuple(v.check_int(f"shape[{i}]", d, 1) for i, d in enumerate(shape))
    if len(dims) < 2:
        raise ValueError(f"shape must have at least 2 dimensions (out, in, ...), got {dims}")
    return dims


def _fans(dims: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *receptive), as torch.nn.init."""
    receptive = math.prod(dims[2:])
    return dims[1] * receptive, dims[0] * receptive


# --------------------------------------------------------------------------- weights
def orthogonal(shape: Sequence[int], gain: float = 1.0, rng: Any = None) -> np.ndarray:
    """A random matrix with orthonormal rows or columns, uniform (Haar) over such matrices.

    QR decomposition of a standard Gaussian matrix, with the signs of ``diag(R)`` folded
    into ``Q`` (without that correction ``Q`` is not Haar-distributed). A shape with more
    than two dimensions is treated as ``(shape[0], prod(shape[1:]))`` and reshaped back,
    as ``torch.nn.init.orthogonal_``.

    Args:
        shape: ``(rows, cols, ...)``, at least two positive ints.
        gain: factor applied to the orthonormal matrix.
        rng: None, an int seed or a ``numpy.random.Generator``.

    Returns:
        A float64 array of ``shape``: ``W W^T = gain^2 I`` when ``rows <= cols``, else
        ``W^T W = gain^2 I``.

    Raises:
        TypeError: ``shape``, ``gain`` or ``rng`` of the wrong type.
        ValueError: fewer than two dimensions, a dimension < 1, or a non-finite gain.
    """
    dims = _as_shape(shape)
    gain = v.check_finite("gain", gain)
    gen = _as_rng(rng)
    rows, cols = dims[0], math.prod(dims[1:])
    a = gen.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0  # a zero pivot has probability 0; keep the column as is
    q = q * signs
    q = q if rows >= cols else q.T
    return (gain * q).reshape(dims)


def glorot_uniform(shape: Sequence[int], gain: float = 1.0, rng: Any = None) -> np.ndarray:
    """Glorot (Xavier) uniform: ``U(-L, L)``, ``L = gain * sqrt(6 / (fan_in + fan_out))``.

    Fans as ``torch.nn.init.xavier_uniform_`` for a weight ``(out, in, *receptive)``:
    ``fan_in = in * prod(receptive)``, ``fan_out = out * prod(receptive)``.

    Args:
        shape: ``(out, in, ...)``, at least two positive ints.
        gain: scale factor on the bound.
        rng: None, an int seed or a ``numpy.random.Generator``.

    Returns:
        A float64 array of ``shape``.

    Raises:
        TypeError: ``shape``, ``gain`` or ``rng`` of the wrong type.
        ValueError: fewer than two dimensions, a dimension < 1, or a non-finite gain.
    """
    dims = _as_shape(shape)
    gain = v.check_finite("gain", gain)
    gen = _as_rng(rng)
    fan_in, fan_out = _fans(dims)
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return gen.uniform(-limit, limit, size=dims)


def glorot_normal(shape: Sequence[int], gain: float = 1.0, rng: Any = None) -> np.ndarray:
    """Glorot (Xavier) normal: ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Not truncated, as ``torch.nn.init.xavier_normal_``; fans as in :func:`glorot_uniform`.

    Args:
        shape: ``(out, in, ...)``, at least two positive ints.
        gain: scale factor on the standard deviation.
        rng: None, an int seed or a ``numpy.random.Generator``.

    Returns:
        A float64 array of ``shape``.

    Raises:
        TypeError: ``shape``, ``gain`` or ``rng`` of the wrong type.
        ValueError: fewer than two dimensions, a dimension < 1, or a non-finite gain.
    """
    dims = _as_shape(shape)
    gain = v.check_finite("gain", gain)
    gen = _as_rng(rng)
    fan_in, fan_out = _fans(dims)
    std = gain * np.sqrt(2.0 / (fan_in + fan_out))
    return gen.normal(0.0, std, size=dims)


# --------------------------------------------------------------------------- gate biases
def _is_cell(module: Any, cell: str) -> bool:
    """Whether ``module`` is an rnncore module of that cell ("lstm", "gru")."""
    return isinstance(module, Module) and getattr(module, "_cell", "") == cell


def _gate_biases(module: Any, cell: str) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """(hidden_size, [(bias_ih, bias_hh) live views per layer and direction]) of a module
    (one pair for a cell).

    Raises:
        TypeError: ``module`` is not an rnncore module of class ``cell`` with biases.
    """
    if not _is_cell(module, cell.lower()):
        raise TypeError(f"module must be an rnncore.{cell}, got {type(module).__name__}")
    if not module.bias:
        raise TypeError(f"module must have biases (an rnncore.{cell} built with bias=True)")
    params = module.parameters()
    pairs = []
    for name, p in params.items():
        # bias_ih_l{k}[_reverse] of a module, bias_ih of a cell
        if name.startswith("bias_ih"):
            pairs.append((p, params["bias_hh" + name[len("bias_ih") :]]))
    return module.hidden_size, pairs


def forget_gate_bias(module: Any, value: float = 1.0) -> None:
    """Sets an LSTM's forget-gate bias to ``value``, in place.

    Gate order is PyTorch's (i, f, g, o): rows ``H:2H`` of every ``bias_ih_l*`` (both
    directions, every layer) become ``value`` and the same rows of ``bias_hh_l*`` become 0,
    so the forget gate's total bias is ``value``.

    Args:
        module: an ``rnncore.LSTM`` or ``rnncore.LSTMCell`` with ``bias=True``.
        value: the forget-gate bias (1.0 is the common choice of Jozefowicz et al. 2015).

    Raises:
        TypeError: ``module`` is not an rnncore.LSTM with biases, or ``value`` not a number.
        ValueError: ``value`` is not finite.
    """
    value = v.check_finite("value", value)
    hidden, pairs = _gate_biases(module, "LSTM")
    for b_ih, b_hh in pairs:
        b_ih[hidden : 2 * hidden] = value
        b_hh[hidden : 2 * hidden] = 0.0


def update_gate_bias(module: Any, value: float) -> None:
    """Sets a GRU's update-gate (z) bias to ``value``, in place.

    Gate order is PyTorch's (r, z, n): rows ``H:2H`` of every ``bias_ih_l*`` become
    ``value`` and the same rows of ``bias_hh_l*`` become 0. With PyTorch's
    ``h = (1 - z) * n + z * h_prev``, a positive value makes the GRU keep its state longer.

    Args:
        module: an ``rnncore.GRU`` or ``rnncore.GRUCell`` with ``bias=True``.
        value: the update-gate bias.

    Raises:
        TypeError: ``module`` is not an rnncore.GRU with biases, or ``value`` not a number.
        ValueError: ``value`` is not finite.
    """
    value = v.check_finite("value", value)
    hidden, pairs = _gate_biases(module, "GRU")
    for b_ih, b_hh in pairs:
        b_ih[hidden : 2 * hidden] = value
        b_hh[hidden : 2 * hidden] = 0.0


def chrono(module: Any, t_max: float, rng: Any = None) -> None:
    """Chrono initialization of the gate biases (Tallec & Ollivier, ICLR 2018), in place.

    "Can recurrent neural networks warp time?": gate biases drawn so that the
    characteristic forgetting times ``1 / (1 - sigmoid(b))`` spread over ``[2, t_max]``.

    - LSTM (gates i, f, g, o): ``b_f = log(U(1, t_max - 1))`` and ``b_i = -b_f`` in
      ``bias_ih``; the i and f blocks of ``bias_hh`` are set to 0.
    - GRU (gates r, z, n): PyTorch's GRU computes ``h = (1 - z) * n + z * h_prev``, so z
      plays the forget gate's role: ``b_z = log(U(1, t_max - 1))`` in ``bias_ih``, 0 in the
      z block of ``bias_hh``.

    Other gate biases are left unchanged. Each layer and direction draws its own values.

    Args:
        module: an ``rnncore.LSTM`` or ``rnncore.GRU`` (or their cells) with ``bias=True``.
        t_max: the longest dependency range expected, in time steps; must be > 2 (the
            uniform range ``[1, t_max - 1]`` must not be empty).
        rng: None, an int seed or a ``numpy.random.Generator``.

    Raises:
        TypeError: ``module`` is not an rnncore LSTM or GRU with biases (an RNN has no
            gates), or ``t_max`` is not a number.
        ValueError: ``t_max`` is not a finite number > 2.
    """
    t_max = v.check_finite("t_max", t_max)
    if not t_max > 2.0:
        raise ValueError(f"t_max must be > 2 (U(1, t_max - 1) must not be empty), got {t_max}")
    if _is_cell(module, "lstm"):
        hidden, pairs = _gate_biases(module, "LSTM")
        gen = _as_rng(rng)
        for b_ih, b_hh in pairs:
            b_f = np.log(gen.uniform(1.0, t_max - 1.0, size=hidden))
            b_ih[0:hidden] = -b_f
            b_ih[hidden : 2 * hidden] = b_f
            b_hh[0 : 2 * hidden] = 0.0
    elif _is_cell(module, "gru"):
        hidden, pairs = _gate_biases(module, "GRU")
        gen = _as_rng(rng)
        for b_ih, b_hh in pairs:
            b_ih[hidden : 2 * hidden] = np.log(gen.uniform(1.0, t_max - 1.0, size=hidden))
            b_hh[hidden : 2 * hidden] = 0.0
    else:
        raise TypeError(
            f"module must be an rnncore.LSTM or rnncore.GRU with biases, "
            f"got {type(module).__name__}"
        )


# --------------------------------------------------------------------------- defaults
def _fill_default_parameters(params: Any, options: Any, rng: np.random.Generator) -> None:
    """Draws a new recurrent module's parameters into its live views, in place.

    ``options.init == "default"``: Glorot-uniform ``weight_ih`` and ``weight_hr``,
    orthogonal ``weight_hh``, one block per gate; zero biases but the forget (LSTM) or
    update (GRU) gate's block of ``bias_ih``; normalization gains 1 (layer norm) or
    ``bn_gamma`` (batch norm), shifts 0. ``"torch"``: PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))``
    for every weight and bias. The LSTM's peephole vectors (``weight_ci``, ``weight_cf``,
    ``weight_co``) are ``U(-1/sqrt(H), 1/sqrt(H))`` with either scheme: Glorot's and the
    orthogonal draw are for matrices, and a vector of per-unit gains has no fans. The numbers
    drawn for a seed never change (peepholes are drawn where they come in the parameter
    order, so a model without them draws what it always drew).
    """
    H, gates = options.hidden_size, options.gates
    for name, p in params.items():
        if name.startswith("ln_"):  # layer-norm gains 1, shifts 0
            p[...] = 1.0 if "_weight" in name else 0.0
            continue
        if name.startswith("bn_"):  # batch-norm gains bn_gamma, shifts 0
            p[...] = options.bn_gamma if "_weight" in name else 0.0
            continue
        if options.init == "torch":
            bound = 1.0 / np.sqrt(H)
            p[...] = rng.uniform(-bound, bound, size=p.shape)
            continue
        if name.startswith("weight_ih"):
            p[...] = np.concatenate(
                [glorot_uniform((H, p.shape[1]), rng=rng) for _ in range(gates)]
            )
        elif name.startswith("weight_hh"):
            p[...] = np.concatenate([orthogonal((H, p.shape[1]), rng=rng) for _ in range(gates)])
        elif name.startswith("weight_hr"):
            p[...] = glorot_uniform(p.shape, rng=rng)
        elif name.startswith(("weight_ci", "weight_cf", "weight_co")):  # peephole vectors
            bound = 1.0 / np.sqrt(H)
            p[...] = rng.uniform(-bound, bound, size=p.shape)
        elif name.startswith("bias"):
            p[...] = 0.0
            if name.startswith("bias_ih"):
                if options.cell == "lstm":
                    p[H : 2 * H] = options.forget_bias  # f block (i, f, g, o)
                elif options.cell == "gru":
                    p[H : 2 * H] = options.update_bias  # z block (r, z, n)
        else:  # pragma: no cover - every name is handled above
            raise AssertionError(f"no initializer for {name}")
