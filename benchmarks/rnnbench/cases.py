"""The recurrent cells and the case grids: the main table (full and quick), the normalization
section and the float16-weights section.

Adding rows: extend ``default_cases``/``quick_cases`` (or add a new case set to
``CASE_SETS``) with ``Case`` entries. Adding a cell variant (e.g. a layer-normalized LSTM):
add a ``CellSpec`` to ``CELLS``; backends that cannot run it say so in ``supports``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """A recurrent cell variant that cases can name.

    Attributes:
        kind: Base cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        gates: Number of gate blocks ``G`` (4, 3, 1).
        label: Short name printed in the table.
        kwargs: Extra constructor keywords shared by rnncore and torch (e.g. nonlinearity).
        norm: Normalization (``None`` or e.g. ``"layer"``); backends decide if they support it.
    """

    kind: str
    gates: int
    label: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    norm: str | None = None


CELLS: dict[str, CellSpec] = {
    "lstm": CellSpec("lstm", 4, "lstm"),
    "gru": CellSpec("gru", 3, "gru"),
    "rnn": CellSpec("rnn", 1, "rnn", (("nonlinearity", "tanh"),)),
    "rnn_relu": CellSpec("rnn", 1, "rnn-relu", (("nonlinearity", "relu"),)),
    # Normalized LSTMs: torch runs them as the same equations written with PyTorch operations
    # (``torch_ops_lstm``); ORT has no such node.
    "ln_lstm": CellSpec("lstm", 4, "ln-lstm", norm="layer"),
    "bn_lstm": CellSpec("lstm", 4, "bn-lstm", norm="batch"),
}

#: Cells run when ``--cells`` is not given.
DEFAULT_CELLS = ("lstm", "gru", "rnn")
MODES = ("infer", "train", "stream")
#: The plain (unnormalized) cells, which the speed targets and the float16 section judge.
PLAIN = ("lstm", "gru", "rnn")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark row.

    Attributes:
        cell: Key into ``CELLS``.
        mode: ``"infer"``, ``"train"`` or ``"stream"``.
        T: Sequence length (for ``"stream"``: number of single-step calls).
        B: Batch size.
        H: Hidden size.
        D: Input size; ``None`` means ``H``.
        threads: Thread count given to every backend.
    """

    cell: str
    mode: str
    T: int
    B: int
    H: int
    D: int | None = None
    threads: int = 1

    @property
    def spec(self) -> CellSpec:
        """The cell variant."""
        return CELLS[self.cell]

    @property
    def input_size(self) -> int:
        """Input feature size."""
        return self.H if self.D is None else self.D

    @property
    def name(self) -> str:
        """Row label, e.g. ``lstm infer T=100 B=16 H=256``."""
        t = f"T={self.T}x1" if self.mode == "stream" else f"T={self.T}"
        d = "" if self.D is None else f" D={self.D}"
        return f"{self.spec.label} {self.mode} {t} B={self.B} H={self.H}{d}"

    def flops(self) -> float:
        """FLOPs of the input and recurrent GEMMs of one forward pass: 2*T*B*G*H*(D+H)."""
        return 2.0 * self.T * self.B * self.spec.gates * self.H * (self.input_size + self.H)


def default_cases(cells: Sequence[str], threads: Sequence[int]) -> list[Case]:
    """The default benchmark set.

    Inference for hidden 64/256/512/1024 x batch 1/16/64 at T=100 and at T=1000 for batch 1,
    hidden 256; a training step at batch 64, hidden 256 and 512; and a streamed single-step
    sequence at batch 1 and 4, hidden 256.

    Args:
        cells: Keys into ``CELLS``.
        threads: Thread counts; every case is run at each.

    Returns:
        The list of cases, in run order.
    """
    cases = []
    for th in threads:
        for cell in cells:
            for h in (64, 256, 512, 1024):
                for b in (1, 16, 64):
                    cases.append(Case(cell, "infer", T=100, B=b, H=h, threads=th))
            cases.append(Case(cell, "infer", T=1000, B=1, H=256, threads=th))
            for h in (256, 512):
                cases.append(Case(cell, "train", T=100, B=64, H=h, threads=th))
            cases.append(Case(cell, "stream", T=100, B=1, H=256, threads=th))
            cases.append(Case(cell, "stream", T=100, B=4, H=256, threads=th))
    return cases


def quick_cases(cells: Sequence[str], threads: Sequence[int]) -> list[Case]:
    """A small smoke-test set (well under a minute for all cells).

    Args:
        cells: Keys into ``CELLS``.
        threads: Thread counts; every case is run at each.

    Returns:
        The list of cases, in run order.
    """
    cases = []
    for th in threads:
        for cell in cells:
            cases.append(Case(cell, "infer", T=20, B=1, H=64, threads=th))
            cases.append(Case(cell, "infer", T=20, B=16, H=128, threads=th))
            cases.append(Case(cell, "train", T=20, B=16, H=64, threads=th))
            cases.append(Case(cell, "stream", T=20, B=1, H=64, threads=th))
    return cases


CASE_SETS: dict[str, Callable[[Sequence[str], Sequence[int]], list[Case]]] = {
    "default": default_cases,
    "quick": quick_cases,
}

# -- the normalization section ---------------------------------------------------------------

#: Normalizations of the cost table, as (column label, ``norm``, mode of the timed forward).
#: "batch (train)" is a training-mode forward (batch statistics, running-statistics update);
#: the other columns are eval-mode forwards.
NORM_VARIANTS: tuple[tuple[str, str | None, str], ...] = (
    ("plain", None, "eval"),
    ("layer", "layer", "eval"),
    ("batch", "batch", "eval"),
    ("batch (train)", "batch", "train"),
    ("batch_input", "batch_input", "eval"),
)


def norm_sizes(quick: bool) -> list[tuple[int, int, int]]:
    """``(T, B, H)`` of the normalization cost table (input size = hidden size)."""
    if quick:
        return [(20, 16, 64)]
    return [(100, 64, 256), (100, 16, 512)]


def norm_torch_cases(threads: Sequence[int], quick: bool) -> list[Case]:
    """rnncore's normalized LSTM against the same cell written with PyTorch operations.

    The layer-norm LSTM for inference and a training step at (B=64, H=256), (B=16, H=512)
    and (B=1, H=256), T=100; the batch-norm LSTM's training step (per-step batch statistics)
    at the two sizes with B >= 2. ``quick``: T=20, (B=16, H=64) and (B=1, H=64).

    Args:
        threads: Thread counts; every case is run at each.
        quick: The small smoke-test version.

    Returns:
        The list of cases, in run order.
    """
    if quick:
        t, ln_sizes, bn_sizes = 20, [(16, 64), (1, 64)], [(16, 64)]
    else:
        t, ln_sizes, bn_sizes = 100, [(64, 256), (16, 512), (1, 256)], [(64, 256), (16, 512)]
    cases = []
    for th in threads:
        for b, h in ln_sizes:
            cases.append(Case("ln_lstm", "infer", T=t, B=b, H=h, threads=th))
            cases.append(Case("ln_lstm", "train", T=t, B=b, H=h, threads=th))
        for b, h in bn_sizes:
            cases.append(Case("bn_lstm", "train", T=t, B=b, H=h, threads=th))
    return cases


# -- the float16-weights section ---------------------------------------------------------------


def half_cases(threads: Sequence[int], quick: bool) -> list[Case]:
    """Batch-1 cases for the float16-weights section: the streamed step of each cell and the
    LSTM's batch-1 sequences (a small stream with ``quick``)."""
    if quick:
        return [Case("lstm", "stream", T=20, B=1, H=64, threads=th) for th in threads]
    cases = []
    for th in threads:
        cases += [Case(cell, "stream", T=100, B=1, H=256, threads=th) for cell in PLAIN]
        cases += [Case("lstm", "infer", T=100, B=1, H=h, threads=th) for h in (256, 512, 1024)]
    return cases
