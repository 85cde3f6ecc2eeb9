#!/usr/bin/env python
"""How fast rnncore's model files are written and read, against other ways to store the
same weights.

A float32 LSTM of about 50 million parameters (``rc.LSTM(1024, 1024, num_layers=6)``; the
exact count is printed) is written and read back, each way timed as the median of
``--repeats`` runs (at least 5):

- ``rc.save`` / ``rc.load``: the safetensors file, the module rebuilt;
- ``np.savez`` / ``np.load``: the ``state_dict()`` arrays in an uncompressed ``.npz``, every
  array materialized on load;
- ``torch.save`` / ``torch.load``: the same arrays as tensors (``torch.from_numpy``, no
  copy), loaded with ``weights_only=True``; skipped when torch is not installed;
- ``tofile`` / ``np.fromfile``: the raw bytes of every parameter, concatenated into one
  buffer beforehand (the floor: one read into one array).

Every file is written into a temporary directory and read right after it was written, so
the reads come from the page cache, not the disk: the timings are of copying and checking
bytes in memory (and of what each reader allocates), which is what a warm restart or a
local SSD with a warm cache sees; a cold read adds the disk's time to every row alike.
Writes likewise go to the page cache (no ``fsync``).

It prints a table, where ``rc.load``'s time goes (reading the header and building the
module, whose parameters are then read straight into its flat parameter buffer, and that
read), the core's generic reader alone (``_core.read_safetensors``: every tensor into an
array of its own), and the ratio ``rc.load / np.fromfile`` against the target of 1.5x
(``MISSED`` when above; the exit status is nonzero only on an error).

Usage:
    python benchmarks/save_load.py [--repeats 7] [--layers 6] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

TARGET = 1.5


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=1024)
    args = p.parse_args(argv)
    repeats = max(5, args.repeats)

    import numpy as np

    import rnncore as rc
    from rnncore import _core, _files

    model = rc.LSTM(args.hidden, args.hidden, num_layers=args.layers, seed=0).eval()
    state = model.state_dict()
    arrays = {k: np.ascontiguousarray(a) for k, a in state.items()}
    flat = np.concatenate([a.ravel() for a in arrays.values()])
    n = model.num_parameters()
    mb = flat.nbytes / 1e6
    info = rc.build_info()
    print(
        f"rnncore {info['version']} ({info['isa']}), NumPy {np.__version__}; {os.cpu_count()} CPUs"
    )
    print(
        f"model: rc.LSTM({args.hidden}, {args.hidden}, num_layers={args.layers}): "
        f"{n:,} parameters, {mb:.1f} MB of float32"
    )
    print(f"median of {repeats} runs; reads of files just written (page cache, not disk)\n")

    rows = []  # (name, save s, load s, file bytes)
    with tempfile.TemporaryDirectory(prefix="rnncore-save-load-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        t_save = _median(lambda: rc.save(model, path), repeats)
        t_load = _median(lambda: rc.load(path), repeats)
        rows.append(("rc.save / rc.load", t_save, t_load, os.path.getsize(path)))
        back = rc.load(path)
        if not all(
            np.array_equal(a, b) for a, b in zip(state.values(), back.state_dict().values())
        ):
            print("ERROR: rc.load gave other parameters", file=sys.stderr)
            return 1
        del back
        t_core = _median(lambda: _core.read_safetensors(path), repeats)

        def plan():  # rc.load up to the read: the header, the checks, the module built
            with _core.SafetensorsFile(path) as f:
                return _files._plan(path, f.metadata, f.tensors)

        t_plan = _median(plan, repeats)

        npz = os.path.join(tmp, "model.npz")

        def np_load():
            with np.load(npz) as z:
                return {k: z[k] for k in z.files}

        t_save = _median(lambda: np.savez(npz, **arrays), repeats)
        t_load = _median(np_load, repeats)
        rows.append(("np.savez / np.load", t_save, t_load, os.path.getsize(npz)))

        try:
            import torch  # noqa: PLC0415 - optional
        except ImportError:
            torch = None
            print("(torch is not installed: its row is skipped)")
        if torch is not None:
            pt = os.path.join(tmp, "model.pt")
            tensors = {k: torch.from_numpy(a) for k, a in arrays.items()}
            t_save = _median(lambda: torch.save(tensors, pt), repeats)
            t_load = _median(lambda: torch.load(pt, weights_only=True), repeats)
            rows.append(("torch.save / torch.load", t_save, t_load, os.path.getsize(pt)))

        raw = os.path.join(tmp, "model.bin")
        t_save = _median(lambda: flat.tofile(raw), repeats)
        t_raw = _median(lambda: np.fromfile(raw, dtype=np.float32), repeats)
        rows.append(("tofile / np.fromfile", t_save, t_raw, os.path.getsize(raw)))

    header = f"{'format':<24} {'save ms':>8} {'load ms':>8} {'load GB/s':>9} {'file MB':>8}"
    print(header)
    print("-" * len(header))
    for name, ts, tl, size in rows:
        gbps = size / tl / 1e9
        print(f"{name:<24} {ts * 1e3:>8.1f} {tl * 1e3:>8.1f} {gbps:>9.2f} {size / 1e6:>8.1f}")
    t_rc = rows[0][2]
    print(
        f"\nrc.load: {t_plan * 1e3:.1f} ms reading the header and building the module (its "
        f"gradients zeroed), {(t_rc - t_plan) * 1e3:.1f} ms reading the parameters into it; "
        f"the core's generic reader (_core.read_safetensors, every tensor into an array of "
        f"its own): {t_core * 1e3:.1f} ms"
    )
    ratio = t_rc / t_raw
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"rc.load / np.fromfile = {ratio:.2f}x (target <= {TARGET}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
