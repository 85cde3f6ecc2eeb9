"""The C++ API as an embedding program uses it: builds tests/cpp/test_core.cc with CMake
against the core library and runs it (Run vs Iterate, BPTT vs finite differences for
every cell and norm, float32 against float64, tape rules, thread-count invariance). See that
file for details.

The same test is also cross-built for aarch64 (NEON: the kernels' vector code at 128 bits)
and run under QEMU's user-mode emulation, when ``aarch64-linux-gnu-g++`` and
``qemu-aarch64`` are installed (``.ci/run`` installs them where it can).
"""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")


def _tools_missing():
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def _build_and_run(build: Path, cmake_args: list[str], runner: list[str]) -> str:
    """Configures and builds the core and its C++ test in ``build``, runs the test binary
    (through ``runner``, e.g. an emulator) and returns its output."""
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DRNNCORE_BUILD_TESTS=ON", "-DRNNCORE_PYTHON=OFF",
                 "-DRNNCORE_CAPI=OFF", *cmake_args]  # fmt: skip
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for cmd in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    proc = subprocess.run([*runner, str(build / "rnncore_test_core")], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout
    return proc.stdout


def test_cpp_core(tmp_path):
    missing = _tools_missing()
    if missing and not IN_CI:
        pytest.skip(f"needs {', '.join(missing)}")
    _build_and_run(tmp_path / "build", [], [])


def test_cpp_core_on_aarch64_under_emulation(tmp_path):
    missing = [t for t in (CROSS_CXX, QEMU) if shutil.which(t) is None] + _tools_missing()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install g++-aarch64-linux-gnu qemu-user)")
    eigen = Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix"
    args = ["-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
            f"-DCMAKE_CXX_COMPILER={CROSS_CXX}", f"-DCMAKE_PREFIX_PATH={eigen}"]  # fmt: skip
    out = _build_and_run(tmp_path / "build", args, [QEMU, "-L", str(AARCH64_SYSROOT)])
    assert "passed" in out
