"""``python -m rnncore``: what this installation is, and a self-check a newcomer can read.

Usage:
    python -m rnncore            build information, then the self-check
    python -m rnncore info       build information only
    python -m rnncore selfcheck  the self-check only
    python -m rnncore demo ...   train small models and compare them (--help for options)

The build information and the self-check live in ``rnncore._selfcheck`` (its docstring
says what is checked, and how); the demo in ``rnncore.demo``.
The self-check exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys

from ._selfcheck import print_info, selfcheck
from .demo import main as demo_main


def main(argv: list[str] | None = None) -> int:
    """Dispatches the command line of ``python -m rnncore``.

    Args:
        argv: the arguments after ``python -m rnncore``; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 if a self-check failed, 2 for a usage error;
        for ``demo``, the demo's own status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "demo":
        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m rnncore", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command", nargs="?", default="all", choices=["all", "info", "selfcheck", "demo"]
    )
    args = parser.parse_args(argv)
    if args.command in ("all", "info"):
        print_info()
    if args.command in ("all", "selfcheck"):
        return 0 if selfcheck() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
