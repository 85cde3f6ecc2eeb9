"""``python -m rnncore``: what this installation is, and a self-check a newcomer can read.

Usage:
    python -m rnncore            build information, then the self-check
    python -m rnncore info       build information only
    python -m rnncore selfcheck  the self-check only
    python -m rnncore demo ...   train small models and compare them (--help for options)
    python -m rnncore --cmake-dir    the CMake package's directory (for CMAKE_PREFIX_PATH)
    python -m rnncore --include-dir  the C/C++ headers' directory
    python -m rnncore --library      the C library's path

The build information and the self-check live in ``rnncore._selfcheck`` (its docstring
says what is checked, and how); the demo in ``rnncore.demo``.
The self-check exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys

from ._package import cmake_dir, include_dir, library_path
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
    paths = parser.add_mutually_exclusive_group()
    for flag, helptext in (
        ("--cmake-dir", "print the directory of the C/C++ CMake package and exit"),
        ("--include-dir", "print the directory of the C/C++ headers and exit"),
        ("--library", "print the path of the C library and exit"),
    ):
        paths.add_argument(flag, action="store_true", help=helptext)
    args = parser.parse_args(argv)
    for flag, where in (
        (args.cmake_dir, cmake_dir),
        (args.include_dir, include_dir),
        (args.library, library_path),
    ):
        if flag:
            try:
                print(where())
            except FileNotFoundError as e:
                print(f"python -m rnncore: {e}", file=sys.stderr)
                return 1
            return 0
    if args.command in ("all", "info"):
        print_info()
    if args.command in ("all", "selfcheck"):
        return 0 if selfcheck() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
