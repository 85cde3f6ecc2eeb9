"""The sections after the main table: the normalization section (cost of each normalization,
checks of the PyTorch-operations LSTM, rnncore against it) and the float16-weights section."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from .backends import Backend
from .cases import Case, half_cases
from .checks import HALF_CHECK_TOL, NORM_CHECK_TOL, verify_torch_ops
from .report import NormReport, Report, fmt
from .runner import run_case, run_half_row, run_norm_row
from .targets import norm_cost_target, torch_ops_summary
from .torch_ops import TORCH_OPS_NORMS


def run_norm_section(
    args: argparse.Namespace,
    backends: Sequence[Backend],
    peaks: Mapping[int, float | None],
    report: Report,
    norm_report: NormReport,
    cost_rows: Sequence[tuple[str, tuple[int, int, int], int]],
    torch_cases: Sequence[Case],
) -> tuple[int, int]:
    """Runs and prints the normalization section.

    1. The cost table (``NormReport``): rnncore's forward with each normalization against the
       plain cell.
    2. ``verify_torch_ops`` in float64 and float32 for both normalizations.
    3. rnncore's normalized LSTM against ``torch_ops_lstm`` (``run_case`` rows printed in the
       main table's format; their CSV records go to ``report``), then the speedups.

    Args:
        args: The command line.
        backends: Backend instances.
        peaks: SGEMM peak by thread count.
        report: The main report (collects the comparison's CSV records).
        norm_report: Collects the cost table's rows.
        cost_rows: ``(cell, (T, B, H), threads)`` of the cost table.
        torch_cases: Cases of the comparison.

    Returns:
        ``(number of rows and checks run, number of failures)``.
    """
    by_name = {b.name: b for b in backends if b.available}
    rc, tr = by_name.get("rnncore"), by_name.get("torch")
    print("=== normalization ===")
    try:
        rc.mod.LSTM(1, 1, norm="layer") if rc is not None else None
    except Exception:  # noqa: BLE001 -- NotImplementedError or an older rnncore: skip
        rc = None
    if rc is None:
        print("skipped: needs rnncore with normalization support")
        return 0, 0
    n, failures = 0, 0
    if cost_rows:
        norm_report.header()
        for cell, size, th in cost_rows:
            row = run_norm_row(rc.mod, cell, size, th, args.seed, args.target_time, args.repeats)
            norm_report.add(row)
            n += 1
            failures += not row.ok
        norm_cost_target(norm_report.rows)
        print()
    if not torch_cases:
        return n, failures
    if tr is None:
        print("rnncore vs PyTorch operations: skipped (torch unavailable)")
        return n, failures
    for norm in TORCH_OPS_NORMS:
        for dtype in ("float64", "float32"):
            try:
                ok, desc = verify_torch_ops(rc.mod, tr.mod, norm, dtype, args.seed)
            except Exception as e:  # noqa: BLE001 -- a failed check, not a crash
                traceback.print_exc(file=sys.stderr)
                ok, desc = False, f"ERROR: {type(e).__name__}: {e}"
            status = "ok" if ok else "MISMATCH"
            print(f"check torch-ops {norm}-norm LSTM vs rnncore, {dtype}: {status} ({desc})")
            n += 1
            failures += not ok
    print()
    print(
        "rnncore vs the same normalized LSTM in PyTorch operations (torch column: Python loop "
        "over time,\nautograd; torch_ops_lstm in rnnbench/torch_ops.py); check: error relative "
        f"to each array's largest value <= {NORM_CHECK_TOL:g}"
    )
    sub = [b for b in backends if b.name in ("rnncore", "torch")]
    torch_report = Report(sub, peaks, args.show_min)
    torch_report.header()
    rows = []
    for case in torch_cases:
        row = run_case(case, sub, args.seed, args.target_time, args.repeats)
        torch_report.add(row)
        rows.append(row)
        failures += not row.ok
    report.records.extend(torch_report.records)
    print()
    torch_ops_summary(rows)
    return n + len(rows), failures


def _best_peer_ms(records: Sequence[Mapping[str, Any]], case: Case) -> float | None:
    for r in records:
        if r["case"] == case.name and r["threads"] == case.threads:
            peers = [r.get(f"{n}_ms_median") for n in ("torch", "ort")]
            peers = [p for p in peers if p is not None]
            return min(peers) if peers else None
    return None


def run_half_section(
    args: argparse.Namespace, backends: Sequence[Backend], records: Sequence[Mapping[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]]:
    """Prints the float16-weights table: rnncore's float32 module against its
    ``half_weights()`` copy at batch 1, and the copy's time over the best peer's (float32)
    time from the main table. Returns ``(rows run, failures, CSV records)``."""
    rc = next((b for b in backends if b.name == "rnncore" and b.available), None)
    if rc is None or not hasattr(rc.mod.LSTM, "half_weights"):
        print("=== float16 weights: skipped (needs rnncore with half_weights) ===")
        return 0, 0, []
    print("=== float16 weights (half_weights(): weight matrices stored as float16, "
          "arithmetic float32) ===")  # fmt: skip
    print(
        "f32 / f16: rnncore's module and its half_weights() copy, ms per call (stream: "
        "per step, in us);\nspeedup: f32 / f16 over paired rounds; vs peer: f16 / the best "
        "peer's float32 time in the main table;\nerror: largest |f16 - f32| output over "
        f"max(1, max|f32|) (a different model: float16 rounding), must be <= {HALF_CHECK_TOL:g}"
    )
    head = (
        f"{'case':<34} {'thr':>3} {'f32':>9} {'f16':>9} {'speedup':>8} {'vs peer':>8} {'error':>8}"
    )
    print(head)
    print("-" * len(head))
    rows, out = [], []
    for case in half_cases(args.threads, args.quick):
        peer = _best_peer_ms(records, case)
        row = run_half_row(rc, case, args.seed, args.target_time, args.repeats, peer)
        rows.append(row)
        per = (1e3 / case.T, "us") if case.mode == "stream" else (1.0, "ms")
        f32, f16 = row.f32.median * 1e3 * per[0], row.f16.median * 1e3 * per[0]
        vs = None if peer is None else row.f16.median * 1e3 / peer
        print(
            f"{case.name:<34} {case.threads:>3} {f32:>7.2f}{per[1]} {f16:>7.2f}{per[1]} "
            f"{row.speedup:>7.2f}x {fmt(vs, '.2f', 8)} {row.error:>8.1e}"
            + ("" if row.ok else "  MISMATCH")
        )
        out.append({
            "case": case.name, "cell": case.cell, "mode": case.mode, "T": case.T, "B": case.B,
            "H": case.H, "threads": case.threads, "f32_ms_median": row.f32.median * 1e3,
            "f16_ms_median": row.f16.median * 1e3, "speedup": row.speedup,
            "f16_over_best_peer": vs, "error": row.error,
        })  # fmt: skip
    return len(rows), sum(not r.ok for r in rows), out
