"""Streams (``module.stream()``): step-by-step inference against the whole-sequence call.

The whole-sequence call is itself checked against the NumPy reference elsewhere. A stream
computes each step with a product over that step's rows, where the whole call hoists the
input projection into one product over every (t, b) position: the same sums in another
blocking, so results agree to float rounding, not bitwise. float64: 1e-12 absolute (values
are O(1); each of the at most ~20 chained steps adds a few ulps, 2.2e-16 each, and layer norm
divides by a standard deviation that is not small here). float32: 2e-5 (the same argument with
ulps of 6e-8, plus the float32 normalization of layer norm; observed at most 3e-6).
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import rnncore as rc

CELLS = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}
NORMS = [None, "layer", "batch", "batch_input"]
TOL = {"float64": 1e-12, "float32": 2e-5}
TRAIN_STEPS = 4  # training sequences: batch norm keeps 4 rows of running statistics


def trained(cell, norm, dtype="float64", num_layers=2, **kw):
    """A module after a few training-mode calls (running statistics not trivial), in eval."""
    m = CELLS[cell](5, 6, num_layers=num_layers, norm=norm, dtype=dtype, seed=3, **kw)
    rng = np.random.default_rng(0)
    for _ in range(3):
        m(rng.standard_normal((TRAIN_STEPS, 4, 5)) * 2 + 0.5)
    return m.eval()


def close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cell", CELLS)
def test_steps_and_chunks_equal_the_whole_sequence(cell, norm, dtype):
    m = trained(cell, norm, dtype)
    x = np.random.default_rng(1).standard_normal((11, 3, 5))  # past the 4 statistics rows
    ref, ref_h = m(x)
    s = m.stream(batch_size=3)
    pieces = [s.step(x[0]), s.step(x[1])]  # single steps
    pieces += list(s.step(x[2:7]))  # a chunk
    pieces += [s.step(x[7])]
    pieces += list(s.step(x[8:11]))
    close(np.stack(pieces), ref, dtype)
    assert s.steps.tolist() == [11, 11, 11]
    state = s.state
    if cell == "lstm":
        close(state[0], ref_h[0], dtype)
        close(state[1], ref_h[1], dtype)
    else:
        close(state, ref_h, dtype)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cell", CELLS)
def test_rows_reset_at_different_times(cell, norm):
    """Row 1 restarts at step 4 and row 2 at step 7: each row's outputs are those of its own
    sequence since its reset (batch norm: each row at its own statistics row)."""
    m = trained(cell, norm)
    x = np.random.default_rng(2).standard_normal((12, 3, 5))
    s = m.stream(3)
    out = []
    for t in range(12):
        if t == 4:
            s.reset(1)
        if t == 7:
            s.reset([2])
        out.append(s.step(x[t]))
    out = np.stack(out)
    assert s.steps.tolist() == [12, 8, 5]
    close(out[:, 0], m(x[:, 0:1])[0][:, 0], "float64")
    close(out[4:, 1], m(x[4:, 1:2])[0][:, 0], "float64")
    close(out[:4, 1], m(x[:4, 1:2])[0][:, 0], "float64")
    close(out[7:, 2], m(x[7:, 2:3])[0][:, 0], "float64")
    # A chunk with rows at three different steps.
    y = s.step(x[:3])
    z = np.concatenate([x, x[:3]])
    close(y[:, 0], m(z[:, 0:1])[0][12:, 0], "float64")
    close(y[:, 1], m(z[4:, 1:2])[0][8:, 0], "float64")
    s.reset()
    assert s.steps.tolist() == [0, 0, 0]
    close(s.step(x[0]), m(x[:1])[0][0], "float64")


@pytest.mark.parametrize(
    "cell,kw",
    [
        ("lstm", {"proj_size": 3}),
        ("gru", {"reset_after": False}),
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {"zoneout": 0.3, "dropout": 0.5}),  # eval: zoneout's expectation, no dropout
    ],
)
def test_variants(cell, kw):
    m = trained(cell, None, num_layers=2, **kw)
    x = np.random.default_rng(3).standard_normal((6, 2, 5))
    s = m.stream(2)
    close(np.stack([s.step(xt) for xt in x]), m(x)[0], "float64")


@pytest.mark.parametrize("cell", CELLS)
def test_initial_state_batch_first_and_unbatched(cell):
    m = CELLS[cell](5, 6, num_layers=2, batch_first=True, dtype="float64", seed=4).eval()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 7, 5))  # (B, T, D)
    h0 = rng.standard_normal((2, 2, 6))
    hx = (h0, rng.standard_normal((2, 2, 6))) if cell == "lstm" else h0
    ref = m(x, hx)[0]
    s = m.stream(2, hx=hx)
    got = np.concatenate([s.step(x[:, :3]), s.step(x[:, 3:])], axis=1)  # batch-first chunks
    close(got, ref, "float64")
    # One row, unbatched: (D,) -> (H_out,), hx (L, H_out).
    hx1 = (h0[:, 0], hx[1][:, 0]) if cell == "lstm" else h0[:, 0]
    s1 = m.stream(hx=hx1)
    y = np.stack([s1.step(x[0, t]) for t in range(7)])
    assert y.shape == (7, 6)
    close(y, ref[0], "float64")


def test_half_weights_copy_streams_on_its_stored_weights():
    m = rc.LSTM(8, 16, seed=5).eval()
    half = m.half_weights()
    x = np.random.default_rng(5).standard_normal((9, 1, 8)).astype(np.float32)
    s = half.stream()
    got = np.stack([s.step(xt) for xt in x])
    close(got, half(x)[0], "float32")
    # ... and not on the float32 weights it was rounded from.
    assert np.abs(got - m(x)[0]).max() > 1e-6


def test_state_and_steps_are_copies_and_parameters_are_live():
    m = rc.GRU(5, 6, dtype="float64", seed=6).eval()
    x = np.random.default_rng(6).standard_normal((4, 1, 5))
    s = m.stream()
    s.step(x[0])
    st, steps = s.state, s.steps
    st[...] = 99.0
    steps[...] = 7
    assert s.steps.tolist() == [1] and not np.any(s.state == 99.0)
    # A write into the module's parameters reaches the next step.
    m.parameters()["bias_hh_l0"][...] += 1.0
    h = s.state
    y = s.step(x[1])
    close(y, m(x[1:2], h)[0][0], "float64")


def test_concurrent_streams_of_one_module():
    m = rc.LSTM(16, 32, num_layers=2, seed=7).eval()
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((40, 2, 16)).astype(np.float32) for _ in range(6)]
    expected = []
    for x in xs:
        s = m.stream(2)
        expected.append(np.stack([s.step(xt) for xt in x]))
    results = [None] * len(xs)

    def run(i):
        s = m.stream(2)
        results[i] = np.stack([s.step(xt) for xt in xs[i]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)  # same rows, same calls: bitwise


def test_small_steps_never_wake_the_pool():
    """A 64-unit LSTM's step is below every grain size: it runs on the calling thread. A large
    step does hand work to the pool (the counter counts)."""
    old = rc.get_num_threads()
    rc.set_num_threads(2)
    try:
        small = rc.LSTM(64, 64, num_layers=2).eval().stream(4)
        x = np.ones((4, 64), np.float32)
        before = rc._core.pool_dispatches()
        for _ in range(200):
            small.step(x)
        assert rc._core.pool_dispatches() == before
        big = rc.LSTM(256, 512).eval().stream(64)
        big.step(np.ones((64, 256), np.float32))
        assert rc._core.pool_dispatches() > before
    finally:
        rc.set_num_threads(old)


def test_errors():
    m = rc.LSTM(5, 6, seed=8)
    with pytest.raises(ValueError, match="eval mode"):
        m.stream()
    m.eval()
    with pytest.raises(ValueError, match="unidirectional"):
        rc.GRU(5, 6, bidirectional=True).eval().stream()
    with pytest.raises(ValueError, match="batch_size"):
        m.stream(0)
    with pytest.raises(TypeError, match="batch_size"):
        m.stream(1.5)
    with pytest.raises(ValueError, match="h_0"):
        m.stream(2, hx=(np.zeros((1, 3, 6)), np.zeros((1, 2, 6))))
    with pytest.raises(TypeError, match="pair"):
        m.stream(2, hx=np.zeros((1, 2, 6)))
    s = m.stream(2)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 5\).*got \(3, 5\)"):
        s.step(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"x must have shape \(2, 5\).*got \(5,\)"):
        s.step(np.zeros(5))  # unbatched needs a stream of one row
    with pytest.raises(ValueError, match=r"\(T, 2, 5\)"):
        s.step(np.zeros((4, 2, 4)))
    with pytest.raises(ValueError, match="x must have shape"):
        s.step(np.zeros((1, 1, 2, 5)))
    with pytest.raises(TypeError, match="x must be an array of real numbers"):
        s.step(np.zeros((2, 5), complex))
    with pytest.raises(IndexError, match="row 2 is out of range"):
        s.reset([0, 2])
    with pytest.raises(TypeError, match="rows"):
        s.reset(0.5)
    assert s.steps.tolist() == [0, 0]  # nothing above stepped or reset anything
    x = np.arange(10.0).reshape(2, 5)
    x_before = x.copy()
    s.step(x)
    np.testing.assert_array_equal(x, x_before)  # inputs are never modified


def test_repr_and_pickling_is_refused_cleanly():
    s = rc.RNN(3, 4).eval().stream(2)
    assert "Stream" in repr(s) and "2 row" in repr(s)
    assert isinstance(s, rc.Stream) and s.batch_size == 2
    with pytest.raises(TypeError):
        pickle.dumps(s)
