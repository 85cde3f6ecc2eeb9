"""Failures a library must never have, as regression tests: a tape used after the
parameters changed, sizes no machine can hold, out-of-range thread counts, array-like
states refused.

Each test names the mechanism it checks; the sizes are derived from this machine's
memory so that the refusals happen on any machine.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from rnn_testing import Config, make_inputs, make_module, reference, run_concurrently

import rnncore as rc
from rnncore import _limits

FLOAT64_TOL = 1e-12  # the forward tests' float64 tolerance (test_forward.TOLERANCE)


def _lstm(dtype="float64"):
    return rc.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0)


def _train(m, x):
    out, _, tape = m.forward_train(x)
    return out, tape


# --------------------------------------------------------------------------- stale tapes
def _change_with_optimizer(m):
    m.grads["weight_hh_l0"][...] = 1.0
    rc.optim.SGD([m], lr=0.1).step()


def _change_with_load_state_dict(m):
    sd = m.state_dict()
    sd["bias_ih_l1"] = sd["bias_ih_l1"] + 1.0
    m.load_state_dict(sd)


def _change_through_a_view(m):
    m.parameters()["weight_ih_l0"][0, 0] += 1e-3


def _change_with_an_initializer(m):
    rc.init.forget_gate_bias(m, 3.0)


def _change_one_bit(m):
    w = m.parameters()["weight_hh_l1"]
    w.view(np.int64)[0, 0] ^= 1  # the smallest change a float can have


@pytest.mark.parametrize(
    "change",
    [_change_with_optimizer, _change_with_load_state_dict, _change_through_a_view,
     _change_with_an_initializer, _change_one_bit],  # fmt: skip
)
def test_backward_refuses_a_tape_whose_parameters_changed(change):
    m = _lstm()
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, tape = _train(m, x)
    change(m)
    m.zero_grad()
    with pytest.raises(RuntimeError, match="parameters changed after forward_train"):
        m.backward(tape, np.ones_like(out))
    assert not tape.consumed  # nothing was accumulated
    assert all(not g.any() for g in m.grads.values())


def test_a_tape_is_usable_again_once_the_parameters_are_restored_bit_for_bit():
    m = _lstm()
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    out, tape = _train(m, x)
    saved = m.state_dict()
    _change_through_a_view(m)
    with pytest.raises(RuntimeError):
        m.backward(tape, np.ones_like(out))
    m.load_state_dict(saved)
    grad_x, _ = m.backward(tape, np.ones_like(out))
    # the gradient is the one of the function that was evaluated: same as a fresh tape
    m2 = _lstm()
    m2.load_state_dict(saved)
    out2, tape2 = _train(m2, x)
    grad_x2, _ = m2.backward(tape2, np.ones_like(out2))
    np.testing.assert_array_equal(grad_x, grad_x2)


def test_unchanged_nan_parameters_do_not_count_as_a_change():
    m = rc.GRU(2, 3, dtype="float32", seed=0)
    m.parameters()["bias_hh_l0"][0] = np.nan  # NaN != NaN, but its bits are the same
    x = np.ones((3, 2, 2), np.float32)
    out, tape = _train(m, x)
    m.backward(tape, np.zeros_like(out))
    assert tape.consumed


# --------------------------------------------------------------------------- sizes
def test_a_layer_count_no_one_means_is_refused_at_once():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"num_layers must be at most 1024"):
        rc.GRU(3, 4, num_layers=2**20)
    assert time.perf_counter() - start < 1.0
    rc.GRU(3, 4, num_layers=_limits.MAX_LAYERS)  # the limit itself is allowed


def _total_memory() -> int:
    total = _limits.physical_memory()
    if total is None:
        pytest.skip("this OS does not report its physical memory")
    return total


def test_a_model_larger_than_the_machine_is_refused_at_once_with_the_estimate():
    # parameters and gradients of an RNN of hidden size H take at least 8 H^2 bytes
    hidden = math.isqrt(_total_memory() // 8) + 1
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=rf"hidden_size={hidden}") as info:
        rc.RNN(1, hidden)
    assert time.perf_counter() - start < 1.0
    assert "GiB" in str(info.value) or "too many" in str(info.value)


def test_a_call_larger_than_the_machine_is_refused_and_the_module_still_works():
    m = rc.LSTM(1, 64, proj_size=1, bidirectional=True, seed=0).eval()
    batch = 64
    # one direction's input projections alone: T * B * 4H float32 values
    steps = _total_memory() // (batch * 4 * 64 * 4) + 1
    huge = np.broadcast_to(np.float32(0), (steps, batch, 1))  # no memory of its own
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=rf"T={steps}, B={batch}"):
        m(huge)
    assert time.perf_counter() - start < 1.0
    # the module, and a new one, still compute the reference's results
    cfg = Config("lstm", input_size=1, hidden_size=64, proj_size=1, bidirectional=True)
    for module in (m, rc.LSTM(1, 64, proj_size=1, bidirectional=True, seed=1)):
        params = {k: v.astype(np.float64) for k, v in module.state_dict().items()}
        m64 = make_module(rc, cfg, "float64", params)
        x, states, _ = make_inputs(cfg, np.random.default_rng(2), 6, 3)
        got, _ = m64(x, (states[0], states[1]))
        want, _ = reference(cfg, params, x, states, None)
        np.testing.assert_allclose(got, want, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("n", [2**31, 2**32 + 1, 2**63, _limits.MAX_THREADS + 1])
def test_set_num_threads_beyond_the_limit_names_the_argument(n):
    old = rc.get_num_threads()
    try:
        with pytest.raises(ValueError, match=r"n must be <= 4096"):
            rc.set_num_threads(n)
        assert rc.get_num_threads() == old
    finally:
        rc.set_num_threads(old)


@pytest.mark.parametrize("cls", [rc.RNN, rc.GRU])
def test_nested_list_states_are_array_likes(cls):
    m = cls(2, 3, num_layers=2, dtype="float64", seed=0)
    x = np.random.default_rng(3).standard_normal((4, 2, 2))
    h0 = np.random.default_rng(4).standard_normal((2, 2, 3))
    want, want_h = m(x, h0)
    got, got_h = m(x, h0.tolist())
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_h, want_h)
    out, _, tape = m.forward_train(x, h0.tolist())
    grads = m.backward(tape, np.ones_like(out), np.ones_like(want_h).tolist())
    assert grads[1].shape == h0.shape


@pytest.mark.parametrize(
    "cls, option", [(rc.LSTM, "forget_bias"), (rc.GRU, "update_bias")]
)
def test_gate_bias_options_are_checked_like_every_other_option(cls, option):
    with pytest.raises(TypeError, match=f"{option} must be a real number"):
        cls(2, 3, **{option: "1.5"})  # a string used to be passed through float()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"{option} must be finite"):
            cls(2, 3, **{option: bad})
    assert getattr(cls(2, 3, **{option: np.float32(0.5)}), option) == 0.5


# --------------------------------------------------------------------------- concurrency
def _bn_module():
    # large enough that a call takes long enough for the threads to overlap
    return rc.GRU(8, 64, num_layers=2, norm="batch", dtype="float64", seed=3)


def test_concurrent_training_calls_of_a_batch_norm_module_serialize_on_its_statistics():
    """4 threads, one training-mode call each (different lengths, so the statistics grow
    while others read them): no crash, each output is the serial one (training mode
    normalizes with the batch's statistics), and the running statistics equal those of
    one of the 24 serial orders."""
    import itertools
    import pickle

    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((t, 6, 8)) for t in (9, 4, 12, 7)]
    start = _bn_module()
    frozen = pickle.dumps(start)
    want_out = [pickle.loads(frozen)(x)[0] for x in xs]  # outputs do not depend on order
    orders = {}
    for order in itertools.permutations(range(4)):
        m = pickle.loads(frozen)
        for i in order:
            m(xs[i])
        orders[order] = m.buffers()
    for _ in range(5):
        m = pickle.loads(frozen)
        outs = run_concurrently(lambda i: m(xs[i])[0], 4)  # noqa: B023 - m of this round
        for got, want in zip(outs, want_out):
            np.testing.assert_array_equal(got, want)
        got = m.buffers()
        assert any(
            all(np.array_equal(got[k], bufs[k]) for k in got) for bufs in orders.values()
        ), "the running statistics are not those of any serial order"


def test_concurrent_backward_calls_sum_as_serial_ones():
    """4 threads x 10 backward calls on one module: the accumulated gradients equal the
    serial sum of the same 40 calls (up to the order of the 40 additions)."""
    m = rc.LSTM(8, 48, num_layers=2, bidirectional=True, dtype="float64", seed=4)
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((6, 3, 8)) for _ in range(40)]
    tapes = [m.forward_train(x) for x in xs]
    grads_out = [rng.standard_normal(out.shape) for out, _, _ in tapes]

    serial = rc.LSTM(8, 48, num_layers=2, bidirectional=True, dtype="float64", seed=4)
    for x, g in zip(xs, grads_out):
        out, _, tape = serial.forward_train(x)
        serial.backward(tape, g)

    def work(i):
        for k in range(i, 40, 4):
            m.backward(tapes[k][2], grads_out[k])

    run_concurrently(work, 4)
    for name, g in m.grads.items():
        want = serial.grads[name]
        # 40 float64 sums in another order: rounding of about 40 ulps of the largest term
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_concurrent_backward_of_one_tape_consumes_it_once():
    m = rc.GRU(4, 16, dtype="float64", seed=0)
    out, _, tape = m.forward_train(np.ones((5, 2, 4)))
    grad = np.ones_like(out)
    outcomes = []

    def work(i):
        try:
            m.backward(tape, grad)
            outcomes.append("ok")
        except ValueError as e:
            assert "already been used" in str(e)
            outcomes.append("refused")

    run_concurrently(work, 4)
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]


_ALLOCATION_FAILURE = """
import resource, sys
import numpy as np
import rnncore as rc
rc.set_num_threads(2)
m = rc.LSTM(1, 2048, proj_size=1, bidirectional=True, seed=0).eval()
small = np.random.default_rng(0).standard_normal((5, 2, 1)).astype(np.float32)
before = m(small)[0]
# the address space for what is mapped now and 1 GiB more; the call's workspace (input
# projections of both directions, computed by the pool's threads at once) needs ~4 GiB
with open("/proc/self/statm") as f:
    pages = int(f.read().split()[0])
limit = pages * resource.getpagesize() + 2**30
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # the soft limit: raised again below
try:
    m(np.zeros((4000, 64, 1), np.float32))
except MemoryError as e:
    print("MemoryError", e)
else:
    sys.exit("no MemoryError")
resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
after = m(small)[0]
assert np.array_equal(before, after), "the module changed"
other = rc.LSTM(1, 8, bidirectional=True, seed=1).eval()
print("still working", other(small)[0].shape, after.shape)
"""


def test_an_allocation_failure_inside_the_thread_pool_is_a_memory_error():
    """Regression: a bidirectional call whose workspace cannot be allocated used to abort
    the process (std::bad_alloc escaping a worker thread)."""
    import subprocess
    import sys

    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc to size the address-space limit")
    proc = subprocess.run(
        [sys.executable, "-c", _ALLOCATION_FAILURE], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MemoryError" in proc.stdout and "still working" in proc.stdout, proc.stdout


def test_concurrent_backward_calls_of_a_linear_layer_sum_as_serial_ones():
    m = rc.Linear(64, 32, dtype="float64", seed=0)
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((50, 64)) for _ in range(40)]
    gys = [rng.standard_normal((50, 32)) for _ in range(40)]
    tapes = [m.forward_train(x)[1] for x in xs]
    serial = rc.Linear(64, 32, dtype="float64", seed=0)
    for x, gy in zip(xs, gys):
        serial.backward(serial.forward_train(x)[1], gy)

    def work(i):
        for k in range(i, 40, 4):
            m.backward(tapes[k], gys[k])

    run_concurrently(work, 4)
    for name, g in m.grads.items():
        want = serial.grads[name]
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
