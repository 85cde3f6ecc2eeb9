"""Output: the machine header, the main table and the normalization cost table as they run,
and the CSV files."""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .backends import Backend
from .cases import CELLS, NORM_VARIANTS
from .runner import NormRow, Row


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_header(backends: Sequence[Backend], threads: Sequence[int]) -> None:
    """Prints the machine, the Python and NumPy versions, and each backend's version (or why
    it is skipped); warns when more threads are requested than cores are usable."""
    cores = _usable_cores()
    print(f"machine: {_cpu_name()}, {cores} usable cores, {platform.platform()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    for b in backends:
        print(f"{b.name}: {b.version() if b.available else 'SKIPPED (' + b.note + ')'}")
    rc = next((b for b in backends if b.name == "rnncore" and b.available), None)
    if rc is not None and not hasattr(rc.mod, "set_num_threads"):
        print("note: rnncore.set_num_threads missing: rnncore threads n/a (its default is used)")
    if max(threads) > cores:
        print(f"warning: {max(threads)} threads requested, {cores} cores usable")


def fmt(v: float | None, spec: str, width: int) -> str:
    """``v`` formatted with ``spec`` in ``width`` characters, or a right-aligned ``-``."""
    return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"


class Report:
    """Prints rows as they finish and collects CSV records."""

    def __init__(self, backends: Sequence[Backend], peaks: Mapping[int, float | None], show_min):
        self.names = [b.name for b in backends]
        self.peers = [b.name for b in backends if b.peer]
        self.peaks = peaks
        self.show_min = show_min
        self.records: list[dict[str, Any]] = []
        self.width = 34

    def header(self) -> None:
        """Prints the column header."""
        cols = [f"{'case':<{self.width}}", f"{'thr':>3}"]
        cols += [f"{n + ' ms':>{21 if self.show_min else 11}}" for n in self.names]
        cols += [f"{'ratio':>6}", f"{'best':>7}", f"{'GFLOP/s':>8}", f"{'%peak':>6}", "  check"]
        line = " ".join(cols)
        print(line)
        print("-" * len(line))

    def add(self, row: Row) -> None:
        """Prints one row and records it for the CSV."""
        c = row.case
        med = {n: (t.median * 1e3 if t else None) for n, t in row.timings.items()}
        mn = {n: (t.min * 1e3 if t else None) for n, t in row.timings.items()}
        peers = {n: med[n] for n in self.peers if med.get(n) is not None}
        best = min(peers, key=peers.get) if peers else None
        rc = med.get("rnncore")
        ratio = None
        if rc is not None and best:  # paired per round where timed together
            ratio = row.paired.get(best, rc / peers[best])
        gflops = pct = None
        if rc is not None and c.mode in ("infer", "stream"):
            gflops = c.flops() / (rc * 1e-3) / 1e9
            peak = self.peaks.get(c.threads)
            pct = 100.0 * gflops / peak if peak else None

        cols = [f"{c.name:<{self.width}}", f"{c.threads:>3}"]
        for n in self.names:
            if self.show_min:
                cols.append(f"{fmt(med[n], '.3f', 10)}/{fmt(mn[n], '.3f', 10)}")
            else:
                cols.append(fmt(med[n], ".3f", 11))
        cols += [
            fmt(ratio, ".2f", 6),
            f"{best or '-':>7}",
            fmt(gflops, ".1f", 8),
            fmt(pct, ".1f", 6),
            "  " + row.check,
        ]
        print(" ".join(cols), flush=True)
        for note in row.notes:
            if note != "rnncore threads n/a":  # said once in the header
                print(f"{'':<{self.width}}  note: {note}", flush=True)

        rec: dict[str, Any] = {
            "case": c.name,
            "cell": c.cell,
            "mode": c.mode,
            "T": c.T,
            "B": c.B,
            "H": c.H,
            "D": c.input_size,
            "threads": c.threads,
        }
        for n in self.names:
            t = row.timings.get(n)
            rec[f"{n}_ms_median"] = None if t is None else t.median * 1e3
            rec[f"{n}_ms_min"] = None if t is None else t.min * 1e3
            rec[f"{n}_repeats"] = None if t is None else f"{t.repeats}x{t.number}"
            if n != "rnncore":
                rec[f"{n}_over_rnncore"] = (
                    med[n] / rc if (rc is not None and med.get(n) is not None) else None
                )
        rec.update(
            {
                "ratio": ratio,
                "best_peer": best,
                "rnncore_gflops": gflops,
                "pct_peak": pct,
                "sgemm_peak_gflops": self.peaks.get(c.threads),
                "check": row.check,
                "notes": "; ".join(row.notes),
            }
        )
        self.records.append(rec)

    def write_csv(self, path: str) -> None:
        """Writes every recorded row to ``path``."""
        write_records(path, self.records)


def write_records(path: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Writes records as CSV; the columns are the union of their keys, in first-seen order."""
    if not records:
        return
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for rec in records:
            w.writerow({k: csv_value(v) for k, v in rec.items()})


def csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


class NormReport:
    """Prints the normalization cost table and checks the overhead target."""

    def __init__(self):
        self.rows: list[NormRow] = []
        self.width = 26
        self.labels = [v[0] for v in NORM_VARIANTS]

    def header(self) -> None:
        """Prints the title and the column header."""
        print(
            "normalization cost: rnncore forward, ms per call (median) and, in parentheses, the "
            "median\nof the per-round ratios to the plain cell timed in the same rounds; eval "
            "mode except\n'batch (train)' (training-mode forward: batch statistics, running "
            "update)"
        )
        cols = [f"{'case':<{self.width}}", f"{'thr':>3}", f"{'plain ms':>9}"]
        cols += [f"{label:>16}" for label in self.labels[1:]]
        line = " ".join(cols)
        print(line)
        print("-" * len(line))

    def add(self, row: NormRow) -> None:
        """Prints one row."""
        self.rows.append(row)
        name = f"{CELLS[row.cell].label} T={row.T} B={row.B} H={row.H}"
        cols = [f"{name:<{self.width}}", f"{row.threads:>3}"]
        cols.append(fmt(row.median_ms(self.labels[0]), ".3f", 9))
        for label in self.labels[1:]:
            ms, r = row.median_ms(label), row.ratio(label)
            cols.append(f"{'-':>16}" if ms is None else f"{ms:8.3f} ({r:4.2f}x)")
        print(" ".join(cols), flush=True)
        for note in row.notes:
            print(f"{'':<{self.width}}  note: {note}", flush=True)

    def write_csv(self, path: str) -> None:
        """Writes one record per row: medians, minima and ratios of every variant."""
        records = []
        for r in self.rows:
            rec: dict[str, Any] = {"cell": r.cell, "T": r.T, "B": r.B, "H": r.H}
            rec["threads"] = r.threads
            for label in self.labels:
                key = label.replace(" (train)", "_train").replace(" ", "_")
                t = r.times.get(label)
                rec[f"{key}_ms_median"] = r.median_ms(label)
                rec[f"{key}_ms_min"] = min(t) * 1e3 if t else None
                rec[f"{key}_rounds"] = len(t) if t else None
                if label != self.labels[0]:
                    rec[f"{key}_ratio"] = r.ratio(label)
            rec["notes"] = "; ".join(r.notes)
            records.append(rec)
        write_records(path, records)


def write_csv_files(
    path: str,
    report: Report,
    norm_report: NormReport,
    half_records: Sequence[Mapping[str, Any]],
) -> None:
    """Writes the main table (with the torch-ops comparison) to ``path``, the normalization
    cost table to ``PATH`` with ``_norms`` before the extension and the float16-weights
    table with ``_half``, each when it has rows."""
    report.write_csv(path)
    print(f"CSV written to {path}")
    if norm_report.rows:
        root, ext = os.path.splitext(path)
        norm_report.write_csv(f"{root}_norms{ext or '.csv'}")
        print(f"normalization cost CSV written to {root}_norms{ext or '.csv'}")
    if half_records:
        root, ext = os.path.splitext(path)
        write_records(f"{root}_half{ext or '.csv'}", half_records)
        print(f"float16-weights CSV written to {root}_half{ext or '.csv'}")
