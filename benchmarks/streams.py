#!/usr/bin/env python
"""Streaming and serving: rnncore's streams and StreamBatcher against ONNX Runtime and PyTorch.

Part 1, one stream: an LSTM at batch 1 stepped one time step per call, the state carried
from call to call, at H=64 and H=256 (input size = H). Per-step time of

- rnncore ``stream.step(x_t)``;
- the core's own step (``time_steps``: the same stream stepped inside the core, no Python
  call, no array allocation); the difference is the call's overhead;
- ONNX Runtime on a one-step LSTM graph through I/O binding (inputs and outputs bound once
  to NumPy buffers that the loop overwrites: the fastest per-call path it offers);
- PyTorch ``nn.LSTM`` on one step with the state passed back (``inference_mode``).

Part 2, serving: 64 streams of an LSTM (H=256, input 256), each stepped T times.

- ``StreamBatcher``: 64 client threads each stepping its own stream (``batcher.step``), and
  2 client threads each submitting the steps of 32 streams and collecting the Futures;
- one by one: the 64 rnncore streams stepped in turn from one thread;
- ONNX Runtime one by one: the same with 64 states and the I/O-bound session.

Steps per second and the per-step latency (p50, p99) of each; the ratios are the targets'.
Every backend's outputs are checked against rnncore's whole-sequence call first. Timings
are medians over rounds, the backends in alternation, a quiet window before each.

Usage: python benchmarks/streams.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnnbench import onnx_models  # noqa: E402
from rnnbench.report import _cpu_name  # noqa: E402
from rnnbench.timing import quiesce  # noqa: E402

import rnncore as rc  # noqa: E402

TARGETS = {64: 0.35, 256: 0.8}  # rnncore step / ORT step, at most
OVERHEAD_TARGET_US = 2.0
BATCHER_TARGET = 3.0  # batcher steps/s over each one-by-one way, at least


def lstm(h: int, seed: int = 0):
    return rc.LSTM(h, h, seed=seed).eval()


class OrtStepper:
    """One-step LSTM session of ONNX Runtime through I/O binding, for ``streams`` states."""

    def __init__(self, m, streams: int = 1):
        import onnxruntime as ort

        params = {k: np.asarray(v) for k, v in m.state_dict().items()}
        self.sess = onnx_models.make_session(onnx_models.build_rnn_model("lstm", params), 1)
        h = m.hidden_size
        self.x = np.zeros((1, 1, m.input_size), np.float32)
        self.h = np.zeros((streams, 1, 1, h), np.float32)
        self.c = np.zeros((streams, 1, 1, h), np.float32)
        self.y = np.zeros((1, 1, 1, h), np.float32)
        self.hn = np.zeros((1, 1, h), np.float32)
        self.cn = np.zeros((1, 1, h), np.float32)
        self.bindings = []
        for s in range(streams):
            b = self.sess.io_binding()
            for name, arr in (("X", self.x), ("initial_h", self.h[s]), ("initial_c", self.c[s])):
                b.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
            for name, arr in (("Y", self.y), ("Y_h", self.hn), ("Y_c", self.cn)):
                b.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
            self.bindings.append(b)

    def step(self, x_t: np.ndarray, s: int = 0) -> np.ndarray:
        self.x[0, 0] = x_t
        self.sess.run_with_iobinding(self.bindings[s])
        self.h[s, 0] = self.hn
        self.c[s, 0] = self.cn
        return self.y[0, 0, 0]


def torch_stepper(m):
    import torch

    t = torch.nn.LSTM(m.input_size, m.hidden_size)
    t.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in m.state_dict().items()})
    t.eval()
    state = [None]

    def step(x_t):
        with torch.inference_mode():
            y, state[0] = t(torch.from_numpy(x_t).view(1, 1, -1), state[0])
        return y.numpy()[0, 0]

    return step


def per_step_us(fn, x: np.ndarray, rounds: int, number: int) -> float:
    times = []
    for _ in range(rounds):
        quiesce()
        fn(x[0])
        t0 = time.perf_counter()
        for i in range(number):
            fn(x[i % len(x)])
        times.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(times)


def check(name: str, got: np.ndarray, want: np.ndarray, atol: float = 2e-5) -> None:
    err = float(np.abs(got - want).max())
    if err > atol:
        raise SystemExit(f"MISMATCH: {name} differs from the whole-sequence call by {err:.2e}")


def part_one(quick: bool) -> list[tuple[int, float, float]]:
    print("== one stream: an LSTM at batch 1, one step per call (us per step, median) ==")
    print(f"{'H':>5} {'rnncore':>9} {'core':>8} {'overhead':>9} {'ORT iobind':>11} "
          f"{'torch':>8} {'rc/ORT':>7} {'target':>7}")  # fmt: skip
    rows = []
    rng = np.random.default_rng(0)
    rounds, number = (5, 500) if quick else (9, 3000)
    for h in (64, 256):
        m = lstm(h)
        x = rng.standard_normal((64, h)).astype(np.float32)
        want = m(x[:16, None])[0][:, 0]
        s = m.stream()
        check(f"rnncore stream H={h}", np.stack([s.step(xt) for xt in x[:16]]), want)
        ort = OrtStepper(m)
        check(f"ORT H={h}", np.stack([ort.step(xt).copy() for xt in x[:16]]), want)
        tstep = torch_stepper(m)
        check(f"torch H={h}", np.stack([tstep(xt).copy() for xt in x[:16]]), want)
        core = []
        for _ in range(rounds):
            quiesce()
            core.append(s._core.time_steps(x[0][None], number) * 1e6)
        t_core = statistics.median(core)
        t_rc = per_step_us(s.step, x, rounds, number)
        t_ort = per_step_us(ort.step, x, rounds, number)
        t_torch = per_step_us(tstep, x, rounds, number)
        ratio = t_rc / t_ort
        ok = ratio <= TARGETS[h] and t_rc - t_core <= OVERHEAD_TARGET_US
        print(f"{h:>5} {t_rc:>9.2f} {t_core:>8.2f} {t_rc - t_core:>9.2f} {t_ort:>11.2f} "
              f"{t_torch:>8.2f} {ratio:>7.2f} {'<=' + str(TARGETS[h]):>7} "
              f"{'ok' if ok else 'MISSED'}")  # fmt: skip
        rows.append((h, ratio, t_rc - t_core))
    print(f"(overhead target: <= {OVERHEAD_TARGET_US} us above the core's step)")
    return rows


def serve_batcher(m, xs: np.ndarray) -> tuple[float, list[float], np.ndarray]:
    n, steps = xs.shape[:2]
    lat = [[] for _ in range(n)]
    outs = np.zeros((n, steps, m.hidden_size), np.float32)
    with rc.StreamBatcher(m, max_batch=n, max_delay_ms=1.0) as b:
        sids = [b.open() for _ in range(n)]
        barrier = threading.Barrier(n + 1)

        def client(i):
            barrier.wait()
            for t in range(steps):
                t0 = time.perf_counter()
                outs[i, t] = b.step(sids[i], xs[i, t])
                lat[i].append(time.perf_counter() - t0)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
    return wall, [x for li in lat for x in li], outs


def serve_batcher_submit(m, xs: np.ndarray, threads: int) -> tuple[float, list[float], np.ndarray]:
    """A few client threads, each driving its share of the streams: every step of its streams
    submitted, then their Futures collected (as an event loop or a worker pool would)."""
    n, steps = xs.shape[:2]
    lat = [[] for _ in range(threads)]
    outs = np.zeros((n, steps, m.hidden_size), np.float32)
    with rc.StreamBatcher(m, max_batch=n, max_delay_ms=1.0) as b:
        sids = [b.open() for _ in range(n)]
        barrier = threading.Barrier(threads + 1)

        def client(k):
            mine = range(k * n // threads, (k + 1) * n // threads)
            barrier.wait()
            for t in range(steps):
                t0 = time.perf_counter()
                futures = [(i, b.submit(sids[i], xs[i, t])) for i in mine]
                for i, f in futures:
                    outs[i, t] = f.result()
                    lat[k].append(time.perf_counter() - t0)

        pool = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
        for th in pool:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in pool:
            th.join()
        wall = time.perf_counter() - t0
    return wall, [x for li in lat for x in li], outs


def serve_one_by_one(step_fns, xs: np.ndarray) -> tuple[float, list[float], np.ndarray]:
    n, steps = xs.shape[:2]
    lat = []
    outs = np.zeros((n, steps, xs.shape[2]), np.float32)
    t0 = time.perf_counter()
    for t in range(steps):
        for i in range(n):
            s0 = time.perf_counter()
            outs[i, t] = step_fns[i](xs[i, t])
            lat.append(time.perf_counter() - s0)
    return time.perf_counter() - t0, lat, outs


def part_two(quick: bool) -> list[tuple[str, float]]:
    n, h = 64, 256
    steps = 20 if quick else 100
    rounds = 3 if quick else 5
    print(f"\n== serving: {n} streams of an LSTM (H={h}), {steps} steps each ==")
    m = lstm(h, seed=1)
    xs = np.random.default_rng(1).standard_normal((n, steps, h)).astype(np.float32)
    want = m(xs.transpose(1, 0, 2))[0].transpose(1, 0, 2)
    ort = OrtStepper(m, streams=n)

    def rc_one_by_one():
        streams = [m.stream() for _ in range(n)]
        return serve_one_by_one([s.step for s in streams], xs)

    def ort_one_by_one():
        ort.h[...] = 0
        ort.c[...] = 0
        return serve_one_by_one([lambda x, i=i: ort.step(x, i) for i in range(n)], xs)

    ways = {"StreamBatcher (64 threads)": lambda: serve_batcher(m, xs),
            "StreamBatcher (2 x submit)": lambda: serve_batcher_submit(m, xs, 2),
            "rnncore one by one": rc_one_by_one, "ORT one by one (iobind)": ort_one_by_one}
    results = {k: [] for k in ways}
    for r in range(rounds):
        for name in list(ways)[r % len(ways):] + list(ways)[:r % len(ways)]:
            quiesce()
            wall, lat, outs = ways[name]()
            if r == 0:
                check(name, outs, want)
            results[name].append((n * steps / wall, lat))
    print(f"{'':28} {'steps/s':>10} {'p50 us':>9} {'p99 us':>9}")
    rate = {}
    for name, runs in results.items():
        rate[name] = statistics.median(r for r, _ in runs)
        lat = np.concatenate([np.asarray(li) for _, li in runs]) * 1e6
        print(f"{name:28} {rate[name]:>10.0f} {np.percentile(lat, 50):>9.1f} "
              f"{np.percentile(lat, 99):>9.1f}")  # fmt: skip
    out = []
    for way in ("StreamBatcher (64 threads)", "StreamBatcher (2 x submit)"):
        for name in ("rnncore one by one", "ORT one by one (iobind)"):
            ratio = rate[way] / rate[name]
            ok = "ok" if ratio >= BATCHER_TARGET else "MISSED"
            print(f"{way} / {name}: {ratio:.2f}x (target >= {BATCHER_TARGET}x) {ok}")
            out.append((way, name, ratio))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    args = p.parse_args(argv)
    import onnxruntime
    import torch

    torch.set_num_threads(1)  # one step of a small model: threads only hand off (ORT: 1 too)

    print(f"machine: {_cpu_name()}; rnncore {rc.__version__} ({rc.build_info()['isa']}), "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}")  # fmt: skip
    print(f"threads: rnncore {rc.get_num_threads()} (a small step runs on its caller's), "
          f"ORT 1 intra-op, torch {torch.get_num_threads()}")  # fmt: skip
    part_one(args.quick)
    part_two(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
