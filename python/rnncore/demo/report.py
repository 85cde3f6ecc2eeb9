"""What the demo prints and draws: the header, the results table, its notes, the plot."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import rnncore as rc

from .errors import DemoError
from .tasks import format_metric
from .training import RunResult


def header_lines(args: argparse.Namespace, task: Any) -> list[str]:
    """The lines printed before training: the task and the settings.

    Args:
        args: the resolved options (hidden, batch, steps, lr, seed, eval_every).
        task: the task (its title and description).

    Returns:
        The lines, without newlines.
    """
    lines = [f"rnncore {rc.__version__} demo: {task.title()}"]
    lines += [f"  {text}" for text in task.describe()]
    lines.append(
        f"  hidden {args.hidden}, batch {args.batch}, {args.steps} updates of Adam "
        f"(lr {args.lr:g}), seed {args.seed}, {rc.get_num_threads()} thread(s);"
    )
    lines.append(f"  held-out evaluation every {args.eval_every} updates")
    return lines


def footer_lines(results: Sequence[RunResult], task: Any, args: argparse.Namespace) -> list[str]:
    """The notes printed under the table: what the columns mean, then per-model remarks.

    Args:
        results: one per model (clipping rate, re-estimated statistics, divergence).
        task: the task (its metric and target).
        args: the resolved options (steps, eval_every).

    Returns:
        One note per entry, unwrapped.
    """
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
                text += f", test acc {format_metric(task, again)}"
            lines.append(
                f"{r.spec.name}: held-out with the batch statistics re-estimated on "
                f"{task.calibration_size} training sequences after training, instead of the "
                f"running averages kept during training: {text} (table: {r.final['loss']:.4f})."
            )
        if r.diverged:
            lines.append(f"{r.spec.name}: the loss became non-finite; training stopped.")
    return lines


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
                row.append(format_metric(task, final))
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


def check_plot_target(path: str) -> None:
    """Fails early (before training) if the plot cannot be written.

    Args:
        path: the image file that ``save_plot`` will write.

    Raises:
        DemoError: matplotlib is missing, the extension names no format it writes, or the
            folder does not exist.
    """
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
