"""The Python API contract of rnncore (docs/api.md): parameters, state dicts, modes, dtypes,
input handling, initialization (docs/normalization.md section 4), shapes and threads.

Nothing here compares rnncore with itself in a way that could hide a bug in both sides: the
expectations are hand-written (names, shapes, init bounds), come from PyTorch, or compare two
*different* code paths (a strided input against its contiguous copy, setting weights through
views against loading them, one thread against eight).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
from rnn_testing import run_concurrently

import rnncore

KINDS = ["RNN", "LSTM", "GRU"]
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


def make(kind, input_size=3, hidden_size=4, **kw):
    """Build an rnncore module of class ``kind``."""
    return getattr(rnncore, kind)(input_size, hidden_size, **kw)


def run(m, x, hx=None, lengths=None):
    """Call ``m`` and return (out, h_n, c_n) with c_n None for RNN/GRU."""
    out, state = m(x, hx=hx, lengths=lengths)
    if isinstance(state, tuple):
        return out, state[0], state[1]
    return out, state, None


def rand(shape, seed=0, dtype=np.float64):
    """Deterministic standard normal array."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def expected_parameters(
    kind, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False, proj_size=0
):
    """PyTorch's parameter names, order and shapes, written from docs/api.md."""
    g = GATES[kind]
    h_out = proj_size or hidden_size
    d = 2 if bidirectional else 1
    exp = []
    for k in range(num_layers):
        in_k = input_size if k == 0 else d * h_out
        for suffix in [""] + (["_reverse"] if bidirectional else []):
            exp.append((f"weight_ih_l{k}{suffix}", (g * hidden_size, in_k)))
            exp.append((f"weight_hh_l{k}{suffix}", (g * hidden_size, h_out)))
            if bias:
                exp.append((f"bias_ih_l{k}{suffix}", (g * hidden_size,)))
                exp.append((f"bias_hh_l{k}{suffix}", (g * hidden_size,)))
            if proj_size:
                exp.append((f"weight_hr_l{k}{suffix}", (proj_size, hidden_size)))
    return exp


# --------------------------------------------------------------------------------------
# Parameter names, order, shapes.

HAND_WRITTEN = [
    (
        "LSTM",
        dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2),
        [
            ("weight_ih_l0", (20, 3)),
            ("weight_hh_l0", (20, 2)),
            ("bias_ih_l0", (20,)),
            ("bias_hh_l0", (20,)),
            ("weight_hr_l0", (2, 5)),
            ("weight_ih_l0_reverse", (20, 3)),
            ("weight_hh_l0_reverse", (20, 2)),
            ("bias_ih_l0_reverse", (20,)),
            ("bias_hh_l0_reverse", (20,)),
            ("weight_hr_l0_reverse", (2, 5)),
            ("weight_ih_l1", (20, 4)),
            ("weight_hh_l1", (20, 2)),
            ("bias_ih_l1", (20,)),
            ("bias_hh_l1", (20,)),
            ("weight_hr_l1", (2, 5)),
            ("weight_ih_l1_reverse", (20, 4)),
            ("weight_hh_l1_reverse", (20, 2)),
            ("bias_ih_l1_reverse", (20,)),
            ("bias_hh_l1_reverse", (20,)),
            ("weight_hr_l1_reverse", (2, 5)),
        ],
    ),
    (
        "GRU",
        dict(input_size=3, hidden_size=4, num_layers=2),
        [
            ("weight_ih_l0", (12, 3)),
            ("weight_hh_l0", (12, 4)),
            ("bias_ih_l0", (12,)),
            ("bias_hh_l0", (12,)),
            ("weight_ih_l1", (12, 4)),
            ("weight_hh_l1", (12, 4)),
            ("bias_ih_l1", (12,)),
            ("bias_hh_l1", (12,)),
        ],
    ),
    (
        "RNN",
        dict(input_size=3, hidden_size=4, bias=False, bidirectional=True, num_layers=2),
        [
            ("weight_ih_l0", (4, 3)),
            ("weight_hh_l0", (4, 4)),
            ("weight_ih_l0_reverse", (4, 3)),
            ("weight_hh_l0_reverse", (4, 4)),
            ("weight_ih_l1", (4, 8)),
            ("weight_hh_l1", (4, 4)),
            ("weight_ih_l1_reverse", (4, 8)),
            ("weight_hh_l1_reverse", (4, 4)),
        ],
    ),
]


@pytest.mark.parametrize("kind,kw,expected", HAND_WRITTEN, ids=[c[0] for c in HAND_WRITTEN])
def test_parameter_names_hand_written(kind, kw, expected):
    """Names, order and shapes of parameters(), grads and state_dict() are PyTorch's."""
    kw = dict(kw)
    m = getattr(rnncore, kind)(kw.pop("input_size"), kw.pop("hidden_size"), **kw)
    params = m.parameters()
    assert isinstance(params, OrderedDict)
    assert [(n, p.shape) for n, p in params.items()] == expected
    assert expected_parameters(kind, 3, m.hidden_size, **kw) == expected  # helper sanity
    assert [(n, g.shape) for n, g in m.grads.items()] == expected
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert [(n, p.shape) for n, p in sd.items()] == expected
    assert m.num_parameters() == sum(int(np.prod(s)) for _, s in expected)


TORCH_CONFIGS = [
    ("RNN", dict(num_layers=1)),
    ("RNN", dict(num_layers=3, nonlinearity="relu", bidirectional=True)),
    ("RNN", dict(num_layers=2, bias=False)),
    ("LSTM", dict(num_layers=1)),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=3, proj_size=3, bidirectional=True)),
    ("LSTM", dict(num_layers=2, proj_size=1, bias=False)),
    ("GRU", dict(num_layers=1, bidirectional=True)),
    ("GRU", dict(num_layers=3, bias=False)),
]


@pytest.mark.parametrize("kind,kw", TORCH_CONFIGS)
def test_parameters_match_torch(kind, kw):
    """parameters() names/order/shapes and num_parameters() equal torch.nn's."""
    torch = pytest.importorskip("torch")
    tm = getattr(torch.nn, kind)(6, 5, **kw)
    m = make(kind, 6, 5, **kw)
    expected = [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
    assert [(n, p.shape) for n, p in m.parameters().items()] == expected
    assert m.num_parameters() == sum(p.numel() for p in tm.parameters())
    kw_no_nl = {k: v for k, v in kw.items() if k != "nonlinearity"}
    assert expected_parameters(kind, 6, 5, **kw_no_nl) == expected


# --------------------------------------------------------------------------------------
# Live views, copies, load_state_dict.


@pytest.mark.parametrize("kind", KINDS)
def test_parameters_are_live_views(kind):
    """Writing into parameters() changes the model exactly like load_state_dict does."""
    m = make(kind, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    x = rand((5, 2, 3), seed=2)
    out_before = run(m, x)[0]

    donor = make(kind, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=99)
    new_values = donor.state_dict()
    views = m.parameters()
    for name, v in views.items():
        v[...] = new_values[name]
    # Writing through a view is visible in a later parameters()/state_dict() call ...
    for name, v in m.parameters().items():
        np.testing.assert_array_equal(v, new_values[name])
    out_after = run(m, x)[0]
    assert not np.allclose(out_after, out_before)
    # ... and the model computes exactly what a model loaded with those values computes.
    np.testing.assert_array_equal(out_after, run(donor, x)[0])

    # A single element write changes the output too.
    views["weight_hh_l0"][0, 0] += 1.0
    assert not np.array_equal(run(m, x)[0], out_after)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_returns_copies(kind):
    """Mutating a state_dict() entry changes neither the model nor a later state_dict()."""
    m = make(kind, 3, 4, dtype="float64", seed=3)
    x = rand((4, 2, 3), seed=4)
    out_before = run(m, x)[0]
    sd = m.state_dict()
    for v in sd.values():
        v[...] = 7.0
    np.testing.assert_array_equal(run(m, x)[0], out_before)
    for n, v in m.state_dict().items():
        assert not np.all(v == 7.0), n
    # The copies do not share memory with the live parameters either.
    for n, p in m.parameters().items():
        assert not np.shares_memory(p, sd[n]), n


@pytest.mark.parametrize("kind", KINDS)
def test_load_state_dict_round_trip(kind):
    """load_state_dict(state_dict()) reproduces parameters and outputs exactly."""
    kw = dict(num_layers=2, bidirectional=True, dtype="float32")
    if kind == "LSTM":
        kw["proj_size"] = 2
    a = make(kind, 3, 4, seed=5, **kw)
    b = make(kind, 3, 4, seed=6, **kw)
    x = rand((5, 3, 3), seed=7, dtype=np.float32)
    assert not np.array_equal(run(a, x)[0], run(b, x)[0])
    b.load_state_dict(a.state_dict())
    for n, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[n], v, err_msg=n)
    for ra, rb in zip(run(a, x), run(b, x)):
        if ra is not None:
            np.testing.assert_array_equal(rb, ra)

    # Any array-like works: nested lists of another dtype.
    c = make(kind, 3, 4, seed=8, **kw)
    c.load_state_dict({n: v.astype(np.float64).tolist() for n, v in a.state_dict().items()})
    np.testing.assert_array_equal(run(c, x)[0], run(a, x)[0])
    # The loaded values are copied in: changing the source afterwards changes nothing.
    src = a.state_dict()
    d = make(kind, 3, 4, seed=9, **kw)
    d.load_state_dict(src)
    for v in src.values():
        v[...] = 0
    np.testing.assert_array_equal(run(d, x)[0], run(a, x)[0])


def test_load_state_dict_accepts_torch_tensors():
    """A torch state_dict loads directly (tensors go through numpy())."""
    torch = pytest.importorskip("torch")
    tm = torch.nn.LSTM(3, 4, num_layers=2)
    m = rnncore.LSTM(3, 4, num_layers=2)
    m.load_state_dict(tm.state_dict())
    for n, p in tm.named_parameters():
        np.testing.assert_array_equal(m.parameters()[n], p.detach().numpy())


def test_load_state_dict_non_strict_partial():
    """strict=False loads what is present and ignores unexpected keys."""
    a = rnncore.GRU(3, 4, seed=1)
    b = rnncore.GRU(3, 4, seed=2)
    sd = a.state_dict()
    kept = {"weight_ih_l0": sd["weight_ih_l0"], "not_a_parameter": np.zeros(3)}
    old_hh = b.state_dict()["weight_hh_l0"]
    b.load_state_dict(kept, strict=False)
    np.testing.assert_array_equal(b.parameters()["weight_ih_l0"], sd["weight_ih_l0"])
    np.testing.assert_array_equal(b.parameters()["weight_hh_l0"], old_hh)


# --------------------------------------------------------------------------------------
# Gradients bookkeeping, modes.


@pytest.mark.parametrize("kind", KINDS)
def test_grads_accumulate_and_zero_grad(kind):
    """backward ADDS into m.grads; zero_grad zeroes every entry; keys/shapes/dtype match."""
    m = make(kind, 3, 4, num_layers=2, dtype="float64", seed=1)
    x = rand((4, 2, 3), seed=2)
    for n, p in m.parameters().items():
        assert m.grads[n].shape == p.shape and m.grads[n].dtype == np.float64, n
    m.zero_grad()
    out, _, tape = m.forward_train(x)
    g_out = rand(out.shape, seed=3)
    m.backward(tape, g_out)
    once = {n: g.copy() for n, g in m.grads.items()}
    assert all(np.any(g != 0) for g in once.values()), "some parameter got no gradient"

    _, _, tape2 = m.forward_train(x)
    m.backward(tape2, g_out)
    for n, g in m.grads.items():
        # Two identical backward passes: the sum is twice the first (only the rounding of
        # the accumulation may differ, hence the 1e-12 relative tolerance).
        np.testing.assert_allclose(g, 2 * once[n], rtol=1e-12, atol=1e-14, err_msg=n)

    m.zero_grad()
    for n, g in m.grads.items():
        assert g.shape == m.parameters()[n].shape
        assert np.all(g == 0), n


@pytest.mark.parametrize("kind", KINDS)
def test_train_eval_return_self(kind):
    """Modules start in training mode; train()/eval() switch it and return the module."""
    m = make(kind)
    assert m.training is True
    assert m.eval() is m
    assert m.training is False
    assert m.train() is m
    assert m.training is True
    assert m.train(False) is m
    assert m.training is False


# --------------------------------------------------------------------------------------
# dtypes and input conversion.

DTYPE_SPELLINGS = [
    ("float32", np.float32),
    (np.float32, np.float32),
    (np.dtype("float32"), np.float32),
    ("float64", np.float64),
    (np.float64, np.float64),
    (np.dtype("float64"), np.float64),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spelling,expected", DTYPE_SPELLINGS)
def test_dtype_spellings(kind, spelling, expected):
    """dtype accepts strings and NumPy dtypes; params, grads and results use it."""
    m = make(kind, dtype=spelling, seed=0)
    assert m.dtype == np.dtype(expected)
    assert all(p.dtype == expected for p in m.parameters().values())
    assert all(g.dtype == expected for g in m.grads.values())
    out, h, c = run(m, rand((3, 2, 3), seed=1, dtype=np.float64))
    assert out.dtype == expected and h.dtype == expected
    if c is not None:
        assert c.dtype == expected


def test_default_dtype_is_float32():
    """The default dtype is float32."""
    assert rnncore.LSTM(2, 3).dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("src", [np.int32, np.int64, np.float16, np.float32, np.float64, np.uint8])
def test_input_dtypes_are_cast(kind, dtype, src):
    """Integer and other float x are accepted and behave like x cast to the module dtype."""
    m = make(kind, dtype=dtype, seed=0)
    x = np.random.default_rng(1).integers(-3, 4, size=(4, 2, 3))
    if src == np.uint8:
        x = np.abs(x)
    x = (x * 0.5 if np.issubdtype(src, np.floating) else x).astype(src)
    got = run(m, x)
    want = run(m, x.astype(dtype))
    for g, w in zip(got, want):
        if w is not None:
            assert g.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(g, w)
    # Python nested lists too.
    np.testing.assert_array_equal(run(m, x.tolist())[0], want[0])


def _strided_variants(x):
    """Views of ``x``-like data with unusual strides, each paired with its contiguous copy."""
    big = np.repeat(np.repeat(x, 2, axis=0), 3, axis=2)  # (2T, B, 3D)
    views = {
        "step_slices": big[::2, :, ::3],
        "negative_time": x[::-1],
        "negative_all": x[::-1, ::-1, ::-1],
        "fortran": np.asfortranarray(x),
        "transposed_view": np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2),
        "broadcast_batch": np.broadcast_to(x[:, :1, :], x.shape),
    }
    ro = x.copy()
    ro.setflags(write=False)
    views["read_only"] = ro
    return views


@pytest.mark.parametrize("kind", KINDS)
def test_strided_inputs_equal_contiguous(kind):
    """Non-contiguous, negative-stride, broadcast and read-only x / hx / lengths work."""
    m = make(kind, 3, 4, bidirectional=True, dtype="float64", seed=0)
    x = rand((5, 3, 3), seed=1)
    for name, xv in _strided_variants(x).items():
        xc = np.ascontiguousarray(xv)
        assert np.array_equal(xv, xc)
        for g, w in zip(run(m, xv), run(m, xc)):
            if w is not None:
                np.testing.assert_array_equal(g, w, err_msg=name)
        _, _, tape = m.forward_train(xv)
        gx = m.backward(tape, np.ones((5, 3, 8)))[0]
        _, _, tape = m.forward_train(xc)
        np.testing.assert_array_equal(
            gx, m.backward(tape, np.ones((5, 3, 8)))[0], err_msg=f"grad_x {name}"
        )

    # Strided hx and lengths.
    h = rand((2, 6, 4), seed=2)[:, ::-2]  # (2, 3, 4), negative batch stride
    c = np.asfortranarray(rand((2, 3, 4), seed=3))
    hx = (h, c) if kind == "LSTM" else h
    hx_c = tuple(np.ascontiguousarray(a) for a in hx) if kind == "LSTM" else np.ascontiguousarray(h)
    lengths = np.array([9, 5, 9, 2, 9, 4])[1::2]  # [5, 2, 4], stride 2
    for g, w in zip(run(m, x, hx, lengths), run(m, x, hx_c, np.array([5, 2, 4]))):
        if w is not None:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_not_modified(kind):
    """No argument of __call__, forward_train or backward is written to."""
    m = make(kind, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = rand((5, 3, 3), seed=1)
    h = rand((4, 3, 4), seed=2)
    c = rand((4, 3, 4), seed=3)
    hx = (h, c) if kind == "LSTM" else h
    lengths = np.array([5, 1, 3])
    g_out = rand((5, 3, 8), seed=4)
    g_h = rand((4, 3, 4), seed=5)
    g_c = rand((4, 3, 4), seed=6)
    g_state = (g_h, g_c) if kind == "LSTM" else g_h
    arrays = [x, h, c, lengths, g_out, g_h, g_c]
    copies = [a.copy() for a in arrays]

    run(m, x, hx, lengths)
    _, _, tape = m.forward_train(x, hx, lengths)
    m.backward(tape, g_out, g_state)
    # float32 module: inputs of another dtype must not be touched either.
    m32 = make(kind, 3, 4, num_layers=2, bidirectional=True, dtype="float32", seed=0)
    _, _, tape = m32.forward_train(x, hx, lengths)
    m32.backward(tape, g_out, g_state)
    for a, ac in zip(arrays, copies):
        np.testing.assert_array_equal(a, ac)
        assert a.dtype == ac.dtype


# --------------------------------------------------------------------------------------
# Initialization (docs/normalization.md section 4).


def _gram_is_identity(w, atol):
    """True when the smaller Gram matrix of ``w`` is the identity (orthonormal rows/cols)."""
    rows, cols = w.shape
    gram = w.T @ w if rows >= cols else w @ w.T
    return np.allclose(gram, np.eye(min(rows, cols)), atol=atol, rtol=0)


def _not_tiny(bound, n):
    """Threshold t with P(max of n |U(-bound, bound)| draws < t) = (t / bound)**n = 1e-6."""
    return bound * 1e-6 ** (1.0 / n)


INIT_CONFIGS = [
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=2, proj_size=3)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind,kw", INIT_CONFIGS)
def test_default_init(kind, kw, dtype):
    """Glorot-uniform input blocks, orthogonal recurrent blocks, spec biases."""
    in0, hid = 8, 6
    m = make(kind, in0, hid, dtype=dtype, seed=123, **kw)
    g = GATES[kind]
    proj = kw.get("proj_size", 0)
    h_out = proj or hid
    d = 2 if kw.get("bidirectional") else 1
    # Orthogonality holds to rounding: QR in float64 then (maybe) a cast to float32.
    atol = 1e-5 if dtype == "float32" else 1e-12
    params = m.parameters()
    blocks_seen = []
    for name, p in params.items():
        layer = int(name.split("_l")[1].split("_")[0])
        if name.startswith("weight_ih"):
            in_k = in0 if layer == 0 else d * h_out
            bound = np.sqrt(6.0 / (in_k + hid))
            for b in range(g):
                blk = p[b * hid : (b + 1) * hid]
                # float32 rounding of a value <= bound can exceed it by half an ulp.
                assert np.max(np.abs(blk)) <= bound * (1 + 1e-6), (name, b)
                # Not all tiny; for the 48-entry layer-0 blocks the threshold is 0.75 L, which
                # also rules out torch's 1/sqrt(H) = 0.41 < 0.75 * sqrt(6/14) = 0.49.
                assert np.max(np.abs(blk)) > _not_tiny(bound, blk.size), (name, b)
                blocks_seen.append(blk.astype(np.float64))
        elif name.startswith("weight_hh"):
            for b in range(g):
                blk = p[b * hid : (b + 1) * hid].astype(np.float64)
                assert blk.shape == (hid, h_out)
                assert _gram_is_identity(blk, atol), (name, b, "block not orthogonal")
                blocks_seen.append(blk)
        elif name.startswith("weight_hr"):
            bound = np.sqrt(6.0 / (hid + proj))
            assert np.max(np.abs(p)) <= bound * (1 + 1e-6), name
            assert np.max(np.abs(p)) > _not_tiny(bound, p.size), name
        elif name.startswith("bias_ih"):
            expected = np.zeros(g * hid)
            if kind == "LSTM":
                expected[hid : 2 * hid] = 1.0  # forget gate, default forget_bias=1.0
            np.testing.assert_array_equal(p, expected, err_msg=name)
        elif name.startswith("bias_hh"):
            np.testing.assert_array_equal(p, np.zeros(g * hid), err_msg=name)
    # Every block is its own draw (no block repeated across gates, layers or directions).
    for i in range(len(blocks_seen)):
        for j in range(i):
            if blocks_seen[i].shape == blocks_seen[j].shape:
                assert not np.allclose(blocks_seen[i], blocks_seen[j])


def test_forget_and_update_bias_options():
    """forget_bias goes to the f block of bias_ih only; update_bias to GRU's z block."""
    lstm = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, forget_bias=0.25, seed=0)
    for name, p in lstm.parameters().items():
        if name.startswith("bias_ih"):
            np.testing.assert_array_equal(p, [0] * 4 + [0.25] * 4 + [0] * 8, err_msg=name)
        elif name.startswith("bias_hh"):
            np.testing.assert_array_equal(p, np.zeros(16), err_msg=name)
    gru = rnncore.GRU(3, 4, num_layers=2, update_bias=-1.5, seed=0)
    for name, p in gru.parameters().items():
        if name.startswith("bias_ih"):
            np.testing.assert_array_equal(p, [0] * 4 + [-1.5] * 4 + [0] * 4, err_msg=name)
        elif name.startswith("bias_hh"):
            np.testing.assert_array_equal(p, np.zeros(12), err_msg=name)
    gru0 = rnncore.GRU(3, 4, seed=0)
    np.testing.assert_array_equal(gru0.parameters()["bias_ih_l0"], np.zeros(12))


@pytest.mark.parametrize("kind,kw", INIT_CONFIGS)
def test_torch_init(kind, kw):
    """init="torch": every weight and bias in U(-1/sqrt(H), 1/sqrt(H)), biases not zero."""
    hid = 6
    m = make(kind, 8, hid, init="torch", seed=7, dtype="float64", **kw)
    bound = 1.0 / np.sqrt(hid)
    for name, p in m.parameters().items():
        assert np.max(np.abs(p)) <= bound, name
        assert np.max(np.abs(p)) > _not_tiny(bound, p.size), name
        if name.startswith("weight_hh") and kw.get("proj_size", 0) == 0:
            assert not _gram_is_identity(p[:hid], 1e-3), f"{name} looks orthogonal"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("init", ["default", "torch"])
def test_seed_reproducibility(kind, init):
    """Same seed -> identical parameters; different seeds -> different ones."""
    kw = dict(num_layers=2, bidirectional=True, init=init)
    a = make(kind, 3, 4, seed=2024, **kw).state_dict()
    b = make(kind, 3, 4, seed=2024, **kw).state_dict()
    c = make(kind, 3, 4, seed=2025, **kw).state_dict()
    for n in a:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)
    for n in a:
        if n.startswith("weight") or init == "torch":
            assert not np.array_equal(a[n], c[n]), n


# --------------------------------------------------------------------------------------
# Shapes: unbatched input, hx=None, batch_first.


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_equals_batch_of_one(kind, batch_first):
    """(T, input_size) gives unbatched out/states equal to a batch of one; grads too."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first, dtype="float64")
    if kind == "LSTM":
        kw["proj_size"] = 2
    m = make(kind, 3, 4, seed=0, **kw)
    h_out = 2 if kind == "LSTM" else 4
    x = rand((5, 3), seed=1)
    h = rand((4, h_out), seed=2)
    c = rand((4, 4), seed=3)
    hx = (h, c) if kind == "LSTM" else h
    hx_b = (h[:, None], c[:, None]) if kind == "LSTM" else h[:, None]
    xb = x[None] if batch_first else x[:, None]
    out, hn, cn = run(m, x, hx)
    out_b, hn_b, cn_b = run(m, xb, hx_b)
    assert out.shape == (5, 2 * h_out) and hn.shape == (4, h_out)
    np.testing.assert_array_equal(out, out_b[0] if batch_first else out_b[:, 0])
    np.testing.assert_array_equal(hn, hn_b[:, 0])
    if kind == "LSTM":
        assert cn.shape == (4, 4)
        np.testing.assert_array_equal(cn, cn_b[:, 0])

    g_out = rand(out.shape, seed=4)
    g_h = rand(hn.shape, seed=5)
    g_state = (g_h, rand((4, 4), seed=6)) if kind == "LSTM" else g_h
    g_state_b = (g_state[0][:, None], g_state[1][:, None]) if kind == "LSTM" else g_h[:, None]
    m.zero_grad()
    _, _, tape = m.forward_train(x, hx)
    gx, ghx = m.backward(tape, g_out, g_state)
    grads = {n: g.copy() for n, g in m.grads.items()}
    m.zero_grad()
    _, _, tape = m.forward_train(xb, hx_b)
    gxb, ghxb = m.backward(tape, g_out[None] if batch_first else g_out[:, None], g_state_b)
    assert gx.shape == x.shape
    np.testing.assert_allclose(gx, gxb[0] if batch_first else gxb[:, 0], rtol=1e-12, atol=1e-14)
    if kind == "LSTM":
        assert ghx[0].shape == h.shape and ghx[1].shape == c.shape
        np.testing.assert_allclose(ghx[0], ghxb[0][:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ghx[1], ghxb[1][:, 0], rtol=1e-12, atol=1e-14)
    else:
        assert ghx.shape == h.shape
        np.testing.assert_allclose(ghx, ghxb[:, 0], rtol=1e-12, atol=1e-14)
    for n, g in m.grads.items():
        # Same arithmetic on the same numbers; 1e-12 only allows a different summation order.
        np.testing.assert_allclose(grads[n], g, rtol=1e-12, atol=1e-14, err_msg=n)


@pytest.mark.parametrize("kind", KINDS)
def test_hx_none_equals_zeros(kind):
    """hx=None is the zero state, in the forward pass and in the gradients."""
    kw = dict(num_layers=2, bidirectional=True, dtype="float64")
    if kind == "LSTM":
        kw["proj_size"] = 3
    m = make(kind, 3, 5, seed=0, **kw)
    h_out = 3 if kind == "LSTM" else 5
    x = rand((4, 2, 3), seed=1)
    zeros = (
        (np.zeros((4, 2, h_out)), np.zeros((4, 2, 5)))
        if kind == "LSTM"
        else np.zeros((4, 2, h_out))
    )
    lengths = np.array([4, 2])
    for a, b in zip(run(m, x, None, lengths), run(m, x, zeros, lengths)):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    g_out = rand((4, 2, 2 * h_out), seed=2)
    m.zero_grad()
    _, _, tape = m.forward_train(x, None, lengths)
    gx0, ghx0 = m.backward(tape, g_out)
    grads0 = {n: g.copy() for n, g in m.grads.items()}
    m.zero_grad()
    _, _, tape = m.forward_train(x, zeros, lengths)
    gx1, ghx1 = m.backward(tape, g_out)
    np.testing.assert_array_equal(gx0, gx1)
    if kind == "LSTM":
        assert isinstance(ghx0, tuple) and len(ghx0) == 2
        np.testing.assert_array_equal(ghx0[0], ghx1[0])
        np.testing.assert_array_equal(ghx0[1], ghx1[1])
        assert ghx0[0].shape == (4, 2, h_out) and ghx0[1].shape == (4, 2, 5)
    else:
        np.testing.assert_array_equal(ghx0, ghx1)
        assert ghx0.shape == (4, 2, h_out)
    for n in grads0:
        np.testing.assert_array_equal(grads0[n], m.grads[n], err_msg=n)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_first_is_a_transpose(kind):
    """batch_first=True gives the transposed result of the same model in time-major layout."""
    tm_ = make(kind, 3, 4, bidirectional=True, dtype="float64", seed=0)
    bf = make(kind, 3, 4, bidirectional=True, batch_first=True, dtype="float64", seed=1)
    bf.load_state_dict(tm_.state_dict())
    x = rand((5, 3, 3), seed=2)
    lengths = [3, 5, 1]
    o1, h1, c1 = run(tm_, x, None, lengths)
    o2, h2, c2 = run(bf, x.transpose(1, 0, 2), None, lengths)
    np.testing.assert_array_equal(o2, o1.transpose(1, 0, 2))
    np.testing.assert_array_equal(h2, h1)  # states are never batch-first
    if c1 is not None:
        np.testing.assert_array_equal(c2, c1)


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_list_and_dtypes(kind):
    """lengths may be a list or any integer array; padding of out is exactly 0."""
    m = make(kind, 3, 4, bidirectional=True, dtype="float64", seed=0)
    x = rand((5, 3, 3), seed=1)
    ref = run(m, x, None, np.array([2, 5, 3], dtype=np.int64))
    for lengths in (
        [2, 5, 3],
        np.array([2, 5, 3], dtype=np.int32),
        np.array([2, 5, 3], dtype=np.uint16),
    ):
        for a, b in zip(run(m, x, None, lengths), ref):
            if b is not None:
                np.testing.assert_array_equal(a, b)
    out = ref[0]
    assert np.all(out[2:, 0] == 0) and np.all(out[3:, 2] == 0)
    assert np.all(out[:2, 0] != 0) and np.all(out[:, 1] != 0)
    # Full lengths equal no lengths.
    for a, b in zip(run(m, x, None, [5, 5, 5]), run(m, x)):
        if b is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_tape_single_use(kind):
    """A tape can be consumed once; the second backward raises ValueError naming it."""
    m = make(kind, seed=0)
    out, _, tape = m.forward_train(rand((3, 2, 3)))
    m.backward(tape, np.ones_like(out))
    grads = {n: g.copy() for n, g in m.grads.items()}
    with pytest.raises(ValueError, match="tape"):
        m.backward(tape, np.ones_like(out))
    for n, g in m.grads.items():  # the failed call added nothing
        np.testing.assert_array_equal(g, grads[n], err_msg=n)


def test_constructor_accepts_numpy_integers():
    """Sizes given as NumPy integers are accepted."""
    m = rnncore.LSTM(np.int64(3), np.int32(4), num_layers=np.int64(2))
    assert m.input_size == 3 and m.hidden_size == 4 and m.num_layers == 2
    assert run(m, np.zeros((2, 1, 3)))[0].shape == (2, 1, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_attributes(kind):
    """Constructor options are exposed as attributes."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dtype="float64")
    if kind == "LSTM":
        kw["proj_size"] = 2
    if kind == "RNN":
        kw["nonlinearity"] = "relu"
    if kind == "GRU":
        kw["reset_after"] = True
    m = make(kind, 3, 4, **kw)
    assert (m.input_size, m.hidden_size, m.num_layers) == (3, 4, 2)
    assert m.bidirectional and m.batch_first
    assert m.dtype == np.float64
    if kind == "LSTM":
        assert m.proj_size == 2
        assert make(kind, 3, 4).proj_size == 0
    if kind == "RNN":
        assert m.nonlinearity == "relu"
        assert make(kind, 3, 4).nonlinearity == "tanh"
    if kind == "GRU":
        assert m.reset_after is True


# --------------------------------------------------------------------------------------
# Threads.


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_eval_calls_equal_serial(kind):
    """8 Python threads calling one eval-mode module concurrently get the serial results."""
    m = make(kind, 16, 32, num_layers=2, bidirectional=True, seed=0).eval()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((20, 8, 16)).astype(np.float32) for _ in range(8)]
    lens = [None if i % 2 == 0 else rng.integers(1, 21, size=8) for i in range(8)]
    serial = [run(m, x, None, n) for x, n in zip(xs, lens)]

    repeats = 5
    results = run_concurrently(lambda i: [run(m, xs[i], None, lens[i]) for _ in range(repeats)], 8)
    for i in range(8):
        for r in range(repeats):
            for got, want in zip(results[i][r], serial[i]):
                if want is not None:
                    # Exactly equal: the spec promises results independent of threading.
                    np.testing.assert_array_equal(got, want, err_msg=f"thread {i} call {r}")


def test_results_independent_of_num_threads():
    """set_num_threads changes nothing in the results (spec: Threads)."""
    old = rnncore.get_num_threads()
    assert isinstance(old, int) and old >= 1
    m = rnncore.LSTM(16, 32, num_layers=2, bidirectional=True, seed=0)
    x = rand((12, 16, 16), seed=1, dtype=np.float32)
    try:
        rnncore.set_num_threads(1)
        assert rnncore.get_num_threads() == 1
        one = run(m, x)
        _, _, tape = m.forward_train(x)
        m.zero_grad()
        g1 = m.backward(tape, np.ones_like(one[0]))[0]
        w1 = {n: g.copy() for n, g in m.grads.items()}
        rnncore.set_num_threads(2)
        two = run(m, x)
        _, _, tape = m.forward_train(x)
        m.zero_grad()
        g2 = m.backward(tape, np.ones_like(two[0]))[0]
    finally:
        rnncore.set_num_threads(old)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g1, g2)
    for n, g in m.grads.items():
        np.testing.assert_array_equal(g, w1[n], err_msg=n)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_computes_like_the_parent():
    """The core's thread pool survives fork(): a child gets its own, same results."""
    before = rnncore.get_num_threads()
    rnncore.set_num_threads(2)
    try:
        m = rnncore.LSTM(256, 256).eval()  # big enough that steps are split over threads
        x = np.random.default_rng(0).standard_normal((20, 1, 256)).astype(np.float32)
        ref = m(x)[0]
        pid = os.fork()
        if pid == 0:  # child: exit status says whether it matched
            os._exit(0 if np.array_equal(m(x)[0], ref) else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        rnncore.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", [None, "layer", "batch", "batch_input"])
def test_bitwise_identical_for_1_2_3_threads_at_split_sizes(kind, norm):
    """Sizes at which the core splits per-step products and row passes over threads
    (B * G * H above its thresholds): outputs, states and every gradient are bitwise
    identical for 1, 2 and 3 threads, in training and in eval mode."""
    old = rnncore.get_num_threads()
    m = getattr(rnncore, kind)(64, 256, bidirectional=True, norm=norm, seed=0)
    x = rand((4, 64, 64), seed=2, dtype=np.float32)
    results = []
    initial = m.state_dict()  # each round starts from the same running statistics
    try:
        for threads in (1, 2, 3):
            rnncore.set_num_threads(threads)
            m.load_state_dict(initial)
            m.train()
            out, _, tape = m.forward_train(x)
            m.zero_grad()
            gx = m.backward(tape, np.cos(out))[0]
            grads = {n: g.copy() for n, g in m.grads.items()}
            m.eval()
            out_eval = m(x)[0]
            results.append((out, gx, grads, out_eval))
    finally:
        rnncore.set_num_threads(old)
    ref = results[0]
    for threads, res in zip((2, 3), results[1:]):
        np.testing.assert_array_equal(res[0], ref[0], err_msg=f"out, {threads} threads")
        np.testing.assert_array_equal(res[1], ref[1], err_msg=f"grad x, {threads} threads")
        for n in ref[2]:
            np.testing.assert_array_equal(res[2][n], ref[2][n], err_msg=f"{n}, {threads} threads")
        np.testing.assert_array_equal(res[3], ref[3], err_msg=f"eval out, {threads} threads")
