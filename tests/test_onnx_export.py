"""rnncore.to_onnx: exported models run by ONNX Runtime compute the module's eval-mode call.

Every cell and norm, two layers, both directions, the projection, lengths and initial
states; each file is run at two different (T, B), so the symbolic dimensions are checked
too. Batch-normalized modules are trained for a few calls first, so that their running
statistics are not the initial ones, with sequences shorter than the test ones, so that
steps beyond the rows seen in training (row ``min(t, S - 1)``) are exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore as rc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

IN, H = 3, 4
# name -> (class, options); the RNN's nonlinearity varies with the norm below
CELLS = {
    "rnn": (rc.RNN, {}),
    "lstm": (rc.LSTM, {}),
    "lstm_proj": (rc.LSTM, {"proj_size": 3}),
    "gru": (rc.GRU, {}),
    "gru_reset_before": (rc.GRU, {"reset_after": False}),  # norm=None only
}
NORMS = [None, "layer", "batch", "batch_input"]
MATRIX = [(c, n) for c in CELLS for n in NORMS if c != "gru_reset_before" or n is None]
SHAPES = [(6, 3), (3, 5)]  # (T, B) of the two runs of one file
TRAIN_T = 4  # training sequences: shorter than T=6, so the last rows are reused


def session(source):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    return ort.InferenceSession(str(source) if not isinstance(source, bytes) else source, so,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def make(cell, norm, *, bidirectional, batch_first=False, dtype="float32", seed=0, **extra):
    cls, options = CELLS[cell]
    options = dict(options, **extra)
    if cls is rc.RNN:
        options.setdefault("nonlinearity", "relu" if norm in (None, "batch") else "tanh")
    m = cls(IN, H, num_layers=2, bidirectional=bidirectional, batch_first=batch_first,
            norm=norm, dtype=dtype, seed=seed, **options)  # fmt: skip
    rng = np.random.default_rng(seed)
    for p in m.parameters().values():  # gains and shifts away from 1 and 0 as well
        p[...] = rng.uniform(-0.8, 0.8, p.shape) if p.ndim > 1 else rng.uniform(-0.5, 1.2, p.shape)
    if norm in ("batch", "batch_input"):  # non-trivial running statistics
        for _ in range(3):
            x = rng.standard_normal((TRAIN_T, 4, IN)) * 2 + 0.5
            m(x.transpose(1, 0, 2) if batch_first else x, lengths=[4, 3, 2, 4])
    return m.eval()


def feeds_for(m, steps, batch, *, lengths, initial_state, rng, nan_padding=False):
    """The ONNX feeds of one call and the same call's arguments for the module."""
    x = rng.standard_normal((steps, batch, IN)).astype(m.dtype)
    feeds, args = {}, {}
    lens = None
    if lengths:
        lens = rng.integers(1, steps + 1, batch).astype(np.int64)
        lens[0] = steps
        if nan_padding:  # outputs past a length must not depend on the padding
            lens = rng.integers(1, steps, batch).astype(np.int64)  # and steps of padding only
            x[np.arange(steps)[:, None] >= lens[None, :]] = np.nan
        feeds["lengths"] = lens
    if m.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    feeds["x"] = x
    hx = None
    if initial_state:
        d = 2 if m.bidirectional else 1
        h0 = rng.standard_normal((2 * d, batch, m.proj_size or H)).astype(m.dtype)
        feeds["h_0"] = h0
        hx = h0
        if isinstance(m, rc.LSTM):
            c0 = rng.standard_normal((2 * d, batch, H)).astype(m.dtype)
            feeds["c_0"] = c0
            hx = (h0, c0)
    args = (x, hx, lens)
    return feeds, args


def expected(m, args) -> list:
    out, states = m(*args)
    return [out, *states] if isinstance(m, rc.LSTM) else [out, states]


# float32: ONNX Runtime's kernels and rnncore's core each round every operation in float32
# (1.2e-7 relative), in different orders; over 6 steps and 2 layers, with layer and batch
# norms dividing by standard deviations near 1, their difference measured over this file's
# cases at most 1.9e-6, on relu-RNN values up to 16 (2e-7 relative), and up to 5e-6 on other
# random draws of O(1) values: 1e-5 relative plus 1e-5 absolute is float32 agreement and
# still far below any error of the graph (a wrong bias, gate or statistics row moves outputs
# by 1e-2 or more).
F32 = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell, norm", MATRIX, ids=[f"{c}-{n}" for c, n in MATRIX])
def test_export_matches_the_module(tmp_path, cell, norm, bidirectional, lengths):
    initial_state = lengths != bidirectional  # all four combinations per cell and norm
    batch_first = (norm in ("layer", "batch_input")) != lengths  # both layouts per norm
    m = make(cell, norm, bidirectional=bidirectional, batch_first=batch_first)
    path = tmp_path / "m.onnx"
    rc.to_onnx(m, path, lengths=lengths, initial_state=initial_state)
    s = session(path)  # one file, two shapes
    rng = np.random.default_rng(1)
    for i, (steps, batch) in enumerate(SHAPES):
        feeds, args = feeds_for(m, steps, batch, lengths=lengths, initial_state=initial_state,
                                rng=rng, nan_padding=i == 1)  # fmt: skip
        got = s.run(None, feeds)
        for name, g, w in zip(("out", "h_n", "c_n"), got, expected(m, args)):
            assert g.shape == w.shape, name
            np.testing.assert_allclose(g, w, err_msg=f"{name} at T={steps}, B={batch}", **F32)


@pytest.mark.parametrize(
    "cell, norm", [("lstm_proj", "layer"), ("gru_reset_before", None), ("rnn", "batch")]
)
def test_zoneout_exports_its_expectation(cell, norm):
    m = make(cell, norm, bidirectional=True, zoneout=0.3)
    s = session(rc.to_onnx(m, lengths=True, initial_state=True))
    feeds, args = feeds_for(m, 5, 3, lengths=True, initial_state=True,
                            rng=np.random.default_rng(2))  # fmt: skip
    for g, w in zip(s.run(None, feeds), expected(m, args)):
        np.testing.assert_allclose(g, w, **F32)


@pytest.mark.parametrize("cell, norm", [("lstm", None), ("gru", "batch"), ("rnn", "layer"),
                                        ("gru_reset_before", None)])  # fmt: skip
def test_modules_without_biases(cell, norm):
    m = make(cell, norm, bidirectional=True, bias=False)
    feeds, args = feeds_for(m, 5, 3, lengths=True, initial_state=False,
                            rng=np.random.default_rng(8))  # fmt: skip
    for g, w in zip(session(rc.to_onnx(m, lengths=True)).run(None, feeds), expected(m, args)):
        np.testing.assert_allclose(g, w, **F32)


F64_CASES = [("lstm", None), ("gru_reset_before", None), ("rnn", None), ("lstm_proj", "batch"),
             ("gru", "layer")]  # fmt: skip


@pytest.mark.parametrize("cell, norm", F64_CASES)
def test_float64_modules_export_as_float64(cell, norm):
    # ONNX Runtime's RNN/LSTM/GRU kernels are float32 only: float64 modules use the Loop,
    # which it runs in float64. Both sides then compute the same equations in float64.
    m = make(cell, norm, bidirectional=True, dtype="float64")
    model = rc.to_onnx(m, lengths=True, initial_state=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    feeds, args = feeds_for(m, 5, 3, lengths=True, initial_state=True,
                            rng=np.random.default_rng(3))  # fmt: skip
    for g, w in zip(session(model).run(None, feeds), expected(m, args)):
        assert g.dtype == np.float64
        # float64 roundings (1.1e-16) over 5 steps and 2 layers of O(1) values
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def _op_types(model) -> set:
    return {n.op_type for n in model.graph.node}


def test_graph_inputs_outputs_and_operators():
    m = make("lstm_proj", None, bidirectional=True, batch_first=True)
    model = rc.to_onnx(m, lengths=True, initial_state=True)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in model.graph.input] == [
        ("x", ["B", "T", IN]), ("lengths", ["B"]), ("h_0", [4, "B", 3]), ("c_0", [4, "B", H])
    ]  # fmt: skip
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("out", ["B", "T", 6]), ("h_n", [4, "B", 3]), ("c_n", [4, "B", H])
    ]  # fmt: skip
    assert "Loop" in _op_types(model) and "LSTM" not in _op_types(model)  # projection: Loop
    for cell in ("lstm", "gru", "gru_reset_before", "rnn"):
        plain = rc.to_onnx(make(cell, None, bidirectional=True))
        op = {"lstm": "LSTM", "gru": "GRU", "gru_reset_before": "GRU", "rnn": "RNN"}[cell]
        assert op in _op_types(plain) and "Loop" not in _op_types(plain)
        names = [n.name for n in plain.graph.node if n.op_type == op]
        assert names == [f"{op.lower()}_l0", f"{op.lower()}_l1"]
        assert [i.name for i in plain.graph.input] == ["x"]
        outputs = ["out", "h_n"] + (["c_n"] if op == "LSTM" else [])
        assert [o.name for o in plain.graph.output] == outputs
    assert "Loop" in _op_types(rc.to_onnx(make("gru", "layer", bidirectional=False)))


def test_training_mode_modules_export_their_eval_call():
    m = make("lstm", "batch", bidirectional=True, dropout=0.3, input_dropout=0.2, zoneout=0.2)
    m.train()
    model = rc.to_onnx(m, lengths=True)
    assert m.training  # the module's mode is left alone
    feeds, args = feeds_for(m, 5, 3, lengths=True, initial_state=False,
                            rng=np.random.default_rng(4))  # fmt: skip
    got = session(model).run(None, feeds)
    m.eval()
    for g, w in zip(got, expected(m, args)):
        np.testing.assert_allclose(g, w, **F32)


@pytest.mark.parametrize("opset", [14, 18, 21])
def test_opsets(opset):
    m = make("lstm_proj", "layer", bidirectional=True)
    model = rc.to_onnx(m, opset=opset, lengths=True)
    assert model.opset_import[0].version == opset
    feeds, args = feeds_for(m, 4, 2, lengths=True, initial_state=False,
                            rng=np.random.default_rng(5))  # fmt: skip
    for g, w in zip(session(model).run(None, feeds), expected(m, args)):
        np.testing.assert_allclose(g, w, **F32)


def test_half_weights_copies_export_their_rounded_weights():
    m = make("gru", None, bidirectional=False)
    fast = m.half_weights()
    feeds, args = feeds_for(fast, 4, 3, lengths=False, initial_state=False,
                            rng=np.random.default_rng(6))  # fmt: skip
    got = session(rc.to_onnx(fast)).run(None, feeds)
    for g, w in zip(got, expected(fast, args)):
        np.testing.assert_allclose(g, w, **F32)


def test_errors():
    with pytest.raises(TypeError, match="a cell: load its weights"):
        rc.to_onnx(rc.LSTMCell(3, 4))
    with pytest.raises(TypeError, match="expects an rnncore RNN, LSTM or GRU"):
        rc.to_onnx(rc.Linear(3, 4))
    m = rc.GRU(3, 4)
    for bad in (13, 10**6, 17.0, "17"):
        with pytest.raises(ValueError, match="opset must be an int"):
            rc.to_onnx(m, opset=bad)


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("cell, extra", [("lstm", {}), ("gru", {}), ("gru_reset_before", {}),
                                         ("rnn", {"nonlinearity": "relu"}),
                                         ("lstm", {"bias": False})])  # fmt: skip
def test_round_trip_gives_bitwise_equal_parameters(tmp_path, cell, extra):
    m = make(cell, None, bidirectional=True, batch_first=True, **extra)
    path = tmp_path / "m.onnx"
    rc.to_onnx(m, path)
    layers = rc.from_onnx(path)
    op = {"lstm": "lstm", "gru": "gru", "gru_reset_before": "gru", "rnn": "rnn"}[cell]
    assert list(layers) == [f"{op}_l0", f"{op}_l1"]
    params = m.parameters()
    for k, layer in enumerate(layers.values()):
        assert type(layer) is type(m) and layer.bidirectional and not layer.batch_first
        assert layer.bias == m.bias and layer.dtype == m.dtype
        if cell.startswith("gru"):
            assert layer.reset_after == m.reset_after
        if cell == "rnn":
            assert layer.nonlinearity == "relu"
        for name, value in layer.parameters().items():
            original = params[name.replace("_l0", f"_l{k}")]
            assert value.tobytes() == original.tobytes(), name  # bitwise
    # the imported layers, chained, compute the module
    x = np.random.default_rng(7).standard_normal((4, 3, IN)).astype(np.float32)
    y = x.transpose(1, 0, 2)
    for layer in layers.values():
        y = layer(y)[0]
    np.testing.assert_allclose(y.transpose(1, 0, 2), m(x)[0], rtol=0, atol=1e-6)
