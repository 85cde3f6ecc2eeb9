"""The command line of ``python -m rnncore demo``: options, defaults, and ``main``."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from typing import Any, Callable

import rnncore as rc

from .errors import DemoError
from .models import DEFAULT_CLIP, DEFAULT_MODELS, model_names, parse_models
from .report import check_plot_target, footer_lines, format_table, header_lines, save_plot
from .tasks import ADDING_TARGET_MSE, DIGITS_TARGET_ACCURACY, AddingTask, DigitsTask
from .training import train_model

PROG = "python -m rnncore demo"

# Settings per task, full run and --quick. Measured on 2 cores (see the README section):
# the full adding run takes a few minutes, --quick well under 30 s.
_DEFAULTS = {
    ("adding", False): {"steps": 3000, "hidden": 64, "length": 100, "batch": 64, "lr": 1e-3},
    ("adding", True): {"steps": 1500, "hidden": 32, "length": 50, "batch": 32, "lr": 2e-3},
    ("digits", False): {"steps": 3000, "hidden": 64, "length": 64, "batch": 32, "lr": 2e-3},
    ("digits", True): {"steps": 300, "hidden": 32, "length": 64, "batch": 32, "lr": 2e-3},
}


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
        f"now {rc.get_num_threads()})",
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
        check_plot_target(args.plot)


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
    previous_threads = rc.get_num_threads()
    try:
        _resolve(args)
        if args.threads is not None:
            rc.set_num_threads(args.threads)
        if args.task == "adding":
            task: Any = AddingTask(args.length, args.seed)
        else:
            task = DigitsTask(args.seed, args.permute)
        print("\n".join(header_lines(args, task)), flush=True)
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
        for note in footer_lines(results, task, args):
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
        rc.set_num_threads(previous_threads)
