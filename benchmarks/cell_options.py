#!/usr/bin/env python
"""What the cell options cost, and how an exported normalized LSTM runs in ONNX Runtime.

Part 1, peepholes: an LSTM (H=256, input 256, B=64, T=100) with and without
``peephole=True`` (and with ``clip``/``cell_clip`` for reference), in the eval-mode call
and in a training step (forward with a tape and backward). The ratio is the cost of the
option over the plain LSTM (target: peepholes at most 1.05x).

Part 2, exported models: ``rc.to_onnx`` of a layer-normalized LSTM (exported as a ``Loop``
of standard operators, as no ONNX operator has a normalized cell) and of the plain LSTM
(the standard ``LSTM`` operator), run by ONNX Runtime against rnncore on the same inputs,
after checking their outputs agree. ORT runs with as many intra-op threads as rnncore.

Timings are medians over rounds, the backends in alternation, a quiet window before each.

Usage: python benchmarks/cell_options.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnnbench.onnx_models import make_session  # noqa: E402
from rnnbench.report import _cpu_name  # noqa: E402
from rnnbench.timing import quiesce  # noqa: E402

import rnncore as rc  # noqa: E402

PEEPHOLE_TARGET = 1.05  # peephole LSTM time / plain LSTM time, at most


def timed(fn, rounds: int, number: int) -> list[float]:
    out = []
    for _ in range(rounds):
        quiesce()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return out


def interleaved_rounds(fns: dict, rounds: int, number: int) -> dict[str, list[float]]:
    """Seconds per call of each function in each round, the functions taking turns."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k] += timed(fn, 1, number)
    return times


def interleaved(fns: dict, rounds: int, number: int) -> dict[str, float]:
    """Median seconds per call of each function, the functions taking turns round by round."""
    return {k: statistics.median(v) for k, v in interleaved_rounds(fns, rounds, number).items()}


def paired_ratio(times: dict[str, list[float]], key: str, base: str) -> float:
    """The median over rounds of key's time over base's in the same round: a ratio that the
    machine's slower and faster moments (which both runs of a round share) move less."""
    return statistics.median(a / b for a, b in zip(times[key], times[base]))


def part_one(quick: bool) -> float:
    T, B, H = (20, 64, 256) if quick else (100, 64, 256)
    rounds, number = (3, 2) if quick else (15, 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    variants = {
        "plain": {},
        "peephole": {"peephole": True},
        "clip=3": {"clip": 3.0},
        "cell_clip=3": {"cell_clip": 3.0},
        "all": {"peephole": True, "clip": 3.0, "cell_clip": 3.0},
    }
    mods = {k: rc.LSTM(H, H, seed=0, **kw) for k, kw in variants.items()}
    print(f"== cell options: LSTM H={H}, input {H}, B={B}, T={T} (ms per call, median) ==")
    evals = {k: (lambda m=m: m.eval()(x)) for k, m in mods.items()}
    r_eval = interleaved_rounds(evals, rounds, number)

    g = np.ones((T, B, H), np.float32)

    def train(m):
        m.train()
        _, _, tape = m.forward_train(x)
        m.zero_grad()
        m.backward(tape, g)

    r_train = interleaved_rounds({k: (lambda m=m: train(m)) for k, m in mods.items()}, rounds,
                                 number)  # fmt: skip
    print("(ratio: the median over rounds of the variant's time over the plain LSTM's in the "
          "same round)")  # fmt: skip
    print(f"{'variant':>12} {'eval':>8} {'ratio':>6} {'train':>8} {'ratio':>6}")
    for k in variants:
        print(f"{k:>12} {statistics.median(r_eval[k]) * 1e3:>8.2f} "
              f"{paired_ratio(r_eval, k, 'plain'):>6.3f} "
              f"{statistics.median(r_train[k]) * 1e3:>8.2f} "
              f"{paired_ratio(r_train, k, 'plain'):>6.3f}")  # fmt: skip
    worst = max(paired_ratio(r_eval, "peephole", "plain"),
                paired_ratio(r_train, "peephole", "plain"))  # fmt: skip
    verdict = "ok" if worst <= PEEPHOLE_TARGET else "MISSED"
    print(f"peephole cost: {worst:.3f}x (target <= {PEEPHOLE_TARGET}x) {verdict}")
    return worst


def part_two(quick: bool) -> None:
    T, B, H = (20, 16, 128) if quick else (100, 64, 256)
    rounds, number = (3, 2) if quick else (9, 5)
    threads = rc.get_num_threads()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    print(f"== exported to ONNX: LSTM H={H}, B={B}, T={T}; ORT with {threads} intra-op "
          f"threads (ms per call, median) ==")  # fmt: skip
    print(f"{'model':>10} {'graph':>6} {'rnncore':>8} {'ORT':>8} {'ORT/rc':>7}")
    for name, kw in (("plain", {}), ("LN-LSTM", {"norm": "layer"})):
        m = rc.LSTM(H, H, seed=2, **kw).eval()
        proto = rc.to_onnx(m)
        graph = "Loop" if any(n.op_type == "Loop" for n in proto.graph.node) else "LSTM"
        sess = make_session(proto, threads)
        # Both float32 computations are checked against the float64 module: a recurrence
        # of T=100 steps grows float32 rounding (here to about 1.6e-4 for rnncore's own
        # float32 call at H=256 with the layer norm), so ORT must be as close to float64
        # as rnncore is (within 2x, or 1e-5).
        m64 = rc.LSTM(H, H, seed=2, dtype="float64", **kw).eval()
        m64.load_state_dict({k: v.astype(np.float64) for k, v in m.state_dict().items()})
        ref = m64(x.astype(np.float64))[0]
        err_rc = np.abs(m(x)[0] - ref).max()
        err_ort = np.abs(sess.run(None, {"x": x})[0] - ref).max()
        assert err_ort <= max(2 * err_rc, 1e-5), (name, err_ort, err_rc)
        t = interleaved({"rc": lambda m=m: m(x), "ort": lambda s=sess: s.run(None, {"x": x})},
                        rounds, number)
        print(f"{name:>10} {graph:>6} {t['rc'] * 1e3:>8.2f} {t['ort'] * 1e3:>8.2f} "
              f"{t['ort'] / t['rc']:>7.2f}")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds (a smoke run)")
    args = p.parse_args(argv)
    import onnxruntime

    print(f"machine: {_cpu_name()}; rnncore {rc.__version__} ({rc.build_info()['isa']}), "
          f"onnxruntime {onnxruntime.__version__}")  # fmt: skip
    part_one(args.quick)
    part_two(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
