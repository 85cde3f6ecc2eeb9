"""Training one model on a task: the update loop, held-out evaluations, throughput."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

import rnncore as rc

from .models import Model, ModelSpec
from .progress import Progress
from .tasks import AddingTask, DigitsTask, format_metric


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
            running statistics re-estimated on training data (see ``Model.recalibrated``).
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
    model: Model | None = field(default=None, repr=False)

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


def measure_throughput(model: Model, x: np.ndarray, min_seconds: float) -> float:
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
    task: AddingTask | DigitsTask,
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
    model = Model(spec, task.input_size, hidden, task.outputs, seed)
    optimizer = rc.optim.Adam(model.modules, lr=lr)
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
            norm = rc.clip_grad_norm(model.modules, spec.clip)
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
            info = f"{task.metric_label} {format_metric(task, metrics)}"
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
