"""Running one row: a case on every backend (main table, torch-ops comparison), one cell's
normalization variants (cost table), or rnncore against its float16-weights copy."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backends import LAYER_CLASSES, Backend, RnncoreBackend
from .cases import CELLS, NORM_VARIANTS, Case
from .checks import HALF_CHECK_TOL, cross_check, scaled_error
from .data import make_data, numpy_params
from .timing import QUIESCE_ROUND_S, Timing, measure_interleaved, paired_ratio, quiesce


@dataclasses.dataclass
class Row:
    """Results of one case."""

    case: Case
    timings: dict[str, Timing | None]
    notes: list[str]
    check: str
    ok: bool
    # rnncore's time over each backend's, median over the rounds timed together
    paired: dict[str, float] = dataclasses.field(default_factory=dict)


def run_case(
    case: Case,
    backends: Sequence[Backend],
    seed: int,
    target_s: float,
    repeats: int | None,
) -> Row:
    """Runs one case on every backend that supports it and cross-checks the outputs.

    Args:
        case: The case.
        backends: Backend instances (unavailable ones are skipped).
        seed: Seed for inputs and weights.
        target_s: Wanted measuring time per backend.
        repeats: Fixed repeats, or None for adaptive.

    Returns:
        The row.
    """
    data = make_data(case, seed)
    active = [b for b in backends if b.available and b.supports(case)]
    params, notes, errors, ok = None, [], [], True
    for b in active:  # rnncore first: its initialization is used by everybody
        try:
            params = b.init_params(case, seed)
        except Exception as e:  # noqa: BLE001
            notes.append(f"{b.name} ERROR in init_params: {type(e).__name__}: {e}")
            errors.append(f"ERROR {b.name} (init)")
            ok = False
        if params is not None:
            break
    if params is None:
        params = numpy_params(case, seed)

    timings: dict[str, Timing | None] = {b.name: None for b in backends}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    runners: dict[str, Callable[[], Any]] = {}
    for b in active:
        note = b.set_threads(case.threads)
        if note:
            notes.append(note)
        try:
            runner = b.build(case, params, data)
            outputs[b.name] = runner.collect(runner.fn())
            runners[b.name] = runner.fn
        except Exception as e:  # noqa: BLE001 -- report and go on with the other backends
            notes.append(f"{b.name} ERROR: {type(e).__name__}: {e}")
            errors.append(f"ERROR {b.name}")
            traceback.print_exc(file=sys.stderr)
            ok = False
    # The backends are timed in alternating rounds, so that a slow spell of the machine
    # (seen here: the same call 1.8x slower for a second or more) falls on all of them
    # alike. Before each library's group of calls, the other libraries' threads are let go
    # idle (quiesce) and one untimed call wakes its own.
    paired: dict[str, float] = {}
    if runners:
        quiesce()
        numbers: dict[str, int] = {}
        try:
            times = measure_interleaved(
                runners,
                target_s,
                repeats,
                before=lambda: quiesce(window_s=QUIESCE_ROUND_S),
                numbers=numbers,
            )
        except Exception as e:  # noqa: BLE001 -- a call that ran once failed when timed
            notes.append(f"timing ERROR: {type(e).__name__}: {e}")
            errors.append("ERROR timing")
            traceback.print_exc(file=sys.stderr)
            ok = False
            times = {}
        for name, ts in times.items():
            timings[name] = Timing.of(ts, numbers[name])
        if "rnncore" in times:
            paired = {n: paired_ratio(times["rnncore"], ts) for n, ts in times.items()}
    del runners  # release the backends' modules/sessions (and their thread pools) now

    passed, check = cross_check(outputs, errors, normalized=case.spec.norm is not None)
    ok = ok and passed
    return Row(case, timings, notes, check, ok, paired)


@dataclasses.dataclass
class NormRow:
    """One row of the normalization cost table: one cell at one size and thread count.

    Attributes:
        cell: Key into ``CELLS`` (a plain cell).
        T: Sequence length.
        B: Batch size.
        H: Hidden size (= input size).
        threads: rnncore thread count.
        times: Per-round seconds by ``NORM_VARIANTS`` label (absent: the variant failed).
        notes: Errors.
    """

    cell: str
    T: int
    B: int
    H: int
    threads: int
    times: dict[str, list[float]]
    notes: list[str]

    @property
    def ok(self) -> bool:
        """Whether every variant ran."""
        return not self.notes

    def median_ms(self, label: str) -> float | None:
        """Median ms per call of a variant."""
        t = self.times.get(label)
        return statistics.median(t) * 1e3 if t else None

    def ratio(self, label: str) -> float | None:
        """Paired ratio of a variant to the plain cell."""
        t, base = self.times.get(label), self.times.get(NORM_VARIANTS[0][0])
        return paired_ratio(t, base) if (t and base) else None


def run_norm_row(
    rnncore,
    cell: str,
    size: tuple[int, int, int],
    threads: int,
    seed: int,
    target_s: float,
    repeats: int | None,
) -> NormRow:
    """Times rnncore's forward with every ``NORM_VARIANTS`` normalization of one cell.

    One module per variant (rnncore's default initialization, ``seed``), the same input
    ``(T, B, H)``. Batch-normalized modules first run one training-mode forward, so eval mode
    uses real running statistics. Eval-mode variants call ``m(x)`` after ``m.eval()``;
    "batch (train)" calls ``m(x)`` in training mode (batch statistics of every step and the
    running-statistics update). The calls are timed interleaved (``measure_interleaved``).

    Args:
        rnncore: The rnncore module.
        cell: Key into ``CELLS`` (a plain cell).
        size: ``(T, B, H)``.
        threads: Thread count (``rnncore.set_num_threads``).
        seed: Seed for the input and the weights.
        target_s: Wanted measuring time per variant.
        repeats: Fixed rounds, or None for adaptive.

    Returns:
        The row.
    """
    t, b, h = size
    spec = CELLS[cell]
    if hasattr(rnncore, "set_num_threads"):
        rnncore.set_num_threads(threads)
    x = np.random.default_rng(seed).standard_normal((t, b, h), dtype=np.float32)
    cls = getattr(rnncore, LAYER_CLASSES[spec.kind])
    fns, notes = {}, []
    for label, norm, mode in NORM_VARIANTS:
        try:
            kw = dict(spec.kwargs)
            if norm is not None:
                kw["norm"] = norm
            m = cls(h, h, dtype="float32", seed=seed, **kw)
            if norm in ("batch", "batch_input"):
                m.train()
                m(x)  # running statistics for eval mode
            m = m.train() if mode == "train" else m.eval()
            out, _ = m(x)
            if not np.all(np.isfinite(out)):
                raise FloatingPointError("non-finite output")
            fns[label] = lambda m=m: m(x)
        except Exception as e:  # noqa: BLE001 -- report and go on with the other variants
            notes.append(f"{label} ERROR: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
    quiesce()
    times = measure_interleaved(fns, target_s, repeats) if fns else {}
    return NormRow(cell, t, b, h, threads, times, notes)


@dataclasses.dataclass
class HalfRow:
    """One case of the float16-weights section."""

    case: Case
    f32: Timing
    f16: Timing
    speedup: float  # float32 time / float16 time, median over paired rounds
    error: float  # scaled_error of the float16 outputs against the float32 ones
    peer_ms: float | None  # the best peer's median in the main table, when it ran this case

    @property
    def ok(self) -> bool:
        """Whether the outputs agree within HALF_CHECK_TOL."""
        return self.error <= HALF_CHECK_TOL


def run_half_row(
    rc_backend: RnncoreBackend,
    case: Case,
    seed: int,
    target_s: float,
    repeats: int | None,
    peer_ms: float | None,
) -> HalfRow:
    """Times a case with the float32 module and its ``half_weights()`` copy, in alternating
    rounds, on the main table's weights and inputs."""
    rc_backend.set_threads(case.threads)
    data = make_data(case, seed)
    params = rc_backend.init_params(case, seed)
    module = rc_backend.make_module(case)
    module.load_state_dict(params)
    f32 = rc_backend.runner(case, module, data)
    f16 = rc_backend.runner(case, module.half_weights(), data)
    ref, got = f32.collect(f32.fn()), f16.collect(f16.fn())
    error = max(scaled_error(got[k], ref[k]) for k in ref)
    quiesce()
    times = measure_interleaved(
        {"f32": f32.fn, "f16": f16.fn}, target_s, repeats,
        before=lambda: quiesce(window_s=QUIESCE_ROUND_S),
    )  # fmt: skip
    t32, t16 = times["f32"], times["f16"]
    return HalfRow(
        case,
        Timing.of(t32, 1),
        Timing.of(t16, 1),
        paired_ratio(t32, t16),
        error,
        peer_ms,
    )
