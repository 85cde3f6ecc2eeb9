"""Timing: interleaved rounds, quiet windows before each timed group, wake-up calls, medians,
and the SGEMM peak that "%peak" refers to."""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass
class Timing:
    """Per-call times in seconds."""

    median: float
    min: float
    repeats: int
    number: int

    @classmethod
    def of(cls, times: Sequence[float], number: int) -> Timing:
        """Median and minimum of per-round times (``measure_interleaved``'s lists)."""
        return cls(statistics.median(times), min(times), len(times), number)


def measure(
    fn: Callable[[], Any],
    target_s: float,
    repeats: int | None = None,
    min_repeats: int = 7,
    max_repeats: int = 15,
    warmup: int = 2,
) -> Timing:
    """Times ``fn`` with ``time.perf_counter`` after warm-up calls.

    The number of timed repeats is chosen so the whole measurement takes about ``target_s``
    (clamped to ``[min_repeats, max_repeats]``) unless ``repeats`` is given; calls much
    shorter than ``target_s / repeats`` are grouped ``number`` at a time into one timed
    repeat, so timer overhead does not matter.

    Args:
        fn: The call to time.
        target_s: Wanted total measuring time in seconds.
        repeats: Fixed number of timed repeats, or None for adaptive.
        min_repeats: Lower bound of adaptive repeats.
        max_repeats: Upper bound of adaptive repeats.
        warmup: Untimed calls first (the last one estimates the call time).

    Returns:
        Median and minimum time per call.
    """
    est = float("inf")
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
    est = max(est, 1e-7)
    if repeats is None:
        repeats = int(min(max(round(target_s / est), min_repeats), max_repeats))
    number = max(1, int(target_s / (repeats * est)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return Timing(statistics.median(times), min(times), repeats, number)


# Quiet window before each library's group of calls in a round of the main table: torch's
# OpenMP workers poll for about 10 ms after a call and rnncore's for 1 ms (quiesce waited 16
# and 5 ms with this window after a 2-thread LSTM call of each).
QUIESCE_ROUND_S = 0.005
# Calls at least this long get no untimed wake-up call after a quiet window (see
# measure_interleaved): it would double the time of the slowest cases for nothing.
WARM_CALL_BELOW_S = 0.02


def quiesce(max_wait_s: float = 2.0, window_s: float = 0.02, busy_s: float = 0.001) -> float:
    """Waits until this process's other threads stop using the CPU (at most ``max_wait_s``).

    Libraries leave worker threads polling for a while after a call: OpenBLAS for about
    0.1 s after any NumPy BLAS call (a model's orthogonal initialization makes one), OpenMP
    and ONNX Runtime pools for shorter times. On a 2-core machine such a thread takes a core
    from the library being timed next, so every timed measurement starts here. Reads each
    thread's CPU time from ``/proc/self/task/*/schedstat`` (Linux); elsewhere sleeps
    ``max_wait_s / 10``.

    Args:
        max_wait_s: Longest wait.
        window_s: Length of one observation window.
        busy_s: CPU time the other threads may use in one window and still count as idle.

    Returns:
        Seconds waited.
    """
    t0 = time.perf_counter()
    me = str(threading.get_native_id())

    def others_cpu_ns() -> int | None:
        try:
            tasks = os.listdir("/proc/self/task")
        except OSError:
            return None
        total = 0
        for tid in tasks:
            if tid == me:
                continue
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # the thread has just exited
        return total

    before = others_cpu_ns()
    if before is None:
        time.sleep(max_wait_s / 10)
        return time.perf_counter() - t0
    while time.perf_counter() - t0 < max_wait_s:
        time.sleep(window_s)
        after = others_cpu_ns()
        if after is not None and after - before < busy_s * 1e9:
            break
        before = after
    return time.perf_counter() - t0


def measure_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    target_s: float,
    repeats: int | None = None,
    min_repeats: int = 7,
    max_repeats: int = 15,
    warmup: int = 2,
    before: Callable[[], Any] | None = None,
    numbers: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Times several calls in alternation, for ratios that drift on a busy machine cannot bias.

    Each round times every call once (``number`` grouped calls, chosen per call as in
    ``measure``), the order rotating from round to round; the per-round times of two calls
    can then be paired (``paired_ratio``). Warm-up calls of each first.

    Args:
        fns: Calls by name.
        target_s: Wanted measuring time per call, in seconds.
        repeats: Fixed number of rounds, or None for adaptive (``target_s`` / the slowest
            call's time, clamped to ``[min_repeats, max_repeats]``).
        min_repeats: Lower bound of adaptive rounds.
        max_repeats: Upper bound of adaptive rounds.
        warmup: Untimed calls of each first (the last one estimates its time).
        before: Called before each timed group, followed (for calls shorter than
            ``WARM_CALL_BELOW_S``) by one untimed call of the function about to be timed, so
            that a hook that waits for idle threads (``quiesce``) leaves the library timed
            next with its own threads awake, as in ``measure``. Longer calls are not
            repeated: waking a pool costs microseconds, not a measurable part of them.
        numbers: If given, filled with each call's ``number``.

    Returns:
        For every name, the per-call time in seconds of each round.
    """
    names = list(fns)
    est = {}
    for n in names:
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            fns[n]()
            est[n] = max(time.perf_counter() - t0, 1e-7)
    if repeats is None:
        repeats = int(min(max(round(target_s / max(est.values())), min_repeats), max_repeats))
    number = {n: max(1, int(target_s / (repeats * est[n]))) for n in names}
    if numbers is not None:
        numbers.update(number)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn, k = fns[n], number[n]
            if before is not None:
                before()
                if est[n] < WARM_CALL_BELOW_S:
                    fn()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[n].append((time.perf_counter() - t0) / k)
    return times


def paired_ratio(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over rounds of ``times[r] / base[r]`` (see ``measure_interleaved``)."""
    return statistics.median(t / b for t, b in zip(times, base, strict=True))


#: The directory holding the ``rnnbench`` package (the child program runs from there).
_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sgemm_peak(threads: int, n: int = 1024, with_torch: bool = True) -> dict[str, float]:
    """Median GFLOP/s of an ``n x n`` float32 matmul with ``threads`` threads.

    NumPy's BLAS always; with ``with_torch`` also ``torch.mm`` (MKL) and oneDNN's GEMM through
    torch. A single BLAS can sit well below the CPU's peak (OpenBLAS's and MKL's AVX2 kernels
    on an AVX-512 AMD CPU reach about half of what oneDNN reaches), so the best of them is
    the reference for "%peak". Runs in a subprocess so the BLAS thread count can be set
    through the environment before NumPy loads.

    Args:
        threads: GEMM thread count.
        n: Matrix size.
        with_torch: Whether to measure ``torch.mm`` as well.

    Returns:
        GFLOP/s by library (``"numpy"``, ``"torch"``, ``"onednn"``); empty on failure.
    """
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    args = [sys.executable, "-m", "rnnbench.sgemm_peak", str(n), str(threads)]
    args.append("1" if with_torch else "0")
    try:
        r = subprocess.run(
            args, env=env, cwd=_BENCH_DIR, capture_output=True, text=True, timeout=300
        )
    except Exception as e:  # noqa: BLE001 -- the peak is informative only
        print(f"note: SGEMM peak measurement failed ({type(e).__name__}: {e})", file=sys.stderr)
        return {}
    peaks = {}
    for line in r.stdout.splitlines():
        lib, _, val = line.partition(" ")
        try:
            peaks[lib] = float(val)
        except ValueError:
            pass
    if r.returncode != 0 or "numpy" not in peaks:
        print(f"note: SGEMM peak measurement failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
    return peaks
