"""Fuzzing of model files (rc.load and the core's safetensors reader), crash-isolated.

A seeded mutation loop over valid files (an LSTM with batch norm, bidirectional and
projected; a GRU with layer norm in float64; a mapping of a half copy and a Linear):
truncations at random lengths, random bit flips, random bytes in the header, edited
header JSON (offsets, shapes, dtypes changed, huge numbers, deep nesting, the length
prefix changed) and edited rnncore metadata (options, class, version, mode). Every mutated
file must either load, and then the module's state must equal what the file's tensors say
and an eval call must run, or raise ValueError; the core's bytes entry point
(``_core.read_safetensors_bytes``) must return or raise ValueError on the same bytes.
Never another exception type, a crash or a hang.

The loop runs in a subprocess with a timeout, so that a crash or a hang fails the test
with the seed and the case that was running (rerun one case with
``python tests/test_file_fuzz.py SEED ITERATIONS FIRST_CASE``). Budget: by default 3000
cases per seed, two seeds (a few seconds); ``RNNCORE_FILE_FUZZ_ITERATIONS=N`` sets the
cases per seed and ``RNNCORE_FILE_FUZZ_SEED=S`` offsets the seeds.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ITERATIONS = int(os.environ.get("RNNCORE_FILE_FUZZ_ITERATIONS", "3000"))
SEED = int(os.environ.get("RNNCORE_FILE_FUZZ_SEED", "0"))


def _bases():
    import numpy as np

    import rnncore as rc

    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    lstm = rc.LSTM(3, 4, norm="batch", bidirectional=True, proj_size=2, seed=1)
    lstm(x)
    gru = rc.GRU(3, 3, norm="layer", dtype="float64", num_layers=2, seed=2).eval()
    rnn = rc.RNN(3, 2, norm="batch_input", seed=3)
    rnn(x)
    half = rnn.half_weights()
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, obj in enumerate([lstm, gru, {"enc": half, "head": rc.Linear(2, 2, seed=4)}]):
            p = Path(d) / f"{i}.safetensors"
            rc.save(obj, p, metadata={"note": "fuzz"})
            out.append(p.read_bytes())
    return out


def _split(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header, body: bytes, pad=True) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


HUGE = [2**31, 2**32 + 1, 2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]


def _edit_header(rng: random.Random, data: bytes) -> bytes:
    header, body = _split(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    t = header[name]
    kind = rng.randrange(12)
    if kind == 0:
        t["data_offsets"] = [rng.choice([0, 1, 3, *HUGE]), rng.choice([0, 4, len(body), *HUGE])]
    elif kind == 1:
        b, e = t["data_offsets"]
        d = rng.choice([-8, -4, -2, -1, 1, 2, 4, 8])
        t["data_offsets"] = (
            [max(0, b + d), max(0, e + d)] if rng.random() < 0.5 else [b, max(0, e + d)]
        )
    elif kind == 2:
        t["shape"] = [rng.choice([0, 1, 2, 3, 7, *HUGE]) for _ in range(rng.randrange(0, 5))]
    elif kind == 3:
        t["dtype"] = rng.choice(
            [
                "F64",
                "F32",
                "F16",
                "BF16",
                "I8",
                "U8",
                "BOOL",
                "I64",
                "F8_E4M3",
                "f32",
                "",
                "F" * 300,
            ]
        )
    elif kind == 4:
        t[rng.choice(["shape", "dtype", "data_offsets"])] = rng.choice(
            [None, True, -1, 1.5, "x", [], {}, [[1]]]
        )
    elif kind == 5:
        del t[rng.choice(list(t))]
    elif kind == 6:
        depth = rng.choice([10, 100, 1000, 100000])
        nest = "[" * depth + "]" * depth
        raw = json.dumps(header).encode()
        raw = raw[:-1] + b', "deep": ' + nest.encode() + b"}"
        return _join(raw, body)
    elif kind == 7:  # the length prefix alone
        n = struct.unpack("<Q", data[:8])[0]
        m = rng.choice([0, 1, 2, n - 1, n + 1, n + 8, len(data), *HUGE[:6]])
        return struct.pack("<Q", max(0, m) % 2**64) + data[8:]
    elif kind == 8:  # swap two tensors' offsets
        other = header[rng.choice(names)]
        t["data_offsets"], other["data_offsets"] = other["data_offsets"], t["data_offsets"]
    elif kind == 9:  # rename / duplicate / drop a tensor
        header.pop(name)
        if rng.random() < 0.5:
            header[name + rng.choice(["_x", ".", "", "\u00e9"])] = t
    elif kind == 10:  # edit the rnncore metadata
        meta = header.get("__metadata__", {})
        info = json.loads(meta.get("rnncore", "{}"))
        mod = rng.choice(info.get("modules") or [{}])
        what = rng.randrange(6)
        if what == 0 and "options" in mod:
            key = rng.choice(list(mod["options"]))
            mod["options"][key] = rng.choice(
                [None, 0, 1, 2, -1, 10**6, 10**12, 0.5, "lstm", "batch", True, [1], {}]
            )
        elif what == 1:
            mod["class"] = rng.choice(["LSTM", "GRU", "RNN", "Linear", "X", None])
        elif what == 2:
            info["format_version"] = rng.choice([0, 1, 2, "1", None, 1.0])
        elif what == 3:
            mod["training"] = rng.choice([True, False, None, 1])
        elif what == 4:
            mod["weights"] = rng.choice(["float16", "float32", "float64", "int8", None])
        else:
            mod["name"] = rng.choice([None, "", "a.b", "enc", "head", 3])
        meta["rnncore"] = json.dumps(info) if rng.random() < 0.9 else "[" * 5000
        header["__metadata__"] = meta
    else:
        header["__metadata__"] = rng.choice([[], "x", {"rnncore": 1}, {}, {"a": "b"}])
    return _join(header, body, pad=rng.random() < 0.8)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(5)
    n = struct.unpack("<Q", data[:8])[0]
    if kind == 0:
        return data[: rng.randrange(len(data))]
    if kind == 1:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 2:
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[8 + rng.randrange(n)] = rng.randrange(256)
        return bytes(b)
    return _edit_header(rng, data)


def _check_case(path: Path, data: bytes, np, rc, core) -> None:
    try:
        core.read_safetensors_bytes(data)
    except ValueError:
        pass
    path.write_bytes(data)
    try:
        obj = rc.load(path)
    except ValueError as e:
        assert str(path) in str(e), str(e)
        return
    _, tensors = core.read_safetensors(str(path))
    modules = obj.items() if isinstance(obj, dict) else [(None, obj)]
    for name, m in modules:
        prefix = f"{name}." if name else ""
        for k, v in m.state_dict().items():
            want = tensors[prefix + k].astype(v.dtype)
            assert v.shape == want.shape and v.tobytes() == want.tobytes(), k
        x = np.ones((2, 1, m.input_size if hasattr(m, "input_size") else m.in_features), m.dtype)
        with np.errstate(all="ignore"):
            m.eval() if not getattr(m, "_half", False) else None
            m(x)


def _drive(seed: int, iterations: int, first: int = 0) -> None:
    import numpy as np

    import rnncore as rc
    from rnncore import _core as core

    bases = _bases()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "case.safetensors"
        loaded = refused = 0
        for i in range(first, iterations):
            rng = random.Random(seed * 1_000_003 + i)
            data = _mutate(rng, rng.choice(bases))
            print(f"CASE {seed} {i}", flush=True)
            try:
                _check_case(path, data, np, rc, core)
            except BaseException as e:
                print(f"FAILED seed={seed} case={i}: {type(e).__name__}: {e}", flush=True)
                raise
            try:
                rc.load(path)
                loaded += 1
            except ValueError:
                refused += 1
        print(f"DONE seed={seed} cases={iterations - first} loaded={loaded} refused={refused}")


def _same_rnncore_path() -> str:
    """PYTHONPATH for a child that imports the rnncore this process imported (the source
    tree in development, site-packages once installed)."""
    import rnncore

    here = str(Path(rnncore.__file__).resolve().parents[1])
    return os.pathsep.join(p for p in [here, os.environ.get("PYTHONPATH", "")] if p)


def test_file_fuzz():
    budget = max(60.0, ITERATIONS * 0.05)
    for seed in (SEED, SEED + 1):
        cmd = [sys.executable, __file__, str(seed), str(ITERATIONS)]
        env = dict(os.environ, PYTHONPATH=_same_rnncore_path())
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, env=env)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            last = [line for line in out.splitlines() if line.startswith("CASE")][-1:]
            raise AssertionError(f"hang: {last} (replay: {' '.join(cmd)} CASE)") from None
        if proc.returncode != 0:
            last = [line for line in proc.stdout.splitlines() if line.startswith("CASE")][-1:]
            raise AssertionError(
                f"file fuzz failed (rc={proc.returncode}) at {last}; replay with "
                f"`python {__file__} {seed} {ITERATIONS} <case>`\n"
                + proc.stdout[-3000:]
                + proc.stderr[-3000:]
            )
        done = [line for line in proc.stdout.splitlines() if line.startswith("DONE")]
        assert done, proc.stdout[-2000:]
        print(done[0])


if __name__ == "__main__":
    _drive(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
