"""The C API's calls against the Python calls on the same saved model.

Builds ``benchmarks/capi/capi_bench.c`` against an installed rnncore (``--prefix``, the
``cmake --install`` prefix), saves an LSTM with ``rc.save``, and times, at the same thread
count: a whole-sequence call (``rnncore_model_forward`` against ``m(x)``) and a streamed
single step at batch 1 (``rnncore_stream_step`` against ``stream.step``). Medians in µs.
The C calls' overhead over the core is expected to be near zero, the Python calls' a few
µs.

    python benchmarks/c_api.py --prefix /opt/rnncore [--hidden 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import rnncore as rc

HERE = Path(__file__).resolve().parent


def _median_us(fn, repeats: int, inner: int = 1) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefix", required=True, help="rnncore's install prefix (cmake --install)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=100, help="T of the whole-sequence call")
    p.add_argument("--batch", type=int, default=16, help="B of the whole-sequence call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        for cmd in (
            ["cmake", "-S", HERE / "capi", "-B", tmp / "build", "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_PREFIX_PATH={a.prefix}", *gen],
            ["cmake", "--build", tmp / "build"],
        ):  # fmt: skip
            subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
        h = a.hidden
        m = rc.LSTM(h, h, seed=0).eval()
        rc.save(m, tmp / "lstm.safetensors")
        out = subprocess.run(
            [str(tmp / "build" / "capi_bench"), str(tmp / "lstm.safetensors"), str(a.steps),
             str(a.batch), str(a.repeats), str(a.threads)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        c = {k: v for k, v in (line.split() for line in out.splitlines())}
        rc.set_num_threads(a.threads)
        x = np.random.default_rng(0).standard_normal((a.steps, a.batch, h)).astype(np.float32)
        py_forward = _median_us(lambda: m(x), a.repeats)
        stream = m.stream()
        frame = x[0, 0]
        py_step = _median_us(lambda: stream.step(frame), a.repeats, 200)
        print(f"LSTM input={h} hidden={h}, {a.threads} thread(s); C library ISA {c['isa']}, "
              f"Python core {rc._core.ISA}")  # fmt: skip
        print(f"{'call':<32} {'C µs':>10} {'Python µs':>10} {'C / Python':>10}")
        for name, cv, pv in (
            (f"forward T={a.steps} B={a.batch}", float(c["forward"]), py_forward),
            ("stream step B=1", float(c["step"]), py_step),
        ):
            print(f"{name:<32} {cv:>10.2f} {pv:>10.2f} {cv / pv:>10.2f}")


if __name__ == "__main__":
    main()
