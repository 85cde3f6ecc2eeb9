"""Model files: rc.save / rc.load in the safetensors format (docs/file_format.md).

Round trips of every cell and norm and of the options that change the tensors (bitwise
state, options, mode, outputs), mappings of modules, half copies, the user's metadata,
interoperability with the ``safetensors`` package both ways, and every bad file the
loader refuses (exception type, path and problem in the message).
"""

import json
import os
import struct

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core

CLASSES = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}
X = np.random.default_rng(0).standard_normal((6, 3, 4)).astype(np.float32)


def _trained(cell, **kw):
    m = CLASSES[cell](4, 5, seed=3, **kw)
    x = X.astype(m.dtype)
    for _ in range(2):
        m(x)  # training-mode calls: batch norms update their running statistics
    return m


def _assert_same(a, b):
    assert type(a) is type(b)
    assert a.options == b.options
    assert a.training == b.training
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert sa[k].tobytes() == sb[k].tobytes(), k


def _eval_outputs_equal(a, b):
    a.eval() if not getattr(a, "_half", False) else None
    b.eval() if not getattr(b, "_half", False) else None
    x = X.astype(a.dtype)
    if isinstance(a, rc.Linear):
        x = x[..., : a.in_features]
    ya, yb = a(x), b(x)
    ya = ya[0] if isinstance(ya, tuple) else ya
    yb = yb[0] if isinstance(yb, tuple) else yb
    assert np.array_equal(ya, yb)


@pytest.mark.parametrize("cell", sorted(CLASSES))
@pytest.mark.parametrize("norm", [None, "layer", "batch", "batch_input"])
def test_round_trip_every_cell_and_norm(tmp_path, cell, norm):
    m = _trained(cell, norm=norm)
    path = tmp_path / "m.safetensors"
    rc.save(m, path)
    back = rc.load(path)
    _assert_same(m, back)
    _eval_outputs_equal(m, back)


OPTIONS = [
    ("lstm", {"bidirectional": True, "num_layers": 2}),
    ("lstm", {"proj_size": 3, "norm": "batch"}),
    ("gru", {"reset_after": False, "num_layers": 2}),
    ("rnn", {"nonlinearity": "relu", "bidirectional": True}),
    ("lstm", {"dtype": "float64", "norm": "layer"}),
    ("gru", {"dtype": "float64", "norm": "batch", "bidirectional": True}),
]


@pytest.mark.parametrize("cell,kw", OPTIONS)
def test_round_trip_options(tmp_path, cell, kw):
    m = _trained(cell, **kw)
    rc.save(m, tmp_path / "m.safetensors")
    back = rc.load(str(tmp_path / "m.safetensors"))
    _assert_same(m, back)
    assert back.training  # the mode comes back
    _eval_outputs_equal(m, back)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_linear(tmp_path, dtype):
    m = rc.Linear(4, 3, dtype=dtype, seed=1).eval()
    rc.save(m, tmp_path / "l.safetensors")
    back = rc.load(tmp_path / "l.safetensors")
    _assert_same(m, back)
    _eval_outputs_equal(m, back)


@pytest.mark.parametrize("cell,norm", [("lstm", "batch"), ("gru", None), ("rnn", "layer")])
def test_round_trip_half_copy(tmp_path, cell, norm):
    m = _trained(cell, norm=norm, proj_size=2) if cell == "lstm" else _trained(cell, norm=norm)
    h = m.half_weights()
    path = tmp_path / "h.safetensors"
    rc.save(h, path)
    back = rc.load(path)
    assert back._half and not back.training
    _assert_same(h, back)  # bitwise: float16 values widen and round back exactly
    _eval_outputs_equal(h, back)
    with pytest.raises(RuntimeError):
        back.train()
    try:
        import safetensors.numpy as sn

        raw = sn.load_file(path)
    except ImportError:  # without the package (the wheel tests): the core's reader, same dtypes
        raw = _core.read_safetensors(str(path))[1]
    for k, arr in raw.items():
        want = np.float16 if k.startswith(("weight_ih", "weight_hh", "weight_hr")) else np.float32
        assert arr.dtype == want, k
        assert np.array_equal(arr.astype(np.float32), h.state_dict()[k])


def test_mapping_round_trips_as_dict(tmp_path):
    lstm = _trained("lstm", norm="batch")
    head = rc.Linear(5, 2, seed=2)
    path = tmp_path / "pair.safetensors"
    rc.save({"encoder": lstm, "head": head}, path, metadata={"author": "me", "epoch": "7"})
    back = rc.load(path)
    assert isinstance(back, dict) and list(back) == ["encoder", "head"]
    _assert_same(lstm, back["encoder"])
    _assert_same(head, back["head"])
    meta, tensors = _core.read_safetensors(str(path))
    assert meta["author"] == "me" and meta["epoch"] == "7"
    info = json.loads(meta["rnncore"])
    assert info["format_version"] == 1
    assert [(e["name"], e["class"]) for e in info["modules"]] == [
        ("encoder", "LSTM"),
        ("head", "Linear"),
    ]
    assert info["modules"][0]["options"] == lstm.options.to_dict()
    assert "encoder.weight_ih_l0" in tensors and "head.bias" in tensors
    # One named module is a mapping too.
    rc.save({"only": head}, path)
    assert list(rc.load(path)) == ["only"]


def test_overwrite_and_no_tmp_left(tmp_path):
    path = tmp_path / "m.safetensors"
    rc.save(rc.Linear(2, 2, seed=1), path)
    rc.save(rc.GRU(2, 3, seed=1), path)
    assert isinstance(rc.load(path), rc.GRU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_header_is_padded_and_data_contiguous(tmp_path):
    path = tmp_path / "m.safetensors"
    rc.save(_trained("lstm"), path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


# ------------------------------------------------------------------------- interop
def test_safetensors_reads_rnncore_files(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    m = _trained("gru", norm="batch", bidirectional=True)
    path = tmp_path / "m.safetensors"
    rc.save(m, path)
    got = sn.load_file(str(path))
    want = m.state_dict()
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k


def _rnncore_meta(module, name=None):
    return json.dumps({"format_version": 1, "modules": [{
        "name": name, "class": type(module).__name__, "options": module.options.to_dict(),
        "training": module.training, "weights": str(module.dtype)}]})  # fmt: skip


def test_rnncore_reads_safetensors_files(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    m = _trained("lstm", norm="batch_input", num_layers=2).eval()
    path = tmp_path / "foreign.safetensors"
    sn.save_file(m.state_dict(), str(path), metadata={"rnncore": _rnncore_meta(m)})
    back = rc.load(path)
    _assert_same(m, back)
    _eval_outputs_equal(m, back)


# ------------------------------------------------------------------------- save errors
def test_save_rejects_bad_arguments(tmp_path):
    m = rc.Linear(2, 2)
    p = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="reserved"):
        rc.save(m, p, metadata={"rnncore": "x"})
    with pytest.raises(TypeError, match="str -> str"):
        rc.save(m, p, metadata={"a": 1})
    with pytest.raises(TypeError, match="str -> str"):
        rc.save(m, p, metadata={1: "a"})
    with pytest.raises(TypeError, match="saves rnncore"):
        rc.save(object(), p)
    with pytest.raises(ValueError, match="without '.'"):
        rc.save({"a.b": m}, p)
    with pytest.raises(TypeError):
        rc.save(m, 3)
    with pytest.raises(FileNotFoundError):
        rc.save(m, tmp_path / "no" / "dir" / "m.safetensors")
    with pytest.raises(IsADirectoryError):
        rc.save(m, tmp_path)
    assert not p.exists()


# ------------------------------------------------------------------------- bad files
def _valid_bytes():
    m = rc.LSTM(3, 4, seed=0, norm="batch")
    m(X[..., :3])
    meta = {"rnncore": _rnncore_meta(m)}
    tensors = [(k, v) for k, v in m.state_dict().items()]
    return meta, tensors


def _file(meta, tensors_or_header, data=b"", raw_header=None):
    """A file from a header dict (or raw header bytes) and a data section."""
    if raw_header is None:
        h = dict(tensors_or_header)
        if meta is not None:
            h["__metadata__"] = meta
        raw_header = json.dumps(h).encode()
    return struct.pack("<Q", len(raw_header)) + raw_header + data


def _load_bytes(tmp_path, data, name="bad.safetensors"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _expect(tmp_path, data, phrase):
    path = _load_bytes(tmp_path, data)
    with pytest.raises(ValueError) as info:
        rc.load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert phrase in msg, msg
    return msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        rc.load(tmp_path / "absent.safetensors")
    with pytest.raises(IsADirectoryError):
        rc.load(tmp_path)


def _good_file():
    meta, tensors = _valid_bytes()
    return _core.write_safetensors_bytes(meta, tensors), meta, tensors


def test_not_safetensors(tmp_path):
    _expect(tmp_path, b"", "too short")
    _expect(tmp_path, b"abc", "too short")
    _expect(tmp_path, b"hello world, this is text", "not a safetensors file")
    _expect(tmp_path, struct.pack("<Q", 1) + b"{", "implausible header length")
    _expect(tmp_path, struct.pack("<Q", 4) + b"abcd", "does not start with '{'")


def test_truncated(tmp_path):
    good, _, _ = _good_file()
    _expect(tmp_path, good[: len(good) - 3], "truncated")
    _expect(tmp_path, good[:40], "truncated")


def test_header_too_large(tmp_path):
    # 100 MB + 8 bytes of header, really present (sparse file).
    path = tmp_path / "big.safetensors"
    n = 100_000_008
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + b"{")
        f.seek(8 + n - 1)
        f.write(b"}")
    with pytest.raises(ValueError, match="limit of 100 MB") as info:
        rc.load(path)
    assert str(path) in str(info.value)
    _expect(tmp_path, struct.pack("<Q", 2**63) + b"{}", "larger than the file")


_A = b'{"a": {"dtype": "F32", '  # the start of a tensor entry
_M = b'{"__metadata__": {"k": '  # the start of a metadata entry


@pytest.mark.parametrize("header,phrase", [
    (b'{"a"', "ends early"),
    (b'{"a": ', "is not a JSON object"),
    (_A + b'"shape": [1], "data_offsets": [0, 4]},}', "expected a string key"),
    (b"[1, 2]", "does not start with '{'"),
    (b'{"a": 1}', "is not a JSON object"),
    (b"{} x", "unexpected data after"),
    (_A + b'"shape": [-1], "data_offsets": [0, 0]}}', "negative number"),
    (_A + b'"shape": [1.5], "data_offsets": [0, 0]}}', "expected an integer"),
    (_A + b'"shape": [99999999999999999999], "data_offsets": [0, 0]}}', "number too large"),
    (_A + b'"shape": [], "data_offsets": [0]}}', "data_offsets must be [begin, end]"),
    (_A + b'"shape": []}}', "needs dtype, shape and data_offsets"),
    (_A + b'"shape": [], "data_offsets": [0, 4], "x": 1}}', "unexpected key 'x'"),
    (_A + b'"shape": [1], "data_offsets": [0, 4]}, "a": {}}', "duplicate entry 'a'"),
    (_M + b"1}}", "is not a string"),
    (_M + b'"\\ud800"}}', "unpaired surrogate"),
    (_M + b'"\xff"}}', "invalid UTF-8"),
    (_M + b'"a\nb"}}', "control character"),
    (_M + b'"\\q"}}', "invalid escape"),
    (_A + b'"shape": [' + b"[" * 100 + b"]}}", "expected a non-negative integer"),
    (b'{"__metadata__": ' + b'{"a":' * 200 + b"}", "is not a string"),
])  # fmt: skip
def test_invalid_header_json(tmp_path, header, phrase):
    msg = _expect(tmp_path, struct.pack("<Q", len(header)) + header, phrase)
    assert "invalid header" in msg or "does not start" in msg


def test_header_json_escapes_are_decoded(tmp_path):
    header = b'{"__metadata__": {"k\\u00e9\\ud83d\\ude00": "a\\"b\\\\c\\/\\n\\u0041"}}'
    meta, tensors = _core.read_safetensors_bytes(struct.pack("<Q", len(header)) + header)
    assert meta == {"k\u00e9\U0001f600": 'a"b\\c/\nA'} and tensors == {}


def _one_tensor(dtype="F32", shape=(2,), offsets=(0, 8), data=b"\0" * 8, meta=None):
    return _file(
        meta, {"w": {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}, data
    )


def test_offsets_dtypes_shapes(tmp_path):
    _expect(tmp_path, _one_tensor(offsets=(0, 16)), "needs 8 bytes")
    _expect(tmp_path, _one_tensor(offsets=(0, 8), data=b"\0" * 4), "truncated")
    _expect(tmp_path, _one_tensor(offsets=(8, 0)), "end before they begin")
    _expect(tmp_path, _one_tensor(offsets=(8, 16), data=b"\0" * 16), "gap of 8 bytes")
    _expect(tmp_path, _one_tensor(data=b"\0" * 12), "4 bytes after the last tensor")
    _expect(tmp_path, _one_tensor(dtype="F17"), "unknown dtype 'F17'")
    _expect(tmp_path, _one_tensor(dtype="BF16", shape=(4,)), "dtype BF16")
    _expect(tmp_path, _one_tensor(shape=(2**40, 2**40)), "too large")
    _expect(tmp_path, _one_tensor(shape=[1] * 40), "more than 32 entries")
    h = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}  # fmt: skip
    _expect(tmp_path, _file(None, h, b"\0" * 8), "overlap")
    _expect(tmp_path, _one_tensor(dtype="F64", shape=(1,)), "not an rnncore model file")


def _rewrite(meta, tensors, *, info=None, drop=None, add=None, cast=None):
    meta = dict(meta)
    if info is not None:
        meta["rnncore"] = info if isinstance(info, str) else json.dumps(info)
    tensors = [(k, v) for k, v in tensors if k != drop]
    if cast:
        tensors = [(k, v.astype(cast[1]) if k == cast[0] else v) for k, v in tensors]
    if add:
        tensors.append(add)
    return _core.write_safetensors_bytes(meta, tensors)


def test_rnncore_layer_errors(tmp_path):
    _, meta, tensors = _good_file()
    info = json.loads(meta["rnncore"])
    _expect(tmp_path, _rewrite({}, tensors), "no 'rnncore' entry")
    _expect(tmp_path, _rewrite(meta, tensors, info="{not json"), "not valid JSON")
    _expect(tmp_path, _rewrite(meta, tensors, info="[" * 100000 + "]" * 100000), "not valid JSON")
    _expect(tmp_path, _rewrite(meta, tensors, info="[]"), "not a JSON object")
    _expect(
        tmp_path,
        _rewrite(meta, tensors, info={**info, "format_version": 2}),
        "newer than this rnncore",
    )
    _expect(
        tmp_path,
        _rewrite(meta, tensors, info={**info, "format_version": "1"}),
        "no valid format_version",
    )
    _expect(tmp_path, _rewrite(meta, tensors, info={**info, "modules": []}), "no list of modules")
    bad_class = dict(info["modules"][0], **{"class": "Transformer"})
    _expect(
        tmp_path, _rewrite(meta, tensors, info={**info, "modules": [bad_class]}), "unknown class"
    )
    bad_opts = dict(
        info["modules"][0], options={**info["modules"][0]["options"], "hidden_size": -1}
    )
    _expect(
        tmp_path, _rewrite(meta, tensors, info={**info, "modules": [bad_opts]}), "invalid options"
    )
    bad_mode = dict(info["modules"][0], training="yes")
    _expect(tmp_path, _rewrite(meta, tensors, info={**info, "modules": [bad_mode]}), "'training'")
    bad_w = dict(info["modules"][0], weights="float64")
    _expect(tmp_path, _rewrite(meta, tensors, info={**info, "modules": [bad_w]}), "do not match")
    _expect(tmp_path, _rewrite(meta, tensors, drop="bias_hh_l0"), "tensor 'bias_hh_l0' is missing")
    _expect(
        tmp_path,
        _rewrite(meta, tensors, add=("extra", np.zeros(2, np.float32))),
        "unexpected tensor 'extra'",
    )
    _expect(
        tmp_path,
        _rewrite(meta, tensors, cast=("bias_hh_l0", np.float64)),
        "has dtype float64, expected float32",
    )
    _expect(tmp_path, _rewrite(meta, tensors, cast=("bias_hh_l0", np.int8)), "has dtype int8")
    wrong = [(k, v[:-1] if k == "weight_hh_l0" else v) for k, v in tensors]
    _expect(tmp_path, _rewrite(meta, wrong), "has shape")
    stats = [(k, v[:1] if k == "bn_ih_running_mean_l0" else v) for k, v in tensors]
    _expect(tmp_path, _rewrite(meta, stats), "must have the same shape")


def test_bytes_entry_point_and_errors_name_problems():
    good, meta, tensors = _good_file()
    got_meta, got = _core.read_safetensors_bytes(good)
    assert got_meta == meta and list(got) == [k for k, _ in tensors]
    for k, v in tensors:
        assert np.array_equal(got[k], v)
    with pytest.raises(ValueError, match="truncated"):
        _core.read_safetensors_bytes(good[:-1])


def test_module_entries_reads_the_header_only(tmp_path):
    from rnncore._files import module_entries

    lstm, head = _trained("lstm", norm="batch"), rc.Linear(5, 2, seed=2)
    rc.save(lstm.half_weights(), tmp_path / "one.safetensors")
    assert module_entries(tmp_path / "one.safetensors") == [(None, "LSTM", lstm.options)]
    rc.save({"encoder": lstm, "head": head}, tmp_path / "two.safetensors")
    assert module_entries(str(tmp_path / "two.safetensors")) == [
        ("encoder", "LSTM", lstm.options),
        ("head", "Linear", head.options),
    ]
    # a bad header: the loader's error; a bad data section is left to load
    good, meta, tensors = _good_file()
    for data, phrase in [(b"abc", "too short"), (good[:12], "header length")]:
        with pytest.raises(ValueError, match=phrase):
            module_entries(_load_bytes(tmp_path, data))
    assert module_entries(_load_bytes(tmp_path, good[:-1]))[0][1] == "LSTM"
    with pytest.raises(TypeError, match="path must be"):
        module_entries(b"x.safetensors")


# ------------------------------------------------------------ direct reads (rc.load)
# rc.load has the core read each tensor straight into its place (a parameter in the
# module's dtype into the module's flat parameter buffer, which is not cleared first);
# these compare it with the generic path (every tensor into an array of its own, then
# load_state_dict) and check what it relies on.
def _generic_load(path):
    """rc.load the long way: _core.read_safetensors, a zeroed module, load_state_dict."""
    from rnncore._files import _CLASSES, _half_name

    meta, tensors = _core.read_safetensors(str(path))
    info = json.loads(meta["rnncore"])
    out = {}
    for e in info["modules"]:
        cls = _CLASSES[e["class"]]
        options = cls._options_class.from_dict(e["options"])
        module = cls.__new__(cls)
        module._build(options)
        module._mask_rng = np.random.default_rng()
        prefix = f"{e['name']}." if len(info["modules"]) > 1 else ""
        keys = [*module._params, *module._buffer_names()]
        half = e["weights"] == "float16"
        for k in keys:
            want = np.float16 if half and _half_name(k) else module.dtype
            assert tensors[prefix + k].dtype == want
        module.load_state_dict({k: tensors[prefix + k].astype(module.dtype) for k in keys})
        module.train(e["training"])
        if half:
            module._make_half()
        out[e["name"]] = module
    return out if len(out) > 1 else next(iter(out.values()))


def _outputs_equal(a, b):
    """Eval-mode outputs of two modules of the same class and options are equal."""
    for m in (a, b):
        if not getattr(m, "_half", False):
            m.eval()
    size = a.in_features if isinstance(a, rc.Linear) else a.input_size
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, size) if isinstance(a, (rc.Linear, rc.LSTMCell, rc.GRUCell,
                            rc.RNNCell)) else (6, 2, size)).astype(a.dtype)  # fmt: skip
    ya, yb = a(x), b(x)
    ya = ya[0] if isinstance(ya, tuple) else ya
    yb = yb[0] if isinstance(yb, tuple) else yb
    assert ya.tobytes() == yb.tobytes()


def _modules_for_direct_reads():
    lstm = _trained("lstm", norm="batch", bidirectional=True, proj_size=2, num_layers=2)
    gru64 = _trained("gru", dtype="float64", norm="batch_input")
    return [
        lstm,
        gru64.eval(),
        _trained("rnn", norm="layer").half_weights(),
        rc.Linear(4, 3, seed=5),
        rc.Linear(4, 3, bias=False, dtype="float64", seed=6).eval(),
        rc.LSTMCell(4, 5, seed=7, norm="layer").half_weights(),
        rc.GRUCell(4, 5, seed=8, dtype="float64"),
        {"enc": lstm.half_weights(), "mid": gru64, "head": rc.Linear(5, 2, seed=9)},
    ]


@pytest.mark.parametrize("index", range(8))
def test_direct_reads_equal_the_generic_path(tmp_path, index):
    obj = _modules_for_direct_reads()[index]
    path = tmp_path / "m.safetensors"
    rc.save(obj, path)
    got, want = rc.load(path), _generic_load(path)
    if isinstance(want, dict):
        assert list(got) == list(want)
        pairs = [(got[k], want[k]) for k in want]
    else:
        pairs = [(got, want)]
    for a, b in pairs:
        _assert_same(a, b)
        assert getattr(a, "_half", False) == getattr(b, "_half", False)
        _outputs_equal(a, b)


def _reordered(data: bytes, order, header_order=None) -> bytes:
    """The file's tensors rewritten with their data in ``order`` (a key function on the
    names), and the header's entries in ``header_order`` (default: the data's order)."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    meta = header.pop("__metadata__")
    names = sorted(header, key=order)
    chunks, at, new = [], 0, {}
    for k in names:
        b, e = header[k]["data_offsets"]
        chunks.append(body[b:e])
        new[k] = dict(header[k], data_offsets=[at, at + e - b])
        at += e - b
    entries = {k: new[k] for k in sorted(new, key=header_order or order)}
    raw = json.dumps({"__metadata__": meta, **entries}).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


@pytest.mark.parametrize("how", ["reversed", "shuffled", "header_reversed"])
def test_tensors_in_any_order_load_bitwise(tmp_path, how):
    lstm = _trained("lstm", norm="batch", num_layers=2, bidirectional=True)
    obj = {"enc": lstm, "head": rc.Linear(10, 2, seed=1), "half": lstm.half_weights()}
    path = tmp_path / "m.safetensors"
    rc.save(obj, path)
    names = list(_core.read_safetensors(str(path))[1])
    rank = {k: i for i, k in enumerate(names)}
    shuffled = {k: i for i, k in enumerate(np.random.default_rng(3).permutation(names))}
    if how == "reversed":
        data = _reordered(path.read_bytes(), lambda k: -rank[k])
    elif how == "shuffled":
        data = _reordered(path.read_bytes(), shuffled.get)
    else:  # the data in state_dict order, the header's entries the other way round
        data = _reordered(path.read_bytes(), rank.get, lambda k: -rank[k])
    other = _load_bytes(tmp_path, data, "other.safetensors")
    assert other.read_bytes() != path.read_bytes()
    back = rc.load(other)
    for k in obj:
        _assert_same(obj[k], back[k])
        _outputs_equal(obj[k], back[k])


def test_a_file_truncated_after_its_header_was_read_raises(tmp_path, monkeypatch):
    # The header is checked against the file's size when it is opened; a file that
    # shrinks before its tensors are read is refused then, and no module is returned.
    path = tmp_path / "m.safetensors"
    rc.save(_trained("gru", norm="batch"), path)
    size = path.stat().st_size
    real = _core.SafetensorsFile

    def opened_then_truncated(p):
        f = real(p)
        os.truncate(p, size - 5)
        return f

    monkeypatch.setattr(_core, "SafetensorsFile", opened_then_truncated)
    with pytest.raises(ValueError, match="truncated") as info:
        rc.load(path)
    assert str(path) in str(info.value)


def test_safetensors_file_read_into_checks_every_target(tmp_path):
    path = tmp_path / "t.safetensors"
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    h = np.array([1, -2, 3], np.float16)
    d = np.array(np.pi)
    _core.write_safetensors(str(path), {"k": "v"}, [("w", w), ("h", h), ("d", d)])
    with _core.SafetensorsFile(str(path)) as f:
        assert f.path == str(path) and f.metadata == {"k": "v"}
        assert f.tensors == {
            "w": (np.dtype("<f4"), (2, 3)),
            "h": (np.dtype("<f2"), (3,)),
            "d": (np.dtype("<f8"), ()),
        }
        flat = np.empty(6 + 2, np.float32)  # w, then room for nothing else it may write
        flat[6:] = 7
        hh, dd = np.empty(3, np.float16), np.empty((), np.float64)
        f.read_into([("d", dd), ("w", flat[:6].reshape(2, 3)), ("h", hh)])
        assert np.array_equal(flat[:6].reshape(2, 3), w) and np.all(flat[6:] == 7)
        assert np.array_equal(hh, h) and dd == d
        f.read_into([])  # nothing to read
        bad = [
            ([("x", np.empty(1))], ValueError, "no tensor 'x'"),
            ([("w", np.empty((3, 2), np.float32))], ValueError, "has shape"),
            ([("w", np.empty((2, 3), np.float64))], ValueError, "has dtype F32"),
            ([("w", np.empty((2, 3), ">f4"))], ValueError, "little-endian"),
            ([("w", np.empty((3, 2), np.float32).T)], ValueError, "not C-contiguous"),
            ([("h", hh), ("h", np.empty(3, np.float16))], ValueError, "read twice"),
            ([("w", [[0.0] * 3] * 2)], TypeError, "not a NumPy array"),
        ]
        ro = np.empty((2, 3), np.float32)
        ro.flags.writeable = False
        bad.append(([("w", ro)], ValueError, "not writable"))
        for targets, exc, phrase in bad:
            before = [t.copy() for _, t in targets if isinstance(t, np.ndarray)]
            with pytest.raises(exc, match=phrase):
                f.read_into(targets)
            after = [t for _, t in targets if isinstance(t, np.ndarray)]
            # checked before anything is read: nothing was written
            assert all(a.tobytes() == b.tobytes() for a, b in zip(after, before))
    with pytest.raises(ValueError, match="closed"):
        f.read_into([("h", hh)])
    with pytest.raises(ValueError, match="closed"):
        f.tensors  # noqa: B018 - the property raises
    with pytest.raises(FileNotFoundError):
        _core.SafetensorsFile(str(tmp_path / "absent"))
    with pytest.raises(IsADirectoryError):
        _core.SafetensorsFile(str(tmp_path))
    with pytest.raises(ValueError, match="truncated") as info:
        _core.SafetensorsFile(_load_bytes(tmp_path, path.read_bytes()[:-1]).as_posix())
    assert "bad.safetensors" in str(info.value)


@pytest.mark.parametrize("index", range(8))
def test_parameters_tile_the_flat_buffer(index):
    # rc.load leaves the parameter buffer uncleared and relies on the parameters
    # covering all of it (each byte once).
    obj = _modules_for_direct_reads()[index]
    for m in obj.values() if isinstance(obj, dict) else [obj]:
        flat = m._grad_buffer()  # the gradient buffer has the parameters' layout
        spans = sorted((g.ctypes.data - flat.ctypes.data, g.nbytes) for g in m.grads.values())
        assert spans[0][0] == 0 and sum(n for _, n in spans) == flat.nbytes
        assert all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
