"""The C++ API as an embedding program uses it: builds tests/cpp/test_core.cc with CMake
against the core library and runs it (Run vs Iterate, BPTT vs finite differences for
every cell and norm, float32 against float64, tape rules, thread-count invariance). See that
file for details.

The same test is also cross-built for aarch64 (NEON: the kernels' vector code at 128 bits)
and run under QEMU's user-mode emulation, when ``aarch64-linux-gnu-g++`` and
``qemu-aarch64`` are installed (``.ci/run`` installs them where it can). That build also
makes the C library (``librnncore`` with its one aarch64 backend, from the same compiled
core), and the C test program ``tests/capi/capi_check.c``, cross-built against it, runs
models saved by Python (forward with lengths, streams, each norm) and compares with Python.
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
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")


def _tools_missing():
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def _build_and_run(build: Path, cmake_args: list[str], runner: list[str], capi=False) -> str:
    """Configures and builds the core and its C++ test in ``build`` (with the C library
    if ``capi``), runs the test binary (through ``runner``, e.g. an emulator) and returns
    its output."""
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DRNNCORE_BUILD_TESTS=ON", "-DRNNCORE_PYTHON=OFF",
                 f"-DRNNCORE_CAPI={'ON' if capi else 'OFF'}", *cmake_args]  # fmt: skip
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
    missing = [t for t in (CROSS_CXX, CROSS_CC, QEMU) if shutil.which(t) is None]
    missing += _tools_missing()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install g++-aarch64-linux-gnu qemu-user)")
    eigen = Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix"
    args = ["-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
            f"-DCMAKE_CXX_COMPILER={CROSS_CXX}", f"-DCMAKE_PREFIX_PATH={eigen}"]  # fmt: skip
    qemu = [QEMU, "-L", str(AARCH64_SYSROOT)]
    build = tmp_path / "build"
    out = _build_and_run(build, args, qemu, capi=True)
    assert "passed" in out

    # The C library of the same build, through the C test program.
    import numpy as np  # noqa: PLC0415
    from test_c_api import TOL, _python_forward, _trained_stats  # noqa: PLC0415

    import rnncore as rc  # noqa: PLC0415

    lib = build / "cpp"
    check = tmp_path / "capi_check"
    proc = subprocess.run([CROSS_CC, "-std=c99", "-O1", "-Wall", "-Werror",
                           f"-I{ROOT / 'cpp' / 'include'}", str(ROOT / "tests/capi/capi_check.c"),
                           "-o", str(check), f"-L{lib}", "-lrnncore", "-lpthread",
                           f"-Wl,-rpath,{lib}"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*qemu, str(check), "isa"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "baseline", proc.stdout + proc.stderr
    rng = np.random.default_rng(0)
    models = {
        "lstm_layer": rc.LSTM(5, 6, num_layers=2, norm="layer", seed=1),
        "gru_batch": _trained_stats(rc.GRU(5, 6, norm="batch", seed=2), rng),
        "rnn_proj_lstm": rc.LSTM(5, 8, proj_size=3, seed=3),
    }
    T, B = 7, 3
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    np.array([7, 2, 5], np.int64).tofile(tmp_path / "l.bin")
    for name, m in models.items():
        m.eval()
        path = tmp_path / f"{name}.safetensors"
        rc.save(m, path)
        out, h, _ = _python_forward(m, x, [7, 2, 5])
        cmd = [*qemu, str(check), "forward", str(path), "-", str(tmp_path / "x.bin"), str(T),
               str(B), str(tmp_path / "l.bin"), str(tmp_path / "o")]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        got = np.fromfile(tmp_path / "o.out", np.float32).reshape(out.shape)
        np.testing.assert_allclose(got, out, **TOL)
        np.testing.assert_allclose(
            np.fromfile(tmp_path / "o.hn", np.float32).reshape(h.shape), h, **TOL
        )
        stream_out, _, _ = _python_forward(m, x, None)
        cmd = [*qemu, str(check), "stream", str(path), "-", str(tmp_path / "x.bin"), str(T),
               str(B), str(tmp_path / "s")]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for kind in ("steps", "chunks"):
            got = np.fromfile(tmp_path / f"s.{kind}", np.float32).reshape(stream_out.shape)
            np.testing.assert_allclose(got, stream_out, **TOL)
