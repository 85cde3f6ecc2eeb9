"""The benchmark harness's own helpers (benchmarks/bench.py), where a silent failure would
bias every timing rather than fail a check."""

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
bench = pytest.importorskip("bench")


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
        waited = bench.quiesce(max_wait_s=2.0)
        assert waited >= 0.25, f"returned after {waited:.3f} s while a thread still polled"
    finally:
        t.join()
    # Nothing polls now (other libraries' pools in this test process park within ~0.1 s).
    assert bench.quiesce(max_wait_s=2.0) < 1.5
