"""Bad input gets a Python exception naming the argument; nothing crashes (docs/api.md, Errors).

Wrong shapes and values raise ``ValueError``, wrong types ``TypeError``. The last test runs a
battery of hostile inputs in a child interpreter and checks that it exits normally: a crash
(segfault, abort, uncaught C++ exception) would kill the child, not the test session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rnncore

KINDS = ["RNN", "LSTM", "GRU"]
T, B, IN, H = 4, 3, 3, 5


def make(kind, **kw):
    """A small float64 module: 2 layers, bidirectional (so the state has 4 rows)."""
    kw.setdefault("num_layers", 2)
    kw.setdefault("bidirectional", True)
    kw.setdefault("dtype", "float64")
    kw.setdefault("seed", 0)
    return getattr(rnncore, kind)(IN, H, **kw)


def good_x(batch_first=False):
    """A valid input."""
    shape = (B, T, IN) if batch_first else (T, B, IN)
    return np.random.default_rng(0).standard_normal(shape)


def good_hx(kind, batch=B, h_out=H):
    """A valid initial state for ``make(kind)``."""
    h = np.zeros((4, batch, h_out)) if batch else np.zeros((4, h_out))
    if kind == "LSTM":
        c = np.zeros((4, batch, H)) if batch else np.zeros((4, H))
        return (h, c)
    return h


# A word-boundary match so that "x" is not found inside "expected" or "max".
X = r"\bx\b"


# --------------------------------------------------------------------------------------
# x


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "shape",
    [
        (IN,),
        (T, B, IN, 1),
        (1, T, B, IN),
        (T, B, IN + 1),
        (T, B, IN - 1),
        (T, IN + 2),
        (0, B, IN),
        (T, 0, IN),
        (0, IN),
        (T, B, 0),
        (),
    ],
    ids=[
        "rank1",
        "rank4",
        "rank4b",
        "in+1",
        "in-1",
        "unbatched_in+2",
        "T0",
        "B0",
        "unbatched_T0",
        "in0",
        "scalar",
    ],
)
def test_x_bad_shape(kind, shape):
    """Wrong rank, wrong input size or an empty T/B axis: ValueError naming x."""
    m = make(kind)
    x = np.zeros(shape)
    with pytest.raises(ValueError, match=X):
        m(x)
    with pytest.raises(ValueError, match=X):
        m.forward_train(x)


def test_x_bad_shape_batch_first():
    """With batch_first the empty axis is the first one; both are rejected."""
    m = make("GRU", batch_first=True)
    for shape in [(0, T, IN), (B, 0, IN), (B, T, IN + 1)]:
        with pytest.raises(ValueError, match=X):
            m(np.zeros(shape))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "x",
    [
        np.zeros((T, B, IN), dtype=np.complex128),
        np.zeros((T, B, IN), dtype=np.complex64),
        np.full((T, B, IN), 1.0, dtype=object),
        np.zeros((T, B, IN), dtype=bool),
        np.full((T, B, IN), "a"),
        np.zeros((T, B, IN), dtype="S1"),
        np.zeros((T, B, IN), dtype="datetime64[s]"),
        [[["a"] * IN] * B] * T,
    ],
    ids=["complex128", "complex64", "object", "bool", "str", "bytes", "datetime", "list_str"],
)
def test_x_bad_dtype(kind, x):
    """Non-real dtypes: TypeError naming x (object arrays are refused even if numeric)."""
    m = make(kind)
    with pytest.raises(TypeError, match=X):
        m(x)
    with pytest.raises(TypeError, match=X):
        m.forward_train(x)


# --------------------------------------------------------------------------------------
# hx


def _bad_h_shapes(batch=B, h_out=H):
    return [
        (5, batch, h_out),
        (3, batch, h_out),
        (4, batch + 1, h_out),
        (4, batch - 1, h_out),
        (4, batch, h_out + 1),
        (4, h_out),
        (1, 4, batch, h_out),
    ]


@pytest.mark.parametrize("kind", ["RNN", "GRU"])
def test_hx_bad_shape(kind):
    """RNN/GRU: every wrongly shaped hx is a ValueError naming hx (or h_0)."""
    m = make(kind)
    for shape in _bad_h_shapes():
        with pytest.raises(ValueError, match="hx|h_0"):
            m(good_x(), hx=np.zeros(shape))
        with pytest.raises(ValueError, match="hx|h_0"):
            m.forward_train(good_x(), hx=np.zeros(shape))


@pytest.mark.parametrize("proj_size", [0, 2])
def test_lstm_hx_bad_shape(proj_size):
    """LSTM: a bad h_0 names h_0, a bad c_0 names c_0 (with and without projection)."""
    m = make("LSTM", proj_size=proj_size)
    h_out = proj_size or H
    h_ok, c_ok = good_hx("LSTM", h_out=h_out)
    for shape in _bad_h_shapes(h_out=h_out):
        with pytest.raises(ValueError, match="h_0"):
            m(good_x(), hx=(np.zeros(shape), c_ok))
        with pytest.raises(ValueError, match="h_0"):
            m.forward_train(good_x(), hx=(np.zeros(shape), c_ok))
    for shape in _bad_h_shapes(h_out=H):
        with pytest.raises(ValueError, match="c_0"):
            m(good_x(), hx=(h_ok, np.zeros(shape)))
        with pytest.raises(ValueError, match="c_0"):
            m.forward_train(good_x(), hx=(h_ok, np.zeros(shape)))
    if proj_size:
        # h_0 and c_0 have different widths; swapping them is an error.
        with pytest.raises(ValueError, match="h_0|c_0"):
            m(good_x(), hx=(c_ok, h_ok))


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_hx_must_be_unbatched(kind):
    """Unbatched x with a batched hx (and vice versa) is a shape error."""
    m = make(kind)
    x2 = good_x()[:, 0]
    bad_for_unbatched = good_hx(kind, batch=1)
    with pytest.raises(ValueError, match="hx|h_0|c_0"):
        m(x2, hx=bad_for_unbatched)
    with pytest.raises(ValueError, match="hx|h_0|c_0"):
        m(good_x(), hx=good_hx(kind, batch=None))


@pytest.mark.parametrize("kind", KINDS)
def test_hx_bad_type_or_structure(kind):
    """hx of the wrong structure (tuple vs array) or a non-real dtype is refused."""
    m = make(kind)
    h, c = good_hx(kind) if kind == "LSTM" else (good_hx(kind), np.zeros((4, B, H)))
    if kind == "LSTM":
        bad_structures = [h, (h,), (h, c, c), [h], "hx", 3.0, {"h": h}]
    else:
        bad_structures = [(h, c), (h,), "hx", {"h": h}]
    for bad in bad_structures:
        with pytest.raises((TypeError, ValueError), match="hx|h_0|c_0"):
            m(good_x(), hx=bad)
    complex_h = h.astype(np.complex128)
    bad_dtype = (complex_h, c) if kind == "LSTM" else complex_h
    with pytest.raises(TypeError, match="hx|h_0"):
        m(good_x(), hx=bad_dtype)
    if kind == "LSTM":
        with pytest.raises(TypeError, match="hx|c_0"):
            m(good_x(), hx=(h, c.astype(object)))


# --------------------------------------------------------------------------------------
# lengths


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_bad_shape(kind):
    """lengths must be (B,): ValueError naming lengths."""
    m = make(kind)
    for bad in [
        np.array([T] * (B + 1)),
        np.array([T] * (B - 1)),
        np.array([[T] * B]),
        np.array([[T]] * B),
        np.array(T),
        np.array([], dtype=np.int64),
    ]:
        with pytest.raises(ValueError, match="lengths"):
            m(good_x(), lengths=bad)
        with pytest.raises(ValueError, match="lengths"):
            m.forward_train(good_x(), lengths=bad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "bad", [[0, 2, 3], [1, T + 1, 2], [-1, 2, 2], [2, 2, 2**40], [2, -(2**62), 3]]
)
def test_lengths_out_of_range(kind, bad):
    """Each length must be in 1..T: ValueError naming lengths."""
    m = make(kind)
    with pytest.raises(ValueError, match="lengths"):
        m(good_x(), lengths=np.array(bad, dtype=np.int64))
    with pytest.raises(ValueError, match="lengths"):
        m.forward_train(good_x(), lengths=bad)


def test_lengths_out_of_range_batch_first():
    """The time axis of a batch_first input is axis 1."""
    m = make("LSTM", batch_first=True)
    x = np.zeros((2, 6, IN))  # B=2, T=6
    m(x, lengths=[6, 1])  # valid
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[7, 1])
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[2, 2, 2])  # B is 2, not 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "bad",
    [
        np.array([2.0, 3.0, 1.0]),
        [2.0, 3.0, 1.0],
        np.array([2.5, 3, 1]),
        np.array([2, 3, 1], dtype=np.complex64),
        ["2", "3", "1"],
    ],
    ids=["float_array", "float_list", "fractional", "complex", "strings"],
)
def test_lengths_non_integer(kind, bad):
    """Non-integer lengths (even integral floats): TypeError naming lengths."""
    m = make(kind)
    with pytest.raises(TypeError, match="lengths"):
        m(good_x(), lengths=bad)
    with pytest.raises(TypeError, match="lengths"):
        m.forward_train(good_x(), lengths=bad)


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_with_unbatched_x(kind):
    """lengths is not allowed with unbatched input: ValueError naming lengths."""
    m = make(kind)
    x2 = good_x()[:, 0]
    for lengths in ([T], np.array(T), np.array([T])):
        with pytest.raises(ValueError, match="lengths"):
            m(x2, lengths=lengths)
        with pytest.raises(ValueError, match="lengths"):
            m.forward_train(x2, lengths=lengths)


# --------------------------------------------------------------------------------------
# backward arguments and tapes


def _train(m, x=None, **kw):
    out, state, tape = m.forward_train(good_x() if x is None else x, **kw)
    return out, state, tape


@pytest.mark.parametrize("kind", KINDS)
def test_grad_out_bad_shape(kind):
    """grad_out must have out's shape: ValueError naming grad_out."""
    m = make(kind)
    out, _, _ = _train(m)
    for shape in [
        out.shape[:2] + (out.shape[2] + 1,),
        (T + 1,) + out.shape[1:],
        (T, B + 1, out.shape[2]),
        out.shape[:2],
        (B, T, out.shape[2]),
        (1,) + out.shape,
    ]:
        if shape == out.shape:
            continue
        _, _, tape = _train(m)
        with pytest.raises(ValueError, match="grad_out"):
            m.backward(tape, np.zeros(shape))
    _, _, tape = _train(m)
    with pytest.raises(TypeError, match="grad_out"):
        m.backward(tape, np.zeros(out.shape, dtype=np.complex128))


@pytest.mark.parametrize("kind", KINDS)
def test_grad_h_n_bad_shape(kind):
    """grad_h_n must have h_n's shape: ValueError naming grad_h_n (LSTM: either part)."""
    m = make(kind)
    out, _, _ = _train(m)
    bad_shapes = _bad_h_shapes()
    good = np.zeros((4, B, H))
    for shape in bad_shapes:
        _, _, tape = _train(m)
        g = (np.zeros(shape), good) if kind == "LSTM" else np.zeros(shape)
        with pytest.raises(ValueError, match="grad_h_n"):
            m.backward(tape, np.zeros(out.shape), g)
        if kind == "LSTM":
            _, _, tape = _train(m)
            with pytest.raises(ValueError, match="grad_h_n|grad_c_n"):
                m.backward(tape, np.zeros(out.shape), (good, np.zeros(shape)))
    if kind == "LSTM":
        for bad in [good, (good,), (good, good, good)]:
            _, _, tape = _train(m)
            with pytest.raises((TypeError, ValueError), match="grad_h_n"):
                m.backward(tape, None, bad)


@pytest.mark.parametrize("kind", KINDS)
def test_tape_used_twice(kind):
    """A tape can be used once."""
    m = make(kind)
    out, _, tape = _train(m)
    m.backward(tape, np.ones(out.shape))
    with pytest.raises(ValueError, match="tape"):
        m.backward(tape, np.ones(out.shape))
    # Also when the first use was a failed call? No: a failed call (bad grad_out) must not
    # consume the tape silently in a way that later gives a wrong answer; either the tape
    # stays usable or it is reported as used. Both are acceptable; a crash is not.
    _, _, tape = _train(m)
    with pytest.raises(ValueError, match="grad_out"):
        m.backward(tape, np.ones((1, 1, 1)))
    try:
        m.backward(tape, np.ones(out.shape))
    except ValueError as e:
        assert "tape" in str(e)


@pytest.mark.parametrize("kind", KINDS)
def test_tape_from_another_module(kind):
    """A tape made by another module (even an identical one) is refused."""
    m = make(kind)
    twin = make(kind)
    out, _, tape = _train(twin)
    with pytest.raises(ValueError, match="tape"):
        m.backward(tape, np.ones(out.shape))
    # A refused call has no effect: the tape is still good for its own module.
    twin.backward(tape, np.ones(out.shape))

    other_kind = {"RNN": "GRU", "GRU": "LSTM", "LSTM": "RNN"}[kind]
    o = make(other_kind)
    out_o, _, tape_o = _train(o)
    with pytest.raises(ValueError, match="tape"):
        m.backward(tape_o, np.ones(out_o.shape))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "not_a_tape",
    [None, "tape", 3, {"x": 1}, np.zeros(3), object()],
    ids=["None", "str", "int", "dict", "array", "object"],
)
def test_not_a_tape(kind, not_a_tape):
    """Anything that is not a tape: TypeError or ValueError naming tape."""
    m = make(kind)
    out, _, _ = _train(m)
    with pytest.raises((TypeError, ValueError), match="tape"):
        m.backward(not_a_tape, np.ones(out.shape))


# --------------------------------------------------------------------------------------
# load_state_dict


@pytest.mark.parametrize("kind", KINDS)
def test_load_state_dict_missing_and_unexpected(kind):
    """strict loading names every missing and every unexpected key in one KeyError."""
    m = make(kind)
    sd = m.state_dict()
    missing = dict(sd)
    del missing["weight_hh_l0"], missing["bias_ih_l1_reverse"]
    with pytest.raises(KeyError) as ei:
        m.load_state_dict(missing)
    assert "weight_hh_l0" in str(ei.value) and "bias_ih_l1_reverse" in str(ei.value)

    extra = dict(sd, foo=np.zeros(3), weight_ih_l2=np.zeros((5, 10)))
    with pytest.raises(KeyError) as ei:
        m.load_state_dict(extra)
    assert "foo" in str(ei.value) and "weight_ih_l2" in str(ei.value)

    both = dict(missing, foo=np.zeros(3))
    with pytest.raises(KeyError) as ei:
        m.load_state_dict(both)
    for name in ("weight_hh_l0", "bias_ih_l1_reverse", "foo"):
        assert name in str(ei.value)


@pytest.mark.parametrize("kind", KINDS)
def test_load_state_dict_wrong_shapes(kind):
    """Every wrongly shaped entry is named in one ValueError (strict or not)."""
    m = make(kind)
    sd = m.state_dict()
    bad = dict(sd)
    bad["weight_ih_l0"] = np.zeros((sd["weight_ih_l0"].shape[0], IN + 1))
    bad["bias_hh_l1"] = np.zeros(sd["bias_hh_l1"].shape + (1,))
    rows, cols = sd["weight_hh_l0_reverse"].shape
    bad["weight_hh_l0_reverse"] = np.zeros((rows + 1, cols))
    for strict in (True, False):
        with pytest.raises(ValueError) as ei:
            m.load_state_dict(bad, strict=strict)
        for name in ("weight_ih_l0", "bias_hh_l1", "weight_hh_l0_reverse"):
            assert name in str(ei.value), (name, str(ei.value))


def test_load_state_dict_bad_dtype():
    """A complex or non-numeric entry is a TypeError (or ValueError) naming it."""
    m = make("GRU")
    sd = m.state_dict()
    bad = dict(sd, weight_ih_l0=sd["weight_ih_l0"].astype(np.complex128))
    with pytest.raises((TypeError, ValueError), match="weight_ih_l0"):
        m.load_state_dict(bad)
    bad = dict(sd, bias_ih_l0=np.full(sd["bias_ih_l0"].shape, "a"))
    with pytest.raises((TypeError, ValueError), match="bias_ih_l0"):
        m.load_state_dict(bad)


# --------------------------------------------------------------------------------------
# Constructor arguments


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "args,kw,name",
    [
        ((0, H), {}, "input_size"),
        ((-1, H), {}, "input_size"),
        ((IN, 0), {}, "hidden_size"),
        ((IN, -3), {}, "hidden_size"),
        ((IN, H), {"num_layers": 0}, "num_layers"),
        ((IN, H), {"num_layers": -1}, "num_layers"),
        ((IN, H), {"dtype": "float16"}, "dtype"),
        ((IN, H), {"dtype": "int32"}, "dtype"),
        ((IN, H), {"dtype": np.complex64}, "dtype"),
        ((IN, H), {"dtype": "nonsense"}, "dtype"),
        ((IN, H), {"norm": "instance"}, "norm"),
        ((IN, H), {"dropout": -0.1}, "dropout"),
        ((IN, H), {"dropout": 1.0}, "dropout"),
        ((IN, H), {"dropout": 1.5}, "dropout"),
        ((IN, H), {"dropout": float("nan")}, "dropout"),
        ((IN, H), {"input_dropout": 1.0}, "input_dropout"),
        ((IN, H), {"input_dropout": -0.5}, "input_dropout"),
        ((IN, H), {"recurrent_dropout": 1.0}, "recurrent_dropout"),
        ((IN, H), {"recurrent_dropout": float("nan")}, "recurrent_dropout"),
        ((IN, H), {"zoneout": 1.0}, "zoneout"),
        ((IN, H), {"zoneout": -1e-9}, "zoneout"),
        ((IN, H), {"init": "xavier"}, "init"),
    ],
)
def test_constructor_bad_values(kind, args, kw, name):
    """Out-of-range constructor arguments: ValueError naming the argument."""
    with pytest.raises(ValueError, match=name):
        getattr(rnncore, kind)(*args, **kw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "args,kw,name",
    [
        ((3.5, H), {}, "input_size"),
        (("3", H), {}, "input_size"),
        ((None, H), {}, "input_size"),
        ((IN, 2.0), {}, "hidden_size"),
        ((IN, [5]), {}, "hidden_size"),
        ((IN, H), {"num_layers": 1.5}, "num_layers"),
    ],
)
def test_constructor_non_int_sizes(kind, args, kw, name):
    """Non-integer sizes are refused, naming the argument.

    Whether this is TypeError (wrong type) or ValueError is not pinned down by the spec;
    both are accepted.
    """
    with pytest.raises((TypeError, ValueError), match=name):
        getattr(rnncore, kind)(*args, **kw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "args,name",
    [
        ((2**62 + 1, 4), "input_size"),
        ((2**61, 8), "input_size"),
        ((4, 2**62), "hidden_size"),
        ((10**12, 10**12), "input_size|hidden_size"),
    ],
)
def test_constructor_absurd_sizes(kind, args, name):
    """Sizes whose parameter count overflows 64 bits are refused up front.

    MemoryError/OverflowError are acceptable answers; a ValueError must name the argument
    (not, say, a failed reshape of a buffer whose size wrapped around).
    """
    with pytest.raises((ValueError, MemoryError, OverflowError)) as ei:
        getattr(rnncore, kind)(*args)
    if ei.type is ValueError:
        assert re.search(name, str(ei.value)), str(ei.value)


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "identity", ""])
def test_rnn_bad_nonlinearity(nonlinearity):
    """The Elman RNN takes "tanh" or "relu" only."""
    with pytest.raises(ValueError, match="nonlinearity"):
        rnncore.RNN(IN, H, nonlinearity=nonlinearity)


@pytest.mark.parametrize("proj_size", [-1, H, H + 1])
def test_lstm_bad_proj_size(proj_size):
    """proj_size must be in 0..hidden_size-1 (PyTorch's rule)."""
    with pytest.raises(ValueError, match="proj_size"):
        rnncore.LSTM(IN, H, proj_size=proj_size)


@pytest.mark.parametrize("norm", ["layer", "batch", "batch_input"])
def test_gru_reset_before_has_no_norms(norm):
    """spec: reset_after=False is offered with norm=None only."""
    with pytest.raises(ValueError, match="reset_after"):
        rnncore.GRU(IN, H, reset_after=False, norm=norm)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", ["batch", "batch_input"])
def test_batch_norm_training_needs_two_sequences(kind, norm):
    """spec: training with fewer than 2 sequences in the batch raises ValueError."""
    m = getattr(rnncore, kind)(IN, H, norm=norm)
    for x in (np.ones((T, 1, IN)), np.ones((T, IN))):  # a batch of one, and unbatched
        with pytest.raises(ValueError, match="at least 2 sequences"):
            m(x)
        with pytest.raises(ValueError, match="at least 2 sequences"):
            m.forward_train(x)
    m.eval()  # eval mode uses the running statistics: one sequence is fine
    out, _ = m(np.ones((T, 1, IN)))
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "option, value, error",
    [
        ("ln_eps", -1e-5, ValueError),
        ("bn_eps", "small", TypeError),
        ("bn_momentum", 1.5, ValueError),
        ("bn_gamma", -0.1, ValueError),
        ("bn_epsilon", 1e-5, TypeError),  # misspelled: never silently ignored
    ],
)
def test_norm_option_errors(option, value, error):
    with pytest.raises(error, match=option):
        rnncore.LSTM(IN, H, norm="batch", **{option: value})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", ["dropout", "input_dropout", "recurrent_dropout", "zoneout"])
def test_regularizer_types(kind, option):
    """Regularization probabilities must be real numbers: TypeError naming the option."""
    for bad in ("0.5", None, True, [0.1]):
        with pytest.raises(TypeError, match=option):
            getattr(rnncore, kind)(IN, H, **{option: bad})


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (2**64, ValueError), (1.5, TypeError),
                                        ("7", TypeError), (True, TypeError)])  # fmt: skip
def test_call_seed_errors(bad, error):
    """The per-call mask seed is an int in 0..2**64-1."""
    m = rnncore.LSTM(IN, H, dropout=0.2, num_layers=2)
    x = np.zeros((3, 2, IN), dtype=np.float32)
    with pytest.raises(error, match="seed"):
        m(x, seed=bad)
    with pytest.raises(error, match="seed"):
        m.forward_train(x, seed=bad)


def test_from_torch_wrong_class():
    """from_torch of the wrong torch class is refused."""
    torch = pytest.importorskip("torch")
    with pytest.raises((TypeError, ValueError)):
        rnncore.LSTM.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises((TypeError, ValueError)):
        rnncore.GRU.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises((TypeError, ValueError)):
        rnncore.RNN.from_torch("not a module")


# --------------------------------------------------------------------------------------
# Hostile battery in a child process.

HOSTILE_SCRIPT = textwrap.dedent(
    r'''
    import gc
    import sys

    import numpy as np
    import rnncore

    class CheckFailed(BaseException):
        """Escapes the per-case `except Exception` so that the child fails loudly."""

    def check(cond, msg):
        if not cond:
            raise CheckFailed(msg)

    def states(kind, state):
        return list(state) if kind == "LSTM" else [state]

    def shaped(res, out_shape, n_states):
        out, state = res
        check(isinstance(out, np.ndarray) and out.shape == out_shape,
              f"out shape {getattr(out, 'shape', None)} != {out_shape}")
        st = list(state) if isinstance(state, tuple) else [state]
        check(len(st) == n_states, "wrong number of states")
        for s in st:
            check(isinstance(s, np.ndarray) and s.ndim in (2, 3), "bad state")

    cases = []

    def case(fn):
        cases.append(fn)
        return fn

    KINDS = ["RNN", "LSTM", "GRU"]

    def mk(kind, *a, **k):
        return getattr(rnncore, kind)(*a, **k)

    # ---- constructors with absurd sizes (must not allocate and crash, or overflow) ----
    for kind in KINDS:
        for a, k in [((2**62, 4), {}), ((4, 2**62), {}), ((2**31, 2**31), {}),
                     ((10**12, 10**12), {}), ((0, 0), {}), ((4, 4), {"num_layers": 0}),
                     ((-2**63, 4), {}),
                     ((4, 4), {"dtype": None}), ((4, 4), {"seed": -1}),
                     ((4, 4), {"seed": 2**80}), ((4, 4), {"seed": "abc"}),
                     ((4, 4), {"bidirectional": "yes"}), ((float("nan"), 4), {}),
                     ((float("inf"), 4), {})]:
            def c(kind=kind, a=a, k=k):
                m = mk(kind, *a, **k)
                # If it was accepted it must work.
                x = np.zeros((2, 1, m.input_size)) if m.input_size < 100 else None
                if x is not None:
                    m(x)
            c.__name__ = f"ctor_{kind}_{a}_{k}"
            case(c)

    # ---- x ----
    def x_cases(kind):
        m = mk(kind, 3, 4, num_layers=2, bidirectional=True)
        n_st = 2 if kind == "LSTM" else 1
        xs = {
            "nan": np.full((3, 2, 3), np.nan), "inf": np.full((3, 2, 3), np.inf),
            "-inf": np.full((3, 2, 3), -np.inf), "huge": np.full((3, 2, 3), 1e300),
            "f16max": np.full((3, 2, 3), 65504, dtype=np.float16),
            "big_endian": np.ones((3, 2, 3), dtype=">f8"),
            "big_endian32": np.ones((3, 2, 3), dtype=">f4"),
            "unaligned": np.frombuffer(b"\0" + np.ones(18, np.float32).tobytes(),
                                       dtype=np.float32, offset=1).reshape(3, 2, 3),
            "zero_strides": np.broadcast_to(np.float64(1.0), (3, 2, 3)),
            "fortran": np.asfortranarray(np.ones((3, 2, 3))),
            "neg": np.ones((3, 2, 3))[::-1, ::-1, ::-1],
            "int8": np.ones((3, 2, 3), dtype=np.int8),
            "uint64": np.full((3, 2, 3), 2**63, dtype=np.uint64),
            "longdouble": np.ones((3, 2, 3), dtype=np.longdouble),
            "list": np.ones((3, 2, 3)).tolist(),
            "tuple": tuple(map(tuple, np.ones((3, 3)))),
            "masked": np.ma.masked_array(np.ones((3, 2, 3)), mask=True),
            "matrix_like_2d": np.ones((3, 3)),
        }
        for name, x in xs.items():
            def c(m=m, x=x, n_st=n_st, name=name):
                res = m(x)
                if name == "matrix_like_2d":
                    shaped(res, (3, 8), n_st)
                elif name == "tuple":
                    shaped(res, (3, 8), n_st)
                else:
                    shaped(res, (3, 2, 8), n_st)
                o, s, tape = m.forward_train(x)
                m.backward(tape, np.full(o.shape, np.nan))
            c.__name__ = f"x_{kind}_{name}"
            case(c)
        bad = {
            "none": None, "str": "abc", "scalar": 3.0, "empty_list": [],
            "ragged": [[[1.0, 2.0, 3.0]], [[1.0]]], "dict": {"a": 1},
            "obj": np.array([object()] * 18).reshape(3, 2, 3),
            "complex": np.ones((3, 2, 3), complex),
            "rank5": np.zeros((1, 1, 3, 2, 3)), "zero_T": np.zeros((0, 2, 3)),
            "zero_B": np.zeros((3, 0, 3)), "zero_D": np.zeros((3, 2, 0)),
            "wrong_D": np.zeros((3, 2, 2**20)),
            "huge_virtual": np.lib.stride_tricks.as_strided(
                np.zeros(1), shape=(2**40, 2, 3), strides=(0, 0, 0)),
        }
        for name, x in bad.items():
            def c(m=m, x=x):
                m(x)
                raise CheckFailed("bad x accepted")
            c.__name__ = f"badx_{kind}_{name}"
            case(c)
        odd = {"void": np.zeros((3, 2, 3), "V8"),
               "structured": np.zeros((3, 2, 3), dtype=[("a", "f8")]),
               "bool": np.ones((3, 2, 3), bool), "timedelta": np.ones((3, 2, 3), "m8[s]")}
        for name, x in odd.items():
            def c(m=m, x=x, n_st=n_st):
                shaped(m(x), (3, 2, 8), n_st)  # refusing is fine, a wrong shape is not
            c.__name__ = f"oddx_{kind}_{name}"
            case(c)

    for kind in KINDS:
        x_cases(kind)

    # ---- hx / lengths ----
    for kind in KINDS:
        m = mk(kind, 3, 4, num_layers=2, bidirectional=True)
        x = np.ones((3, 2, 3))
        good_h = np.zeros((4, 2, 4))
        hxs = [np.zeros((4, 2, 5)), np.zeros((40, 2, 4)), np.zeros((4, 2**20, 4)),
               np.zeros((0, 2, 4)), np.zeros(4), "hx", 1, (good_h,) * 3, (good_h, None),
               (None, good_h), [good_h, good_h], np.full((4, 2, 4), np.nan),
               np.zeros((4, 2, 4), complex), np.broadcast_to(0.0, (4, 2, 4))]
        for i, hx in enumerate(hxs):
            def c(m=m, x=x, hx=hx):
                m(x, hx=hx)
            c.__name__ = f"hx_{kind}_{i}"
            case(c)
        lens = [[0, 0], [3, 4], [-1, 2], [2**63 - 1, 1], [1], [1, 2, 3], [[1, 2]], "ab",
                [1.5, 2], np.array([1, 2], dtype=np.uint64), np.array([2**64 - 1, 1],
                dtype=np.uint64), np.array([True, True]), [None, 1], np.array([3, 3])[::-1],
                np.array([1, 2], dtype=">i8"), np.array([1, 2], dtype=np.int8), 2]
        for i, lengths in enumerate(lens):
            def c(m=m, x=x, lengths=lengths):
                res = m(x, lengths=lengths)
                shaped(res, (3, 2, 8), 2 if isinstance(res[1], tuple) else 1)
                o, s, tape = m.forward_train(x, lengths=lengths)
                m.backward(tape, np.ones(o.shape))
            c.__name__ = f"lengths_{kind}_{i}"
            case(c)

    # ---- tapes ----
    def tape_setup(kind):
        m = mk(kind, 3, 4)
        x = np.ones((3, 2, 3))
        o, s, tape = m.forward_train(x)
        return m, x, o, tape

    def attempt(fn, *a):
        try:
            return fn(*a)
        except Exception as e:
            print("  sub-call raised", type(e).__name__, flush=True)
            return e

    for kind in KINDS:
        def reuse(kind=kind):
            m, x, o, tape = tape_setup(kind)
            m.backward(tape, np.ones(o.shape))
            for _ in range(3):
                r = attempt(m.backward, tape, np.ones(o.shape))
                check(isinstance(r, Exception), "tape reused without error")

        def orphan(kind=kind):
            m, x, o, _ = tape_setup(kind)
            m2 = mk(kind, 3, 4)
            o2, s2, tape2 = m2.forward_train(x)
            del m2, s2
            gc.collect()
            r = attempt(m.backward, tape2, np.ones(o2.shape))
            check(isinstance(r, Exception), "foreign tape (module freed) accepted")
            del tape2
            gc.collect()

        def many(kind=kind):
            m, x, o, _ = tape_setup(kind)
            tapes = [m.forward_train(x)[2] for _ in range(5)]
            del tapes[2]
            gc.collect()
            for t in reversed(tapes):
                m.backward(t, None)
            del m
            gc.collect()
            tapes = None

        def garbage_cotangents(kind=kind):
            m, x, o, tape = tape_setup(kind)
            m.backward(tape, np.full(o.shape, np.inf))
            for g in [np.ones((1,)), "g", np.ones(o.shape, complex), [[1.0]], object(),
                      np.ones(o.shape, bool), np.broadcast_to(1.0, o.shape)]:
                _, _, tape = m.forward_train(x)
                attempt(m.backward, tape, g)
                attempt(m.backward, tape, np.ones(o.shape), g)

        def weights_changed(kind=kind):
            m, x, o, tape = tape_setup(kind)
            m.load_state_dict({k: v * 2 for k, v in m.state_dict().items()})
            m.zero_grad()
            attempt(m.backward, tape, np.ones(o.shape))

        def copied(kind=kind):
            import copy
            import pickle
            for f in (copy.copy, copy.deepcopy, lambda t: pickle.loads(pickle.dumps(t))):
                m, x, o, tape = tape_setup(kind)
                t2 = attempt(f, tape)
                if not isinstance(t2, Exception):
                    attempt(m.backward, t2, np.ones(o.shape))
                attempt(m.backward, tape, np.ones(o.shape))
                del t2, tape
                gc.collect()

        for fn in (reuse, orphan, many, garbage_cotangents, weights_changed, copied):
            fn.__name__ = f"tape_{fn.__name__}_{kind}"
            case(fn)

    # ---- parameter views outliving the module, load_state_dict garbage ----
    for kind in KINDS:
        def views(kind=kind):
            m = mk(kind, 3, 4, num_layers=2)
            p = m.parameters()
            g = m.grads
            del m
            gc.collect()
            for v in p.values():
                v[...] = 1.0
                check(float(v.sum()) == v.size, "view lost its data")
            for v in g.values():
                v[...] = 0.0
        views.__name__ = f"views_{kind}"
        case(views)

        def attrs(kind=kind):
            # Corrupting Python-level attributes must not reach C++ as a bad size.
            for attr, val in [("hidden_size", 1000), ("input_size", 1000),
                              ("num_layers", 50), ("bidirectional", True),
                              ("hidden_size", 0), ("input_size", -5)]:
                m = mk(kind, 3, 4)
                try:
                    setattr(m, attr, val)
                except Exception:
                    continue
                for x in (np.ones((2, 1, 3)), np.ones((2, 1, 1000))):
                    try:
                        m(x)
                    except Exception:
                        pass
                    try:
                        o, s, t = m.forward_train(x)
                        m.backward(t, np.ones(o.shape))
                    except Exception:
                        pass
        attrs.__name__ = f"attrs_{kind}"
        case(attrs)

        def bad_sd(kind=kind):
            m = mk(kind, 3, 4)
            sd = m.state_dict()
            for k in sd:
                for v in (None, "a", np.zeros(10**6), np.full(sd[k].shape, np.nan),
                          np.zeros(sd[k].shape, complex), np.zeros(sd[k].shape).T,
                          np.zeros(sd[k].shape, ">f4"), [1, 2]):
                    try:
                        m.load_state_dict(dict(sd, **{k: v}))
                    except Exception:
                        pass
            for sdbad in (None, [], "x", {1: 2}, {None: None}):
                try:
                    m.load_state_dict(sdbad)
                except Exception:
                    pass
            m.load_state_dict(sd)
            o, h = m(np.ones((2, 1, 3)))
            check(np.all(np.isfinite(o)), "not finite after reload")
        bad_sd.__name__ = f"state_dict_{kind}"
        case(bad_sd)

    def threads_api():
        old = rnncore.get_num_threads()
        try:
            for n in (0, -1, 2**31, 2**32 + 1, 2**63, -(2**63), 1.5, "2", None):
                attempt(rnncore.set_num_threads, n)
                rnncore.LSTM(3, 4)(np.ones((2, 1, 3)))
        finally:
            rnncore.set_num_threads(old)
    case(threads_api)

    ran = 0
    for fn in cases:
        print("START", fn.__name__, flush=True)
        try:
            fn()
        except SystemError as e:  # C-API misuse inside the extension
            raise CheckFailed(f"{fn.__name__}: SystemError {e}") from e
        except CheckFailed:
            raise
        except Exception as e:  # any ordinary Python exception is an acceptable answer
            print("  raised", type(e).__name__, str(e)[:120].replace("\n", " "), flush=True)
        ran += 1
    print("ALL DONE", ran, flush=True)
    '''
)


def test_hostile_battery_in_subprocess():
    """Hostile inputs raise Python exceptions or return sane results; the child never dies."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [pkg_parent, env.get("PYTHONPATH", "")] if p)
    env.setdefault("RNNCORE_NUM_THREADS", "2")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", HOSTILE_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        started = [ln for ln in out.splitlines() if ln.startswith("START")]
        pytest.fail(f"child hung during '{started[-1] if started else '<none>'}'")
    lines = proc.stdout.splitlines()
    started = [ln for ln in lines if ln.startswith("START")]
    last = started[-1] if started else "<none>"
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} during '{last}'\nstderr tail:\n{proc.stderr[-3000:]}"
    )
    assert lines and lines[-1].startswith("ALL DONE"), proc.stdout[-2000:]
    assert int(lines[-1].split()[-1]) == len(started)
