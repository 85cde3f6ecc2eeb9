"""The C++ API as an embedding program uses it: builds tests/cpp/test_core.cc with CMake
against the core library and runs it (Run vs Iterate, BPTT vs finite differences for
every cell and norm, tape rules, thread-count invariance). See that file for details.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _tools_missing():
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def test_cpp_core(tmp_path):
    missing = _tools_missing()
    if missing and not IN_CI:
        pytest.skip(f"needs {', '.join(missing)}")
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DRNNCORE_BUILD_TESTS=ON", "-DRNNCORE_PYTHON=OFF"]  # fmt: skip
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for cmd in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    proc = subprocess.run([str(build / "rnncore_test_core")], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout
