#!/usr/bin/env python
"""Benchmark rnncore against PyTorch and ONNX Runtime on the same inputs and weights.

Every case (a cell, a mode, sizes and a thread count) is run by every backend that supports
it, in one process, on the same input array and the same weights, the backends timed in
alternating rounds (a slow spell of the machine then falls on all of them; the ratio is the
median over rounds of rnncore's time over the best peer's in the same round). Once per case
the outputs (and, for training steps, all gradients) are compared across backends; a
disagreement is printed as ``MISMATCH`` and makes the exit status 1.

Modes:
    infer:  eval-mode forward over a whole sequence (``torch.inference_mode`` for torch).
    train:  one training step: forward that keeps what BPTT needs, then backward
            (rnncore ``forward_train`` + ``backward``; torch autograd ``out.backward``),
            parameter gradients zeroed first, gradient w.r.t. the input computed too.
    stream: T calls on single time steps (batch 1), the state carried from call to call;
            the time reported is for all T calls.

The normalization section (after the main table; ``--norms`` runs only it, ``--no-norms``
skips it) prints the cost of each normalization relative to the plain cell (rnncore's
forward, timed interleaved), checks ``torch_ops_lstm`` (the normalized LSTM written with
PyTorch operations) against rnncore in float64 and float32, and times rnncore's layer- and
batch-normalized LSTM against it.

Usage:
    python benchmarks/bench.py [--quick] [--csv PATH] [--threads 1,2] [--cells lstm,gru,rnn]
                               [--repeats N] [--modes infer,train,stream] [--backends ...]
                               [--norms | --no-norms]

This file is the command line and the top-level flow; the harness is the package
``rnnbench`` next to it (its ``__init__`` lists the modules). Adding rows: extend
``default_cases``/``quick_cases`` in ``rnnbench/cases.py`` (or add a new case set) with
``Case`` entries. Adding a cell variant (e.g. a layer-normalized LSTM): add a ``CellSpec`` to
``CELLS`` there; backends that cannot run it say so in ``supports``. Adding a backend:
subclass ``Backend`` in ``rnnbench/backends.py`` and append it to ``BACKENDS``. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# The package next to this file (needs the path set above when run from elsewhere).
from rnnbench.backends import BACKENDS  # noqa: E402
from rnnbench.cases import (  # noqa: E402
    CASE_SETS,
    CELLS,
    DEFAULT_CELLS,
    MODES,
    NORM_VARIANTS,
    Case,
    norm_sizes,
    norm_torch_cases,
)
from rnnbench.report import NormReport, Report, machine_header, write_csv_files  # noqa: E402
from rnnbench.runner import run_case  # noqa: E402
from rnnbench.sections import run_half_section, run_norm_section  # noqa: E402
from rnnbench.targets import targets_summary  # noqa: E402
from rnnbench.timing import sgemm_peak  # noqa: E402


def _int_list(s: str) -> list[int]:
    vals = [int(v) for v in s.split(",") if v.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return vals


def _name_list(choices: Sequence[str]):
    def parse(s: str) -> list[str]:
        vals = [v.strip() for v in s.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"unknown {bad or s!r}; choose from {list(choices)}")
        return vals

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    p = argparse.ArgumentParser(
        description="Benchmark rnncore against PyTorch and ONNX Runtime (same inputs, weights).",
    )
    p.add_argument("--quick", action="store_true", help="small smoke-test set (CI)")
    sect = p.add_mutually_exclusive_group()
    sect.add_argument(
        "--norms",
        action="store_true",
        help="run only the normalization section (cost table, rnncore vs torch-ops LSTM)",
    )
    sect.add_argument("--no-norms", action="store_true", help="skip the normalization section")
    p.add_argument("--no-half", action="store_true", help="skip the float16-weights section")
    p.add_argument("--csv", metavar="PATH", help="write the results as CSV")
    p.add_argument(
        "--threads",
        type=_int_list,
        help="comma-separated thread counts [1,2; 1 with --quick]",
    )
    p.add_argument(
        "--cells",
        type=_name_list(list(CELLS)),
        default=list(DEFAULT_CELLS),
        help=f"comma-separated cells from {list(CELLS)} [{','.join(DEFAULT_CELLS)}]",
    )
    p.add_argument("--modes", type=_name_list(MODES), default=list(MODES), help="filter modes")
    p.add_argument(
        "--backends",
        type=_name_list([b.name for b in BACKENDS]),
        default=[b.name for b in BACKENDS],
        help="comma-separated backends [all]",
    )
    p.add_argument("--repeats", type=int, help="timed repeats per case (default: adaptive 7-15)")
    p.add_argument(
        "--target-time",
        type=float,
        help="seconds of timed calls per case and backend [0.5; 0.1 with --quick]",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for inputs and weights [0]")
    p.add_argument("--show-min", action="store_true", help="print median/min in the table")
    p.add_argument("--no-peak", action="store_true", help="skip the NumPy SGEMM peak")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.target_time is None:
        args.target_time = 0.1 if args.quick else 0.5
    if args.threads is None:
        args.threads = [1] if args.quick else [1, 2]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; returns the exit status (1 on a mismatch or a backend error)."""
    args = parse_args(argv)
    cases = []
    if not args.norms:
        cases = CASE_SETS["quick" if args.quick else "default"](args.cells, args.threads)
        cases = [c for c in cases if c.mode in args.modes]
    # The normalization section: a cost table over the plain cells among --cells (forward
    # only, so it needs the infer mode), and the torch-ops comparison when an LSTM is among them.
    cost_rows: list[tuple[str, tuple[int, int, int], int]] = []
    torch_cases: list[Case] = []
    if not args.no_norms:
        if "infer" in args.modes:
            plain = [c for c in args.cells if CELLS[c].norm is None]
            sizes = norm_sizes(args.quick)
            cost_rows = [(c, sz, th) for th in args.threads for c in plain for sz in sizes]
        if any(CELLS[c].kind == "lstm" for c in args.cells):
            torch_cases = norm_torch_cases(args.threads, args.quick)
            torch_cases = [c for c in torch_cases if c.mode in args.modes]
    if args.list:
        for c in cases + torch_cases:
            print(f"{c.name:<36} threads={c.threads}  GEMM GFLOP={c.flops() / 1e9:.3f}")
        labels = ", ".join(v[0] for v in NORM_VARIANTS)
        for cell, (t, b, h), th in cost_rows:
            name = f"{CELLS[cell].label} norms T={t} B={b} H={h}"
            print(f"{name:<36} threads={th}  ({labels})")
        return 0

    backends = [cls() for cls in BACKENDS if cls.name in args.backends]
    machine_header(backends, args.threads)

    peaks: dict[int, float | None] = {}
    if not args.no_peak:
        for th in args.threads:
            libs = sgemm_peak(th, with_torch="torch" in args.backends)
            peaks[th] = max(libs.values()) if libs else None
            if libs:
                each = ", ".join(f"{k} {v:.1f}" for k, v in libs.items())
                print(f"SGEMM 1024^3, {th} thread(s): {each} GFLOP/s; %peak uses the best")
    print(
        "times: ms per call (stream: all T single-step calls), median of the timed repeats; "
        "ratio = rnncore / best peer (<1: rnncore faster), median over the rounds in which "
        "the backends were timed in turn; GFLOP/s counts 2*T*B*G*H*(D+H)."
    )
    print()

    report = Report(backends, peaks, args.show_min)
    failures = 0
    t_start = time.perf_counter()
    if cases:
        report.header()
        for case in cases:
            row = run_case(case, backends, args.seed, args.target_time, args.repeats)
            report.add(row)
            failures += not row.ok
        print()
    n_norm, norm_report = 0, NormReport()
    if cost_rows or torch_cases:
        n_norm, fails = run_norm_section(
            args, backends, peaks, report, norm_report, cost_rows, torch_cases
        )
        failures += fails
        print()
    n_half, half_records = 0, []
    if not args.no_half and not args.norms and {"infer", "stream"} & set(args.modes):
        n_half, fails, half_records = run_half_section(args, backends, report.records)
        failures += fails
        print()
    targets_summary(report.records[: len(cases)])
    print()
    print(f"{len(cases) + n_norm + n_half} cases in {time.perf_counter() - t_start:.1f} s", end="")
    print(f", {failures} with a MISMATCH or an error" if failures else ", all checks passed")
    if args.csv:
        write_csv_files(args.csv, report, norm_report, half_records)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
