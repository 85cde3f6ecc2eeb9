"""The C API and the installed C/C++ package, as their users meet them.

The package comes from two places, and every test runs on both (the ``installed``
fixture's two parameters):

- ``cmake-install``: the library (``librnncore``) configured and built from this
  repository with CMake and installed with ``cmake --install`` to a temporary prefix. To
  keep the suite's time bounded this build has the baseline backend only (at -O1).
- ``wheel``: the copy inside the installed Python package, found through
  ``rnncore.cmake_dir()`` as users find it: the wheel's optimized build with every
  instruction-set backend. Where the installed rnncore has none (Python sources run from a
  source checkout) these cases skip; in CI, which installs the wheel, that is a failure.

Against each, three projects are built with ``find_package(rnncore)``: the C example
(``examples/c``), the multi-threaded C++ example (``examples/cpp``) and the C test
program ``tests/capi/capi_check.c`` (a C-only project, ``-Wall -Wextra -pedantic
-Werror``). The tests then run them on models saved by ``rc.save`` and compare with
Python: every cell, each norm, bidirectional, reverse, projection, zoneout, float64 and
half copies, cells, lengths, streams (frame by frame and in chunks), 8 threads sharing
one model, the gate options (clip, cell_clip, peephole, input_forget), and bad input from
C: errors with messages, never an abort. Every instruction set the CPU runs is forced in
turn with ``RNNCORE_ISA``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TOL = {"rtol": 2e-5, "atol": 2e-6}
#: The instruction-set variants of the library, best first (x86-64; elsewhere baseline only).
ALL_ISAS = (
    ("avx512", "avx2", "baseline") if sysconfig.get_platform().endswith("x86_64") else ("baseline",)
)


def _missing_tools() -> list[str]:
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        missing.append("a C compiler")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def _run(cmd, isa=None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("RNNCORE_ISA", None)
    if isa:
        env["RNNCORE_ISA"] = isa
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                          timeout=kw.pop("timeout", 900), **kw)  # fmt: skip


def _check(cmd, isa=None, **kw) -> str:
    proc = _run(cmd, isa, **kw)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
        + proc.stdout[-4000:]
        + proc.stderr[-4000:]
    )
    return proc.stdout


class Installed:
    """An installed package and the programs built against it."""

    def __init__(self, base: Path, kind: str):
        self.kind = kind  # "cmake-install" or "wheel"
        self.prefix = base / "prefix"  # where lib/, include/ and lib/cmake/rnncore lie
        self.build = base / "build"
        self.capi_check = base / "capi" / "capi_check"
        self.stream_frames = base / "example_c" / "stream_frames"
        self.scorer = base / "example_cpp" / "scorer"
        self.built: tuple[str, ...] = ()  # the backends in the package
        self.isas: list[str] = []  # the variants this CPU runs, best first


def _build_library(inst: Installed, generator: list[str], jobs: str) -> None:
    """cmake --install of this repository's C/C++ package, baseline backend only."""
    eigen = Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix"
    # -O1: a third of -O3's compile time, the same code paths (what users build is -O3:
    # Release, the default). The wheel's case covers the other backends.
    _check(["cmake", "-S", ROOT, "-B", inst.build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
            "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -DNDEBUG", "-DRNNCORE_BASELINE_ONLY=ON",
            "-DRNNCORE_PYTHON=OFF", "-DRNNCORE_CAPI=ON", f"-DCMAKE_PREFIX_PATH={eigen}",
            *generator])  # fmt: skip
    _check(["cmake", "--build", inst.build, "--target", "rnncore", "-j", jobs])
    _check(["cmake", "--install", inst.build, "--prefix", inst.prefix])


@pytest.fixture(scope="session", params=["cmake-install", "wheel"])
def installed(request, tmp_path_factory) -> Installed:
    missing = _missing_tools()
    if missing and not IN_CI:
        pytest.skip(f"needs {', '.join(missing)}")
    base = tmp_path_factory.mktemp(request.param)
    inst = Installed(base, request.param)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(os.cpu_count() or 1)
    if inst.kind == "wheel":
        try:
            package = Path(rc.cmake_dir())
        except FileNotFoundError as e:
            if IN_CI:  # CI installs the wheel: its C/C++ package must be there
                pytest.fail(str(e))
            pytest.skip(str(e))
        inst.prefix = package.parents[2]  # <site-packages>/rnncore: lib/cmake/rnncore
        inst.built = ALL_ISAS
    else:
        _build_library(inst, generator, jobs)
        inst.built = ("baseline",)
    for src, out in ((ROOT / "tests" / "capi", base / "capi"),
                     (ROOT / "examples" / "c", base / "example_c"),
                     (ROOT / "examples" / "cpp", base / "example_cpp")):  # fmt: skip
        prefix = rc.cmake_dir() if inst.kind == "wheel" else inst.prefix  # as users do
        _check(["cmake", "-S", src, "-B", out, "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_PREFIX_PATH={prefix}", *generator])  # fmt: skip
        _check(["cmake", "--build", out, "-j", jobs])
    for isa in ALL_ISAS:
        proc = _run([inst.capi_check, "isa"], isa)
        if isa not in inst.built:
            assert proc.returncode == 1
            assert f"RNNCORE_ISA='{isa}': this build of rnncore has" in proc.stdout, proc.stdout
        elif proc.returncode == 0:
            assert proc.stdout.strip() == isa
            inst.isas.append(isa)
        else:
            assert f"RNNCORE_ISA='{isa}': this CPU cannot run it" in proc.stdout, proc.stdout
    assert "baseline" in inst.isas
    return inst


def test_package_layout(installed):
    lib = installed.prefix / "lib"
    libs = sorted(p.name for p in lib.glob("librnncore.so*"))
    version = rc.__version__
    major, minor = version.split(".")[:2]
    soname = f"librnncore.so.{major}.{minor}" if major == "0" else f"librnncore.so.{major}"
    if installed.kind == "wheel":  # no symbolic links in a wheel: the one file
        assert libs == [soname], libs
        assert Path(rc.library_path()) == lib / soname
        assert Path(rc.include_dir()) == installed.prefix / "include"
    else:
        assert "librnncore.so" in libs and soname in libs, libs
    headers = sorted(p.name for p in (installed.prefix / "include" / "rnncore").iterdir())
    assert headers == ["c_api.h", "rnncore.hpp"]  # no internals, no Eigen
    backends = sorted(p.name for p in (lib / "rnncore").iterdir())
    assert backends == sorted(f"librnncore_{isa}.so.{version}" for isa in installed.built)
    cmake_dir = lib / "cmake" / "rnncore"
    for name in ("rnncoreConfig.cmake", "rnncoreConfigVersion.cmake", "rnncoreTargets.cmake"):
        assert (cmake_dir / name).is_file()
    if shutil.which("readelf"):
        dyn = _check(["readelf", "-d", lib / soname])
        assert f"[{soname}]" in dyn
    if shutil.which("nm"):
        symbols = _check(["nm", "-D", "--defined-only", lib / soname]).split()
        exported = [s for s in symbols if s.startswith(("rnncore_", "_Z"))]
        assert exported and all(s.startswith("rnncore_") for s in exported), exported
        for backend in (lib / "rnncore").iterdir():  # their table only
            symbols = _check(["nm", "-D", "--defined-only", backend]).split()
            exported = [s for s in symbols if s.startswith(("rnncore_", "_Z"))]
            assert exported == ["rnncore_backend_v1_table"], (backend, exported)


def test_isa_choice(installed):
    """The best variant the CPU runs by default, each one the CPU runs when forced, and
    an error (no crash) for one that is not built."""
    assert _check([installed.capi_check, "isa"]).strip() == installed.isas[0]
    proc = _run([installed.capi_check, "isa"], "sse9")
    assert proc.returncode == 1
    assert "error 1: RNNCORE_ISA='sse9': this build of rnncore has" in proc.stdout
    proc = _run([installed.capi_check, "forward", "x", "-", "x", 1, 1, "-", "o"], "sse9")
    assert proc.returncode == 1 and "RNNCORE_ISA='sse9'" in proc.stderr


# ----------------------------------------------------------------- models
def _trained_stats(m, rng, steps=6):
    """Runs a few training-mode batches so that batch norms have running statistics."""
    m.train()
    for _ in range(3):
        m(rng.standard_normal((steps, 4, m.input_size)).astype(np.float32))
    return m.eval()


def _models():
    """(id, factory(rng) -> module) for the parity cases."""
    return [
        ("rnn_tanh", lambda r: rc.RNN(5, 6, num_layers=2, seed=1)),
        ("rnn_relu", lambda r: rc.RNN(5, 6, nonlinearity="relu", seed=2)),
        ("lstm", lambda r: rc.LSTM(5, 6, num_layers=2, seed=3)),
        ("gru", lambda r: rc.GRU(5, 6, num_layers=2, seed=4)),
        ("gru_reset_before", lambda r: rc.GRU(5, 6, reset_after=False, seed=5)),
        ("lstm_layer", lambda r: rc.LSTM(5, 6, norm="layer", seed=6)),
        ("gru_layer", lambda r: rc.GRU(5, 6, norm="layer", seed=7)),
        ("rnn_layer", lambda r: rc.RNN(5, 6, norm="layer", seed=8)),
        ("lstm_batch", lambda r: _trained_stats(rc.LSTM(5, 6, norm="batch", seed=9), r)),
        ("gru_batch_input",
         lambda r: _trained_stats(rc.GRU(5, 6, norm="batch_input", seed=10), r)),
        ("rnn_batch", lambda r: _trained_stats(rc.RNN(5, 6, norm="batch", seed=11), r, 3)),
        ("lstm_bidirectional", lambda r: rc.LSTM(5, 6, num_layers=2, bidirectional=True, seed=12)),
        ("gru_reverse", lambda r: rc.GRU(5, 6, reverse=True, seed=13)),
        ("lstm_proj", lambda r: rc.LSTM(5, 8, proj_size=3, num_layers=2, seed=14)),
        ("lstm_zoneout", lambda r: rc.LSTM(5, 6, zoneout=0.3, dropout=0.2, num_layers=2,
                                           recurrent_dropout=0.1, seed=15)),
        ("gru_batch_first_no_bias", lambda r: rc.GRU(5, 6, bias=False, batch_first=True,
                                                     seed=16)),
        ("lstm_float64", lambda r: rc.LSTM(5, 6, dtype="float64", seed=17)),
        ("lstm_half", lambda r: rc.LSTM(5, 6, seed=18).half_weights()),
        ("lstm_cell_layer", lambda r: rc.LSTMCell(5, 6, norm="layer", seed=19)),
        ("gru_cell", lambda r: rc.GRUCell(5, 6, seed=20)),
        ("rnn_cell", lambda r: rc.RNNCell(5, 6, seed=21)),
    ]  # fmt: skip


MODELS = _models()
MODEL_IDS = [name for name, _ in MODELS]
STREAMABLE = [name for name in MODEL_IDS if "bidirectional" not in name and "reverse" not in name]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each parity model, saved: id -> (module in eval mode, path)."""
    base = tmp_path_factory.mktemp("capi_models")
    out = {}
    for i, (name, make) in enumerate(MODELS):
        m = make(np.random.default_rng(i)).eval()
        path = base / f"{name}.safetensors"
        rc.save(m, path)
        out[name] = (m, path)
    return out


def _is_cell(m) -> bool:
    return type(m).__name__.endswith("Cell")


def _python_forward(m, x, lengths):
    """What the C API's forward computes: time-major out, h_n, c_n (float32)."""
    if _is_cell(m):  # a cell: one layer stepped through the sequence
        lstm = type(m).__name__ == "LSTMCell"
        state = None
        outs = []
        for t in range(x.shape[0]):
            state = m(x[t], state)
            outs.append(state[0] if lstm else state)
        h, c = state if lstm else (state, None)
        return np.stack(outs), h[None], (c[None] if lstm else None)
    xin = x.transpose(1, 0, 2) if m.batch_first else x
    out, hx = m(xin, lengths=lengths)
    if m.batch_first:
        out = out.transpose(1, 0, 2)
    h, c = hx if isinstance(hx, tuple) else (hx, None)
    f32 = lambda a: None if a is None else np.asarray(a, np.float32)  # noqa: E731
    return f32(out), f32(h), f32(c)


def _c_forward(installed, path, x, lengths, tmp, name="-", isa=None):
    T, B, _ = x.shape
    x.astype(np.float32).tofile(tmp / "x.bin")
    lpath = "-"
    if lengths is not None:
        np.asarray(lengths, np.int64).tofile(tmp / "l.bin")
        lpath = tmp / "l.bin"
    _check([installed.capi_check, "forward", path, name, tmp / "x.bin", T, B, lpath, tmp / "o"],
           isa)  # fmt: skip
    return (np.fromfile(tmp / "o.out", np.float32), np.fromfile(tmp / "o.hn", np.float32),
            np.fromfile(tmp / "o.cn", np.float32))  # fmt: skip


@pytest.mark.parametrize("name", MODEL_IDS)
def test_forward_matches_python(installed, saved, name, tmp_path):
    m, path = saved[name]
    rng = np.random.default_rng(100)
    T, B = 7, 3
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    cases = [None] if _is_cell(m) else [None, [7, 2, 5]]
    for isa, lengths in ((isa, n) for isa in installed.isas for n in cases):
        out, h, c = _python_forward(m, x, lengths)
        c_out, c_h, c_c = _c_forward(installed, path, x, lengths, tmp_path, isa=isa)
        np.testing.assert_allclose(c_out.reshape(out.shape), out, **TOL)
        np.testing.assert_allclose(c_h.reshape(h.shape), h, **TOL)
        if c is None:
            assert c_c.size == 0
        else:
            np.testing.assert_allclose(c_c.reshape(c.shape), c, **TOL)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", "lstm_batch", "lstm_proj",
                                  "lstm_half", "gru_cell", "rnn_batch"])  # fmt: skip
def test_stream_matches_python(installed, saved, name, tmp_path):
    m, path = saved[name]
    rng = np.random.default_rng(200)
    T, B = 9, 2  # rnn_batch saw 3 steps in training: later steps read the last row
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    out, _, _ = _python_forward(m, x, None)
    x.tofile(tmp_path / "x.bin")
    for isa in installed.isas:
        _check([installed.capi_check, "stream", path, "-", tmp_path / "x.bin", T, B,
                tmp_path / "s"], isa)  # fmt: skip
        steps = np.fromfile(tmp_path / "s.steps", np.float32).reshape(out.shape)
        chunks = np.fromfile(tmp_path / "s.chunks", np.float32).reshape(out.shape)
        np.testing.assert_allclose(steps, out, **TOL)
        np.testing.assert_allclose(chunks, out, **TOL)


def test_stream_refuses_bidirectional_and_reverse(installed, saved, tmp_path):
    for name in ("lstm_bidirectional", "gru_reverse"):
        _, path = saved[name]
        np.zeros((2, 1, 5), np.float32).tofile(tmp_path / "x.bin")
        proc = _run([installed.capi_check, "stream", path, "-", tmp_path / "x.bin", 2, 1,
                     tmp_path / "s"])  # fmt: skip
        assert proc.returncode == 1
        assert "a stream needs a" in proc.stderr


def test_mapping_by_name_and_threads(installed, saved, tmp_path):
    enc, _ = saved["lstm_bidirectional"]
    dec, _ = saved["gru"]
    path = tmp_path / "mapping.safetensors"
    rc.save({"encoder": enc, "decoder": dec, "head": rc.Linear(6, 2, seed=0)}, path)
    x = np.random.default_rng(3).standard_normal((6, 4, 5)).astype(np.float32)
    for name, m in (("encoder", enc), ("decoder", dec)):
        out, h, _ = _python_forward(m, x, None)
        c_out, c_h, _ = _c_forward(installed, path, x, None, tmp_path, name=name)
        np.testing.assert_allclose(c_out.reshape(out.shape), out, **TOL)
        np.testing.assert_allclose(c_h.reshape(h.shape), h, **TOL)
    x.tofile(tmp_path / "x.bin")
    for isa in installed.isas:
        out = _check([installed.capi_check, "threads", path, "encoder", tmp_path / "x.bin", 6,
                      4, 8], isa)  # fmt: skip
        assert "threads: ok" in out


# ------------------------------------------------------------ gate options
@pytest.mark.parametrize("cell, options", [
    ("lstm", {"clip": 0.5}),
    ("lstm", {"cell_clip": 0.3, "peephole": True}),
    ("lstm", {"input_forget": True, "clip": None}),
    ("gru", {"clip": 0.4}),
    ("rnn", {"clip": 0.4}),
])  # fmt: skip
def test_gate_options_load(installed, cell, options, tmp_path):
    """Files of modules with the cell options, saved by Python: the C library computes
    what the Python module computes (clip bounds small enough that entries clip)."""
    cls = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}[cell]
    m = cls(5, 6, num_layers=2, seed=3, **options).eval()
    rng = np.random.default_rng(7)
    for p in m.parameters().values():  # larger than the default: gate inputs pass the bounds
        p[...] = rng.uniform(-0.8, 0.8, p.shape)
    path = tmp_path / "gates.safetensors"
    rc.save(m, path)
    x = np.random.default_rng(8).standard_normal((5, 2, 5)).astype(np.float32)
    out, h, c = _python_forward(m, x, None)
    bounds = {k: v for k, v in options.items() if k in ("clip", "cell_clip") and v}
    if bounds:  # the bounds matter: without them the same weights compute otherwise
        free = cls(5, 6, num_layers=2, seed=3, **{k: v for k, v in options.items()
                                                  if k not in bounds}).eval()  # fmt: skip
        for name, p in free.parameters().items():
            p[...] = m.parameters()[name]
        assert np.abs(_python_forward(free, x, None)[0] - out).max() > 1e-2
    for isa in installed.isas:
        c_out, c_h, c_c = _c_forward(installed, path, x, None, tmp_path, isa=isa)
        np.testing.assert_allclose(c_out.reshape(out.shape), out, **TOL)
        np.testing.assert_allclose(c_h.reshape(h.shape), h, **TOL)
        if c is not None:
            np.testing.assert_allclose(c_c.reshape(c.shape), c, **TOL)


# ------------------------------------------------------------- examples
def test_c_example_streams_frames(installed, saved, tmp_path):
    m, path = saved["lstm_layer"]
    frames = np.random.default_rng(5).standard_normal((12, 5)).astype(np.float32)
    np.savetxt(tmp_path / "frames.txt", frames, fmt="%.9g")
    out = _check([installed.stream_frames, path, tmp_path / "frames.txt"])
    got = np.array([[float(v) for v in line.split()] for line in out.splitlines()])
    want, _, _ = _python_forward(m, frames[:, None, :], None)
    np.testing.assert_allclose(got, want[:, 0], **TOL)


def test_cpp_example_scores_with_threads(installed, saved, tmp_path):
    m, path = saved["gru"]
    rng = np.random.default_rng(6)
    seqs = [rng.standard_normal((int(rng.integers(1, 9)), 5)).astype(np.float32)
            for _ in range(13)]  # fmt: skip
    with open(tmp_path / "seqs.txt", "w") as f:
        for s in seqs:
            f.write(" ".join(f"{v:.9g}" for v in s.ravel()) + "\n")
    out = _check([installed.scorer, path, tmp_path / "seqs.txt", 4])
    lines = out.splitlines()
    assert len(lines) == len(seqs)
    for k, (line, s) in enumerate(zip(lines, seqs)):
        head, values = line.split(":")
        assert int(head) == k
        want, _, _ = _python_forward(m, s[:, None, :], None)
        np.testing.assert_allclose([float(v) for v in values.split()], want[-1, 0], **TOL)


# --------------------------------------------------------------- errors
def test_bad_input_returns_errors(installed, saved, tmp_path):
    _, good = saved["lstm"]
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    mapping = tmp_path / "mapping.safetensors"
    rc.save({"a": saved["lstm"][0], "b": saved["gru"][0], "head": rc.Linear(6, 2)}, mapping)
    d = tmp_path / "dir"
    d.mkdir()
    for isa in installed.isas[1:]:  # every variant: no crash
        assert "errors: ok" in _check([installed.capi_check, "errors", good, corrupt, mapping, d],
                                      isa)  # fmt: skip
    out = _check([installed.capi_check, "errors", good, corrupt, mapping, d])
    assert "errors: ok" in out
    expected = {
        "load NULL path": "1: path is NULL",
        "load missing": "2: no such file",
        "load directory": "2: is a directory",
        "load corrupt": f"3: {corrupt}: not a safetensors file",
        "load unknown name": "1: " + str(mapping) + ": no module named 'nope' in the file "
                             "(it has 'a' (LSTM), 'b' (GRU), 'head' (Linear))",
        "load ambiguous": "the file has 2 recurrent modules",
        "load linear": "module 'head' is a Linear layer, not a recurrent module",
        "load name of single": "the file holds one unnamed module",
        "forward length 0": "lengths[1] = 0 is not in 1..T (T = 3)",
        "forward B=-3": "B must be >= 1, got -3",
        "stream batch 0": "batch must be >= 1, got 0",
        "state_size which=2": "which must be 0 (h) or 1 (c), got 2",
    }  # fmt: skip
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    for what, fragment in expected.items():
        assert fragment in f"{lines[what]}", (what, lines[what])


def _bad_files(tmp_path, saved):
    """(id, path, expected message fragment) for files the loader must refuse."""
    m, good = saved["lstm"]
    data = good.read_bytes()
    meta, tensors = _core.read_safetensors(str(good))
    info = json.loads(meta["rnncore"])

    def write(name, info=None, tensors_=None, raw=None, text=None):
        path = tmp_path / f"{name}.safetensors"
        if raw is not None:
            path.write_bytes(raw)
        else:
            md = {} if info is None else {"rnncore": json.dumps(info)}
            if text is not None:
                md = {"rnncore": text}
            _core.write_safetensors(str(path), md, list((tensors_ or tensors).items()))
        return path

    newer = json.loads(json.dumps(info))
    newer["format_version"] = 99
    unknown = json.loads(json.dumps(info))
    unknown["modules"][0]["options"]["fancy"] = 1
    wrong_cell = json.loads(json.dumps(info))
    wrong_cell["modules"][0]["options"]["cell"] = "gru"
    missing = dict(tensors)
    del missing["bias_hh_l0"]
    reshaped = dict(tensors)
    reshaped["bias_hh_l0"] = np.zeros(5, np.float32)
    extra = dict(tensors)
    extra["surprise"] = np.zeros(2, np.float32)
    return [
        ("truncated", write("truncated", raw=data[:-7]), "truncated"),
        ("no_metadata", write("no_metadata", info=None), "no 'rnncore' entry"),
        ("bad_json", write("bad_json", text='{"format_version": 1, "modules": [}'),
         "the 'rnncore' metadata is not valid JSON"),
        ("newer", write("newer", newer), "format version 99, newer than this rnncore reads"),
        ("unknown_option", write("unknown_option", unknown), "unknown option 'fancy'"),
        ("wrong_cell", write("wrong_cell", wrong_cell), "does not match its options' cell"),
        ("missing", write("missing", info, missing), "tensor 'bias_hh_l0' is missing"),
        ("shape", write("shape", info, reshaped),
         "tensor 'bias_hh_l0' has shape (5,), expected (24,)"),
        ("extra", write("extra", info, extra), "unexpected tensor 'surprise'"),
    ]  # fmt: skip


def test_bad_files_are_refused_with_messages(installed, saved, tmp_path):
    x = np.zeros((2, 1, 5), np.float32)
    x.tofile(tmp_path / "x.bin")
    for case, path, fragment in _bad_files(tmp_path, saved):
        proc = _run([installed.capi_check, "forward", path, "-", tmp_path / "x.bin", 2, 1, "-",
                     tmp_path / "o"])  # fmt: skip
        assert proc.returncode == 1, case
        assert "load failed (3)" in proc.stderr and str(path) in proc.stderr, (case, proc.stderr)
        assert fragment in proc.stderr, (case, proc.stderr)
        # Python refuses the same files.
        with pytest.raises(ValueError):
            rc.load(path)
