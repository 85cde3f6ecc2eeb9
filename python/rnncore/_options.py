"""The options of a module, checked once and then frozen.

A module's constructor turns its arguments into one of these objects; everything else
(the compiled model, the parameter layout, ``repr``, and later model files and pickles)
reads the options from it instead of from loose attributes. Building an options object
by its checking function is the only way to get one, so an options object is always
valid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _limits
from . import _validation as v

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}  # cell -> number of gate blocks G
NORMS = (None, "layer", "batch", "batch_input")
BATCH_NORMS = ("batch", "batch_input")
REGULARIZERS = ("input_dropout", "recurrent_dropout", "zoneout")
NORM_OPTION_DEFAULTS = {"ln_eps": 1e-5, "bn_eps": 1e-5, "bn_momentum": 0.1, "bn_gamma": None}
INIT_SCHEMES = ("default", "torch")
#: The cell options of the LSTM alone (``clip`` is every cell's).
LSTM_OPTIONS = ("peephole", "cell_clip", "input_forget")


class _Options:
    """What both options classes share: plain-value form, the NumPy dtype, and the check
    that a dict names only known options."""

    dtype: str

    @functools.cached_property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def to_dict(self) -> dict:
        """The options as plain Python values (what a model file or a pickle records)."""
        return dataclasses.asdict(self)

    @classmethod
    def _known(cls, d: Mapping[str, Any], what: str) -> dict:
        """``d`` as a new dict, after checking that every key is one of the options.

        Raises:
            ValueError: unknown keys, all listed.
        """
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {what} options {unknown}")
        return d


@dataclass(frozen=True)
class RecurrentOptions(_Options):
    """Everything that defines an RNN, LSTM or GRU module, validated.

    The architecture (``cell`` to ``reset_after``), the normalization's constants, the
    regularizers, how the parameters were first drawn (``init`` to ``chrono``), and the
    cell options (``clip``; the LSTM's ``peephole``, ``cell_clip``, ``input_forget``).
    """

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    reverse: bool = False
    dtype: str = "float32"
    nonlinearity: str = "tanh"
    proj_size: int = 0
    reset_after: bool = True
    norm: str | None = None
    ln_eps: float = 1e-5
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    bn_gamma: float = 0.1
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    init: str = "default"
    forget_bias: float = 1.0
    update_bias: float = 0.0
    chrono: float | None = None
    clip: float | None = None
    cell_clip: float | None = None
    peephole: bool = False
    input_forget: bool = False

    # ----------------------------------------------------------------- derived
    # Cached: the options never change, and calls read these on every step.
    @property
    def gates(self) -> int:
        """G, the number of gate blocks of the cell (1, 4 or 3)."""
        return CELLS[self.cell]

    @functools.cached_property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @functools.cached_property
    def num_states(self) -> int:
        """The first axis of a state: ``num_layers * num_directions``."""
        return self.num_layers * self.num_directions

    @functools.cached_property
    def out_size(self) -> int:
        """H_out: ``proj_size`` if set, else ``hidden_size``."""
        return self.proj_size if self.proj_size else self.hidden_size

    @property
    def cell_options(self) -> dict:
        """The cell options that are set (``clip``, ``peephole``, ``cell_clip``,
        ``input_forget`` not at their defaults), by name."""
        return {k: getattr(self, k) for k in ("clip", *LSTM_OPTIONS)
                if getattr(self, k) not in (None, False)}  # fmt: skip

    @property
    def norm_options(self) -> dict:
        return {k: getattr(self, k) for k in NORM_OPTION_DEFAULTS}

    @functools.cached_property
    def regularized(self) -> bool:
        """Whether training-mode calls draw masks (dropout, zoneout)."""
        return any(getattr(self, k) > 0 for k in ("dropout", *REGULARIZERS))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecurrentOptions:
        """Checks a dict of ``to_dict()`` form and returns the options it describes.

        Raises:
            TypeError, ValueError: as the module constructors do.
        """
        d = cls._known(d, "module")
        cell = d.pop("cell", None)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        norm_options = {k: d.pop(k) for k in NORM_OPTION_DEFAULTS if k in d}
        regularizers = {k: d.pop(k) for k in REGULARIZERS if k in d}
        options, _ = recurrent_options(
            cell, **d, seed=None, norm_options=norm_options, regularizers=regularizers
        )
        return options


def recurrent_options(
    cell: str,
    input_size: Any,
    hidden_size: Any,
    num_layers: Any = 1,
    bias: Any = True,
    batch_first: Any = False,
    dropout: Any = 0.0,
    bidirectional: Any = False,
    norm: Any = None,
    dtype: Any = "float32",
    seed: Any = None,
    init: Any = "default",
    *,
    nonlinearity: Any = "tanh",
    proj_size: Any = 0,
    reset_after: Any = True,
    reverse: Any = False,
    forget_bias: Any = 1.0,
    update_bias: Any = 0.0,
    chrono: Any = None,
    clip: Any = None,
    cell_clip: Any = None,
    peephole: Any = False,
    input_forget: Any = False,
    norm_options: Mapping[str, Any] | None = None,
    regularizers: Mapping[str, Any] | None = None,
) -> tuple[RecurrentOptions, int | None]:
    """Checks a recurrent module's constructor arguments, in the order of its signature.

    Returns:
        ``(options, seed)``, the seed checked (a non-negative int or None).

    Raises:
        TypeError: an argument of the wrong type, or an unknown keyword.
        ValueError: a value out of range or an impossible combination.
        MemoryError: a model too large to allocate.
    """
    input_size = v.check_int("input_size", input_size, 1)
    hidden_size = v.check_int("hidden_size", hidden_size, 1)
    num_layers = v.check_int("num_layers", num_layers, 1)
    if num_layers > _limits.MAX_LAYERS:
        raise ValueError(
            f"num_layers must be at most {_limits.MAX_LAYERS}, got {num_layers} "
            f"(deeper recurrent stacks do not train)"
        )
    bias = v.check_bool("bias", bias)
    batch_first = v.check_bool("batch_first", batch_first)
    bidirectional = v.check_bool("bidirectional", bidirectional)
    reverse = v.check_bool("reverse", reverse)
    if reverse and bidirectional:
        raise ValueError(
            "reverse=True is for a one-direction module; bidirectional=True runs both ways"
        )
    dropout = v.check_float("dropout", dropout, 0.0, 1.0, high_open=True)
    np_dtype = v.parse_dtype(dtype)
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    proj_size = v.check_int("proj_size", proj_size, 0)
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}"
        )
    reset_after = v.check_bool("reset_after", reset_after)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    norm_values = dict(NORM_OPTION_DEFAULTS)
    for key, value in (norm_options or {}).items():
        if key in LSTM_OPTIONS:  # an RNN's or GRU's constructor took it as a norm option
            raise TypeError(f"{key} is an LSTM option (unexpected keyword argument {key!r})")
        if key not in NORM_OPTION_DEFAULTS:
            raise TypeError(f"unexpected keyword argument {key!r}")
        if key == "bn_gamma" and value is None:
            continue
        high = 1.0 if key == "bn_momentum" else np.inf
        norm_values[key] = v.check_float(key, value, 0.0, high, high_open=key != "bn_momentum")
    if norm_values["bn_gamma"] is None:  # 0.1 for recurrent batch norm, 1 for batch_input
        norm_values["bn_gamma"] = 1.0 if norm == "batch_input" else 0.1
    if norm is not None and cell == "gru" and not reset_after:
        raise ValueError("reset_after=False is only available with norm=None")
    if init not in INIT_SCHEMES:
        raise ValueError(f"init must be 'default' or 'torch', got {init!r}")
    if seed is not None:
        seed = v.check_int("seed", seed, 0)
    clip = check_clip("clip", clip)
    cell_clip = check_clip("cell_clip", cell_clip)
    peephole = v.check_bool("peephole", peephole)
    input_forget = v.check_bool("input_forget", input_forget)
    if cell != "lstm":
        given = {"peephole": peephole, "cell_clip": cell_clip is not None,
                 "input_forget": input_forget}  # fmt: skip
        for key, value in given.items():
            if value:
                raise ValueError(f"{key} is an LSTM option")
    check_model_size(cell, input_size, hidden_size, num_layers, bidirectional, proj_size,
                     np_dtype.itemsize, peephole)  # fmt: skip
    forget_bias = v.check_finite("forget_bias", forget_bias)
    update_bias = v.check_finite("update_bias", update_bias)
    regularizers = dict(regularizers or {})
    reg_values = {
        k: v.check_float(k, regularizers.get(k, 0.0), 0.0, 1.0, high_open=True)
        for k in REGULARIZERS
    }
    options = RecurrentOptions(
        cell=cell,
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        dropout=dropout,
        bidirectional=bidirectional,
        reverse=reverse,
        dtype=np_dtype.name,
        nonlinearity=nonlinearity,
        proj_size=proj_size,
        reset_after=reset_after,
        norm=norm,
        **norm_values,
        **reg_values,
        init=init,
        forget_bias=forget_bias,
        update_bias=update_bias,
        chrono=chrono,
        clip=clip,
        cell_clip=cell_clip,
        peephole=peephole,
        input_forget=input_forget,
    )
    return options, seed


def check_clip(name: str, value: Any) -> float | None:
    """``clip`` or ``cell_clip``: None, or a positive finite real number (as a float).

    Raises:
        TypeError: neither None nor a real number (a bool included).
        ValueError: zero, negative, infinite or NaN.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a positive finite number or None, got {type(value).__name__}"
        )
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite number or None, got {value}")
    return value


def check_model_size(cell, input_size, hidden_size, num_layers, bidirectional, proj_size,
                     itemsize, peephole=False) -> None:  # fmt: skip
    """Refuses models that cannot be allocated here, naming the culprit, before allocating.

    Raises:
        ValueError: a dimension beyond the core's limit.
        MemoryError: more parameter bytes than the core's limit, or more memory than the
            machine has for the parameters, their gradients and the initialization's
            largest temporaries (one matrix's gate blocks drawn in float64, and their
            concatenation).
    """
    dims = {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers}
    for name, value in dims.items():
        if value > _limits.MAX_DIM:
            raise ValueError(f"{name} must be at most {_limits.MAX_DIM}, got {value}")
    g, h = CELLS[cell], hidden_size
    p = proj_size if proj_size else hidden_size
    d = 2 if bidirectional else 1
    count = 0
    for k in range(num_layers):
        inp = input_size if k == 0 else d * p
        count += d * (g * h * (inp + p + 2) + proj_size * h + (3 * h if peephole else 0))
    if count * itemsize > _limits.MAX_PARAMETER_BYTES:
        raise MemoryError(
            f"a model with input_size={input_size}, hidden_size={hidden_size}, "
            f"num_layers={num_layers} has {count} parameters: too many to allocate"
        )
    largest_matrix = g * h * max(input_size, d * p)
    _limits.require_memory(
        2 * count * itemsize + 2 * 8 * largest_matrix,
        lambda: f"a model with input_size={input_size}, hidden_size={hidden_size}, "
        f"num_layers={num_layers} ({count} parameters)",
    )


@dataclass(frozen=True)
class LinearOptions(_Options):
    """Everything that defines a Linear layer, validated."""

    in_features: int
    out_features: int
    bias: bool = True
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearOptions:
        """Checks a dict of ``to_dict()`` form and returns the options it describes.

        Raises:
            TypeError, ValueError: as ``Linear`` does.
        """
        options, _ = linear_options(**cls._known(d, "Linear"))
        return options


def linear_options(
    in_features: Any, out_features: Any, bias: Any = True, dtype: Any = "float32", seed: Any = None
) -> tuple[LinearOptions, int | None]:
    """Checks ``Linear``'s constructor arguments in the order of its signature.

    Returns:
        ``(options, seed)``.

    Raises:
        TypeError, ValueError: as ``Linear`` documents.
    """
    in_features = v.check_int("in_features", in_features, 1)
    out_features = v.check_int("out_features", out_features, 1)
    bias = v.check_bool("bias", bias)
    np_dtype = v.parse_dtype(dtype)
    if seed is not None:
        seed = v.check_int("seed", seed, 0)
    return LinearOptions(in_features, out_features, bias, np_dtype.name), seed
