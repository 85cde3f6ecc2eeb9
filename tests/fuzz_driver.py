"""Property-based fuzzing of rnncore's public API (driven by tests/test_fuzz.py).

Run on its own, one batch of examples in this process::

    PYTHONPATH=python python tests/fuzz_driver.py --seed 1 --examples 200 [--trace FILE]

Each example builds a module (valid options, or options with odd values: wrong types,
negative sizes, NaN/inf, huge ints), then runs 1-4 operations on it: calls and
``forward_train`` with random ``x``/``hx``/``lengths`` (any rank, shape, dtype, layout; nested
lists), ``backward`` (right and wrong gradients, a tape used twice, a tape of another module,
not a tape), ``load_state_dict`` (random subsets, wrong shapes and dtypes, extra keys, strict
True/False), ``half_weights`` (and misuse of the copy), ``train``/``eval`` switches, and a
call chained on the previous ``h_n``. Every operation's arguments are classified while they
are drawn: ``ok`` (documented valid usage), ``raise`` (documented invalid usage) or
``either`` (the contract does not say). The properties checked:

* an operation either raises one of TypeError, ValueError, KeyError, RuntimeError,
  MemoryError with a non-empty message (required for ``raise``, refused for ``ok``), or
  succeeds (refused for ``raise``) and then its results have the documented structure,
  shapes and dtypes and match the float64 reference (``rnncore.reference``) with the
  tolerances of tests/test_forward.py (scaled by the normalizations' conditioning as in
  tests/test_norm.py); ``backward`` of float64 modules is checked against a central
  difference of the reference along a random direction of (x, h_0, all parameters);
* no array (or nested list) passed in is modified, byte for byte;
* the module's state (parameters exactly, running statistics) is what the operations imply:
  a failed ``load_state_dict`` changes nothing, a successful one exactly what it loaded.

Before each operation the example so far is written to ``--trace`` (overwritten, flushed), so
a crash (segfault, abort) of this process leaves its reproducer there; the test prints it.
Generation is deterministic for a given ``--seed`` (``hypothesis.seed``, no database), so
``--seed S --examples N`` replays a batch.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import math
import os
import sys
import tempfile

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# database=None keeps no examples, but hypothesis also caches constants in its storage
# directory (default ./.hypothesis): keep that out of the repository.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "rnncore-fuzz-hypothesis")
)

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hyp_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rnn_testing import (  # noqa: E402
    Config,
    norm_condition,
    random_buffers,
    reference_masks,
    reference_with_buffers,
    relu_margin,
)
from test_forward import TOLERANCE  # noqa: E402  (float64 1e-12, float32 3e-5)

import rnncore as rc  # noqa: E402

DOCUMENTED = (TypeError, ValueError, KeyError, RuntimeError, MemoryError)
MAX_KAPPA = 100.0  # as tests/test_norm.py: beyond it values are not compared (shapes are)
T_MAX, B_MAX, H_MAX, IN_MAX = 6, 4, 6, 4
CLASSES = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}

OK, RAISE, EITHER = "ok", "raise", "either"


def combine(*expects: str) -> str:
    """Invalid if any part is invalid; else unspecified if any part is; else valid."""
    if RAISE in expects:
        return RAISE
    return EITHER if EITHER in expects else OK


class Raised:
    def __init__(self, exc):
        self.exc = exc

    def __repr__(self):
        return f"Raised({type(self.exc).__name__}: {self.exc})"


# ---------------------------------------------------------------------------------------------
# The example's trace: what was drawn and done, written out before each operation.


class Trace:
    path: str | None = None
    lines: list[str] = []
    failed: list[str] = []

    @classmethod
    def start(cls):
        cls.lines = []

    @classmethod
    def add(cls, line: str, flush: bool = False):
        cls.lines.append(line)
        if flush and cls.path:
            with open(cls.path, "w") as f:
                f.write("\n".join(cls.lines) + "\n")


def short(value, limit=300) -> str:
    if isinstance(value, np.ndarray):
        flags = "" if value.flags.c_contiguous else " non-contiguous"
        flags += "" if value.flags.writeable else " read-only"
        text = f"ndarray({value.shape}, {value.dtype}{flags})"
        if value.size <= 6 and value.dtype != object:
            text += f"={value.tolist()!r}"
        return text
    if isinstance(value, (list, tuple)):
        inner = ", ".join(short(v, limit // 2) for v in value)
        text = f"[{inner}]" if isinstance(value, list) else f"({inner})"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


STATS: collections.Counter = collections.Counter()


def attempt(what: str, expect: str, fn):
    """Runs ``fn()`` against the expectation; returns its result or a ``Raised``."""
    Trace.add(f"-> {what} (expected: {expect})", flush=True)
    key = what.split("(")[0].split(" ")[0]
    try:
        result = fn()
    except DOCUMENTED as e:
        STATS[(key, expect, type(e).__name__)] += 1
        message = str(e).strip(" '\"")
        assert message, f"{what}: {type(e).__name__} with an empty message"
        assert expect != OK, f"{what}: valid usage raised {type(e).__name__}: {e}"
        Trace.add(f"   raised {type(e).__name__}: {str(e)[:200]}")
        return Raised(e)
    except Exception as e:  # noqa: BLE001 - any other exception type is a failure
        raise AssertionError(f"{what}: undocumented exception {type(e).__name__}: {e}") from e
    STATS[(key, expect, "ok")] += 1
    assert expect != RAISE, f"{what}: invalid usage was accepted (returned {short(result)})"
    Trace.add("   succeeded")
    return result


# ---------------------------------------------------------------------------------------------
# Inputs are never modified.


class Guard:
    """Byte-for-byte snapshots of everything passed in (arrays, their bases, nested lists)."""

    def __init__(self):
        self.items = []

    def watch(self, obj):
        if isinstance(obj, np.ndarray):
            snap = (obj.dtype, obj.shape, obj.strides, obj.tobytes())
            self.items.append((obj, snap))
            if isinstance(obj.base, np.ndarray):
                self.watch(obj.base)
        elif isinstance(obj, (list, tuple)):
            self.items.append((obj, ("seq", repr(obj))))
            for o in obj:
                self.watch(o)
        elif isinstance(obj, dict):
            self.items.append((obj, ("dict", list(obj.keys()))))
            for o in obj.values():
                self.watch(o)
        return obj

    def check(self, what):
        for obj, snap in self.items:
            if isinstance(obj, np.ndarray):
                now = (obj.dtype, obj.shape, obj.strides, obj.tobytes())
                assert now == snap, f"{what}: an input array was modified ({short(obj)})"
            elif snap[0] == "seq":
                assert repr(obj) == snap[1], f"{what}: an input list was modified"
            else:
                assert list(obj.keys()) == snap[1], f"{what}: an input dict was modified"


# ---------------------------------------------------------------------------------------------
# Constructors.

INT_ODD = [0, -1, -(2**70), 2**31, 2**63, 2**100, 3.0, 2.5, "3", None, True, float("nan"), [3]]
BOOL_ODD = [1, 0, "True", None, 1.0]
PROB_ODD = [float("nan"), float("inf"), -float("inf"), -0.1, 1.0, 1.5, "0.1", None, True]


def int_valid(value, minimum) -> str:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return RAISE
    if value < minimum or value > 2**31 - 1:
        return RAISE
    return OK


def bool_valid(value) -> str:
    return OK if isinstance(value, (bool, np.bool_)) else RAISE


def float_valid(value, low, high, high_open) -> str:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return RAISE
    if isinstance(value, complex) or (isinstance(value, np.number) and np.iscomplexobj(value)):
        return RAISE
    value = float(value)
    ok = low <= value < high if high_open else low <= value <= high
    return OK if ok else RAISE


@st.composite
def constructor(draw):
    """(cls name, args, kwargs, expectation, Config or None, reg dict, norm options)."""
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    kw = {}
    kw["input_size"] = draw(st.integers(1, IN_MAX))
    kw["hidden_size"] = draw(st.integers(1, H_MAX))
    kw["num_layers"] = draw(st.integers(1, 3))
    kw["bidirectional"] = draw(st.booleans())
    kw["batch_first"] = draw(st.booleans())
    kw["bias"] = draw(st.booleans())
    norm = draw(st.sampled_from([None, None, "layer", "batch", "batch_input"]))
    if norm is not None or draw(st.booleans()):
        kw["norm"] = norm
    kw["dtype"] = draw(st.sampled_from(["float32", "float64", np.float32, np.float64, "f8"]))
    if cell == "rnn":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    elif cell == "lstm":
        kw["proj_size"] = draw(st.integers(0, kw["hidden_size"] - 1)) if draw(st.booleans()) else 0
    else:
        kw["reset_after"] = norm is not None or draw(st.booleans())
    if draw(st.booleans()):
        kw["seed"] = draw(st.integers(0, 2**70))
    if draw(st.integers(0, 3)) == 0:
        kw["init"] = "torch"
    for key in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
        if draw(st.integers(0, 5)) == 0:
            kw[key] = draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]))
    if norm is not None:
        for key, values in (
            ("ln_eps", [1e-5, 1e-3, 0.5]),
            ("bn_eps", [1e-5, 1e-3, 0.5]),
            ("bn_momentum", [0.0, 0.1, 0.5, 1.0]),
            ("bn_gamma", [None, 0.1, 1.0, 2.0]),
        ):
            if draw(st.integers(0, 4)) == 0:
                kw[key] = draw(st.sampled_from(values))
    if cell == "lstm" and draw(st.integers(0, 5)) == 0:
        kw["forget_bias"] = draw(st.sampled_from([0.0, 1.0, -2.5]))
    if cell == "gru" and draw(st.integers(0, 5)) == 0:
        kw["update_bias"] = draw(st.sampled_from([0.0, 1.0, -2.5]))

    # Odd values for 0..2 arguments (more often none: most examples go on to calls).
    n_odd = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    expects = []
    for _ in range(n_odd):
        arg = draw(
            st.sampled_from(
                [
                    "input_size",
                    "hidden_size",
                    "num_layers",
                    "proj_size",
                    "seed",
                    "bias",
                    "batch_first",
                    "bidirectional",
                    "reset_after",
                    "dropout",
                    "input_dropout",
                    "recurrent_dropout",
                    "zoneout",
                    "ln_eps",
                    "bn_eps",
                    "bn_momentum",
                    "bn_gamma",
                    "dtype",
                    "norm",
                    "nonlinearity",
                    "init",
                    "unknown_option",
                    "forget_bias",
                ]
            )  # fmt: skip
        )
        if arg in ("input_size", "hidden_size", "num_layers", "proj_size", "seed"):
            kw[arg] = draw(st.sampled_from(INT_ODD + [np.int64(2), np.uint8(1)]))
        elif arg in ("bias", "batch_first", "bidirectional", "reset_after"):
            kw[arg] = draw(st.sampled_from(BOOL_ODD + [np.bool_(True)]))
        elif arg in ("dropout", "input_dropout", "recurrent_dropout", "zoneout", "bn_momentum"):
            kw[arg] = draw(st.sampled_from(PROB_ODD + [np.float32(0.5), 0]))
        elif arg in ("ln_eps", "bn_eps", "bn_gamma"):
            kw[arg] = draw(st.sampled_from(PROB_ODD + [0.0, 1e308, 3]))
        elif arg == "dtype":
            kw[arg] = draw(
                st.sampled_from(
                    [
                        "float16",
                        "int32",
                        None,
                        "f4",
                        "complex64",
                        3,
                        object,
                        "nope",
                        np.dtype("float64"),
                    ]
                )  # fmt: skip
            )
        elif arg == "norm":
            kw[arg] = draw(st.sampled_from(["Layer", "none", "", 1, np.str_("layer"), []]))
        elif arg == "nonlinearity":
            kw[arg] = draw(st.sampled_from(["sigmoid", None, "TANH", "relu"]))
        elif arg == "init":
            kw[arg] = draw(st.sampled_from(["xavier", None, "torch"]))
        elif arg == "unknown_option":
            kw["not_an_option"] = 1
        elif arg == "forget_bias":
            kw[arg] = draw(st.sampled_from([float("nan"), "1.5", None, float("inf")]))

    # Expectation, argument by argument (spec: ValueError/TypeError naming the argument).
    expects.append(int_valid(kw["input_size"], 1))
    expects.append(int_valid(kw["hidden_size"], 1))
    expects.append(int_valid(kw["num_layers"], 1))
    for key in ("bias", "batch_first", "bidirectional"):
        expects.append(bool_valid(kw[key]))
    if "seed" in kw:
        s = kw["seed"]
        ok_type = not isinstance(s, (bool, np.bool_)) and isinstance(s, (int, np.integer))
        expects.append(OK if s is None or (ok_type and s >= 0) else RAISE)
    for key in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
        if key in kw:
            expects.append(float_valid(kw[key], 0.0, 1.0, True))
    for key in ("ln_eps", "bn_eps", "bn_gamma"):
        if key in kw and not (key == "bn_gamma" and kw[key] is None):
            expects.append(float_valid(kw[key], 0.0, math.inf, True))
    if "bn_momentum" in kw:
        expects.append(float_valid(kw["bn_momentum"], 0.0, 1.0, False))
    dt = kw["dtype"]
    try:
        dt_ok = dt is not None and np.dtype(dt) in (np.dtype("float32"), np.dtype("float64"))
    except TypeError:
        dt_ok = False
    expects.append(OK if dt_ok else RAISE)
    nm = kw.get("norm")
    norm_ok = nm is None or (isinstance(nm, str) and nm in ("layer", "batch", "batch_input"))
    expects.append(OK if norm_ok else RAISE)
    if "nonlinearity" in kw and cell == "rnn":
        expects.append(OK if kw["nonlinearity"] in ("tanh", "relu") else RAISE)
    if "init" in kw:
        expects.append(OK if kw["init"] in ("default", "torch") else RAISE)
    if "not_an_option" in kw:
        expects.append(RAISE)
    for key in ("forget_bias", "update_bias"):
        if key in kw:
            fb = kw[key]
            fb_ok = isinstance(fb, (int, float)) and math.isfinite(fb)
            # a string or NaN/inf initial bias: not specified (float() of it is taken)
            expects.append(OK if fb_ok else EITHER)
    # arguments that do not belong to the class
    if cell != "rnn" and "nonlinearity" in kw:
        expects.append(RAISE)
    if cell != "lstm" and "proj_size" in kw:
        expects.append(RAISE)
    if cell != "gru" and "reset_after" in kw:
        expects.append(RAISE)
    if cell != "lstm" and "forget_bias" in kw:
        expects.append(RAISE)
    if cell == "lstm":
        expects.append(int_valid(kw["proj_size"], 0))
        if expects[-1] == OK and int_valid(kw["hidden_size"], 1) == OK:
            expects.append(OK if kw["proj_size"] < kw["hidden_size"] else RAISE)
    if cell == "gru":
        expects.append(bool_valid(kw["reset_after"]))
        if norm_ok and nm is not None and kw["reset_after"] is False:
            expects.append(RAISE)
    expect = combine(*expects)

    cfg = None
    if expect != RAISE:
        cfg = Config(
            cell=cell,
            input_size=int(kw["input_size"]),
            hidden_size=int(kw["hidden_size"]),
            num_layers=int(kw["num_layers"]),
            bidirectional=bool(kw["bidirectional"]),
            batch_first=bool(kw["batch_first"]),
            bias=bool(kw["bias"]),
            proj_size=int(kw.get("proj_size", 0)),
            nonlinearity=kw.get("nonlinearity", "tanh"),
            reset_after=bool(kw.get("reset_after", True)),
            norm=nm if nm is None else str(nm),
            norm_options=tuple(
                (k, float(kw[k])) for k in ("ln_eps", "bn_eps", "bn_momentum") if k in kw
            ),
            regularizers=tuple(
                (k, float(kw[k]))
                for k in ("dropout", "input_dropout", "recurrent_dropout", "zoneout")
                if k in kw
            ),
        )
    dtype = np.dtype(dt).name if dt_ok else None
    return cell, kw, expect, cfg, dtype


# ---------------------------------------------------------------------------------------------
# The model of the module's state, and the reference.


class Subject:
    """A module under test with the state the operations imply (float64 copies)."""

    def __init__(self, module, cfg: Config, dtype: str):
        self.m = module
        self.cfg = cfg
        self.dtype = dtype
        sd = module.state_dict()
        names = set(module.parameters())
        self.params = {k: np.array(v, dtype=np.float64) for k, v in sd.items() if k in names}
        self.buffers = {k: np.array(v, dtype=np.float64) for k, v in sd.items() if k not in names}
        self.training = True
        self.half = False
        self.last = None  # (x, h_n) of the last successful call, for chained calls

    @property
    def regularized(self) -> bool:
        return any(v > 0 for _, v in self.cfg.regularizers)

    def check_state(self, what: str, buffers_tol: float | None = None, expected_bufs=None):
        """Parameters exactly as implied; buffers exactly (or within ``buffers_tol`` of
        ``expected_bufs``), then re-synchronized with the module's."""
        sd = self.m.state_dict()
        assert set(sd) == set(self.params) | set(self.buffers), f"{what}: state_dict keys"
        for k, want in self.params.items():
            got = sd[k]
            assert got.dtype == np.dtype(self.dtype), f"{what}: {k} dtype {got.dtype}"
            np.testing.assert_array_equal(got.astype(np.float64), want, err_msg=f"{what}: {k}")
        want_bufs = self.buffers if expected_bufs is None else expected_bufs
        for k, want in want_bufs.items():
            got = np.asarray(sd[k], dtype=np.float64)
            assert got.shape == want.shape, f"{what}: buffer {k} shape {got.shape} vs {want.shape}"
            if buffers_tol is None:
                np.testing.assert_array_equal(got, want, err_msg=f"{what}: buffer {k}")
            elif np.isfinite(want).all():
                scale = max(1.0, float(np.abs(want).max()))
                np.testing.assert_allclose(
                    got, want, rtol=buffers_tol, atol=buffers_tol * scale, err_msg=f"{what}: {k}"
                )
        self.buffers = {k: np.array(sd[k], dtype=np.float64) for k in self.buffers}
        assert self.m.training == self.training, f"{what}: training flag"


def as_module_dtype(value, dtype):
    """What the module computes with: the value cast to its dtype, as float64."""
    return np.asarray(value).astype(dtype).astype(np.float64)


def check_close(actual, expected, dtype, tol, what, rows=None):
    """tests/test_forward.py's comparison (``|a - e| <= tol * (max(1, max|e|) + |e|)``);
    ``rows``: only these (batch-axis) entries, given as a boolean mask over axis ``rows[0]``."""
    assert isinstance(actual, np.ndarray), f"{what}: {type(actual).__name__}, not an ndarray"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    if rows is not None:
        axis, keep = rows
        actual = np.compress(keep, actual, axis=axis)
        expected = np.compress(keep, expected, axis=axis)
    if tol is None or expected.size == 0:
        return
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


# ---------------------------------------------------------------------------------------------
# Arrays of any kind.

REAL_DTYPES = ["float32", "float64", "float16", "int8", "int32", "int64", "uint8"]


@st.composite
def array_like(draw, shape, *, name, bad_dtype=False, scale=1.0):
    """An array-like of ``shape``: (value, expectation). A real dtype (any of them) unless
    ``bad_dtype``: then complex, object, str (invalid) or bool (not specified)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if bad_dtype:
        dtype = draw(st.sampled_from(["bool", "complex64", "complex128", "object", "str"]))
    else:
        dtype = draw(st.one_of(st.sampled_from(["float32", "float64"]),
                               st.sampled_from(REAL_DTYPES)))  # fmt: skip
    expect = OK
    if dtype in ("float32", "float64", "float16"):
        base = np.asarray(rng.standard_normal(shape) * scale)
    else:
        base = np.asarray(rng.integers(-3, 4, size=shape))
    if dtype == "bool":
        expect = EITHER  # spec: "any real dtype"; whether bool counts is not said
        value = base > 0
    elif dtype.startswith("complex"):
        expect = RAISE
        value = (base + 0.5j).astype(dtype)
    elif dtype == "object":
        expect = RAISE
        value = np.empty(shape, dtype=object)
        value[...] = base if base.ndim else base.item()
    elif dtype == "str":
        expect = RAISE
        value = base.astype(str)
    else:
        if dtype.startswith("uint"):
            base = np.abs(base)
        value = np.asarray(base.astype(dtype))
    if dtype.startswith("float") and value.size and draw(st.integers(0, 11)) == 0:
        idx = tuple(int(rng.integers(0, n)) for n in shape)
        value[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    layout = draw(st.sampled_from(["c", "c", "c", "f", "strided", "reversed", "readonly",
                                   "broadcast", "list"]))  # fmt: skip
    if layout == "f":
        value = np.asfortranarray(value)
    elif layout == "strided" and value.ndim:
        big = np.zeros(tuple(2 * n for n in shape), dtype=value.dtype)
        view = big[tuple(slice(None, None, 2) for _ in shape)]
        view[...] = value
        value = view
    elif layout == "reversed" and value.ndim:
        value = np.ascontiguousarray(value[::-1])[::-1]
    elif layout == "readonly":
        value = np.array(value)
        value.flags.writeable = False
    elif layout == "broadcast" and value.ndim and shape[0] > 0:
        value = np.broadcast_to(value[:1], shape)
    elif layout == "list" and dtype not in ("object", "str"):
        value = value.tolist()
    Trace.add(f"   {name} = {short(value)} [{layout}]")
    return value, expect


def wrong_shape(draw, shape):
    """A shape different from ``shape``."""
    shape = list(shape)
    how = draw(st.sampled_from(["dim", "drop", "add", "zero"]))
    if how == "drop" and shape:
        return tuple(shape[:-1])
    if how == "add":
        return tuple(shape + [1])
    if how == "zero" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = 0
        return tuple(shape)
    if not shape:
        return (2,)
    i = draw(st.integers(0, len(shape) - 1))
    shape[i] = shape[i] + draw(st.sampled_from([1, 2]))
    return tuple(shape)


def contaminated(value, axis) -> np.ndarray | None:
    """Per-sequence mask of non-finite entries along ``axis`` (None for non-float arrays)."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f" or arr.ndim == 0:
        return None
    bad = ~np.isfinite(arr)
    axes = tuple(i for i in range(arr.ndim) if i != axis)
    return bad.any(axis=axes)


# ---------------------------------------------------------------------------------------------
# Calls.


CALL_FAULTS = ["x_rank", "x_size", "x_dtype", "hx_shape", "hx_struct", "hx_dtype",
               "lengths_range", "lengths_shape", "lengths_dtype", "lengths_unbatched", "seed",
               "bn_batch"]  # fmt: skip


@st.composite
def call_args(draw, s: Subject, *, chained: bool = False):
    """(x, hx, lengths, seed kwargs, expectation, info) for a call of ``s.m``: valid usage,
    or (about a third of the time) usage with exactly one fault from ``CALL_FAULTS``."""
    cfg = s.cfg
    fault = draw(st.sampled_from(CALL_FAULTS)) if draw(st.integers(0, 2)) == 0 else None
    bn_training = cfg.is_batch_norm and s.training
    if chained and s.last is not None and fault not in ("x_rank", "x_size", "x_dtype", "seed"):
        fault = None  # the chained call takes the previous call's layout and states
    if fault == "bn_batch" and not bn_training:
        fault = None
    Trace.add(f"   fault: {fault}")
    # (a bad dtype may also be bool, which is not specified: array_like says)
    expects = [] if fault in (None, "x_dtype", "hx_dtype") else [RAISE]
    t_len = draw(st.integers(1, T_MAX))
    batch = draw(st.integers(2 if bn_training else 1, B_MAX))
    feat = cfg.input_size
    if fault == "bn_batch":
        batch = 1
    unbatched = not bn_training and draw(st.integers(0, 3)) == 0
    if fault in ("lengths_range", "lengths_shape", "lengths_dtype"):
        unbatched = False
    elif fault == "lengths_unbatched" or (fault == "bn_batch" and draw(st.booleans())):
        unbatched = True
    if chained and s.last is not None:
        x_prev = np.asarray(s.last[0])
        unbatched = x_prev.ndim == 2
        batch = None if unbatched else x_prev.shape[0 if cfg.batch_first else 1]
    if unbatched:
        batch = None
    shape = list(cfg.x_shape(t_len, batch))
    if fault == "x_rank":
        shape = draw(st.sampled_from([[], [feat], [t_len, 1, 1, feat], [t_len, 2, 1, feat, 1]]))
    elif fault == "x_size":
        which = draw(st.sampled_from(["T", "B", "F"] if not unbatched else ["T", "F"]))
        if which == "F":
            shape[-1] = feat + 1 if feat == 1 else feat + draw(st.sampled_from([-1, 1]))
        elif which == "T":
            shape[1 if (cfg.batch_first and not unbatched) else 0] = 0
        else:
            shape[0 if cfg.batch_first else 1] = 0
    x, ex = draw(array_like(tuple(shape), name="x", bad_dtype=fault == "x_dtype"))
    expects.append(ex)

    # hx
    state_shapes = cfg.state_shapes(batch)
    hx_kind = draw(st.sampled_from(["none", "none", "array", "array", "array", "list"]))
    if fault in ("hx_shape", "hx_struct", "hx_dtype") and hx_kind == "none":
        hx_kind = "array"
    if chained and s.last is not None:
        hx_kind = "chain"
    hx, states, h_parts = None, None, []
    if hx_kind == "chain":
        parts = list(s.last[1]) if cfg.is_lstm else [s.last[1]]
    elif hx_kind != "none":
        parts = []
        bad_part = draw(st.integers(0, len(state_shapes) - 1))
        for i, shp in enumerate(state_shapes):
            if fault == "hx_shape" and i == bad_part:
                shp = wrong_shape(draw, shp)
            val, e = draw(array_like(shp, name=f"hx[{i}]", scale=0.5,
                                     bad_dtype=fault == "hx_dtype" and i == bad_part))  # fmt: skip
            if hx_kind == "list" and isinstance(val, np.ndarray) and val.dtype.kind in "iuf":
                val = val.tolist()
            parts.append(val)
            expects.append(e)
    if hx_kind != "none":
        h_parts = list(parts)
        if cfg.is_lstm:
            form = "pair"
            if fault == "hx_struct":
                form = draw(st.sampled_from(["single", "triple"]))
            elif fault is None and draw(st.integers(0, 5)) == 0:
                form = draw(st.sampled_from(["c_none", "h_none"]))
            if form == "single":
                hx = parts[0]
            elif form == "triple":
                hx = (parts[0], parts[1], parts[1])
            elif form == "c_none":
                hx, h_parts = (parts[0], None), [parts[0]]
                expects.append(EITHER)  # a None half of the pair: not specified
            elif form == "h_none":
                hx, h_parts = (None, parts[1]), [parts[1]]
                expects.append(EITHER)
            else:
                hx = (parts[0], parts[1]) if draw(st.booleans()) else [parts[0], parts[1]]
        else:
            hx = (parts[0],) if fault == "hx_struct" else parts[0]
        Trace.add(f"   hx = {short(hx)}")
        if combine(*expects) != RAISE:
            pair = list(hx) if cfg.is_lstm else [hx]
            states = [np.zeros(shp) if p is None else as_module_dtype(p, s.dtype)
                      for p, shp in zip(pair, state_shapes)]  # fmt: skip

    # lengths
    lengths, lengths_ref = None, None
    want_lengths = fault is not None and fault.startswith("lengths") or draw(st.booleans())
    if want_lengths and (not unbatched or fault == "lengths_unbatched"):
        n = 1 if batch is None else batch
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        vals = rng.integers(1, t_len + 1, size=n)
        if fault == "lengths_range":
            vals[rng.integers(0, n)] = draw(st.sampled_from([0, -1, t_len + 1, 2**40]))
        elif fault == "lengths_shape":
            vals = np.append(vals, 1) if draw(st.booleans()) else vals.reshape(1, -1)
        if fault == "lengths_dtype":
            ldt = draw(st.sampled_from(["float64", "bool", "float-list", "object"]))
        else:
            ldt = draw(st.sampled_from(["int64", "int32", "int8", "uint8", "list"]))
        if ldt == "list":
            lengths = vals.tolist()
        elif ldt == "float-list":
            lengths = [float(v) for v in np.ravel(vals)]
        elif ldt == "object":
            lengths = vals.astype(object)
        elif ldt in ("int8", "uint8") and (vals.min() < 0 or vals.max() > 127):
            lengths = vals.astype(np.int64)
        else:
            lengths = vals.astype(ldt)
        Trace.add(f"   lengths = {short(lengths)}")
        if combine(*expects) != RAISE:
            lengths_ref = np.asarray(lengths, dtype=np.int64)

    # seed
    kwargs = {}
    if fault == "seed":
        kwargs["seed"] = draw(st.sampled_from([-1, 2**64, 1.5, "1", True]))
    elif draw(st.booleans()):
        kwargs["seed"] = draw(st.sampled_from([0, 1, 12345, 2**63, 2**64 - 1]))
    if kwargs:
        Trace.add(f"   seed = {kwargs['seed']!r}")
    info = dict(batch=batch, t_len=t_len, unbatched=unbatched, states=states,
                lengths=lengths_ref, h_parts=h_parts)  # fmt: skip
    return x, hx, lengths, kwargs, combine(*expects), info


def reference_call(s: Subject, x, info, call_seed, training, params=None):
    """(out, [h_n(, c_n)], new buffers, kappa, masks) of the float64 reference, or None where
    the reference cannot say (regularized training call with an unknown seed)."""
    cfg = s.cfg
    x64 = as_module_dtype(x, s.dtype)
    kw = dict(training=training)
    if cfg.is_batch_norm:
        kw["buffers"] = {k: v.copy() for k, v in s.buffers.items()}
    if s.regularized:
        if training and call_seed is None:
            return None
        steps = x64.shape[0 if (x64.ndim == 2 or not cfg.batch_first) else 1]
        batch = 1 if x64.ndim == 2 else x64.shape[1 if not cfg.batch_first else 0]
        kw["masks"] = reference_masks(cfg, call_seed or 0, steps, batch, training)
    p = s.params if params is None else params
    out, states, bufs = reference_with_buffers(cfg, p, x64, info["states"], info["lengths"], **kw)
    kappa = 1.0
    if cfg.norm is not None:
        kappa = norm_condition(cfg, p, x64, info["states"], info["lengths"], **kw)
    return out, states, bufs, kappa, kw


def finite_params(params) -> bool:
    return all(np.isfinite(v).all() for v in params.values())


def check_call_result(s: Subject, res, x, info, call_seed, training, what, params=None):
    """Structure, shapes, dtypes and values of ``(out, h_n)`` against the reference."""
    cfg = s.cfg
    assert isinstance(res, tuple) and len(res) == 2, f"{what}: returned {short(res)}"
    out, hn = res
    if cfg.is_lstm:
        assert isinstance(hn, tuple) and len(hn) == 2, f"{what}: LSTM h_n is {short(hn)}"
        got_states = list(hn)
    else:
        assert isinstance(hn, np.ndarray), f"{what}: h_n is {short(hn)}"
        got_states = [hn]
    batch, t_len = info["batch"], info["t_len"]
    out_shape = cfg.x_shape(t_len, batch)[:-1] + (cfg.num_directions * cfg.h_out,)
    for got, shp, name in zip([out] + got_states, [out_shape] + cfg.state_shapes(batch),
                              ["out", "h_n", "c_n"]):  # fmt: skip
        assert isinstance(got, np.ndarray), f"{what}: {name} is {type(got).__name__}"
        assert got.shape == shp, f"{what}: {name} shape {got.shape}, expected {shp}"
        assert got.dtype == np.dtype(s.dtype), f"{what}: {name} dtype {got.dtype}"
    if info["lengths"] is not None:  # outputs past a sequence's end are exactly zero
        for b, ln in enumerate(info["lengths"]):
            tail = out[b, ln:] if cfg.batch_first else out[ln:, b]
            assert np.all(tail == 0.0), f"{what}: out past lengths[{b}]={ln} is not exactly 0"
    p = s.params if params is None else params
    ref = reference_call(s, x, info, call_seed, training, params)
    if ref is None or not finite_params(p):
        return None
    ref_out, ref_states, ref_bufs, kappa, _ = ref
    if kappa > MAX_KAPPA:
        return None
    # NaN/inf in x or h_0 propagate to their own sequences (spec); the others must be exact,
    # except under training-mode batch norm, whose statistics mix the sequences.
    bad = None
    baxis = 0 if info["unbatched"] else (0 if cfg.batch_first else 1)
    if not info["unbatched"]:
        bad = contaminated(x, baxis)
        for part in info["h_parts"]:
            c = contaminated(part, 1)
            if c is not None and bad is not None:
                bad = bad | c
            elif c is not None:
                bad = c
    else:
        xb = contaminated(x, 0)
        hb = [contaminated(part, 0) for part in info["h_parts"]]
        if (xb is not None and xb.any()) or any(h is not None and h.any() for h in hb):
            return None
    if bad is not None and bad.any():
        if cfg.norm is not None:  # the conditioning (kappa) of the clean rows is not known
            return None
        keep = ~bad
    else:
        keep = None
    tol = TOLERANCE[s.dtype] * max(1.0, kappa / 4.0)
    part = "rows" if keep is not None else "all"
    STATS[("(values vs reference)", "half" if s.half else s.dtype, part)] += 1
    check_close(out, ref_out, s.dtype, tol, f"{what}: out",
                None if keep is None else (baxis, keep))  # fmt: skip
    for i, (got, want) in enumerate(zip(got_states, ref_states)):
        check_close(got, want, s.dtype, tol, f"{what}: state {i}",
                    None if keep is None else (1, keep))  # fmt: skip
    if keep is not None:
        return None
    return ref_bufs, tol


# ---------------------------------------------------------------------------------------------
# Operations.


def op_call(data, s: Subject, guard: Guard, *, train: bool, chained: bool = False):
    x, hx, lengths, kwargs, expect, info = data.draw(call_args(s, chained=chained))
    for obj in (x, hx, lengths):
        guard.watch(obj)
    name = "forward_train" if train else "__call__"
    if s.half and train:
        expect = RAISE
    fn = s.m.forward_train if train else s.m
    res = attempt(
        f"{name}(x, hx, lengths, **{kwargs})", expect, lambda: fn(x, hx, lengths, **kwargs)
    )
    guard.check(name)
    if isinstance(res, Raised):
        s.check_state(f"after failed {name}")
        return
    tape = None
    if train:
        assert isinstance(res, tuple) and len(res) == 3, f"{name}: returned {short(res)}"
        out, hn, tape = res
        res = (out, hn)
        call_seed = tape.seed
        assert not tape.consumed
    else:
        call_seed = kwargs.get("seed")
        if call_seed is None and not (s.training and s.regularized):
            call_seed = 0
    checked = check_call_result(s, res, x, info, call_seed, s.training and not s.half, name,
                                params=None)  # fmt: skip
    if s.cfg.is_batch_norm and s.training and not s.half:
        if checked is not None:
            ref_bufs, tol = checked
            s.check_state(f"buffers after {name}", buffers_tol=tol, expected_bufs=ref_bufs)
        else:  # values not comparable here (see check_call_result): re-synchronized
            s.check_state(f"after {name}", expected_bufs={})
    else:  # eval mode, or no running statistics: nothing may change
        s.check_state(f"after {name}")
    s.last = (np.asarray(x), res[1])
    if train:
        op_backward(data, s, guard, tape, res, x, info, call_seed)


@st.composite
def grads_for(draw, s: Subject, out, hn):
    """(grad_out, grad_h_n, expectation)."""
    cfg = s.cfg
    expects = []
    kind = draw(st.sampled_from(["ok", "ok", "ok", "none", "out_none", "h_none", "wrong_out",
                                 "wrong_h", "struct", "bad_dtype"]))  # fmt: skip
    bad_part = draw(st.integers(0, 2)) if kind == "bad_dtype" else -1
    if kind in ("none", "out_none"):
        g_out = None
    else:
        shp = out.shape if kind != "wrong_out" else wrong_shape(draw, out.shape)
        g_out, e = draw(array_like(shp, name="grad_out", bad_dtype=bad_part == 0))
        expects.append(e)
        if kind == "wrong_out":
            expects.append(RAISE)
    states = list(hn) if cfg.is_lstm else [hn]
    if kind in ("none", "h_none"):
        g_h = None
    else:
        parts = []
        for i, st_ in enumerate(states):
            shp = st_.shape
            if kind == "wrong_h" and i == len(states) - 1:
                shp = wrong_shape(draw, shp)
                expects.append(RAISE)
            val, e = draw(array_like(shp, name=f"grad_h_n[{i}]", bad_dtype=bad_part == i + 1))
            parts.append(val)
            expects.append(e)
        if cfg.is_lstm:
            if kind == "struct":
                g_h, expects = parts[0], expects + [RAISE]
            elif kind not in ("wrong_h", "bad_dtype") and draw(st.integers(0, 3)) == 0:
                which = draw(st.integers(0, 1))
                parts[which] = None
                g_h = tuple(parts)
            else:
                g_h = tuple(parts)
        else:
            g_h = (parts[0],) if kind == "struct" else parts[0]
            if kind == "struct":
                expects.append(RAISE)
    return g_out, g_h, combine(*expects)


def op_backward(data, s: Subject, guard: Guard, tape, res, x, info, call_seed):
    cfg = s.cfg
    out, hn = res
    variant = data.draw(st.sampled_from(["ok", "ok", "ok", "twice", "foreign", "not_tape",
                                         "skip"]))  # fmt: skip
    Trace.add(f"   backward variant {variant}")
    if variant == "skip":
        return
    g_out, g_h, expect = data.draw(grads_for(s, out, hn))
    guard.watch(g_out)
    guard.watch(g_h)
    use_tape = tape
    if variant == "foreign":
        twin = CLASSES[cfg.cell](cfg.input_size, cfg.hidden_size, dtype=s.dtype,
                                 **cfg.module_kwargs())  # fmt: skip
        xt = np.zeros(cfg.x_shape(1, 2), dtype=s.dtype)
        use_tape = twin.forward_train(xt)[2]
        expect = RAISE
    elif variant == "not_tape":
        use_tape = data.draw(st.sampled_from([None, "tape", 0, (tape,)]))
        expect = RAISE
    zero = data.draw(st.booleans())
    # drawn here, unconditionally: whether the check below runs depends on values (masks of
    # an unseeded module are random), and hypothesis needs the same draws on a replay
    direction_seed = data.draw(st.integers(0, 2**32 - 1))
    if zero:
        s.m.zero_grad()
    g_before = {k: v.astype(np.float64) for k, v in s.m.grads.items()}
    result = attempt(f"backward({variant}, grad_out={short(g_out)}, grad_h_n={short(g_h)})",
                     expect, lambda: s.m.backward(use_tape, g_out, g_h))  # fmt: skip
    guard.check("backward")
    s.check_state("after backward")
    if isinstance(result, Raised):
        for k, v in s.m.grads.items():
            np.testing.assert_array_equal(v, g_before[k], err_msg=f"failed backward changed {k}")
        return
    assert tape.consumed, "backward did not mark the tape consumed"
    assert isinstance(result, tuple) and len(result) == 2, f"backward returned {short(result)}"
    gx, ghx = result
    x_arr = np.asarray(x)
    assert isinstance(gx, np.ndarray) and gx.shape == x_arr.shape, f"grad_x {short(gx)}"
    assert gx.dtype == np.dtype(s.dtype), f"grad_x dtype {gx.dtype}"
    batch = info["batch"]
    g_states = list(ghx) if cfg.is_lstm else [ghx]
    if cfg.is_lstm:
        assert isinstance(ghx, tuple) and len(ghx) == 2, f"grad_hx {short(ghx)}"
    for g, shp in zip(g_states, cfg.state_shapes(batch)):
        assert isinstance(g, np.ndarray) and g.shape == shp, f"grad_hx {short(g)} vs {shp}"
        assert g.dtype == np.dtype(s.dtype), f"grad_hx dtype {g.dtype}"
    grads = {k: v.astype(np.float64) - g_before[k] for k, v in s.m.grads.items()}
    assert set(grads) == set(s.params)

    if variant == "twice":
        guard.watch(g_out)
        attempt("backward with a used tape", RAISE, lambda: s.m.backward(tape, g_out, g_h))
        for k, v in s.m.grads.items():
            np.testing.assert_array_equal(
                v.astype(np.float64) - g_before[k], grads[k], err_msg=f"reused tape changed {k}"
            )
        guard.check("backward twice")

    # Values: a central difference of the float64 reference along a random direction of
    # (x, h_0, every parameter), for float64 modules. float32: finiteness only.
    finite_in = np.isfinite(as_module_dtype(x, s.dtype)).all() and finite_params(s.params)
    finite_in = finite_in and all(np.isfinite(as_module_dtype(p, s.dtype)).all()
                                  for p in info["h_parts"])  # fmt: skip
    grads_finite = [g_out, *(list(g_h) if isinstance(g_h, tuple) else [g_h])]
    finite_in = finite_in and all(
        g is None or np.isfinite(np.asarray(g, dtype=np.float64)).all() for g in grads_finite
    )
    # (parameter gradients are differences of accumulated ones: NaN stays NaN)
    finite_in = finite_in and all(np.isfinite(g).all() for g in g_before.values())
    if not finite_in:
        return
    if s.dtype != "float64":
        if cfg.norm is None:
            for g in [gx, *g_states, *grads.values()]:
                assert np.isfinite(g).all(), "non-finite gradient from finite inputs"
        return
    training = s.training
    kw = dict(training=training)
    if cfg.is_batch_norm:
        kw["buffers"] = {k: v.copy() for k, v in s.buffers.items()}
    if s.regularized:
        x64 = as_module_dtype(x, s.dtype)
        steps = x64.shape[0 if (x64.ndim == 2 or not cfg.batch_first) else 1]
        nb = 1 if x64.ndim == 2 else x64.shape[1 if not cfg.batch_first else 0]
        kw["masks"] = reference_masks(cfg, call_seed, steps, nb, training)
    x64 = as_module_dtype(x, s.dtype)
    states0 = info["states"] or [np.zeros(shp) for shp in cfg.state_shapes(batch)]
    if cfg.norm is not None:
        if norm_condition(cfg, s.params, x64, states0, info["lengths"], **kw) > 20:
            return
        # a batch statistic over (nearly) equal values: var << eps makes the loss's
        # higher derivatives ~ eps**-1.5, beyond what a central difference resolves
        smallest = [np.inf]

        def observe(_l, _d, _part, _k, _a, _active, _mean, var):
            smallest[0] = min(smallest[0], float(np.min(var)))

        reference_with_buffers(cfg, s.params, x64, states0, info["lengths"],
                               observe_norms=observe, **kw)  # fmt: skip
        if smallest[0] < 1e-2:
            return
    if relu_margin(cfg, s.params, x64, states0, info["lengths"], **kw) < 1e-3:
        return
    rng = np.random.default_rng(direction_seed)
    vx = rng.standard_normal(x64.shape)
    vs = [rng.standard_normal(st_.shape) for st_ in states0]
    vp = {k: rng.standard_normal(v.shape) for k, v in s.params.items()}
    r_out = None if g_out is None else np.asarray(g_out).astype(s.dtype).astype(np.float64)
    if g_h is None:
        r_states = [None] * len(states0)
    elif isinstance(g_h, tuple):
        r_states = [None if g is None else as_module_dtype(g, s.dtype) for g in g_h]
    else:
        r_states = [as_module_dtype(g_h, s.dtype)]

    def loss(h):
        p = {k: v + h * vp[k] for k, v in s.params.items()}
        o, sts, _ = reference_with_buffers(
            cfg, p, x64 + h * vx, [a + h * b for a, b in zip(states0, vs)], info["lengths"], **kw
        )
        total = 0.0 if r_out is None else float(np.sum(o * r_out))
        for a, r in zip(sts, r_states):
            if r is not None:
                total += float(np.sum(a * r))
        return total

    step = 1e-5  # Richardson-extrapolated central difference: error O(step**4)
    d1 = (loss(step) - loss(-step)) / (2 * step)
    d2 = (loss(2 * step) - loss(-2 * step)) / (4 * step)
    num = (4 * d1 - d2) / 3
    ana = float(np.sum(gx * vx)) + sum(float(np.sum(g * v)) for g, v in zip(g_states, vs))
    ana += sum(float(np.sum(grads[k] * vp[k])) for k in vp)
    # see rnn_testing.GRAD_* (entry-wise 1e-7 + 1e-6 rel.); a direction sums ~1000 entries
    STATS[("(backward vs central diff.)", s.dtype, "checked")] += 1
    assert abs(ana - num) <= 1e-5 + 1e-5 * abs(num), (
        f"backward: directional derivative {ana!r} vs central difference of the reference {num!r}"
    )


LOAD_FAULTS = ["missing", "extra", "shape", "dtype", "container", "rows"]


@st.composite
def state_dict_case(draw, s: Subject):
    """(state_dict, strict, expectation): valid, or (about 40%) with one fault of
    ``LOAD_FAULTS``. Valid variants: subsets and extra keys with strict=False, nested lists,
    other real dtypes, NaN/inf and large values, running statistics of any row count."""
    cfg = s.cfg
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fault = draw(st.sampled_from(LOAD_FAULTS)) if draw(st.integers(0, 4)) < 2 else None
    if fault == "rows" and cfg.norm != "batch":
        fault = None
    Trace.add(f"   load fault: {fault}")
    params = cfg.make_params(rng, scale=0.6)
    assert set(params) == set(s.params), (sorted(params), sorted(s.params))
    rows = draw(st.integers(1, 7))
    bufs = random_buffers(cfg, rng, rows) if cfg.is_batch_norm else {}
    full = {**params, **bufs}
    expects = []
    strict = draw(st.sampled_from([True, True, "default", False, False, 1, None]))
    strict_val = True if strict == "default" else bool(strict)
    if fault in ("missing", "extra"):
        strict, strict_val = draw(st.sampled_from([True, "default", 1])), True
        expects.append(RAISE)
    keys = list(full)
    if fault == "missing" or (not strict_val and draw(st.booleans())):
        drop = draw(st.lists(st.sampled_from(keys), unique=True, min_size=1)) if keys else []
        full = {k: v for k, v in full.items() if k not in drop}
    if fault == "extra" or (not strict_val and draw(st.integers(0, 2)) == 0):
        extra = draw(st.sampled_from(["bogus", "weight_ih_l9", "bias_ih_l0_reverse",
                                      "bn_ih_running_mean_l7"]))  # fmt: skip
        if extra in s.params or extra in s.buffers:
            extra = "bogus"
        full[extra] = np.zeros(3) if draw(st.booleans()) else "junk"
    if strict not in (True, False, "default"):
        expects.append(EITHER)  # a non-bool strict: only its truth is used (not specified)
    # the form of one entry
    known = sorted(k for k in full if k in s.params or k in s.buffers)
    mut = draw(st.sampled_from(["none", "none", "list", "dtype", "nan", "big"]))
    if fault in ("shape", "dtype"):
        mut = fault
    if mut != "none" and known:
        k = draw(st.sampled_from(known))
        v = np.asarray(full[k])
        if mut == "shape":
            if v.ndim == 2 and k in s.buffers:  # (S, width): only the width is fixed
                full[k] = np.zeros((v.shape[0], v.shape[1] + 1))
            else:
                full[k] = np.zeros(wrong_shape(draw, v.shape))
        elif mut == "dtype" and fault == "dtype":
            full[k] = v.astype(draw(st.sampled_from(["complex128", "bool", "str", "object"])))
        elif mut == "dtype":
            full[k] = v.astype(draw(st.sampled_from(["float16", "int32", "float32"])))
        elif mut == "list":
            full[k] = v.tolist()
        elif mut == "nan" and v.size:
            v = v.copy()
            v.flat[0] = draw(st.sampled_from([np.nan, np.inf]))
            full[k] = v
        elif mut == "big" and v.size:
            v = v.copy()
            v.flat[0] = draw(st.sampled_from([1e5, -7e4, 65519.0]))
            full[k] = v
        Trace.add(f"   entry {k} mutated: {mut}")
    elif fault in ("shape", "dtype"):
        fault = None
    if fault in ("shape", "dtype"):
        expects.append(RAISE)
    # running statistics: a mean and variance loaded with different row counts (one given
    # here, the other kept) is an error; zero rows are not specified
    if fault == "rows":
        mean_keys = [k for k in full if "_running_mean_" in k]
        if mean_keys:
            k = draw(st.sampled_from(sorted(mean_keys)))
            other = k.replace("_running_mean_", "_running_var_")
            full[k] = random_buffers(cfg, rng, rows + 1)[k]
            full.pop(other, None)
            if s.buffers[other].shape[0] != rows + 1:
                expects.append(RAISE)
            else:
                expects.append(OK)
    if cfg.norm == "batch":
        if draw(st.integers(0, 9)) == 0 and fault is None:
            # zero rows: what a module that never trained has
            for k in [k for k in full if k in s.buffers]:
                full[k] = np.zeros((0, np.asarray(full[k]).shape[1]))
            Trace.add("   running statistics with 0 rows")
        for k in [k for k in full if k in s.buffers]:
            other = (k.replace("_running_mean_", "_running_var_") if "_mean_" in k
                     else k.replace("_running_var_", "_running_mean_"))  # fmt: skip
            mine = np.asarray(full[k]).shape
            theirs = np.asarray(full[other]).shape if other in full else s.buffers[other].shape
            if len(mine) == 2 and len(theirs) == 2 and mine[0] != theirs[0]:
                expects.append(RAISE)
    if fault == "container":
        full = draw(st.sampled_from(["items", "none", "array"]))
        full = {"items": list(full.items()) if isinstance(full, dict) else [], "none": None,
                "array": np.zeros(3)}[full]  # fmt: skip
        expects.append(RAISE)
    keys = None if not isinstance(full, dict) else list(full)
    Trace.add(f"   state_dict keys = {keys}; strict={strict!r}")
    return full, strict, combine(*expects)


def op_load(data, s: Subject, guard: Guard):
    sd, strict, expect = data.draw(state_dict_case(s))
    guard.watch(sd)
    if s.half:
        expect = RAISE
    before = {k: v.copy() for k, v in s.m.state_dict().items()}
    if strict == "default":
        res = attempt("load_state_dict(sd)", expect, lambda: s.m.load_state_dict(sd))
    else:
        res = attempt(f"load_state_dict(sd, strict={strict!r})", expect,
                      lambda: s.m.load_state_dict(sd, strict=strict))  # fmt: skip
    guard.check("load_state_dict")
    if isinstance(res, Raised):
        after = s.m.state_dict()
        for k, v in before.items():
            np.testing.assert_array_equal(after[k], v, err_msg=f"failed load changed {k}")
        s.check_state("after failed load_state_dict")
        return
    assert res is None
    for k, v in sd.items():
        if k in s.params:
            s.params[k] = as_module_dtype(v, s.dtype)
        elif k in s.buffers:
            s.buffers[k] = as_module_dtype(v, s.dtype)
    # the mean and variance of a site share their rows
    s.check_state("after load_state_dict")


def op_mode(data, s: Subject, guard: Guard):
    how = data.draw(st.sampled_from(["train", "eval", "train(False)", "train(True)",
                                     "train(np.True_)", "train('yes')", "train(1)"]))  # fmt: skip
    arg = {"train": (), "eval": None, "train(False)": (False,), "train(True)": (True,),
           "train(np.True_)": (np.bool_(True),), "train('yes')": ("yes",),
           "train(1)": (1,)}[how]  # fmt: skip
    expect = RAISE if how in ("train('yes')", "train(1)") else OK
    target = False if how in ("eval", "train(False)") else True
    if s.half and target and expect == OK:
        expect = RAISE  # a half_weights copy stays in eval mode
    fn = s.m.eval if arg is None else (lambda: s.m.train(*arg))
    res = attempt(how, expect, fn)
    if not isinstance(res, Raised):
        assert res is s.m, f"{how} did not return the module"
        s.training = target
    s.check_state(f"after {how}")


def op_half(data, s: Subject, guard: Guard):
    cfg = s.cfg
    weights = {k: v for k, v in s.params.items() if k.startswith("weight_")}
    expect = OK
    if s.dtype != "float32":
        expect = RAISE
    elif any(np.any(np.abs(v) >= 65520) for v in weights.values()):
        expect = RAISE
    elif s.half:
        expect = EITHER  # a copy of a copy: not specified
    before = {k: v.copy() for k, v in s.m.state_dict().items()}
    res = attempt("half_weights()", expect, s.m.half_weights)
    after = s.m.state_dict()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=f"half_weights() changed {k}")
    if isinstance(res, Raised):
        return
    half = res
    assert type(half) is type(s.m) and half is not s.m
    assert half.training is False, "a half_weights() copy starts in eval mode"
    # Its parameters: the weight matrices rounded to float16 (as tests/test_half_weights.py);
    # everything else as is. Its outputs are compared with the float64 reference fed exactly
    # these rounded values (float32 tolerance; see tests/test_half_weights.py).
    rounded = {k: (v.astype(np.float16).astype(np.float64) if k.startswith("weight_") else v)
               for k, v in s.params.items()}  # fmt: skip
    hsd = half.state_dict()
    for k, v in rounded.items():
        np.testing.assert_array_equal(hsd[k].astype(np.float64), v, err_msg=f"half copy {k}")
    hs = Subject(half, cfg, "float32")
    hs.params = rounded
    hs.buffers = {k: v.copy() for k, v in s.buffers.items()}
    hs.training = False
    hs.half = True
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["call", "call", "mode", "train", "load", "write",
                                          "backward"]))  # fmt: skip
        Trace.add(f"   on the half copy: {what}")
        if what == "call":
            op_call(data, hs, guard, train=False)
        elif what == "mode":
            op_mode(data, hs, guard)
        elif what == "train":
            op_call(data, hs, guard, train=True)
        elif what == "load":
            op_load(data, hs, guard)
        elif what == "write":
            name = data.draw(st.sampled_from(sorted(half.parameters())))

            def write(name=name):
                half.parameters()[name][...] = 0

            attempt(f"half.parameters()[{name!r}][...] = 0", RAISE, write)
            hs.check_state("after writing into the half copy")
        else:
            attempt("half.backward(None, None)", RAISE, lambda: half.backward(None, None))
    # later changes to the original do not reach the copy
    if data.draw(st.booleans()):
        for p in s.m.parameters().values():
            p[...] = 0.25
        s.params = {k: np.full_like(v, 0.25) for k, v in s.params.items()}
        s.check_state("after writing into the original")
        hs.check_state("copy after writing into the original")


def run_example(data):
    Trace.start()
    guard = Guard()
    cell, kw, expect, cfg, dtype = data.draw(constructor())
    Trace.add(f"{CLASSES[cell].__name__}(**{kw!r})")
    guard.watch(kw)
    m = attempt("constructor", expect, lambda: CLASSES[cell](**kw))
    guard.check("constructor")
    if isinstance(m, Raised):
        return
    assert cfg is not None and dtype is not None
    s = Subject(m, cfg, dtype)
    assert set(s.params) == set(cfg.make_params(np.random.default_rng(0))), "parameter names"
    # Usually give the parameters random values (the defaults leave biases/shifts at 0).
    if data.draw(st.integers(0, 3)) > 0:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        params = {k: v.astype(dtype) for k, v in cfg.make_params(rng, scale=0.6).items()}
        m.load_state_dict(params, strict=False)
        s.params = {k: v.astype(np.float64) for k, v in params.items()}
        s.check_state("after loading random parameters")
    n_ops = data.draw(st.integers(1, 4))
    for _ in range(n_ops):
        op = data.draw(st.sampled_from(["call", "call", "train", "train", "chain", "load",
                                        "half", "mode"]))  # fmt: skip
        Trace.add(f"op {op}")
        if op == "call":
            op_call(data, s, guard, train=False)
        elif op == "train":
            op_call(data, s, guard, train=True)
        elif op == "chain":
            op_call(data, s, guard, train=False, chained=True)
        elif op == "load":
            op_load(data, s, guard)
        elif op == "half":
            op_half(data, s, guard)
        else:
            op_mode(data, s, guard)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--trace", default=None, help="file holding the running example's trace")
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--stats", action="store_true", help="print outcome counts per operation")
    args = ap.parse_args(argv)
    faulthandler.enable()
    np.seterr(all="ignore")
    Trace.path = args.trace
    phases = [Phase.explicit, Phase.generate] + ([] if args.no_shrink else [Phase.shrink])

    @hyp_seed(args.seed)
    @settings(
        max_examples=args.examples,
        database=None,
        deadline=None,
        derandomize=False,
        print_blob=True,
        report_multiple_bugs=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def fuzz(data):
        try:
            run_example(data)
        except BaseException:
            Trace.failed = list(Trace.lines)  # the last one is hypothesis' final replay
            raise

    try:
        fuzz()
    except BaseException:
        print("\n--- trace of the failing example (last run) ---\n" + "\n".join(Trace.failed),
              flush=True)  # fmt: skip
        raise
    if args.stats:
        for (op, expect, outcome), n in sorted(STATS.items()):
            print(f"  {op:32s} expected {expect:6s} -> {outcome:13s} x{n}")
    print(f"fuzz_driver: seed {args.seed}: {args.examples} examples passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
