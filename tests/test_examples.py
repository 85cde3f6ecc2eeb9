"""The scripts in examples/ run to the end (each checks its own results) and print them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnncore as rc

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"vad_stream.py", "greedy_decoder.py",
                                          "batcher_server.py"}  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path):
    root = os.path.dirname(os.path.dirname(rc.__file__))  # the rnncore this test imported
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "an example prints what it did"
