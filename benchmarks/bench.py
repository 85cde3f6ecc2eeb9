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

Adding rows: extend ``default_cases``/``quick_cases`` (or add a new case set) with ``Case``
entries. Adding a cell variant (e.g. a layer-normalized LSTM): add a ``CellSpec`` to
``CELLS``; backends that cannot run it say so in ``supports``. Adding a backend: subclass
``Backend`` and append it to ``BACKENDS``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import onnx_models  # noqa: E402  (needs the path set above when imported from elsewhere)

# --------------------------------------------------------------------------------------------
# Cells and cases
# --------------------------------------------------------------------------------------------


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

#: Target of the cost table: an eval-mode normalized forward at most this times the plain one,
#: at ``NORM_TARGET_SIZE`` (B, H).
NORM_TARGET_RATIO = 1.15
NORM_TARGET_SIZE = (64, 256)
#: Target of the PyTorch-operations comparison: the LN-LSTM training step at least this many
#: times faster in rnncore.
TORCH_OPS_TARGET_SPEEDUP = 5.0


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


# --------------------------------------------------------------------------------------------
# Data and weights
# --------------------------------------------------------------------------------------------


def make_data(case: Case, seed: int) -> dict[str, np.ndarray]:
    """Inputs shared by all backends: ``x`` ``(T, B, D)`` and ``grad_out`` ``(T, B, H)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.T, case.B, case.input_size), dtype=np.float32)
    grad_out = rng.standard_normal((case.T, case.B, case.H), dtype=np.float32)
    return {"x": x, "grad_out": grad_out}


def numpy_params(case: Case, seed: int) -> dict[str, np.ndarray]:
    """PyTorch-style U(-1/sqrt(H), 1/sqrt(H)) weights, used when neither rnncore nor torch runs.

    Args:
        case: The case (only plain cells: weight/bias ih/hh of layer 0).
        seed: Random seed.

    Returns:
        Parameters by PyTorch name.
    """
    rng = np.random.default_rng(seed + 1)
    gh, d, h = case.spec.gates * case.H, case.input_size, case.H
    k = 1.0 / math.sqrt(h)
    shapes = {"weight_ih_l0": (gh, d), "weight_hh_l0": (gh, h), "bias_ih_l0": (gh,)}
    shapes["bias_hh_l0"] = (gh,)
    return {n: rng.uniform(-k, k, s).astype(np.float32) for n, s in shapes.items()}


def perturb_norm_params(params: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Moves normalization gains and shifts off their initial values (1 or 0.1, and 0).

    With every gain equal and every shift zero, a cross-check cannot see a gain applied to the
    wrong term, or a missing shift; the benchmark's timings do not depend on the values. Gains
    are multiplied by ``U(0.5, 1.5)``, shifts get ``U(-0.2, 0.2)`` added; running statistics
    and the plain weights are left alone.

    Args:
        params: Parameters by rnncore name.
        seed: Random seed.

    Returns:
        A new dictionary.
    """
    rng = np.random.default_rng(seed + 2)
    out = {}
    for name, v in params.items():
        v = np.array(v)
        if name.startswith(("ln_", "bn_")) and "_running_" not in name:
            if "_weight" in name:
                v = v * rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
            elif "_bias" in name:
                v = v + rng.uniform(-0.2, 0.2, v.shape).astype(v.dtype)
        out[name] = v
    return out


# --------------------------------------------------------------------------------------------
# The normalized LSTM written with PyTorch operations
# --------------------------------------------------------------------------------------------

#: Normalizations the PyTorch-operations LSTM implements.
TORCH_OPS_NORMS = ("layer", "batch")

_TORCH_OPS_CLASS: dict[int, type] = {}


def torch_ops_lstm(
    torch,
    input_size: int,
    hidden_size: int,
    norm: str = "layer",
    *,
    ln_eps: float = 1e-5,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    bn_gamma: float = 0.1,
):
    """Creates the normalized LSTM of spec/normalization.md §3 written with PyTorch operations.

    This is what a CPU user without rnncore would write: an ``nn.Module`` with a Python loop
    over time, the input projection (and its normalization, which does not depend on the
    state) hoisted out of the loop as one matrix product over all steps, ``F.layer_norm`` /
    ``F.batch_norm`` inside, autograd for the backward pass. Parameter and buffer names are
    rnncore's (``weight_ih_l0``, ``ln_ih_weight_l0``, ``bn_hh_running_mean_l0``, ...), one
    layer, one direction, time-major input ``(T, B, D)``; states are ``(1, B, H)`` as for
    ``torch.nn.LSTM``.

    - ``norm="layer"``: ``Z = LN0(x W_ih^T; ln_ih_weight) + b_ih + LN0(h W_hh^T;
      ln_hh_weight) + b_hh`` (LN0 over 4H), ``c`` carried un-normalized,
      ``h = o * tanh(LN(c; ln_cell_weight, ln_cell_bias))`` (over H).
    - ``norm="batch"``: the same with per-time-step batch normalization (Cooijmans et al.):
      training mode uses step ``t``'s batch statistics and updates running row ``t`` (the
      buffers grow to the longest sequence seen, new rows start at mean 0, variance 1); eval
      mode uses row ``min(t, S - 1)`` (mean 0, variance 1 while ``S == 0``).

    Args:
        torch: The ``torch`` module (imported by the caller, so this file needs no torch).
        input_size: ``D``.
        hidden_size: ``H``.
        norm: ``"layer"`` or ``"batch"``.
        ln_eps: Layer-norm epsilon.
        bn_eps: Batch-norm epsilon.
        bn_momentum: Running-statistics momentum.
        bn_gamma: Initial batch-norm gain.

    Returns:
        The module (float32, PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))`` weights; load others with
        ``load_arrays``).
    """
    cls = _TORCH_OPS_CLASS.get(id(torch))
    if cls is None:
        cls = _TORCH_OPS_CLASS[id(torch)] = _define_torch_ops_lstm(torch)
    return cls(input_size, hidden_size, norm, ln_eps, bn_eps, bn_momentum, bn_gamma)


def _define_torch_ops_lstm(torch) -> type:
    nn, F = torch.nn, torch.nn.functional

    class TorchOpsLSTM(nn.Module):
        """Layer- or batch-normalized LSTM in PyTorch operations; see ``torch_ops_lstm``."""

        def __init__(self, input_size, hidden_size, norm, ln_eps, bn_eps, bn_momentum, bn_gamma):
            super().__init__()
            if norm not in TORCH_OPS_NORMS:
                raise ValueError(f"norm must be one of {TORCH_OPS_NORMS}, got {norm!r}")
            self.input_size, self.hidden_size, self.norm = input_size, hidden_size, norm
            self.ln_eps, self.bn_eps, self.bn_momentum = ln_eps, bn_eps, bn_momentum
            g, h = 4 * hidden_size, hidden_size
            self.weight_ih_l0 = nn.Parameter(torch.empty(g, input_size))
            self.weight_hh_l0 = nn.Parameter(torch.empty(g, h))
            self.bias_ih_l0 = nn.Parameter(torch.empty(g))
            self.bias_hh_l0 = nn.Parameter(torch.empty(g))
            k = 1.0 / math.sqrt(h)
            for p in self.parameters():
                nn.init.uniform_(p, -k, k)
            if norm == "layer":
                self.ln_ih_weight_l0 = nn.Parameter(torch.ones(g))
                self.ln_hh_weight_l0 = nn.Parameter(torch.ones(g))
                self.ln_cell_weight_l0 = nn.Parameter(torch.ones(h))
                self.ln_cell_bias_l0 = nn.Parameter(torch.zeros(h))
            else:
                self.bn_ih_weight_l0 = nn.Parameter(torch.full((g,), bn_gamma))
                self.bn_hh_weight_l0 = nn.Parameter(torch.full((g,), bn_gamma))
                self.bn_cell_weight_l0 = nn.Parameter(torch.full((h,), bn_gamma))
                self.bn_cell_bias_l0 = nn.Parameter(torch.zeros(h))
                for part, width in (("ih", g), ("hh", g), ("cell", h)):
                    self.register_buffer(f"bn_{part}_running_mean_l0", torch.zeros(0, width))
                    self.register_buffer(f"bn_{part}_running_var_l0", torch.ones(0, width))

        def load_arrays(self, arrays: Mapping[str, Any]) -> TorchOpsLSTM:
            """Copies parameters and buffers given by rnncore name (NumPy arrays or tensors).

            Every parameter must be given; running-statistics buffers may have any number of
            rows. Unknown names raise ``KeyError``, wrong shapes ``ValueError``.
            """
            params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
            dtype = self.weight_ih_l0.dtype
            unknown = set(arrays) - set(params) - set(buffers)
            missing = set(params) - set(arrays)
            if unknown or missing:
                raise KeyError(f"unknown {sorted(unknown)}, missing {sorted(missing)}")
            with torch.no_grad():
                for name, value in arrays.items():
                    t = torch.as_tensor(np.asarray(value)).to(dtype)
                    ref = params.get(name, buffers.get(name))
                    if t.shape[1:] != ref.shape[1:] or (name in params and t.shape != ref.shape):
                        raise ValueError(f"{name}: shape {tuple(t.shape)} vs {tuple(ref.shape)}")
                    if name in params:
                        params[name].copy_(t)
                    else:
                        setattr(self, name, t.clone())
            return self

        # -- batch normalization helpers ----------------------------------------------------

        def _running(self, part):
            return (
                getattr(self, f"bn_{part}_running_mean_l0"),
                getattr(self, f"bn_{part}_running_var_l0"),
            )

        def _grow(self, steps):
            """Appends running rows (mean 0, variance 1) up to ``steps`` rows."""
            for part in ("ih", "hh", "cell"):
                rm, rv = self._running(part)
                extra = (steps - rm.shape[0], rm.shape[1])
                if extra[0] > 0:
                    rm = torch.cat([rm, rm.new_zeros(extra)])
                    rv = torch.cat([rv, rv.new_ones(extra)])
                    setattr(self, f"bn_{part}_running_mean_l0", rm)
                    setattr(self, f"bn_{part}_running_var_l0", rv)

        def _eval_stats(self, part, rows):
            """Running mean and variance for the given step indices (``(len(rows), W)``)."""
            rm, rv = self._running(part)
            if rm.shape[0] == 0:
                return rm.new_zeros(len(rows), rm.shape[1]), rv.new_ones(len(rows), rv.shape[1])
            idx = torch.clamp(torch.as_tensor(rows), max=rm.shape[0] - 1)
            return rm[idx], rv[idx]

        def _bn_step(self, a, part, t, weight, bias=None):
            """Batch norm of step ``t`` (``a`` is ``(B, W)``) with its own statistics."""
            if self.training:
                mean, var = self._running(part)  # rows updated in place, PyTorch semantics
                mean, var, m = mean[t], var[t], self.bn_momentum
            else:
                mean, var = self._eval_stats(part, [t])
                mean, var, m = mean[0], var[0], 0.0
            return F.batch_norm(a, mean, var, weight, bias, self.training, m, self.bn_eps)

        def _bn_input(self, ax):
            """Per-step batch norm of the whole input projection ``(T, B, 4H)`` at once."""
            steps, batch = ax.shape[0], ax.shape[1]
            if self.training:
                var, mean = torch.var_mean(ax, dim=1, unbiased=False, keepdim=True)
                with torch.no_grad():
                    rm, rv = self._running("ih")
                    m = self.bn_momentum
                    rm[:steps].mul_(1 - m).add_(mean[:, 0], alpha=m)
                    rv[:steps].mul_(1 - m).add_(var[:, 0], alpha=m * batch / (batch - 1))
            else:
                mean, var = (s[:, None] for s in self._eval_stats("ih", list(range(steps))))
            return (ax - mean) * torch.rsqrt(var + self.bn_eps) * self.bn_ih_weight_l0

        # -- forward ------------------------------------------------------------------------

        def forward(self, x, hx=None):
            """Runs the sequence ``x`` ``(T, B, D)``; returns ``out, (h_n, c_n)``."""
            steps, batch, _ = x.shape
            hid, g = self.hidden_size, 4 * self.hidden_size
            if hx is None:
                h = x.new_zeros(batch, hid)
                c = x.new_zeros(batch, hid)
            else:
                h, c = hx[0].reshape(batch, hid), hx[1].reshape(batch, hid)
            w_hh_t = self.weight_hh_l0.t()
            bias = self.bias_ih_l0 + self.bias_hh_l0
            ax = torch.matmul(x, self.weight_ih_l0.t())  # all steps' input projections at once
            outs = []
            if self.norm == "layer":
                eps, w_hh_ln = self.ln_eps, self.ln_hh_weight_l0
                xz = F.layer_norm(ax, (g,), self.ln_ih_weight_l0, None, eps) + bias
                for t in range(steps):
                    z = xz[t] + F.layer_norm(torch.mm(h, w_hh_t), (g,), w_hh_ln, None, eps)
                    i, f, gg, o = z.chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                    cn = F.layer_norm(c, (hid,), self.ln_cell_weight_l0, self.ln_cell_bias_l0, eps)
                    h = torch.sigmoid(o) * torch.tanh(cn)
                    outs.append(h)
            else:
                if self.training:
                    if batch < 2:
                        raise ValueError("batch norm in training mode needs a batch of 2 or more")
                    self._grow(steps)
                xz = self._bn_input(ax) + bias
                for t in range(steps):
                    z = xz[t] + self._bn_step(torch.mm(h, w_hh_t), "hh", t, self.bn_hh_weight_l0)
                    i, f, gg, o = z.chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                    cn = self._bn_step(c, "cell", t, self.bn_cell_weight_l0, self.bn_cell_bias_l0)
                    h = torch.sigmoid(o) * torch.tanh(cn)
                    outs.append(h)
            return torch.stack(outs), (h.unsqueeze(0), c.unsqueeze(0))

    return TorchOpsLSTM


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Runner:
    """A prepared benchmark call.

    Attributes:
        fn: The timed call (no arguments); returns whatever ``collect`` needs.
        collect: Turns ``fn``'s result into named NumPy arrays for the cross-backend check
            (``out``, ``h_n``, ``c_n``, ``grad_x``, ``grad.<param>``).
    """

    fn: Callable[[], Any]
    collect: Callable[[Any], dict[str, np.ndarray]]


class Backend:
    """Base class of a benchmarked implementation.

    Subclasses set ``name``, implement ``_probe`` (import, return the module), ``supports``
    and ``build``, and may implement ``set_threads`` and ``init_params``.
    """

    name = "?"
    #: Whether this backend counts as a peer in the ratio (rnncore is the subject).
    peer = True

    def __init__(self) -> None:
        self.mod = None
        self.note = ""
        try:
            self.mod = self._probe()
        except Exception as e:  # noqa: BLE001 -- any import failure means "skip"
            self.note = f"{self.name} unavailable: {type(e).__name__}: {e}"

    @property
    def available(self) -> bool:
        """Whether the backend imported."""
        return self.mod is not None

    def _probe(self):
        raise NotImplementedError

    def version(self) -> str:
        """Version string for the header."""
        return getattr(self.mod, "__version__", "?")

    def set_threads(self, n: int) -> str:
        """Sets the thread count for the next case; returns a note ("" when honoured)."""
        return ""

    def supports(self, case: Case) -> bool:
        """Whether this backend can run ``case``."""
        raise NotImplementedError

    def init_params(self, case: Case, seed: int) -> dict[str, np.ndarray] | None:
        """Creates the case's weights (PyTorch names), or None if this backend cannot."""
        return None

    def build(self, case: Case, params: Mapping[str, np.ndarray], data) -> Runner:
        """Prepares the timed call for ``case`` with the given weights and inputs."""
        raise NotImplementedError


def _state_dict(out_state, kind: str) -> dict[str, np.ndarray]:
    if kind == "lstm":
        h, c = out_state
        return {"h_n": np.asarray(h), "c_n": np.asarray(c)}
    return {"h_n": np.asarray(out_state)}


class RncoreBackend(Backend):
    """rnncore, following spec/api.md."""

    name = "rnncore"
    peer = False
    _CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}

    def _probe(self):
        import rnncore

        return rnncore

    def set_threads(self, n: int) -> str:
        if hasattr(self.mod, "set_num_threads"):
            self.mod.set_num_threads(n)
            return ""
        return "rnncore threads n/a"

    def supports(self, case: Case) -> bool:
        return hasattr(self.mod, self._CLASSES[case.spec.kind])

    def _make(self, case: Case, **kw):
        cls = getattr(self.mod, self._CLASSES[case.spec.kind])
        opts = dict(case.spec.kwargs)
        if case.spec.norm is not None:
            opts["norm"] = case.spec.norm
        return cls(case.input_size, case.H, dtype="float32", **opts, **kw)

    def init_params(self, case, seed):
        m = self._make(case, seed=seed)
        params = {k: np.array(v, dtype=np.float32) for k, v in m.state_dict().items()}
        return perturb_norm_params(params, seed) if case.spec.norm else params

    def build(self, case, params, data):
        m = self._make(case)
        m.load_state_dict(params)
        return self.runner(case, m, data)

    def runner(self, case: Case, m, data) -> Runner:
        """The timed call of ``case`` on the module ``m`` (eval mode for ``infer`` and
        ``stream``, training mode for ``train``)."""
        kind = case.spec.kind
        x = data["x"]
        if case.mode == "infer":
            m.eval()

            def collect(res):
                out, st = res
                return {"out": np.asarray(out), **_state_dict(st, kind)}

            return Runner(lambda: m(x), collect)
        if case.mode == "stream":
            m.eval()
            steps = [x[t : t + 1] for t in range(case.T)]

            def stream():
                st, outs = None, []
                for xt in steps:
                    out, st = m(xt, st)
                    outs.append(out)
                return outs, st

            def collect(res):
                outs, st = res
                return {"out": np.concatenate(outs, axis=0), **_state_dict(st, kind)}

            return Runner(stream, collect)
        # train
        m.train()
        gout = data["grad_out"]

        def step():
            m.zero_grad()
            out, st, tape = m.forward_train(x)
            gx, _ = m.backward(tape, gout)
            return out, st, gx

        def collect(res):
            out, st, gx = res
            d = {"out": np.asarray(out), **_state_dict(st, kind), "grad_x": np.asarray(gx)}
            d.update({f"grad.{k}": np.array(v) for k, v in m.grads.items()})
            if case.spec.norm is not None and hasattr(m, "buffers"):  # running statistics
                d.update({f"buf.{k}": np.array(v) for k, v in m.buffers().items()})
            return d

        return Runner(step, collect)


class TorchBackend(Backend):
    """PyTorch ``torch.nn.LSTM/GRU/RNN`` (eager, CPU); normalized LSTMs in PyTorch operations.

    There is no normalized recurrent layer in PyTorch, so for ``norm="layer"``/``"batch"``
    LSTM cells this backend runs ``torch_ops_lstm``: the same equations as rnncore, a Python
    loop over time with autograd, which is what a CPU user would otherwise write.
    """

    name = "torch"
    _CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}

    def _probe(self):
        import torch

        return torch

    def set_threads(self, n: int) -> str:
        self.mod.set_num_threads(n)
        return ""

    def supports(self, case: Case) -> bool:
        if case.spec.norm is None:
            return True
        return case.spec.kind == "lstm" and case.spec.norm in TORCH_OPS_NORMS

    def _make(self, case: Case):
        if case.spec.norm is not None:
            return torch_ops_lstm(self.mod, case.input_size, case.H, case.spec.norm)
        cls = getattr(self.mod.nn, self._CLASSES[case.spec.kind])
        return cls(case.input_size, case.H, **dict(case.spec.kwargs))

    def init_params(self, case, seed):
        self.mod.manual_seed(seed)
        m = self._make(case)
        params = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
        return perturb_norm_params(params, seed) if case.spec.norm else params

    def build(self, case, params, data):
        torch = self.mod
        m = self._make(case)
        if case.spec.norm is not None:
            m.load_arrays(params)  # rnncore's names; buffers may change their row count
        else:
            m.load_state_dict(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
            )
        kind = case.spec.kind

        def states(st):
            if kind == "lstm":
                return (st[0].detach().numpy(), st[1].detach().numpy())
            return st.detach().numpy()

        if case.mode == "infer":
            m.eval()
            xt = torch.from_numpy(data["x"])

            def fwd():
                with torch.inference_mode():
                    return m(xt)

            def collect(res):
                out, st = res
                return {"out": out.numpy(), **_state_dict(states(st), kind)}

            return Runner(fwd, collect)
        if case.mode == "stream":
            m.eval()
            xt = torch.from_numpy(data["x"])
            steps = [xt[t : t + 1] for t in range(case.T)]

            def stream():
                with torch.inference_mode():
                    st, outs = None, []
                    for s in steps:
                        out, st = m(s, st)
                        outs.append(out)
                    return outs, st

            def collect(res):
                outs, st = res
                out = np.concatenate([o.numpy() for o in outs], axis=0)
                return {"out": out, **_state_dict(states(st), kind)}

            return Runner(stream, collect)
        # train
        m.train()
        xt = torch.from_numpy(data["x"].copy()).requires_grad_(True)
        gout = torch.from_numpy(data["grad_out"])

        def step():
            m.zero_grad(set_to_none=True)
            xt.grad = None
            out, st = m(xt)
            out.backward(gout)
            return out, st

        def collect(res):
            out, st = res
            d = {"out": out.detach().numpy(), **_state_dict(states(st), kind)}
            d["grad_x"] = xt.grad.numpy().copy()
            d.update({f"grad.{k}": p.grad.numpy().copy() for k, p in m.named_parameters()})
            if case.spec.norm is not None:  # running statistics
                d.update({f"buf.{k}": b.numpy().copy() for k, b in m.named_buffers()})
            return d

        return Runner(step, collect)


class OrtBackend(Backend):
    """ONNX Runtime (CPU provider) running a graph of one ONNX LSTM/GRU/RNN node."""

    name = "ort"

    def _probe(self):
        import onnx  # noqa: F401 -- needed to build the graphs
        import onnxruntime

        return onnxruntime

    def supports(self, case: Case) -> bool:
        return case.spec.norm is None and case.mode in ("infer", "stream")

    def build(self, case, params, data):
        kind = case.spec.kind
        nl = dict(case.spec.kwargs).get("nonlinearity", "tanh")
        model = onnx_models.build_rnn_model(kind, params, nonlinearity=nl)
        sess = onnx_models.make_session(model, case.threads)  # intra-op threads = case.threads
        x = data["x"]
        zeros = np.zeros((1, case.B, case.H), np.float32)

        def collect_states(res):
            d = {"h_n": res[1]}
            if kind == "lstm":
                d["c_n"] = res[2]
            return d

        if case.mode == "infer":
            feeds = {"X": x, "initial_h": zeros}
            if kind == "lstm":
                feeds["initial_c"] = zeros

            def collect(res):
                return {"out": res[0][:, 0], **collect_states(res)}

            return Runner(lambda: sess.run(None, feeds), collect)

        steps = [x[t : t + 1] for t in range(case.T)]

        def stream():
            feeds = {"initial_h": zeros}
            if kind == "lstm":
                feeds["initial_c"] = zeros
            outs, res = [], None
            for s in steps:
                feeds["X"] = s
                res = sess.run(None, feeds)
                feeds["initial_h"] = res[1]
                if kind == "lstm":
                    feeds["initial_c"] = res[2]
                outs.append(res[0])
            return outs, res

        def collect(r):
            outs, res = r
            return {"out": np.concatenate([o[:, 0] for o in outs], axis=0), **collect_states(res)}

        return Runner(stream, collect)

    def version(self) -> str:
        return self.mod.__version__


#: Backend registry: the order is the column order; the first that can create weights does.
BACKENDS: list[type[Backend]] = [RncoreBackend, TorchBackend, OrtBackend]

# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Per-call times in seconds."""

    median: float
    min: float
    repeats: int
    number: int


def measure(
    fn: Callable[[], Any],
    target_s: float,
    repeats: int | None = None,
    min_repeats: int = 7,
    max_repeats: int = 15,
    warmup: int = 2,
) -> Timing:
    """Times ``fn`` with ``time.perf_counter`` after warm-up calls.

    The number of timed repeats is chosen so the whole measurement takes about ``target_s``
    (clamped to ``[min_repeats, max_repeats]``) unless ``repeats`` is given; calls much
    shorter than ``target_s / repeats`` are grouped ``number`` at a time into one timed
    repeat, so timer overhead does not matter.

    Args:
        fn: The call to time.
        target_s: Wanted total measuring time in seconds.
        repeats: Fixed number of timed repeats, or None for adaptive.
        min_repeats: Lower bound of adaptive repeats.
        max_repeats: Upper bound of adaptive repeats.
        warmup: Untimed calls first (the last one estimates the call time).

    Returns:
        Median and minimum time per call.
    """
    est = float("inf")
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
    est = max(est, 1e-7)
    if repeats is None:
        repeats = int(min(max(round(target_s / est), min_repeats), max_repeats))
    number = max(1, int(target_s / (repeats * est)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return Timing(statistics.median(times), min(times), repeats, number)


# Quiet window before each library's group of calls in a round of the main table: torch's
# OpenMP workers poll for about 10 ms after a call and rnncore's for 1 ms (quiesce waited 16
# and 5 ms with this window after a 2-thread LSTM call of each).
QUIESCE_ROUND_S = 0.005
# Calls at least this long get no untimed wake-up call after a quiet window (see
# measure_interleaved): it would double the time of the slowest cases for nothing.
WARM_CALL_BELOW_S = 0.02


def quiesce(max_wait_s: float = 2.0, window_s: float = 0.02, busy_s: float = 0.001) -> float:
    """Waits until this process's other threads stop using the CPU (at most ``max_wait_s``).

    Libraries leave worker threads polling for a while after a call: OpenBLAS for about
    0.1 s after any NumPy BLAS call (a model's orthogonal initialization makes one), OpenMP
    and ONNX Runtime pools for shorter times. On a 2-core machine such a thread takes a core
    from the library being timed next, so every timed measurement starts here. Reads each
    thread's CPU time from ``/proc/self/task/*/schedstat`` (Linux); elsewhere sleeps
    ``max_wait_s / 10``.

    Args:
        max_wait_s: Longest wait.
        window_s: Length of one observation window.
        busy_s: CPU time the other threads may use in one window and still count as idle.

    Returns:
        Seconds waited.
    """
    t0 = time.perf_counter()
    me = str(threading.get_native_id())

    def others_cpu_ns() -> int | None:
        try:
            tasks = os.listdir("/proc/self/task")
        except OSError:
            return None
        total = 0
        for tid in tasks:
            if tid == me:
                continue
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # the thread has just exited
        return total

    before = others_cpu_ns()
    if before is None:
        time.sleep(max_wait_s / 10)
        return time.perf_counter() - t0
    while time.perf_counter() - t0 < max_wait_s:
        time.sleep(window_s)
        after = others_cpu_ns()
        if after is not None and after - before < busy_s * 1e9:
            break
        before = after
    return time.perf_counter() - t0


_PEAK_CODE = textwrap.dedent(
    """
    import statistics, sys, time
    import numpy as np
    n, threads, with_torch = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    def gflops(fn):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 2.0 * n**3 / statistics.median(ts) / 1e9

    print("numpy", gflops(lambda: np.matmul(a, b, out=c)))
    if with_torch:
        try:
            import torch
        except ImportError:
            sys.exit(0)
        torch.set_num_threads(threads)
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        print("torch", gflops(lambda: torch.mm(ta, tb, out=tc)))
        try:  # oneDNN's GEMM (what torch's CPU LSTM/GRU use); private API, so optional
            am, bm = ta.to_mkldnn(), tb.to_mkldnn()
            print("onednn", gflops(lambda: torch._C._nn.mkldnn_linear(am, bm)))
        except Exception:
            pass
    """
)


def sgemm_peak(threads: int, n: int = 1024, with_torch: bool = True) -> dict[str, float]:
    """Median GFLOP/s of an ``n x n`` float32 matmul with ``threads`` threads.

    NumPy's BLAS always; with ``with_torch`` also ``torch.mm`` (MKL) and oneDNN's GEMM through
    torch. A single BLAS can sit well below the CPU's peak (OpenBLAS's and MKL's AVX2 kernels
    on an AVX-512 AMD CPU reach about half of what oneDNN reaches), so the best of them is
    the reference for "%peak". Runs in a subprocess so the BLAS thread count can be set
    through the environment before NumPy loads.

    Args:
        threads: GEMM thread count.
        n: Matrix size.
        with_torch: Whether to measure ``torch.mm`` as well.

    Returns:
        GFLOP/s by library (``"numpy"``, ``"torch"``, ``"onednn"``); empty on failure.
    """
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    args = [sys.executable, "-c", _PEAK_CODE, str(n), str(threads), "1" if with_torch else "0"]
    try:
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    except Exception as e:  # noqa: BLE001 -- the peak is informative only
        print(f"note: SGEMM peak measurement failed ({type(e).__name__}: {e})", file=sys.stderr)
        return {}
    peaks = {}
    for line in r.stdout.splitlines():
        lib, _, val = line.partition(" ")
        try:
            peaks[lib] = float(val)
        except ValueError:
            pass
    if r.returncode != 0 or "numpy" not in peaks:
        print(f"note: SGEMM peak measurement failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
    return peaks


# --------------------------------------------------------------------------------------------
# Cross-backend check
# --------------------------------------------------------------------------------------------

#: float32 tolerance of the cross-check, relative to max(1, largest |reference| of the array):
#: outputs and states are bounded by 1 in magnitude, so 1e-3 is a plain absolute tolerance
#: there (float32 differences between correct implementations are ~1e-6); gradients are sums
#: over T*B terms whose rounding error grows with their magnitude, hence the scaling.
CHECK_TOL = 1e-3

#: Normalized cells (rnncore against ``torch_ops_lstm``) are checked relative to the largest
#: |reference| of each array itself. The two implementations compute the same float64 results
#: to ~1e-13 at the benchmark sizes, but over T=100 steps the layer-norm LSTM amplifies float32
#: rounding: each float32 implementation lies up to ~1e-3 (relative) from the float64 result
#: (outputs ~4e-4 at B=64; gradients ~1e-3 at B=1, where they grow to ~100), in different
#: directions, so two correct float32 implementations differ by up to ~2e-3. A wrong equation
#: (a gain on the wrong term, a missing shift, the cell norm on the carried state) shows up
#: as 1e-1 or more. The strict checks are ``verify_torch_ops``'s.
NORM_CHECK_TOL = 5e-3
#: float64 agreement of ``torch_ops_lstm`` and rnncore (measured ~4e-15 relative).
TORCH_OPS_F64_TOL = 1e-10
#: float32 agreement of the two implementations at T=20 (measured ~3e-6 relative).
TORCH_OPS_F32_TOL = 1e-4


def scaled_error(got: np.ndarray, ref: np.ndarray, relative: bool = False) -> float:
    """``max|got - ref|`` over ``max(1, max|ref|)``, or over ``max|ref|`` when ``relative``."""
    a, b = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if not a.size:
        return 0.0
    scale = float(np.max(np.abs(b)))
    scale = (scale or 1.0) if relative else max(1.0, scale)
    return float(np.max(np.abs(a - b))) / scale


def compare(
    ref: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    tol: float = CHECK_TOL,
    relative: bool = False,
) -> tuple[bool, str]:
    """Compares the arrays two backends produced, on the names both have.

    Args:
        ref: Reference backend's arrays.
        got: Other backend's arrays.
        tol: Largest allowed scaled error.
        relative: Scale by the largest |reference| of each array instead of by
            ``max(1, largest |reference|)``.

    Returns:
        ``(ok, worst)``: whether every common array is within ``tol`` and a description of the
        worst array (name and scaled error).
    """
    worst_name, worst = "", 0.0
    for k in ref.keys() & got.keys():
        a, b = np.asarray(got[k], np.float64), np.asarray(ref[k], np.float64)
        if a.shape != b.shape:
            return False, f"{k}: shape {a.shape} vs {b.shape}"
        err = scaled_error(a, b, relative)
        if not np.isfinite(err):
            return False, f"{k}: non-finite"
        if err >= worst:
            worst_name, worst = k, err
    if not (ref.keys() & got.keys()):
        return False, "nothing to compare"
    return worst <= tol, f"{worst_name} {worst:.1e}"


def verify_torch_ops(rnncore, torch, norm: str, dtype: str, seed: int = 0) -> tuple[bool, str]:
    """Checks ``torch_ops_lstm`` against rnncore: outputs, states and every gradient.

    Both get the same weights (rnncore's initialization with ``perturb_norm_params`` and random
    biases), a random initial state, and a loss ``sum(out*g_out) + sum(h_n*g_h) + sum(c_n*g_c)``
    with random ``g``; compared are ``out``, ``h_n``, ``c_n``, the gradients with respect to
    ``x``, ``h_0``, ``c_0`` and every parameter, and for batch norm the running statistics. A
    batch-norm LSTM is checked in training mode, then in eval mode on a sequence 3 steps
    longer than the one it was trained on (steps past the running rows reuse the last row).

    ``dtype="float64"``: T=7, B=4, D=3, H=5, tolerance ``TORCH_OPS_F64_TOL`` (the two must
    agree to rounding). ``dtype="float32"``: T=20, B=16, D=H=64, tolerance
    ``TORCH_OPS_F32_TOL``. Errors are relative to each array's largest |reference|.

    Args:
        rnncore: The rnncore module.
        torch: The torch module.
        norm: ``"layer"`` or ``"batch"``.
        dtype: ``"float64"`` or ``"float32"``.
        seed: Random seed.

    Returns:
        ``(ok, description)``, the description naming the worst array and its error.
    """
    t, b, d, h = (7, 4, 3, 5) if dtype == "float64" else (20, 16, 64, 64)
    tol = TORCH_OPS_F64_TOL if dtype == "float64" else TORCH_OPS_F32_TOL
    rng = np.random.default_rng(seed + 3)
    m = rnncore.LSTM(d, h, norm=norm, dtype=dtype, seed=seed)
    params = perturb_norm_params(m.state_dict(), seed)
    for k in ("bias_ih_l0", "bias_hh_l0"):
        params[k] = params[k] + rng.uniform(-0.3, 0.3, params[k].shape).astype(dtype)
    m.load_state_dict(params)
    tm = torch_ops_lstm(torch, d, h, norm).to(getattr(torch, dtype)).load_arrays(params)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    worst_name, worst_err = "", -1.0
    for mode, steps in (("train", t), ("eval", t + 3)) if norm == "batch" else (("train", t),):
        m.train(mode == "train")
        tm.train(mode == "train")
        x, h0, c0 = rand(steps, b, d), rand(1, b, h), rand(1, b, h)
        g_out, g_h, g_c = rand(steps, b, h), rand(1, b, h), rand(1, b, h)
        m.zero_grad()
        out, (hn, cn), tape = m.forward_train(x, (h0, c0))
        gx, (gh0, gc0) = m.backward(tape, g_out, (g_h, g_c))
        ref = {"out": out, "h_n": hn, "c_n": cn, "grad_x": gx, "grad_h0": gh0, "grad_c0": gc0}
        ref.update({f"grad.{k}": v for k, v in m.grads.items()})
        if norm == "batch":
            ref.update({f"buf.{k}": v for k, v in m.buffers().items()})

        xt, h0t, c0t = (torch.from_numpy(a).requires_grad_(True) for a in (x, h0, c0))
        tm.zero_grad()
        tout, (thn, tcn) = tm(xt, (h0t, c0t))
        pairs = ((tout, g_out), (thn, g_h), (tcn, g_c))
        loss = sum((a * torch.from_numpy(g)).sum() for a, g in pairs)
        loss.backward()
        got = {"out": tout, "h_n": thn, "c_n": tcn, "grad_x": xt.grad, "grad_h0": h0t.grad}
        got["grad_c0"] = c0t.grad
        got.update({f"grad.{k}": p.grad for k, p in tm.named_parameters()})
        got.update({f"buf.{k}": v for k, v in tm.named_buffers()})
        got = {k: v.detach().numpy() for k, v in got.items()}
        if set(got) != set(ref):
            return False, f"{mode}: arrays differ: {sorted(set(got) ^ set(ref))}"
        for k in ref:
            if got[k].shape != np.shape(ref[k]):
                return False, f"{mode} {k}: shape {got[k].shape} vs {np.shape(ref[k])}"
            err = scaled_error(got[k], ref[k], relative=True)
            if not np.isfinite(err):
                return False, f"{mode} {k}: non-finite"
            if err > worst_err:
                worst_name, worst_err = f"{mode} {k}", err
    ok = bool(worst_err <= tol)
    return ok, f"{len(ref)} arrays, worst {worst_name} {worst_err:.1e} (tol {tol:.0e})"


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------


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
            timings[name] = Timing(statistics.median(ts), min(ts), len(ts), numbers[name])
        if "rnncore" in times:
            paired = {n: paired_ratio(times["rnncore"], ts) for n, ts in times.items()}
    del runners  # release the backends' modules/sessions (and their thread pools) now

    ref_name = "torch" if "torch" in outputs else next(iter(outputs), None)
    agree, mismatches = [], []
    for name, got in outputs.items():
        if name == ref_name:
            continue
        if case.spec.norm is None:
            good, worst = compare(outputs[ref_name], got)
        else:
            good, worst = compare(outputs[ref_name], got, NORM_CHECK_TOL, relative=True)
        if good:
            agree.append(f"{name}~{ref_name} {worst.split()[-1]}")
        else:
            mismatches.append(f"MISMATCH {name} vs {ref_name}: {worst}")
    if mismatches or errors:
        ok = False
        check = "; ".join(mismatches + errors)
    elif agree:
        check = "ok (" + ", ".join(agree) + ")"
    else:
        check = "-"
    return Row(case, timings, notes, check, ok, paired)


def _fmt(v: float | None, spec: str, width: int) -> str:
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
                cols.append(f"{_fmt(med[n], '.3f', 10)}/{_fmt(mn[n], '.3f', 10)}")
            else:
                cols.append(_fmt(med[n], ".3f", 11))
        cols += [
            _fmt(ratio, ".2f", 6),
            f"{best or '-':>7}",
            _fmt(gflops, ".1f", 8),
            _fmt(pct, ".1f", 6),
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
        _write_records(path, self.records)


def _write_records(path: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Writes records as CSV; the columns are the union of their keys, in first-seen order."""
    if not records:
        return
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for rec in records:
            w.writerow({k: _csv_value(v) for k, v in rec.items()})


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


# --------------------------------------------------------------------------------------------
# The normalization section
# --------------------------------------------------------------------------------------------


def measure_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    target_s: float,
    repeats: int | None = None,
    min_repeats: int = 7,
    max_repeats: int = 15,
    warmup: int = 2,
    before: Callable[[], Any] | None = None,
    numbers: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Times several calls in alternation, for ratios that drift on a busy machine cannot bias.

    Each round times every call once (``number`` grouped calls, chosen per call as in
    ``measure``), the order rotating from round to round; the per-round times of two calls
    can then be paired (``paired_ratio``). Warm-up calls of each first.

    Args:
        fns: Calls by name.
        target_s: Wanted measuring time per call, in seconds.
        repeats: Fixed number of rounds, or None for adaptive (``target_s`` / the slowest
            call's time, clamped to ``[min_repeats, max_repeats]``).
        min_repeats: Lower bound of adaptive rounds.
        max_repeats: Upper bound of adaptive rounds.
        warmup: Untimed calls of each first (the last one estimates its time).
        before: Called before each timed group, followed (for calls shorter than
            ``WARM_CALL_BELOW_S``) by one untimed call of the function about to be timed, so
            that a hook that waits for idle threads (``quiesce``) leaves the library timed
            next with its own threads awake, as in ``measure``. Longer calls are not
            repeated: waking a pool costs microseconds, not a measurable part of them.
        numbers: If given, filled with each call's ``number``.

    Returns:
        For every name, the per-call time in seconds of each round.
    """
    names = list(fns)
    est = {}
    for n in names:
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            fns[n]()
            est[n] = max(time.perf_counter() - t0, 1e-7)
    if repeats is None:
        repeats = int(min(max(round(target_s / max(est.values())), min_repeats), max_repeats))
    number = {n: max(1, int(target_s / (repeats * est[n]))) for n in names}
    if numbers is not None:
        numbers.update(number)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn, k = fns[n], number[n]
            if before is not None:
                before()
                if est[n] < WARM_CALL_BELOW_S:
                    fn()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[n].append((time.perf_counter() - t0) / k)
    return times


def paired_ratio(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over rounds of ``times[r] / base[r]`` (see ``measure_interleaved``)."""
    return statistics.median(t / b for t, b in zip(times, base, strict=True))


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
    cls = getattr(rnncore, RncoreBackend._CLASSES[spec.kind])
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
        cols.append(_fmt(row.median_ms(self.labels[0]), ".3f", 9))
        for label in self.labels[1:]:
            ms, r = row.median_ms(label), row.ratio(label)
            cols.append(f"{'-':>16}" if ms is None else f"{ms:8.3f} ({r:4.2f}x)")
        print(" ".join(cols), flush=True)
        for note in row.notes:
            print(f"{'':<{self.width}}  note: {note}", flush=True)

    def target(self) -> None:
        """Prints whether the eval-mode overhead target is met at ``NORM_TARGET_SIZE``."""
        b, h = NORM_TARGET_SIZE
        what = f"eval-mode normalized forward <= {NORM_TARGET_RATIO:.2f}x plain at B={b} H={h}"
        rows = [r for r in self.rows if (r.B, r.H) == NORM_TARGET_SIZE]
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
        _write_records(path, records)


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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _stream_us(r: Mapping[str, Any]) -> float | None:
    ms = r.get("rnncore_ms_median")
    return None if ms is None else ms * 1e3 / r["T"]


def _train_vs_torch(r: Mapping[str, Any]) -> float | None:
    rc, tt = r.get("rnncore_ms_median"), r.get("torch_ms_median")
    return rc / tt if (rc is not None and tt) else None


#: The speed targets of the main table (issue 4): (description, which records it judges,
#: the value judged, the bound it must not exceed; a lower bound is written negated).
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
PLAIN = ("lstm", "gru", "rnn")
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


# --------------------------------------------------------------------------------------------
# float16 weights (half_weights()): batch 1, where reading the weights bounds the time
# --------------------------------------------------------------------------------------------

#: float16 rounding moves each weight by at most 2**-11 of itself; over the cases below the
#: outputs moved by 3e-4 to 6e-4 of their largest value (LSTM, GRU) and 1.3e-3 (the tanh RNN
#: at hidden 256, whose 100-step recurrence amplifies most). A half-weights copy computing
#: some other model (wrong rows, a lost tail) moves them by 1e-1 or more.
HALF_CHECK_TOL = 5e-3


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


def run_half_row(rc_backend: RncoreBackend, case: Case, seed: int, target_s: float, repeats,
                 peer_ms: float | None) -> HalfRow:  # fmt: skip
    """Times a case with the float32 module and its ``half_weights()`` copy, in alternating
    rounds, on the main table's weights and inputs."""
    rc_backend.set_threads(case.threads)
    data = make_data(case, seed)
    params = rc_backend.init_params(case, seed)
    module = rc_backend._make(case)
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
        Timing(statistics.median(t32), min(t32), len(t32), 1),
        Timing(statistics.median(t16), min(t16), len(t16), 1),
        paired_ratio(t32, t16),
        error,
        peer_ms,
    )


def _best_peer_ms(records: Sequence[Mapping[str, Any]], case: Case) -> float | None:
    for r in records:
        if r["case"] == case.name and r["threads"] == case.threads:
            peers = [r.get(f"{n}_ms_median") for n in ("torch", "ort")]
            peers = [p for p in peers if p is not None]
            return min(peers) if peers else None
    return None


def run_half_section(args: argparse.Namespace, backends: Sequence[Backend], records) -> tuple:
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
            f"{row.speedup:>7.2f}x {_fmt(vs, '.2f', 8)} {row.error:>8.1e}"
            + ("" if row.ok else "  MISMATCH")
        )
        out.append({
            "case": case.name, "cell": case.cell, "mode": case.mode, "T": case.T, "B": case.B,
            "H": case.H, "threads": case.threads, "f32_ms_median": row.f32.median * 1e3,
            "f16_ms_median": row.f16.median * 1e3, "speedup": row.speedup,
            "f16_over_best_peer": vs, "error": row.error,
        })  # fmt: skip
    return len(rows), sum(not r.ok for r in rows), out


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
    cores = _usable_cores()
    print(f"machine: {_cpu_name()}, {cores} usable cores, {platform.platform()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    for b in backends:
        print(f"{b.name}: {b.version() if b.available else 'SKIPPED (' + b.note + ')'}")
    rc = next((b for b in backends if b.name == "rnncore" and b.available), None)
    if rc is not None and not hasattr(rc.mod, "set_num_threads"):
        print("note: rnncore.set_num_threads missing: rnncore threads n/a (its default is used)")
    if max(args.threads) > cores:
        print(f"warning: {max(args.threads)} threads requested, {cores} cores usable")

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
        report.write_csv(args.csv)
        print(f"CSV written to {args.csv}")
        if norm_report.rows:
            root, ext = os.path.splitext(args.csv)
            norm_report.write_csv(f"{root}_norms{ext or '.csv'}")
            print(f"normalization cost CSV written to {root}_norms{ext or '.csv'}")
        if half_records:
            root, ext = os.path.splitext(args.csv)
            _write_records(f"{root}_half{ext or '.csv'}", half_records)
            print(f"float16-weights CSV written to {root}_half{ext or '.csv'}")
    return 1 if failures else 0


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
        norm_report.target()
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
        "over time,\nautograd; torch_ops_lstm in bench.py); check: error relative to each "
        f"array's largest value <= {NORM_CHECK_TOL:g}"
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


if __name__ == "__main__":
    sys.exit(main())
