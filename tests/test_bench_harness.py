"""The benchmark harness's own timing helpers (benchmarks/rnnbench/timing.py), where a silent
failure would bias every timing rather than fail a check."""

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
timing = pytest.importorskip("rnnbench.timing")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
def test_quiesce_waits_for_a_polling_thread_and_no_longer():
    """quiesce() returns only after another thread of the process stops using the CPU, and
    promptly when none does."""
    stop_at = time.perf_counter() + 0.3

    def poll():  # like a BLAS worker polling for its next job
        while time.perf_counter() < stop_at:
            pass

    t = threading.Thread(target=poll)
    t.start()
    try:
        waited = timing.quiesce(max_wait_s=2.0)
        assert waited >= 0.25, f"returned after {waited:.3f} s while a thread still polled"
    finally:
        t.join()
    # Nothing polls now (other libraries' pools in this test process park within ~0.1 s).
    assert timing.quiesce(max_wait_s=2.0) < 1.5


def test_measure_interleaved_rounds_hook_and_warm_call():
    """Every round times each call once, in rotating order; with ``before``, the hook runs
    and then one untimed call of the function about to be timed, before each timed group."""
    log = []

    def make(name):
        return lambda: log.append(name)

    numbers = {}
    times = timing.measure_interleaved(
        {"a": make("a"), "b": make("b")},
        target_s=0.0,
        repeats=3,
        warmup=1,
        before=lambda: log.append("hook"),
        numbers=numbers,
    )
    assert numbers == {"a": 1, "b": 1}
    assert [len(v) for v in times.values()] == [3, 3]
    # warm-up a, b; then rounds: (a, b), (b, a), (a, b), each group hook + untimed + timed
    group = lambda n: ["hook", n, n]  # noqa: E731
    want = ["a", "b"] + group("a") + group("b") + group("b") + group("a") + group("a") + group("b")
    assert log == want
