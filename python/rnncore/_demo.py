"""``python -m rnncore demo``: train small recurrent models on the CPU, compare normalizations.

Every model is one recurrent layer (``rnncore.RNN``/``LSTM``/``GRU``, plain, layer-normalized
or batch-normalized) followed by an ``rnncore.Linear`` read-out of its final hidden state,
trained with ``rnncore.optim.Adam``. All models start from the same seed and see the same
stream of training batches, so the only difference between two rows of the table is the
cell (and, for the ``-clip`` variants, gradient-norm clipping).

Tasks:
    adding   The adding problem (Hochreiter & Schmidhuber 1997): each step carries a
             (value, marker) pair, values uniform in [0, 1), exactly two markers set to 1,
             one in each half of the sequence; the target is the sum of the two marked
             values. Always predicting 1.0 scores a mean squared error of 1/6 (the
             variance of the sum); remembering only one of the two values scores 1/12.
             Needs no download.
    digits   Pixel-by-pixel classification of scikit-learn's bundled 8x8 digits: 64 steps
             of one pixel each (scaled to [0, 1]), optionally in a fixed permuted order;
             the small cousin of sequential MNIST (Cooijmans et al. 2016). Needs
             scikit-learn.

The table reports, per model: the training loss at the end, the held-out loss (eval mode,
so batch normalization uses its running statistics), the number of updates until the
held-out metric first reached the target, the wall time of the training updates, and
inference throughput (sequences per second, eval mode, model and head).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np

import rnncore

PROG = "python -m rnncore demo"

# Target of the adding problem: the held-out MSE must fall below 0.01, i.e. an RMS error
# of 0.1 on sums that range over [0, 2). That is 6% of the trivial baseline (1/6, always
# predicting the mean 1.0) and 12% of what a model scores that remembers only one of the
# two marked values and guesses the other's mean (1/12), so a model below it really
# stores and adds both values across the whole sequence.
ADDING_TARGET_MSE = 0.01
# Target of the digits task: 90% held-out accuracy, far from chance (10%) and from what
# the mean pixel intensity alone allows (a linear read-out of a few global features).
DIGITS_TARGET_ACCURACY = 0.90
# One fixed pixel order for --permute, independent of --seed, so that runs with different
# seeds solve the same permuted task (as permuted MNIST uses one permutation).
PERMUTATION_SEED = 2016
# Gradient-norm bound of the "-clip" variants (Pascanu et al. 2013 use values near 1).
DEFAULT_CLIP = 1.0

_CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_NORM_PREFIXES = {"": None, "ln-": "layer", "bn-": "batch", "bnx-": "batch_input"}
_NORM_WORDS = {
    None: "",
    "layer": "layer norm",
    "batch": "recurrent batch norm",
    "batch_input": "input batch norm",
}
DEFAULT_MODELS = ("lstm", "ln-lstm", "bn-lstm", "rnn", "rnn-clip")

# Settings per task, full run and --quick. Measured on 2 cores (see the README section):
# the full adding run takes a few minutes, --quick well under 30 s.
_DEFAULTS = {
    ("adding", False): {"steps": 3000, "hidden": 64, "length": 100, "batch": 64, "lr": 1e-3},
    ("adding", True): {"steps": 1500, "hidden": 32, "length": 50, "batch": 32, "lr": 2e-3},
    ("digits", False): {"steps": 3000, "hidden": 64, "length": 64, "batch": 32, "lr": 2e-3},
    ("digits", True): {"steps": 300, "hidden": 32, "length": 64, "batch": 32, "lr": 2e-3},
}


class DemoError(Exception):
    """A problem with the demo's inputs or environment, reported without a traceback."""


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: a recurrent cell, its normalization, optional clipping.

    Args:
        name: the name used on the command line and in the table (e.g. ``ln-lstm``).
        cell: ``"RNN"``, ``"LSTM"`` or ``"GRU"`` (the rnncore class name).
        norm: the ``norm`` argument of the cell.
        clip: the gradient-norm bound, or None for no clipping.
    """

    name: str
    cell: str
    norm: str | None
    clip: float | None

    def describe(self) -> str:
        """A few words for the legend: cell, normalization, clipping.

        Returns:
            e.g. ``"LSTM, layer norm"`` or ``"RNN (tanh), clip 1"``.
        """
        cell = "RNN (tanh)" if self.cell == "RNN" else self.cell
        parts = [cell] + ([_NORM_WORDS[self.norm]] if self.norm else [])
        if self.clip is not None:
            parts.append(f"clip {self.clip:g}")
        return ", ".join(parts)


def model_names() -> list[str]:
    """Every model name ``--models`` accepts (each also with a ``-clip`` suffix).

    Returns:
        Names such as ``lstm``, ``ln-lstm``, ``bn-lstm``, ``bnx-lstm``, ``rnn``, ``gru``.
    """
    return [prefix + cell for cell in _CELLS for prefix in _NORM_PREFIXES]


def parse_models(text: str, clip: float = DEFAULT_CLIP) -> list[ModelSpec]:
    """Parses a comma-separated list of model names.

    A name is ``[ln-|bn-|bnx-]{rnn,lstm,gru}[-clip]``: ``ln-`` layer normalization,
    ``bn-`` recurrent batch normalization, ``bnx-`` batch normalization of the input term
    only, ``-clip`` gradient-norm clipping at ``clip``.

    Args:
        text: e.g. ``"lstm,ln-lstm,rnn-clip"``.
        clip: the norm bound of the ``-clip`` variants.

    Returns:
        The models in the given order.

    Raises:
        ValueError: an unknown or repeated name, or an empty list.
    """
    names = [part.strip().lower() for part in text.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"expected a comma-separated list of model names, got {text!r}")
    specs = []
    for name in names:
        base, clipped = (name[: -len("-clip")], True) if name.endswith("-clip") else (name, False)
        for prefix, norm in _NORM_PREFIXES.items():
            cell = base[len(prefix) :]
            if prefix and not base.startswith(prefix):
                continue
            if cell in _CELLS:
                specs.append(ModelSpec(name, _CELLS[cell], norm, clip if clipped else None))
                break
        else:
            raise ValueError(
                f"unknown model {name!r}; choose from {', '.join(model_names())} "
                "(each also with a -clip suffix)"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"model(s) listed twice: {', '.join(repeated)}")
    return specs


class _Model:
    """A recurrent layer and a linear read-out of its last hidden state."""

    def __init__(
        self,
        spec: ModelSpec,
        input_size: int,
        hidden: int,
        outputs: int,
        seed: int,
        dtype: str = "float32",
    ):
        cls = getattr(rnncore, spec.cell)
        self.spec = spec
        self.lstm = spec.cell == "LSTM"
        self.rec = cls(input_size, hidden, norm=spec.norm, dtype=dtype, seed=seed)
        self.head = rnncore.Linear(hidden, outputs, dtype=dtype, seed=seed + 1)
        self.modules = [self.rec, self.head]

    def num_parameters(self) -> int:
        return self.rec.num_parameters() + self.head.num_parameters()

    def _last_hidden(self, h_n: Any) -> np.ndarray:
        return (h_n[0] if self.lstm else h_n)[-1]  # (B, H): the last layer's final state

    def train_step(self, x: np.ndarray, y: np.ndarray, loss_fn: Callable) -> float:
        """Forward, loss, backward (gradients added into the modules' grads)."""
        _, h_n, tape = self.rec.forward_train(x)
        pred, head_tape = self.head.forward_train(self._last_hidden(h_n))
        loss, grad = loss_fn(pred, y)
        grad_h = self.head.backward(head_tape, grad)[None]  # (1, B, H)
        self.rec.backward(tape, None, (grad_h, None) if self.lstm else grad_h)
        return loss

    def predict(self, x: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Eval-mode outputs for ``x`` ``(T, N, D)``, in chunks of sequences."""
        for m in self.modules:
            m.eval()
        try:
            parts = []
            for start in range(0, x.shape[1], chunk):
                _, h_n = self.rec(x[:, start : start + chunk])
                parts.append(self.head(self._last_hidden(h_n)))
            return np.concatenate(parts)
        finally:
            for m in self.modules:
                m.train()

    def recalibrated(self, x: np.ndarray) -> _Model:
        """A copy whose batch-norm running statistics are re-estimated on ``x``.

        Training keeps exponential running averages (momentum 0.1) of statistics that
        drift as the weights change. The copy takes the final weights and sets its
        running statistics to the batch statistics of ``x`` (one training-mode pass with
        momentum 1), the population statistics of the final model. The head is shared.
        """
        rec = self.rec
        options = {k: rec.norm_options[k] for k in ("ln_eps", "bn_eps")}
        probe = type(rec)(
            rec.input_size, rec.hidden_size, norm=rec.norm, dtype=rec.dtype,
            bn_momentum=1.0, **options,
        )  # fmt: skip
        probe.load_state_dict(rec.state_dict())
        probe(x)  # training mode: sets the running statistics to those of x
        copy = object.__new__(_Model)
        copy.spec, copy.lstm, copy.rec, copy.head = self.spec, self.lstm, probe, self.head
        copy.modules = [probe, self.head]
        return copy


# ------------------------------------------------------------------------------ tasks
class _AddingTask:
    """The adding problem; see the module docstring."""

    name = "adding"
    input_size = 2
    outputs = 1
    metric = "loss"
    metric_label = "test MSE"

    def __init__(self, length: int, seed: int, test_size: int = 1000):
        self.length = length
        self.x_test, self.y_test = self._sample(np.random.default_rng([seed, 1]), test_size)
        self.baseline = rnncore.mse_loss(np.ones_like(self.y_test), self.y_test)[0]
        self.target = ADDING_TARGET_MSE
        self.target_label = f"MSE<{ADDING_TARGET_MSE:g}"
        self.calibration_size = 1000

    def title(self) -> str:
        return f"the adding problem (Hochreiter & Schmidhuber 1997), T={self.length}"

    def describe(self) -> list[str]:
        return [
            "inputs: (value, marker) pairs, values uniform in [0, 1), two markers (one per half);",
            "target: the sum of the two marked values; loss: mean squared error",
            f"baseline (always predict 1.0): test MSE {self.baseline:.3f}; "
            f"target: test MSE < {self.target:g}",
        ]

    def _sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        T = self.length
        x = np.zeros((T, batch, 2), dtype=np.float32)
        x[:, :, 0] = rng.random((T, batch), dtype=np.float32)
        cols = np.arange(batch)
        first = rng.integers(0, T // 2, size=batch)
        second = rng.integers(T // 2, T, size=batch)
        x[first, cols, 1] = 1.0
        x[second, cols, 1] = 1.0
        y = (x[first, cols, 0] + x[second, cols, 0])[:, None]
        return x, y

    def batches(self, batch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, 2])
        while True:
            yield self._sample(rng, batch)

    def loss(self, pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return rnncore.mse_loss(pred, y)

    def evaluate(self, model: _Model) -> dict[str, float]:
        return {"loss": rnncore.mse_loss(model.predict(self.x_test), self.y_test)[0]}

    def calibration_inputs(self, seed: int) -> np.ndarray:
        """Fresh training-distribution sequences (not the test set) for batch statistics."""
        return self._sample(np.random.default_rng([seed, 4]), self.calibration_size)[0]

    def reached(self, metrics: dict[str, float]) -> bool:
        return metrics["loss"] < self.target


class _DigitsTask:
    """Pixel-by-pixel 8x8 digits; see the module docstring."""

    name = "digits"
    input_size = 1
    outputs = 10
    length = 64
    metric = "accuracy"
    metric_label = "test acc"

    def __init__(self, seed: int, permute: bool, test_fraction: float = 0.2):
        try:
            from sklearn.datasets import load_digits  # noqa: PLC0415 - optional dependency
        except ImportError as e:
            raise DemoError(
                "--task digits needs scikit-learn (for its bundled 8x8 digits): "
                "pip install scikit-learn"
            ) from e
        digits = load_digits()
        pixels = np.asarray(digits.data, dtype=np.float32) / 16.0  # (N, 64), in [0, 1]
        self.permute = permute
        if permute:
            pixels = pixels[:, np.random.default_rng(PERMUTATION_SEED).permutation(64)]
        labels = np.asarray(digits.target, dtype=np.int64)
        order = np.random.default_rng([seed, 3]).permutation(len(labels))
        n_test = int(round(test_fraction * len(labels)))
        test, train = order[:n_test], order[n_test:]
        self.x_train = np.ascontiguousarray(pixels[train].T[:, :, None])  # (64, N, 1)
        self.y_train = labels[train]
        self.x_test = np.ascontiguousarray(pixels[test].T[:, :, None])
        self.y_test = labels[test]
        counts = np.bincount(self.y_train, minlength=10)
        self.baseline = counts.max() / counts.sum()
        self.target = DIGITS_TARGET_ACCURACY
        self.target_label = f"acc>={DIGITS_TARGET_ACCURACY:.0%}"
        self.calibration_size = self.y_train.size

    def title(self) -> str:
        order = "permuted" if self.permute else "row-major"
        return f"pixel-by-pixel 8x8 digits (scikit-learn), T=64, {order} pixel order"

    def describe(self) -> list[str]:
        return [
            f"{self.y_train.size} training and {self.y_test.size} test images, one pixel "
            "(scaled to [0, 1]) per step;",
            "loss: softmax cross-entropy over the 10 classes, from the final hidden state",
            f"baseline (most frequent class): {self.baseline:.1%} accuracy; "
            f"target: test accuracy >= {self.target:.0%}",
        ]

    def batches(self, batch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, 2])
        n = self.y_train.size
        batch = min(batch, n)
        while True:  # epochs of shuffled mini-batches; a short tail batch is dropped
            order = rng.permutation(n)
            for start in range(0, n - batch + 1, batch):
                idx = order[start : start + batch]
                yield self.x_train[:, idx], self.y_train[idx]

    def loss(self, logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return rnncore.softmax_cross_entropy(logits, y)

    def evaluate(self, model: _Model) -> dict[str, float]:
        logits = model.predict(self.x_test)
        loss = rnncore.softmax_cross_entropy(logits, self.y_test)[0]
        return {"loss": loss, "accuracy": float(np.mean(logits.argmax(-1) == self.y_test))}

    def reached(self, metrics: dict[str, float]) -> bool:
        return metrics["accuracy"] >= self.target

    def calibration_inputs(self, seed: int) -> np.ndarray:
        """The training images, for batch statistics."""
        return self.x_train


# --------------------------------------------------------------------------- progress
class Progress:
    """A small progress bar on a text stream (stderr by default).

    On a terminal it redraws one line in place, at most ``tty_interval`` seconds apart.
    Elsewhere (a log file, CI) it writes a plain line at most every ``log_interval``
    seconds, and always one at the end.

    Args:
        total: the number of steps.
        label: the text at the start of the line.
        stream: where to write; ``sys.stderr`` when None.
        enabled: when False, writes nothing.
        tty_interval: seconds between redraws on a terminal.
        log_interval: seconds between lines elsewhere.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        tty_interval: float = 0.1,
        log_interval: float = 10.0,
    ):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = tty_interval if self.tty else log_interval
        self.start = time.perf_counter()
        self.last = self.start
        self._width = 0

    def _line(self, step: int, info: str) -> str:
        frac = min(step / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        text = f"{self.label:<14}"
        if self.tty:
            fill = int(round(24 * frac))
            text += f" [{'#' * fill}{'.' * (24 - fill)}]"
        text += f" {frac:4.0%} {step:>{len(str(self.total))}}/{self.total}"
        if info:
            text += f"  {info}"
        text += f"  {elapsed:5.1f}s"
        if 0 < step < self.total:
            text += f" (eta {elapsed / step * (self.total - step):.0f}s)"
        return text

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            pad = " " * max(self._width - len(text), 0)
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def due(self) -> bool:
        """Whether ``update`` would write now (lets callers skip formatting their info).

        Returns:
            True when enabled and the redraw interval has passed.
        """
        return self.enabled and time.perf_counter() - self.last >= self.interval

    def update(self, step: int, info: str = "") -> None:
        """Reports that ``step`` of ``total`` steps are done; writes only when ``due()``.

        Args:
            step: steps done so far.
            info: short text to show (e.g. the current loss).
        """
        if not self.due():
            return
        self.last = time.perf_counter()
        self._write(self._line(step, info), final=False)

    def close(self, step: int, info: str = "") -> None:
        """Writes the final state and ends the line.

        Args:
            step: steps done (``total`` unless stopped early).
            info: short text to show.
        """
        if self.enabled:
            self._write(self._line(step, info), final=True)


# --------------------------------------------------------------------------- training
@dataclass
class RunResult:
    """What one model's training produced.

    Args:
        spec: the model.
        parameters: the number of trainable scalars (cell and head).
        steps_done: updates made (fewer than asked if the loss became non-finite).
        train_losses: the training loss of every update.
        eval_steps: the updates after which the held-out set was evaluated.
        eval_metrics: the held-out metrics at those updates.
        steps_to_target: the first evaluated update that met the target, or None.
        train_seconds: wall time of the updates (evaluations excluded).
        throughput: eval-mode inference throughput, sequences per second.
        clipped: how many updates had their gradient norm clipped.
        recalibrated: for batch-normalized models, the final held-out metrics with the
            running statistics re-estimated on training data (see ``_Model.recalibrated``).
        diverged: whether training stopped on a non-finite loss.
        model: the trained model (cell and head).
    """

    spec: ModelSpec
    parameters: int
    steps_done: int = 0
    train_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    steps_to_target: int | None = None
    train_seconds: float = 0.0
    throughput: float = float("nan")
    clipped: int = 0
    recalibrated: dict[str, float] = field(default_factory=dict)
    diverged: bool = False
    model: _Model | None = field(default=None, repr=False)

    @property
    def final(self) -> dict[str, float]:
        """The last held-out metrics (empty before any evaluation)."""
        return self.eval_metrics[-1] if self.eval_metrics else {}

    def final_train_loss(self) -> float:
        """The mean training loss over the last 5% of updates (at least one).

        Returns:
            The mean, or NaN when no update was made.
        """
        if not self.train_losses:
            return float("nan")
        k = max(1, len(self.train_losses) // 20)
        return float(np.mean(self.train_losses[-k:]))


def measure_throughput(model: _Model, x: np.ndarray, min_seconds: float) -> float:
    """Eval-mode sequences per second of the model and its head on ``x`` ``(T, B, D)``.

    Args:
        model: the trained model.
        x: one batch of inputs, time-major.
        min_seconds: keep repeating the batch until at least this much time has passed.

    Returns:
        Sequences per second of the median call (one warm-up call excluded, at least
        three timed calls): the median ignores the calls slowed down by other processes.
    """
    model.predict(x, chunk=x.shape[1])  # warm-up: first-touch of buffers, thread start
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        model.predict(x, chunk=x.shape[1])
        times.append(time.perf_counter() - t0)
    return x.shape[1] / float(np.median(times))


def train_model(
    spec: ModelSpec,
    task: _AddingTask | _DigitsTask,
    *,
    steps: int,
    hidden: int,
    batch: int,
    lr: float,
    seed: int,
    eval_every: int,
    throughput_seconds: float,
    progress: bool = True,
) -> RunResult:
    """Trains one model on the task and measures it.

    Args:
        spec: which model.
        task: the task (its data, loss, held-out evaluation and target).
        steps: the number of Adam updates.
        hidden: the hidden size of the recurrent cell.
        batch: sequences per update.
        lr: Adam's learning rate.
        seed: seeds the parameters and the training stream (identical for every model).
        eval_every: evaluate on the held-out set every this many updates (and at the end).
        throughput_seconds: minimum time to measure inference throughput.
        progress: whether to show a progress bar on stderr.

    Returns:
        The losses, held-out metrics, timings and throughput.
    """
    model = _Model(spec, task.input_size, hidden, task.outputs, seed)
    optimizer = rnncore.optim.Adam(model.modules, lr=lr)
    result = RunResult(spec, model.num_parameters(), model=model)
    stream = task.batches(batch, seed)
    bar = Progress(steps, spec.name, enabled=progress)
    info = ""
    for step in range(1, steps + 1):
        x, y = next(stream)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = model.train_step(x, y, task.loss)
        if not math.isfinite(loss):
            result.train_seconds += time.perf_counter() - start
            result.diverged = True
            break
        if spec.clip is not None:
            norm = rnncore.clip_grad_norm(model.modules, spec.clip)
            result.clipped += norm > spec.clip
        optimizer.step()
        result.train_seconds += time.perf_counter() - start
        result.train_losses.append(loss)
        result.steps_done = step
        if step % eval_every == 0 or step == steps:
            metrics = task.evaluate(model)
            result.eval_steps.append(step)
            result.eval_metrics.append(metrics)
            if result.steps_to_target is None and task.reached(metrics):
                result.steps_to_target = step
            info = f"{task.metric_label} {_format_metric(task, metrics)}"
        if bar.due():
            bar.update(step, f"loss {result.final_train_loss():.4f}  {info}".rstrip())
    if result.diverged:
        bar.close(result.steps_done, f"loss non-finite at update {result.steps_done + 1}")
        return result
    bar.close(result.steps_done, f"loss {result.final_train_loss():.4f}  {info}".rstrip())
    x_bench = task.x_test[:, :256]
    result.throughput = measure_throughput(model, x_bench, throughput_seconds)
    if spec.norm in ("batch", "batch_input"):
        copy = model.recalibrated(task.calibration_inputs(seed))
        result.recalibrated = task.evaluate(copy)
    return result


# ----------------------------------------------------------------------------- output
def _format_metric(task: Any, metrics: dict[str, float]) -> str:
    if not metrics:
        return "-"
    value = metrics[task.metric]
    return f"{value:.1%}" if task.metric == "accuracy" else f"{value:.4f}"


def format_table(results: Sequence[RunResult], task: Any, steps: int) -> str:
    """The results as an aligned plain-text table.

    Args:
        results: one per model, in order.
        task: the task (for its metric and target).
        steps: the number of updates asked for.

    Returns:
        The table, lines joined with newlines (no trailing newline).
    """
    headers = ["model", "params", f"train loss@{steps}", "test loss"]
    if task.metric == "accuracy":
        headers.append("test acc")
    headers += [f"steps to {task.target_label}", "train s", "infer seq/s"]
    rows = []
    for r in results:
        final = r.final
        row = [r.spec.name, f"{r.parameters:,}"]
        if r.diverged:
            row += [f"diverged@{r.steps_done + 1}", "-"]
            if task.metric == "accuracy":
                row.append("-")
        else:
            row += [f"{r.final_train_loss():.4f}", f"{final.get('loss', float('nan')):.4f}"]
            if task.metric == "accuracy":
                row.append(_format_metric(task, final))
        row.append(str(r.steps_to_target) if r.steps_to_target is not None else f">{steps}")
        row.append(f"{r.train_seconds:.{3 if r.train_seconds < 1 else 1}f}")
        row.append("-" if math.isnan(r.throughput) else f"{r.throughput:,.0f}")
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(headers))
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def save_plot(results: Sequence[RunResult], task: Any, path: str) -> None:
    """Saves the learning curves (held-out loss, and accuracy for digits) to ``path``.

    Thick lines: held-out loss in eval mode at each evaluation; thin lines: the training
    loss, a moving average over about 2% of the updates.

    Args:
        results: one per model.
        task: the task (baseline, target, metric).
        path: the image file; its extension picks the format.
    """
    import matplotlib  # noqa: PLC0415 - optional dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    with_acc = task.metric == "accuracy"
    fig, axes = plt.subplots(1, 2 if with_acc else 1, figsize=(11 if with_acc else 7, 4.5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for i, r in enumerate(results):
        color = f"C{i}"
        losses = np.asarray(r.train_losses)
        if losses.size:
            w = max(1, losses.size // 50)
            smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
            ax.plot(np.arange(w, losses.size + 1), smooth, color=color, lw=0.8, alpha=0.45)
        label = f"{r.spec.name} ({r.spec.describe()})"
        ax.plot(r.eval_steps, [m["loss"] for m in r.eval_metrics], color=color, lw=2, label=label)
    if task.metric == "loss":
        ax.axhline(task.baseline, color="gray", ls="--", lw=1, label="predict 1.0 (baseline)")
        ax.axhline(task.target, color="black", ls=":", lw=1, label=f"target {task.target:g}")
        ax.set_ylabel("mean squared error")
    else:
        ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_title(f"{task.name}: held-out (thick, eval mode) and training loss (thin)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if with_acc:
        ax = axes[1]
        for i, r in enumerate(results):
            ax.plot(
                r.eval_steps,
                [m["accuracy"] for m in r.eval_metrics],
                color=f"C{i}",
                lw=2,
                label=r.spec.name,
            )
        ax.axhline(task.target, color="black", ls=":", lw=1, label=f"target {task.target:.0%}")
        ax.set_xlabel("update")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{task.name}: held-out accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------- CLI
def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _defaults_help(key: str, tasks: tuple[str, ...] = ("adding", "digits")) -> str:
    """``default: ...; --quick: ...`` for an option, per task where the tasks differ."""

    def text(quick: bool) -> str:
        values = [_DEFAULTS[(t, quick)][key] for t in tasks]
        if len(set(values)) == 1:
            return f"{values[0]:g}"
        return ", ".join(f"{t} {v:g}" for t, v in zip(tasks, values))

    return f"default: {text(False)}; with --quick: {text(True)}"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of the demo.

    Returns:
        An ``argparse.ArgumentParser`` whose ``--help`` describes every option.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Train the same small recurrent model as LSTM, layer-norm LSTM and batch-norm "
            "LSTM (and an Elman RNN with and without gradient clipping) on the CPU with "
            "rnncore, and print a table: loss after N updates, updates to reach a target, "
            "training wall time and inference throughput. Every model is seeded identically "
            "and sees the same stream of batches."
        ),
        epilog=(
            "Tasks: 'adding' (default, no download) is the adding problem of Hochreiter & "
            "Schmidhuber: (value, marker) pairs, target = sum of the two marked values; "
            "always predicting 1.0 scores MSE 1/6 and the target is test MSE < "
            f"{ADDING_TARGET_MSE:g}. 'digits' classifies scikit-learn's 8x8 digits "
            "pixel by pixel (T=64; needs scikit-learn); the target is "
            f"{DIGITS_TARGET_ACCURACY:.0%} test accuracy. Model names: "
            f"{', '.join(model_names())}; ln- = layer norm, bn- = recurrent batch norm, "
            "bnx- = batch norm of the input term only; add -clip for gradient-norm "
            "clipping (e.g. lstm-clip). Progress goes to stderr, the table to stdout."
        ),
    )
    parser.add_argument(
        "--task", choices=("adding", "digits"), default="adding", help="the task (default: adding)"
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        metavar="LIST",
        help=f"comma-separated models to train (default: {','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--steps",
        type=_int_at_least(1),
        metavar="N",
        help=f"Adam updates per model ({_defaults_help('steps')})",
    )
    parser.add_argument(
        "--length",
        type=_int_at_least(2),
        metavar="T",
        help=f"sequence length of the adding problem ({_defaults_help('length', ('adding',))});"
        " digits always have 64 steps",
    )
    parser.add_argument(
        "--hidden",
        type=_int_at_least(1),
        metavar="H",
        help=f"hidden size ({_defaults_help('hidden')})",
    )
    parser.add_argument(
        "--batch",
        type=_int_at_least(2),
        metavar="B",
        help=f"sequences per update, at least 2 for batch norm ({_defaults_help('batch')})",
    )
    parser.add_argument(
        "--lr", type=_positive_float, help=f"Adam learning rate ({_defaults_help('lr')})"
    )
    parser.add_argument(
        "--clip",
        type=_positive_float,
        default=DEFAULT_CLIP,
        metavar="NORM",
        help=f"gradient-norm bound of the -clip models (default: {DEFAULT_CLIP:g})",
    )
    parser.add_argument(
        "--eval-every",
        type=_int_at_least(1),
        metavar="K",
        help="evaluate on the held-out set every K updates; 'steps to target' is "
        "measured at these points (default: steps/60, rounded to a multiple of 10)",
    )
    parser.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=0,
        help="seed of the parameters and the data (default: 0)",
    )
    parser.add_argument(
        "--threads",
        type=_int_at_least(1),
        metavar="N",
        help="compute threads, via rnncore.set_num_threads (default: rnncore's default, "
        f"now {rnncore.get_num_threads()})",
    )
    parser.add_argument(
        "--permute", action="store_true", help="digits: feed the pixels in one fixed random order"
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="save learning curves to this image (needs matplotlib)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small settings that finish in seconds (CI); explicit options still win",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")
    return parser


def _resolve(args: argparse.Namespace) -> None:
    """Fills the options left unset from the task's defaults; checks combinations."""
    if args.task == "digits" and args.length not in (None, 64):
        raise DemoError("--length applies to the adding task only (digits have 64 steps)")
    if args.permute and args.task != "digits":
        raise DemoError("--permute applies to --task digits only")
    for key, value in _DEFAULTS[(args.task, args.quick)].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.eval_every is None:
        args.eval_every = max(10, int(round(args.steps / 60, -1)))
    try:
        args.specs = parse_models(args.models, args.clip)
    except ValueError as e:
        raise DemoError(f"--models: {e}") from None
    if args.plot is not None:
        _check_plot_target(args.plot)


def _check_plot_target(path: str) -> None:
    """Fails early (before training) if the plot cannot be written."""
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise DemoError("--plot needs matplotlib: pip install matplotlib") from None
    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in formats:
        raise DemoError(
            f"--plot: cannot tell the image format of {path!r}; use an extension among "
            f"{', '.join(sorted(formats))} (e.g. curves.png)"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DemoError(f"--plot: the folder {folder!r} does not exist")


def _header(args: argparse.Namespace, task: Any) -> list[str]:
    lines = [f"rnncore {rnncore.__version__} demo: {task.title()}"]
    lines += [f"  {text}" for text in task.describe()]
    lines.append(
        f"  hidden {args.hidden}, batch {args.batch}, {args.steps} updates of Adam "
        f"(lr {args.lr:g}), seed {args.seed}, {rnncore.get_num_threads()} thread(s);"
    )
    lines.append(f"  held-out evaluation every {args.eval_every} updates")
    return lines


def _footer(results: Sequence[RunResult], task: Any, args: argparse.Namespace) -> list[str]:
    lines = [
        f"train loss@{args.steps}: mean training loss over the last 5% of updates; test loss: "
        "held-out, eval mode.",
        f"steps to {task.target_label}: first held-out evaluation meeting the target "
        f"(every {args.eval_every} updates); >{args.steps}: not reached.",
        "train s: wall time of the updates (evaluations excluded); infer seq/s: eval-mode "
        "forward of cell and head, batch 256, median of repeated calls.",
    ]
    for r in results:
        if r.spec.clip is not None and r.steps_done:
            lines.append(
                f"{r.spec.name}: gradient norm clipped to {r.spec.clip:g} in "
                f"{r.clipped / r.steps_done:.0%} of updates."
            )
        if r.recalibrated:
            again = r.recalibrated
            text = f"test loss {again['loss']:.4f}"
            if task.metric == "accuracy":
                text += f", test acc {_format_metric(task, again)}"
            lines.append(
                f"{r.spec.name}: held-out with the batch statistics re-estimated on "
                f"{task.calibration_size} training sequences after training, instead of the "
                f"running averages kept during training: {text} (table: {r.final['loss']:.4f})."
            )
        if r.diverged:
            lines.append(f"{r.spec.name}: the loss became non-finite; training stopped.")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Runs the demo: trains the models, prints the table, optionally saves the plot.

    Args:
        argv: the command-line arguments after ``demo`` (``sys.argv[1:]`` style); None
            reads ``sys.argv[1:]``.

    Returns:
        0 on success; 2 for bad options or a missing optional dependency (scikit-learn
        for ``--task digits``, matplotlib for ``--plot``), with a message on stderr;
        1 when the plot cannot be written after training (the table is printed);
        130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    previous_threads = rnncore.get_num_threads()
    try:
        _resolve(args)
        if args.threads is not None:
            rnncore.set_num_threads(args.threads)
        if args.task == "adding":
            task: Any = _AddingTask(args.length, args.seed)
        else:
            task = _DigitsTask(args.seed, args.permute)
        print("\n".join(_header(args, task)), flush=True)
        quick_bench = args.quick or args.steps < 500
        results = [
            train_model(
                spec,
                task,
                steps=args.steps,
                hidden=args.hidden,
                batch=args.batch,
                lr=args.lr,
                seed=args.seed,
                eval_every=args.eval_every,
                throughput_seconds=0.2 if quick_bench else 1.0,
                progress=not args.no_progress,
            )
            for spec in args.specs
        ]
        print()
        print(format_table(results, task, args.steps))
        print()
        for note in _footer(results, task, args):
            print(textwrap.fill(note, width=100, subsequent_indent="  ", break_on_hyphens=False))
        if args.plot is not None:
            try:
                save_plot(results, task, args.plot)
            except OSError as e:
                print(f"{PROG}: error: could not save the plot: {e}", file=sys.stderr)
                return 1
            print(f"learning curves saved to {args.plot}")
        return 0
    except DemoError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        rnncore.set_num_threads(previous_threads)
