"""The speed targets, and the summaries that judge the measured rows against them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cases import CELLS, NORM_VARIANTS, PLAIN
from .runner import NormRow, Row

#: Target of the normalization cost table: an eval-mode normalized forward at most this times
#: the plain one, at ``NORM_TARGET_SIZE`` (B, H).
NORM_TARGET_RATIO = 1.15
NORM_TARGET_SIZE = (64, 256)
#: Target of the PyTorch-operations comparison: the LN-LSTM training step at least this many
#: times faster in rnncore.
TORCH_OPS_TARGET_SPEEDUP = 5.0


def _stream_us(r: Mapping[str, Any]) -> float | None:
    ms = r.get("rnncore_ms_median")
    return None if ms is None else ms * 1e3 / r["T"]


def _train_vs_torch(r: Mapping[str, Any]) -> float | None:
    rc, tt = r.get("rnncore_ms_median"), r.get("torch_ms_median")
    return rc / tt if (rc is not None and tt) else None


#: The speed targets of the main table, each named for what it measures: (description, which
#: records it judges, the value judged, the bound it must not exceed; a lower bound is written
#: negated).
SPEED_TARGETS = [
    ("inference, B>=16, H>=256: rnncore / best peer <= 0.9",
     lambda r: r["mode"] == "infer" and r["B"] >= 16 and r["H"] >= 256 and r["cell"] in PLAIN,
     lambda r: r.get("ratio"), 0.9),
    ("inference, B>=16, H>=256: >= 90% of the SGEMM peak",
     lambda r: r["mode"] == "infer" and r["B"] >= 16 and r["H"] >= 256 and r["cell"] in PLAIN,
     lambda r: None if r.get("pct_peak") is None else -r["pct_peak"], -90.0),
    ("inference, B=1 or H=64: rnncore / best peer <= 0.5",
     lambda r: r["mode"] == "infer" and (r["B"] == 1 or r["H"] == 64) and r["cell"] in PLAIN,
     lambda r: r.get("ratio"), 0.5),
    ("training step: rnncore / torch <= 0.75",
     lambda r: r["mode"] == "train" and r["cell"] in PLAIN,
     _train_vs_torch, 0.75),
    ("streamed LSTM step, B=1, H=256: <= 20 us per call",
     lambda r: r["mode"] == "stream" and r["cell"] == "lstm" and r["H"] == 256 and r["B"] == 1,
     _stream_us, 20.0),
    ("streamed LSTM step, B=1, H=256: rnncore / best peer <= 0.35",
     lambda r: r["mode"] == "stream" and r["cell"] == "lstm" and r["H"] == 256 and r["B"] == 1,
     lambda r: r.get("ratio"), 0.35),
]  # fmt: skip
#: rnncore's thread-scaling target (1-thread time / time at the most threads), B>=16, H>=256.
SCALING_TARGET = 1.7


def targets_summary(records: Sequence[Mapping[str, Any]]) -> None:
    """Prints, per speed target, how many rows meet it and the worst one; then rnncore's
    thread scaling (time at 1 thread / time at the most threads) where both were run."""
    if not records:
        return
    print("speed targets (value judged per row; worst row shown):")
    for what, applies, value, bound in SPEED_TARGETS:
        rows = [(value(r), r) for r in records if applies(r)]
        rows = [(v, r) for v, r in rows if v is not None]
        if not rows:
            print(f"  {what}: not measured in this run")
            continue
        met = sum(v <= bound for v, _ in rows)
        worst_v, worst = max(rows, key=lambda vr: vr[0])
        shown = -worst_v if bound < 0 else worst_v
        print(
            f"  {what}: {met}/{len(rows)} rows met; worst {shown:.2f} "
            f"({worst['case']}, {worst['threads']} thr)"
        )
    by_case: dict[str, dict[int, float]] = {}
    for r in records:
        if r.get("rnncore_ms_median") is not None:
            by_case.setdefault(r["case"], {})[r["threads"]] = r["rnncore_ms_median"]
    scaling = []
    for case, times in by_case.items():
        if 1 in times and len(times) > 1:
            most = max(times)
            rec = next(r for r in records if r["case"] == case)
            scaling.append((case, most, times[1] / times[most], rec))
    if not scaling:
        return
    print(f"rnncore thread scaling (1-thread time / {scaling[0][1]}-thread time):")
    judged = {case for case, _, _, r in scaling
              if r["B"] >= 16 and r["H"] >= 256 and r["mode"] != "stream"}  # fmt: skip
    met = 0
    for case, _, speedup, _ in scaling:
        mark = ""
        if case in judged:
            met += speedup >= SCALING_TARGET
            mark = "  ok" if speedup >= SCALING_TARGET else f"  < {SCALING_TARGET}"
        print(f"  {case:<36} {speedup:5.2f}x{mark}")
    if judged:
        print(f"  target (B>=16, H>=256: >= {SCALING_TARGET}x): {met}/{len(judged)} rows met")


def norm_cost_target(norm_rows: Sequence[NormRow]) -> None:
    """Prints whether the eval-mode overhead target is met at ``NORM_TARGET_SIZE``."""
    b, h = NORM_TARGET_SIZE
    what = f"eval-mode normalized forward <= {NORM_TARGET_RATIO:.2f}x plain at B={b} H={h}"
    rows = [r for r in norm_rows if (r.B, r.H) == NORM_TARGET_SIZE]
    if not rows:
        print(f"target ({what}): not measured in this run")
        return
    parts, met = [], True
    for r in rows:
        ratios = []
        for label, _, mode in NORM_VARIANTS[1:]:
            q = r.ratio(label) if mode == "eval" else None
            if q is not None:
                ratios.append(f"{label} {q:.2f}")
                met &= q <= NORM_TARGET_RATIO
            elif mode == "eval":
                met = False
        parts.append(f"{CELLS[r.cell].label} thr {r.threads}: " + ", ".join(ratios))
    print(f"target ({what}): {'MET' if met else 'NOT MET'}")
    for p in parts:
        print(f"  {p}")


def torch_ops_summary(rows: Sequence[Row]) -> None:
    """Prints rnncore's speedup over ``torch_ops_lstm`` per row and the target.

    The target (``TORCH_OPS_TARGET_SPEEDUP``) is for the layer-norm LSTM's training step at
    T=100; the quick set's rows are reported but not judged.
    """
    judged, met = [], True
    print("speedup of rnncore over the PyTorch-operations LSTM (torch ms / rnncore ms):")
    for row in rows:
        rc, tt = row.timings.get("rnncore"), row.timings.get("torch")
        if rc is None or tt is None:
            continue
        sp = tt.median / rc.median
        print(f"  {row.case.name:<34} thr {row.case.threads}: {sp:5.2f}x")
        if row.case.cell == "ln_lstm" and row.case.mode == "train" and row.case.T == 100:
            judged.append(sp)
            met &= sp >= TORCH_OPS_TARGET_SPEEDUP
    what = f"ln-lstm training step (T=100) >= {TORCH_OPS_TARGET_SPEEDUP:.0f}x faster than torch ops"
    if judged:
        print(f"target ({what}): {'MET' if met else 'NOT MET'} (min {min(judged):.2f}x)")
    else:
        print(f"target ({what}): not measured in this run")
