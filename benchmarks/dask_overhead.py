#!/usr/bin/env python
"""The per-chunk cost of ``rnncore.dask.predict`` on a local cluster of process workers.

One LSTM (hidden 128, input 32, T=50 by default) runs over a fixed batch (1024 sequences)
split into 2 to 64 chunks, on a ``distributed.LocalCluster`` of 2 single-threaded process
workers, and the same batch runs as one local call in this process. For each chunk count
it prints the median wall time of

- ``compute``: ``predict(...).compute()``, the result gathered into this process;
- ``persist``: ``predict(...).persist()`` and waiting for it, the result left on the
  workers (no transfer of the output back);
- ``loop``: the same chunks as local calls one after the other in this process (what
  smaller batches alone cost the core, without dask);

and the per-chunk overhead ``(dask - local) / chunks`` in ms, with a least-squares line
``time = a + b * chunks`` over the chunk counts (``b`` is the cost each further chunk adds).
Before each timed run the scheduler is left to forget the previous run's results (dask's
names are deterministic: a run would otherwise reuse them).

``x`` is persisted on the workers first (as data a cluster would read there), and each
timing is preceded by one untimed run (the workers load the model on the first). The
workers run rnncore with 1 thread each (``--worker-threads``), so that 2 workers use the
2 cores the local call uses with 2 threads; every result is checked bitwise against the
local call.

Usage:
    python benchmarks/dask_overhead.py [--chunks 2,4,8,16,32,64] [--batch 1024]
        [--hidden 128] [--steps 50] [--input 32] [--repeats 7] [--workers 2]
        [--worker-threads 1]

Needs ``dask[array]`` and ``distributed``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path


def _median_time(fn, repeats: int, settle=None) -> float:
    fn()  # untimed: loads, caches, warm-up
    times = []
    for _ in range(repeats):
        if settle is not None:
            settle()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _settler(client, name: str):
    """Waits until the scheduler has forgotten every key of ``name``: dask's names are
    deterministic, so a run that starts before the last one's results are released would
    reuse them instead of computing."""

    def count(dask_scheduler):
        return sum(1 for k in dask_scheduler.tasks if name in str(k))

    def settle():
        deadline = time.perf_counter() + 10
        while client.run_on_scheduler(count) and time.perf_counter() < deadline:
            time.sleep(0.01)

    return settle


def _fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", default="2,4,8,16,32,64")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=1)
    args = p.parse_args(argv)
    chunk_counts = [int(c) for c in args.chunks.split(",")]

    import numpy as np

    import rnncore as rc

    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as e:
        print(f"needs dask[array] and distributed: {e}", file=sys.stderr)
        return 2
    # The workers are new processes: the rnncore imported here, at their thread count.
    here = str(Path(rc.__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        q for q in [here, os.environ.get("PYTHONPATH", "")] if q
    )
    os.environ["RNNCORE_NUM_THREADS"] = str(args.worker_threads)
    local_threads = args.workers * args.worker_threads
    rc.set_num_threads(local_threads)

    model = rc.LSTM(args.input, args.hidden, seed=0).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.steps, args.batch, args.input)).astype(np.float32)
    expected = model(x)[0]
    # Everything local is timed before the cluster starts (its processes would compete).
    local = _median_time(lambda: model(x), args.repeats)
    loops = {}
    for n in chunk_counts:
        size = -(-args.batch // n)
        parts = [x[:, a : a + size] for a in range(0, args.batch, size)]
        loops[n] = _median_time(lambda parts=parts: [model(q) for q in parts], args.repeats)

    info = rc.build_info()
    print(
        f"rnncore {info['version']} ({info['isa']}), dask {dask.__version__}, "
        f"distributed {distributed.__version__}, {os.cpu_count()} CPUs"
    )
    print(
        f"LSTM input {args.input}, hidden {args.hidden}, T={args.steps}, B={args.batch}; "
        f"LocalCluster: {args.workers} process workers x 1 dask thread, rnncore "
        f"{args.worker_threads} thread(s) each; local call: {local_threads} thread(s)"
    )
    print(f"local call: {local * 1e3:.1f} ms (median of {args.repeats})\n")
    header = (
        f"{'chunks':>6} {'rows':>5} {'loop ms':>8} {'compute ms':>10} {'per chunk ms':>12} "
        f"{'persist ms':>10} {'per chunk ms':>12}"
    )
    print(header)
    print("-" * len(header))
    computes, persists = [], []
    with distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True,
        dashboard_address=None, silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        for n in chunk_counts:
            xd = da.from_array(x, chunks=(-1, -(-args.batch // n), -1)).persist()
            distributed.wait(xd)
            out = rc.dask.predict(model, xd)
            if not np.array_equal(out.compute(), expected):
                print(f"MISMATCH at {n} chunks", file=sys.stderr)
                return 1

            def persist(out=out):
                kept = out.persist()
                distributed.wait(kept)
                del kept

            t_loop = loops[n]
            settle = _settler(client, out.name)
            t_compute = _median_time(out.compute, args.repeats, settle)
            t_persist = _median_time(persist, args.repeats, settle)
            computes.append(t_compute)
            persists.append(t_persist)
            print(
                f"{n:>6} {xd.chunks[1][0]:>5} {t_loop * 1e3:>8.1f} {t_compute * 1e3:>10.1f} "
                f"{(t_compute - local) / n * 1e3:>12.2f} {t_persist * 1e3:>10.1f} "
                f"{(t_persist - local) / n * 1e3:>12.2f}"
            )
        loads = client.run(lambda: sum(__import__("rnncore.dask").dask._loads.values()))
    for what, ys in (("compute", computes), ("persist", persists)):
        a, b = _fit(chunk_counts, ys)
        print(f"fit {what}: time = {a * 1e3:.1f} ms + {b * 1e3:.2f} ms x chunks")
    print(f"model loads per worker (all runs): {sorted(loads.values())}")
    print("every result bitwise equal to the local call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
