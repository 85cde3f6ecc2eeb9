"""StreamBatcher: concurrent steps of many streams against each stream stepped on its own.

A batched step computes each stream's row in a product over the batch's rows, the stream on
its own over one row: the same sums, possibly in another kernel (dot products for one row,
packed products for several), so results agree to float rounding. float64: 1e-12 absolute
(O(1) values, a few ulps per step over at most ~40 chained steps); float32 (one test): 2e-5.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

import rnncore as rc

TOL = 1e-12


def model(cell=rc.LSTM, norm=None, dtype="float64", **kw):
    m = cell(6, 8, num_layers=2, norm=norm, dtype=dtype, seed=11, **kw)
    if norm == "batch":
        rng = np.random.default_rng(0)
        for _ in range(3):
            m(rng.standard_normal((5, 4, 6)))  # 5 rows of running statistics
    return m.eval()


def alone(m, xs, resets=(), hx=None):
    """Outputs of one stream of m stepped through xs (T, D) by itself, reset before the
    steps in ``resets``."""
    s = m.stream(hx=hx)
    out = []
    for t, xt in enumerate(xs):
        if t in resets:
            s.reset()
        out.append(s.step(xt))
    return np.stack(out)


@pytest.mark.parametrize("cell,norm", [(rc.LSTM, None), (rc.GRU, "layer"), (rc.RNN, "batch"),
                                       (rc.LSTM, "batch")])  # fmt: skip
def test_many_threads_each_get_their_own_stream(cell, norm):
    m = model(cell, norm)
    n = 28
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 40, n)
    xs = [rng.standard_normal((int(k), 6)) for k in lengths]
    resets = [{int(rng.integers(1, k))} if i % 3 == 0 else set() for i, k in enumerate(lengths)]
    expected = [alone(m, x, r) for x, r in zip(xs, resets)]
    results = [None] * n
    errors = []
    with rc.StreamBatcher(m, max_batch=16, max_delay_ms=0.5) as b:
        barrier = threading.Barrier(n)

        def run(i):
            try:
                sid = b.open()
                barrier.wait()
                out = []
                for t, xt in enumerate(xs[i]):
                    if t in resets[i]:
                        b.reset(sid)
                    out.append(b.step(sid, xt))
                b.close(sid)
                results[i] = np.stack(out)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_steps_submitted_ahead_run_in_order_and_streams_grow():
    m = model(rc.GRU, dtype="float32")
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((100, 12, 6)).astype(np.float32)
    with rc.StreamBatcher(m, max_batch=8, max_delay_ms=2.0) as b:
        sids = [b.open() for _ in range(100)]  # more streams than rows at first: the core grows
        futures = [[b.submit(sid, xs[i, t]) for t in range(12)] for i, sid in enumerate(sids)]
        assert b.open_streams == 100
        for i in range(100):
            got = np.stack([f.result() for f in futures[i]])
            np.testing.assert_allclose(got, alone(m, xs[i]), rtol=0, atol=2e-5)


def test_initial_state_and_reset_with_state():
    m = model()
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((6, 6))
    h0, c0 = rng.standard_normal((2, 8)), rng.standard_normal((2, 8))
    with rc.StreamBatcher(m) as b:
        sid = b.open(hx=(h0, c0))
        got = np.stack([b.step(sid, x) for x in xs])
        np.testing.assert_allclose(got, alone(m, xs, hx=(h0, c0)), rtol=0, atol=TOL)
        b.reset(sid, hx=(h0, c0))
        got = np.stack([b.step(sid, x) for x in xs])
        np.testing.assert_allclose(got, alone(m, xs, hx=(h0, c0)), rtol=0, atol=TOL)


def test_a_bad_step_fails_only_its_caller():
    m = model()
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((8, 20, 6))
    results = [None] * 8
    bad = []
    with rc.StreamBatcher(m, max_batch=8) as b:
        sids = [b.open() for _ in range(8)]

        def run(i):
            out = []
            for t in range(20):
                if i == 3 and t % 5 == 0:
                    try:
                        b.step(sids[i], np.zeros(7))
                    except ValueError as e:
                        bad.append(str(e))
                out.append(b.step(sids[i], xs[i, t]))
            results[i] = np.stack(out)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(bad) == 4 and all("x must have shape (6,), got (7,)" in e for e in bad)
    for i in range(8):
        np.testing.assert_allclose(results[i], alone(m, xs[i]), rtol=0, atol=TOL)


def test_errors():
    m = model()
    with pytest.raises(ValueError, match="eval mode"):
        rc.StreamBatcher(rc.LSTM(3, 4))
    with pytest.raises(ValueError, match="unidirectional"):
        rc.StreamBatcher(rc.LSTM(3, 4, bidirectional=True).eval())
    with pytest.raises(ValueError, match="max_batch"):
        rc.StreamBatcher(m, max_batch=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        rc.StreamBatcher(m, max_delay_ms=-1)
    b = rc.StreamBatcher(m)
    try:
        sid = b.open()
        with pytest.raises(KeyError, match="no open stream 12345"):
            b.submit(12345, np.zeros(6))
        with pytest.raises(TypeError, match="real"):
            b.submit(sid, np.zeros(6, complex))
        with pytest.raises(ValueError, match=r"h_0"):
            b.open(hx=(np.zeros((2, 9)), np.zeros((2, 8))))
        b.close(sid)
        with pytest.raises(KeyError):
            b.step(sid, np.zeros(6))
        with pytest.raises(KeyError):
            b.close(sid)
        x = np.ones(6)
        sid = b.open()
        b.step(sid, x)
        np.testing.assert_array_equal(x, np.ones(6))  # the caller's array is not modified
    finally:
        b.close_all()
    with pytest.raises(RuntimeError, match="closed"):
        b.open()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(sid, np.zeros(6))
    b.close_all()  # idempotent


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads in /proc (Linux)")
def test_close_all_runs_what_was_submitted_and_stops_the_worker():
    m = model()
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((30, 10, 6))
    alone(m, xs[0])  # the compute pool's threads exist from here on
    # The worker is the one thread the batcher starts (thread ids, not counts: a thread of
    # an earlier test may end meanwhile).
    before = set(os.listdir("/proc/self/task"))
    b = rc.StreamBatcher(m, max_batch=4, max_delay_ms=5.0)
    started = set(os.listdir("/proc/self/task")) - before
    assert len(started) == 1, started
    worker = started.pop()
    sids = [b.open() for _ in range(30)]
    futures = []
    lock = threading.Lock()

    def submit_all(i):
        fs = [b.submit(sids[i], xs[i, t]) for t in range(10)]
        with lock:
            futures.append((i, fs))

    threads = [threading.Thread(target=submit_all, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close(sids[0])  # closed with steps queued: they still run
    b.close_all()
    assert worker not in os.listdir("/proc/self/task")  # the worker has ended
    for i, fs in futures:
        assert all(f.done() for f in fs)
        np.testing.assert_allclose(np.stack([f.result() for f in fs]), alone(m, xs[i]),
                                   rtol=0, atol=TOL)  # fmt: skip


def test_a_cancelled_step_is_not_applied():
    m = model()
    rng = np.random.default_rng(6)
    xs = rng.standard_normal((3, 6))
    with rc.StreamBatcher(m, max_batch=2, max_delay_ms=2000.0) as b:
        sid, _idle = b.open(), b.open()  # the worker waits for the idle stream: time to cancel
        f0 = b.submit(sid, xs[0])
        assert f0.cancel()
        with pytest.raises(CancelledError):
            f0.result()
        y = [b.step(sid, xs[1]), b.step(sid, xs[2])]
    np.testing.assert_allclose(np.stack(y), alone(m, xs[1:]), rtol=0, atol=TOL)


def test_submit_blocks_while_the_queues_are_full():
    m = model()
    with rc.StreamBatcher(m, max_batch=2, max_delay_ms=300.0, max_pending=2) as b:
        sid, _idle = b.open(), b.open()
        b.submit(sid, np.zeros(6))
        b.submit(sid, np.zeros(6))
        start = time.monotonic()
        f = b.submit(sid, np.zeros(6))  # waits until the worker takes the first batch
        assert time.monotonic() - start > 0.15
        f.result()


def test_asyncio_tasks():
    m = model()
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((10, 8, 6))

    async def main(b):
        async def one(i):
            sid = b.open()
            out = [await asyncio.wrap_future(b.submit(sid, x)) for x in xs[i]]
            return np.stack(out)

        return await asyncio.gather(*(one(i) for i in range(10)))

    with rc.StreamBatcher(m) as b:
        results = asyncio.run(main(b))
    for i in range(10):
        np.testing.assert_allclose(results[i], alone(m, xs[i]), rtol=0, atol=TOL)


def test_no_thread_left_behind_at_interpreter_exit():
    """A batcher never closed, with steps in flight: the interpreter exits cleanly."""
    code = (
        "import numpy as np, rnncore as rc\n"
        "m = rc.LSTM(6, 8).eval()\n"
        "b = rc.StreamBatcher(m, max_delay_ms=50)\n"
        "sids = [b.open() for _ in range(5)]\n"
        "fs = [b.submit(s, np.ones(6)) for s in sids for _ in range(20)]\n"
        "print('submitted', flush=True)\n"
    )
    root = os.path.dirname(os.path.dirname(rc.__file__))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "submitted" in proc.stdout and "Traceback" not in proc.stderr
