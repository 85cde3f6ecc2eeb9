"""rnncore.from_onnx: the ONNX RNN / LSTM / GRU operators as rnncore modules.

Two references: ONNX's own operator conformance cases (the ``test_lstm_*``, ``test_gru_*``,
``test_rnn_*`` and ``test_simple_rnn_*`` node tests: a one-node model, its inputs and the
expected outputs, computed by ONNX's NumPy reference implementation), and ONNX Runtime
running random graphs of every supported attribute combination.

The conformance data ships as files under ``onnx/backend/test/data/node`` in some onnx
releases; others ship only the generators (``onnx.backend.test.case.node.lstm`` ...), which
build the same models and data when imported. Both are read here. Some cases feed ``W``,
``R``, ``B`` as graph inputs; their values are passed with ``from_onnx(..., inputs=...)``.
"""

from __future__ import annotations

import importlib
import zlib
from pathlib import Path

import numpy as np
import pytest

import rnncore as rc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_PREFIXES = ("test_lstm_", "test_gru_", "test_rnn_", "test_simple_rnn_")
# The cases that use what rnncore does not compute yet, and the error they must raise
# (none now: peepholes, clip and input_forget import as the LSTM's options).
_UNSUPPORTED: dict[str, str] = {}
# Inputs that are data of a call, not weights.
_CALL_INPUTS = ("X", "sequence_lens", "initial_h", "initial_c")


def _conformance_cases() -> dict:
    """name -> (model, inputs by graph-input name, expected outputs by graph-output name)."""
    cases = {}
    data = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    for folder in sorted(data.glob("test_*")) if data.is_dir() else []:
        if not folder.name.startswith(_PREFIXES) or "expanded" in folder.name:
            continue
        model = onnx.load(str(folder / "model.onnx"))
        ins = [_read_pb(p) for p in sorted((folder / "test_data_set_0").glob("input_*.pb"))]
        outs = [_read_pb(p) for p in sorted((folder / "test_data_set_0").glob("output_*.pb"))]
        cases[folder.name] = _named(model, ins, outs)
    if cases:
        return cases
    from onnx.backend.test.case import node  # the generators: importing one registers its cases

    for name in ("lstm", "gru", "rnn"):
        importlib.import_module(f"onnx.backend.test.case.node.{name}")
    for case in node._NodeTestCases:
        if case.name.startswith(_PREFIXES) and case.data_sets:
            ins, outs = case.data_sets[0]
            cases[case.name] = _named(case.model, ins, outs)
    return cases


def _read_pb(path: Path) -> np.ndarray:
    tensor = TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _named(model, ins, outs):
    g = model.graph
    return (model, {i.name: np.asarray(v) for i, v in zip(g.input, ins)},
            {o.name: np.asarray(v) for o, v in zip(g.output, outs)})  # fmt: skip


CASES = _conformance_cases()


def test_the_conformance_cases_are_found():
    # 6 LSTM, 6 GRU and 6 RNN cases in the onnx releases this was written against
    kinds = {p: [n for n in CASES if n.startswith(p)] for p in _PREFIXES}
    assert len(kinds["test_lstm_"]) >= 5 and len(kinds["test_gru_"]) >= 5, kinds
    assert len(kinds["test_rnn_"]) + len(kinds["test_simple_rnn_"]) >= 5, kinds


def run_like_onnx(m, values: dict, layout: int) -> dict:
    """Runs module ``m`` on an operator's inputs; returns ``Y``, ``Y_h``, ``Y_c`` in the
    operator's layouts (``Y`` ``(T, D, B, H)``, states ``(D, B, H)``; layout 1:
    ``(B, T, D, H)`` and ``(B, D, H)``)."""
    h0, c0 = values.get("initial_h"), values.get("initial_c")
    if layout == 1:  # rnncore's states are (D, B, H) in either layout
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    hx = (h0, c0) if isinstance(m, rc.LSTM) else h0
    out, states = m(values["X"], hx, values.get("sequence_lens"))
    h, c = states if isinstance(m, rc.LSTM) else (states, None)
    d = 2 if m.bidirectional else 1
    if layout == 0:
        y = out.reshape(out.shape[0], out.shape[1], d, -1).transpose(0, 2, 1, 3)
    else:
        y = out.reshape(out.shape[0], out.shape[1], d, -1)
        h = h.transpose(1, 0, 2)
        c = None if c is None else c.transpose(1, 0, 2)
    return {"Y": y, "Y_h": h, "Y_c": c}


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_conformance_case(name):
    model, values, expected = CASES[name]
    weights = {k: v for k, v in values.items() if k not in _CALL_INPUTS}
    if name in _UNSUPPORTED:
        with pytest.raises(ValueError, match=_UNSUPPORTED[name]):
            rc.from_onnx(model, inputs=weights)
        return
    modules = rc.from_onnx(model, inputs=weights)
    (m,) = modules.values()
    assert not m.training
    layout = next((a.i for a in model.graph.node[0].attribute if a.name == "layout"), 0)
    got = run_like_onnx(m, values, layout)
    for out_name, want in expected.items():
        # ONNX's expected values come from a float32 NumPy implementation: both sides are
        # float32 computations of values in (-1, 1) over 1-3 steps, a few float32 roundings
        # (1.2e-7 each) apart; measured differences are at most 2.4e-7.
        np.testing.assert_allclose(got[out_name], want, rtol=0, atol=1e-6, err_msg=out_name)


# --------------------------------------------------------------------------- random graphs
_CELLS = {  # name -> (op_type, gates, attributes)
    "rnn_tanh": ("RNN", 1, {}),
    "rnn_relu": ("RNN", 1, {"activations": ["Relu"]}),
    "lstm": ("LSTM", 4, {}),
    "gru_lbr0": ("GRU", 3, {"linear_before_reset": 0}),
    "gru_lbr1": ("GRU", 3, {"linear_before_reset": 1}),
}
T, B, IN, H = 5, 3, 4, 6


def make_graph(cell, direction, layout, *, bias, seq_lens, init, explicit, rng):
    """A one-node ONNX model of ``cell`` with random initializer weights; returns it and the
    feeds of one call."""
    op, g, attrs = _CELLS[cell]
    d = 2 if direction == "bidirectional" else 1
    attrs = dict(attrs, direction=direction, layout=layout, hidden_size=H)  # ORT needs it
    if op == "RNN" and "activations" in attrs:
        attrs["activations"] = attrs["activations"] * d
    if explicit:  # the default activations, spelled out
        attrs.setdefault("activations", {"RNN": ["Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"],
                                         "GRU": ["Sigmoid", "Tanh"]}[op] * d)  # fmt: skip
    w = rng.uniform(-0.6, 0.6, (d, g * H, IN)).astype(np.float32)
    r = rng.uniform(-0.6, 0.6, (d, g * H, H)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")]
    names = ["X", "W", "R"]
    if bias:
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (d, 2 * g * H)).astype(
            np.float32), "B"))  # fmt: skip
    names.append("B" if bias else "")
    tb = ["B", "T"] if layout else ["T", "B"]
    state = ["S0", "S1", H]
    x = rng.standard_normal((B, T, IN) if layout else (T, B, IN)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [*tb, IN])]
    feeds = {"X": x}
    names.append("sequence_lens" if seq_lens else "")
    if seq_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
        feeds["sequence_lens"] = np.array([T, 2, 1], np.int32)
    for s in ("initial_h", "initial_c") if op == "LSTM" else ("initial_h",):
        names.append(s if init else "")
        if init:
            inputs.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, state))
            feeds[s] = rng.standard_normal((B, d, H) if layout else (d, B, H)).astype(np.float32)
    while names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, names, outputs, name=f"my_{cell}", **attrs)
    ranks = {"Y": 4, "Y_h": 3, "Y_c": 3}
    out_infos = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * ranks[o])
                 for o in outputs]  # fmt: skip
    graph = helper.make_graph([node], "g", inputs, out_infos, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, feeds


def ort_run(model, feeds: dict) -> dict:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def ort_run_layout(model, feeds: dict, layout: int) -> dict:
    """ONNX Runtime's outputs; its kernels refuse ``layout=1``, which is by definition the
    ``layout=0`` operator on inputs and outputs with their first two axes swapped: run that."""
    if layout == 0:
        return ort_run(model, feeds)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for attr in model.graph.node[0].attribute:
        if attr.name == "layout":
            attr.i = 0
    swapped = {k: (v.swapaxes(0, 1) if v.ndim == 3 else v) for k, v in feeds.items()}
    out = ort_run(model, swapped)
    return {k: v.swapaxes(0, 2).swapaxes(1, 2) if k == "Y" else v.swapaxes(0, 1)
            for k, v in out.items()}  # Y (T, D, B, H) -> (B, T, D, H); states (B, D, H)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell", sorted(_CELLS))
def test_random_graph_matches_onnx_runtime(cell, direction, layout):
    rng = np.random.default_rng(zlib.crc32(f"{cell} {direction} {layout}".encode()))
    # Two graphs per combination: bias, nothing optional, attributes left to their defaults;
    # no bias, sequence_lens, initial states and the default attributes spelled out.
    for bias, optional in ((True, False), (False, True)):
        model, feeds = make_graph(cell, direction, layout, bias=bias, seq_lens=optional,
                                  init=optional, explicit=optional, rng=rng)  # fmt: skip
        (m,) = rc.from_onnx(model).values()
        assert m.bidirectional == (direction == "bidirectional")
        assert m.reverse == (direction == "reverse")
        assert m.batch_first == (layout == 1) and m.bias == bias
        if cell.startswith("gru"):
            assert m.reset_after == cell.endswith("lbr1")
        if cell.startswith("rnn"):
            assert m.nonlinearity == cell[4:]
        want = ort_run_layout(model, feeds, layout)
        got = run_like_onnx(m, feeds, layout)
        for name, value in want.items():
            # ONNX Runtime's fused float32 kernels against rnncore's float32 core: values of
            # magnitude up to ~4 (relu RNN) over 5 steps, each side a few float32 roundings
            # (1.2e-7 relative) per step from the exact value; measured at most 4.8e-7.
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


# --------------------------------------------------------------------------- errors
def _one_node(op="LSTM", attrs=None, extra_inputs=(), weights_as_inputs=False, p=None):
    g = {"RNN": 1, "LSTM": 4, "GRU": 3}[op]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, g * 2, 3)).astype(np.float32)
    r = rng.standard_normal((1, g * 2, 2)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])]
    inits = []
    for name, value in (("W", w), ("R", r)):
        if weights_as_inputs:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
        else:
            inits.append(numpy_helper.from_array(value, name))
    names = ["X", "W", "R"]
    if p is not None:
        inits.append(numpy_helper.from_array(p.astype(np.float32), "P"))
        names += ["", "", "", "", "P"]
    node = helper.make_node(op, names, ["Y"], **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              initializer=inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w, r


@pytest.mark.parametrize(
    "op, attrs, match",
    [
        ("LSTM", {"clip": -3.0}, "clip must be a positive finite number"),
        ("GRU", {"input_forget": 1}, "input_forget is an attribute of the LSTM only"),
        ("LSTM", {"input_forget": 2}, "invalid input_forget"),
        ("RNN", {"activations": ["Sigmoid"]}, "activations .* not supported yet"),
        ("LSTM", {"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations .* not supported yet"),
        ("GRU", {"activations": ["HardSigmoid", "Tanh"]}, "activations .* not supported yet"),
        ("RNN", {"activations": ["Tanh", "Relu"], "direction": "bidirectional"},
         "activations .* not supported yet"),
        ("RNN", {"activation_alpha": [0.5]}, "activation_alpha is not supported yet"),
        ("GRU", {"activation_beta": [0.5]}, "activation_beta is not supported yet"),
        ("LSTM", {"hidden_size": 5}, "hidden_size=5"),
    ],
)  # fmt: skip
def test_what_rnncore_does_not_compute_yet_raises_naming_it(op, attrs, match):
    model, _, _ = _one_node(op, attrs)
    with pytest.raises(ValueError, match=match):
        rc.from_onnx(model)


def test_peepholes_import_unless_zero():
    model, _, _ = _one_node("LSTM", p=np.arange(6.0).reshape(1, 6))
    m = rc.from_onnx(model)["LSTM_0"]
    assert m.peephole  # ONNX's P is p_i, p_o, p_f
    params = m.parameters()
    for name, want in (("weight_ci_l0", [0, 1]), ("weight_co_l0", [2, 3]),
                       ("weight_cf_l0", [4, 5])):  # fmt: skip
        np.testing.assert_array_equal(params[name], want)
    model, _, _ = _one_node("LSTM", p=np.zeros((1, 6)))
    m = rc.from_onnx(model)["LSTM_0"]
    assert isinstance(m, rc.LSTM) and not m.peephole  # zero peepholes: a plain LSTM


def test_weights_that_are_graph_inputs_need_inputs():
    model, w, r = _one_node("GRU", weights_as_inputs=True)
    with pytest.raises(ValueError, match=r"W \('W'\) is a graph input: pass its value"):
        rc.from_onnx(model)
    m = rc.from_onnx(model, inputs={"W": w, "R": r})["GRU_0"]
    assert np.array_equal(m.parameters()["weight_ih_l0"], w[0][[2, 3, 0, 1, 4, 5]])
    with pytest.raises(ValueError, match="names no graph input"):
        rc.from_onnx(model, inputs={"W": w, "R": r, "Q": w})


def test_weights_from_constant_nodes_and_computed_weights():
    model, w, r = _one_node("RNN")
    graph = model.graph
    # R from a Constant node: read
    const = helper.make_node("Constant", [], ["R"], value=graph.initializer[1])
    del graph.initializer[1]
    graph.node.insert(0, const)
    (m,) = rc.from_onnx(model).values()
    assert np.array_equal(m.parameters()["weight_hh_l0"], r[0])
    # W computed by a node: refused, naming it
    graph.node.insert(0, helper.make_node("Identity", ["W0"], ["W"]))
    graph.initializer[0].name = "W0"
    with pytest.raises(ValueError, match=r"W \('W'\) is computed by the graph"):
        rc.from_onnx(model)


def test_names_paths_and_model_types(tmp_path):
    model, _, _ = _one_node("LSTM")
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for source in (model, path, str(path)):
        assert list(rc.from_onnx(source)) == ["LSTM_0"]  # unnamed: op type, graph position
    model.graph.node[0].name = "encoder"
    assert list(rc.from_onnx(model)) == ["encoder"]
    with pytest.raises(TypeError, match="ModelProto or a path"):
        rc.from_onnx(42)


def test_float64_weights_give_a_float64_module():
    model, w, _ = _one_node("LSTM")
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    (m,) = rc.from_onnx(model).values()
    assert m.dtype == np.float64
    assert np.array_equal(m.parameters()["weight_ih_l0"][:2], w[0][:2].astype(np.float64))
