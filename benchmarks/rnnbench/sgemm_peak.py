"""Child program of ``timing.sgemm_peak``: GFLOP/s of an ``n x n`` float32 matmul.

Run as ``python -m rnnbench.sgemm_peak N THREADS WITH_TORCH`` (``WITH_TORCH`` is ``1`` or
``0``) in a process of its own, so that the BLAS thread count can be set through the
environment before NumPy loads. Prints one ``<library> <GFLOP/s>`` line per library:
``numpy`` always; with torch also ``torch`` (``torch.mm``) and ``onednn`` (oneDNN's GEMM).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def gflops(n: int, fn: Callable[[], Any]) -> float:
    """GFLOP/s of ``fn`` (an ``n x n x n`` matmul): median of 15 calls after 3 warm-ups."""
    for _ in range(3):
        fn()
    ts = []
    for _ in range(15):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(ts) / 1e9


def main(argv: Sequence[str]) -> int:
    """Measures and prints; returns the exit status (0 also when torch is missing)."""
    n, threads, with_torch = int(argv[0]), int(argv[1]), argv[2] == "1"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    print("numpy", gflops(n, lambda: np.matmul(a, b, out=c)))
    if not with_torch:
        return 0
    try:
        import torch
    except ImportError:
        return 0
    torch.set_num_threads(threads)
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    print("torch", gflops(n, lambda: torch.mm(ta, tb, out=tc)))
    try:  # oneDNN's GEMM (what torch's CPU LSTM/GRU use); private API, so optional
        am, bm = ta.to_mkldnn(), tb.to_mkldnn()
        print("onednn", gflops(n, lambda: torch._C._nn.mkldnn_linear(am, bm)))
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
