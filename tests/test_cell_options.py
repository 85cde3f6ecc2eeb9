"""The cell options of the NumPy reference (``clip``; the LSTM's ``peephole``, ``cell_clip`` and
``input_forget``) against independent implementations.

ONNX Runtime's own ``LSTM``, ``GRU`` and ``RNN`` operators implement ``clip``, the LSTM's
peepholes ``P`` and ``input_forget``: tiny one-node graphs run the reference's parameters
(converted to ONNX's gate order) and the outputs must agree to float32 precision. No runtime
without TensorFlow implements TFLite's cell clip, so ``cell_clip`` is checked against a small
NumPy loop written here from its definition.

Every case asserts that a good share of the clipped quantities were actually clipped, and a
good share not, so that a test cannot pass with the option ignored.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnncore._interop.gates import ONNX_FROM_TORCH, permute_blocks
from rnncore.reference import StepNorms, make_params, reference_forward, sigmoid

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

IN, H, T, B = 3, 4, 6, 3
ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# float32 in ONNX Runtime against the float64 reference, over a few steps of O(1) values
TOL = dict(rtol=2e-5, atol=2e-5)


def clip_counter():
    """A ``step_norms`` hook counting the clipped and unclipped entries of each kind
    (``"gate"``, ``"cell"``) over the active rows, for a given bound per kind."""
    counts: dict[str, list[int]] = {}

    def make(bounds):
        def step_norms(_layer, _direction, _k, active):
            def observe(what, a):
                bound = bounds.get(what)
                if bound is None:
                    return
                c = counts.setdefault(what, [0, 0])
                rows = a[active]
                c[0] += int((np.abs(rows) > bound).sum())
                c[1] += int((np.abs(rows) <= bound).sum())

            return StepNorms(observe=observe)

        return step_norms

    return counts, make


def assert_some_clipped(counts, what, share=0.05):
    clipped, kept = counts[what]
    total = clipped + kept
    assert clipped >= share * total, f"{what}: only {clipped}/{total} entries clipped"
    assert kept >= share * total, f"{what}: only {kept}/{total} entries left unclipped"


def onnx_weights(cell, params, d, bias=True, peephole=False):
    """The ONNX inputs W, R, B (and P) of a one-layer module's parameters."""
    order = ONNX_FROM_TORCH[cell]
    tags = ["_l0", "_l0_reverse"][:d]
    w = np.stack([permute_blocks(params[f"weight_ih{t}"], order) for t in tags])
    r = np.stack([permute_blocks(params[f"weight_hh{t}"], order) for t in tags])
    out = {"W": w, "R": r}
    if bias:
        out["B"] = np.stack(
            [
                np.concatenate(
                    [
                        permute_blocks(params[f"bias_ih{t}"], order),
                        permute_blocks(params[f"bias_hh{t}"], order),
                    ]
                )
                for t in tags
            ]
        )
    if peephole:  # ONNX's P: p_i, p_o, p_f
        out["P"] = np.stack(
            [np.concatenate([params[f"weight_c{g}{t}"] for g in ("i", "o", "f")]) for t in tags]
        )
    return out


def run_ort(cell, weights, x, h0, c0, lengths, **attrs):
    """One ONNX ``RNN``/``LSTM``/``GRU`` node in ONNX Runtime (float32): ``(Y as (T, B, D*H),
    Y_h, Y_c or None)``."""
    d = 2 if attrs.get("direction") == "bidirectional" else 1
    feeds = {"X": x, "W": weights["W"], "R": weights["R"]}
    if "B" in weights:
        feeds["B"] = weights["B"]
    feeds["sequence_lens"] = np.asarray(lengths, np.int32)
    feeds["initial_h"] = h0
    if cell == "lstm":
        feeds["initial_c"] = c0
        if "P" in weights:
            feeds["P"] = weights["P"]
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    node_inputs = [n if n in feeds else "" for n in names]
    while node_inputs[-1] == "":
        node_inputs.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    node = helper.make_node(ONNX_OP[cell], node_inputs, outputs, hidden_size=H, **attrs)
    value_infos = []
    for name, arr in feeds.items():
        elem = TensorProto.INT32 if name == "sequence_lens" else TensorProto.FLOAT
        value_infos.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    graph = helper.make_graph([node], "g", value_infos, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {k: np.asarray(v, np.float32) if k != "sequence_lens" else v for k, v in feeds.items()}
    res = sess.run(None, feeds)
    y = res[0].transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], d * H)
    return y, res[1], res[2] if cell == "lstm" else None


def compare(cell, *, bidirectional=False, reverse=False, clip=None, peephole=False,
            input_forget=False, nonlinearity="tanh", reset_after=True, seed=0,
            expect_clipped=True):  # fmt: skip
    rng = np.random.default_rng(seed)
    d = 2 if bidirectional else 1
    params = make_params(cell, IN, H, 1, bidirectional, 0, True, rng, scale=0.9,
                         peephole=peephole)  # fmt: skip
    x = rng.standard_normal((T, B, IN)) * 1.5
    h0 = 0.5 * rng.standard_normal((d, B, H))
    c0 = rng.standard_normal((d, B, H)) if cell == "lstm" else None
    lengths = np.array([T, 2, T - 1][:B])
    counts, make = clip_counter()
    kw = dict(num_layers=1, bidirectional=bidirectional, reverse=reverse, clip=clip,
              step_norms=make({"gate": clip or np.inf}))  # fmt: skip
    if cell == "lstm":
        kw.update(peephole=peephole, input_forget=input_forget)
    elif cell == "rnn":
        kw["nonlinearity"] = nonlinearity
    else:
        kw["reset_after"] = reset_after
    hx = (h0, c0) if cell == "lstm" else h0
    out, hn = reference_forward(cell, params, x, hx, lengths, **kw)
    attrs = {"direction": "bidirectional" if d == 2 else "reverse" if reverse else "forward"}
    if clip is not None:
        attrs["clip"] = float(clip)
    if cell == "lstm" and input_forget:
        attrs["input_forget"] = 1
    if cell == "rnn":
        attrs["activations"] = [nonlinearity.capitalize()] * d
    if cell == "gru":
        attrs["linear_before_reset"] = int(reset_after)
    y, yh, yc = run_ort(cell, onnx_weights(cell, params, d, peephole=peephole),
                        x.astype(np.float32), h0, c0, lengths, **attrs)  # fmt: skip
    np.testing.assert_allclose(y, out, **TOL)
    if cell == "lstm":
        np.testing.assert_allclose(yh, hn[0], **TOL)
        np.testing.assert_allclose(yc, hn[1], **TOL)
    else:
        np.testing.assert_allclose(yh, hn, **TOL)
    if clip is not None and expect_clipped:
        assert_some_clipped(counts, "gate")
    return out


# ---------------------------------------------------------------------------------------------
# LSTM against ONNX Runtime


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_peepholes_match_onnx_runtime(direction):
    compare("lstm", peephole=True, bidirectional=direction == "bidirectional",
            reverse=direction == "reverse")  # fmt: skip


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("clip", [0.5, 1.2])
def test_lstm_clip_matches_onnx_runtime(clip, direction):
    compare("lstm", clip=clip, bidirectional=direction == "bidirectional", seed=1)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_input_forget_matches_onnx_runtime(direction):
    compare("lstm", input_forget=True, bidirectional=direction == "bidirectional",
            reverse=direction == "reverse", seed=2)  # fmt: skip


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_all_onnx_options_together_match_onnx_runtime(direction):
    compare("lstm", clip=0.8, peephole=True, input_forget=True,
            bidirectional=direction == "bidirectional", seed=3)  # fmt: skip
    compare("lstm", clip=0.8, peephole=True, bidirectional=direction == "bidirectional",
            seed=4)  # fmt: skip


def test_the_options_change_the_lstm():
    """Each option changes the reference's result (so the comparisons above test it)."""
    rng = np.random.default_rng(5)
    params = make_params("lstm", IN, H, 1, False, 0, True, rng, scale=0.9, peephole=True)
    x = 1.5 * rng.standard_normal((T, B, IN))
    base = reference_forward("lstm", params, x, num_layers=1, bidirectional=False)[0]
    for kw in (dict(peephole=True), dict(clip=0.8), dict(input_forget=True),
               dict(cell_clip=0.3)):  # fmt: skip
        other = reference_forward("lstm", params, x, num_layers=1, bidirectional=False, **kw)[0]
        assert np.abs(other - base).max() > 1e-3, kw


def test_input_forget_ignores_the_forget_gate_parameters():
    rng = np.random.default_rng(6)
    params = make_params("lstm", IN, H, 1, False, 0, True, rng, scale=0.9, peephole=True)
    x = rng.standard_normal((T, B, IN))
    kw = dict(num_layers=1, bidirectional=False, peephole=True, input_forget=True, clip=1.0)
    want = reference_forward("lstm", params, x, **kw)
    changed = {k: v.copy() for k, v in params.items()}
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        changed[name][H : 2 * H] = rng.standard_normal(changed[name][H : 2 * H].shape)
    changed["weight_cf_l0"] = rng.standard_normal(H)
    got = reference_forward("lstm", changed, x, **kw)
    np.testing.assert_array_equal(got[0], want[0])


# ---------------------------------------------------------------------------------------------
# GRU and RNN against ONNX Runtime


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["lbr1", "lbr0"])
@pytest.mark.parametrize("clip", [0.6, 1.5])
def test_gru_clip_matches_onnx_runtime(clip, reset_after, direction):
    compare("gru", clip=clip, reset_after=reset_after,
            bidirectional=direction == "bidirectional", reverse=direction == "reverse",
            seed=7)  # fmt: skip


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("clip", [0.5, 1.1])
def test_rnn_clip_matches_onnx_runtime(clip, nonlinearity, direction):
    compare("rnn", clip=clip, nonlinearity=nonlinearity,
            bidirectional=direction == "bidirectional", reverse=direction == "reverse",
            seed=8)  # fmt: skip


def test_a_large_clip_changes_nothing():
    rng = np.random.default_rng(9)
    for cell in ("rnn", "lstm", "gru"):
        params = make_params(cell, IN, H, 1, True, 0, True, rng, scale=0.5)
        x = 0.3 * rng.standard_normal((T, B, IN))
        kw = dict(num_layers=1, bidirectional=True)
        a = reference_forward(cell, params, x, **kw)
        b = reference_forward(cell, params, x, clip=1e6, **kw)
        np.testing.assert_array_equal(a[0], b[0])


# ---------------------------------------------------------------------------------------------
# cell_clip against a NumPy loop written from TFLite's definition


def lstm_loop(params, x, h0, c0, clip=None, cell_clip=None, peephole=False,
              input_forget=False):  # fmt: skip
    """A plain LSTM over time, one direction, no lengths, gates i, f, g, o, as TFLite's
    (peepholes on the previous cell for i and f, on the new one for o; the new cell clamped
    to ``+-cell_clip`` before the output and before it is carried on)."""
    w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    b = params["bias_ih_l0"] + params["bias_hh_l0"]
    hs = w_hh.shape[1]
    pi = params["weight_ci_l0"] if peephole else np.zeros(hs)
    pf = params["weight_cf_l0"] if peephole else np.zeros(hs)
    po = params["weight_co_l0"] if peephole else np.zeros(hs)
    lim = np.inf if clip is None else clip
    h, c = h0.copy(), c0.copy()
    ys = []
    for t in range(x.shape[0]):
        a = x[t] @ w_ih.T + h @ w_hh.T + b
        ai, af, ag, ao = np.split(a, 4, axis=1)
        i = sigmoid(np.clip(ai + pi * c, -lim, lim))
        f = 1.0 - i if input_forget else sigmoid(np.clip(af + pf * c, -lim, lim))
        g = np.tanh(np.clip(ag, -lim, lim))
        c = f * c + i * g
        if cell_clip is not None:
            c = np.minimum(np.maximum(c, -cell_clip), cell_clip)
        o = sigmoid(np.clip(ao + po * c, -lim, lim))
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


@pytest.mark.parametrize(
    "kw",
    [
        dict(cell_clip=0.4),
        dict(cell_clip=0.9, peephole=True),
        dict(cell_clip=0.6, clip=1.0, peephole=True, input_forget=True),
    ],
    ids=["cell_clip", "cell_clip-peephole", "everything"],
)
def test_cell_clip_matches_a_numpy_loop(kw):
    rng = np.random.default_rng(10)
    params = make_params("lstm", IN, H, 1, False, 0, True, rng, scale=0.9,
                         peephole=kw.get("peephole", False))  # fmt: skip
    x = 1.5 * rng.standard_normal((T, B, IN))
    h0, c0 = 0.5 * rng.standard_normal((1, B, H)), rng.standard_normal((1, B, H))
    counts, make = clip_counter()
    out, (hn, cn) = reference_forward(
        "lstm", params, x, (h0, c0), num_layers=1, bidirectional=False,
        step_norms=make({"cell": kw["cell_clip"]}), **kw,
    )  # fmt: skip
    y, h, c = lstm_loop(params, x, h0[0], c0[0], **kw)
    np.testing.assert_allclose(out, y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(hn[0], h, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(cn[0], c, rtol=1e-13, atol=1e-13)
    assert_some_clipped(counts, "cell")
    assert np.abs(cn).max() <= kw["cell_clip"]


def test_cell_clip_is_applied_before_the_cell_norm():
    """With norm="layer", the clamped cell value is what N_c normalizes and what is carried."""
    rng = np.random.default_rng(11)
    params = make_params("lstm", IN, H, 1, False, 0, True, rng, scale=0.9, norm="layer")
    x = 2.0 * rng.standard_normal((T, B, IN))
    seen = []

    def observe(_layer, _direction, part, _k, a, *_):
        if part == "cell":  # N_c's input
            seen.append(a.copy())

    _, (_, cn) = reference_forward("lstm", params, x, num_layers=1, bidirectional=False,
                                   norm="layer", cell_clip=0.25,
                                   observe_norms=observe)  # fmt: skip
    assert seen and all(np.abs(s).max() <= 0.25 for s in seen)
    assert any(np.abs(s).max() == 0.25 for s in seen)  # and some were clamped
    assert np.abs(cn).max() <= 0.25


def test_reference_refuses_bad_options():
    rng = np.random.default_rng(12)
    params = make_params("gru", IN, H, 1, False, 0, True, rng)
    x = rng.standard_normal((T, B, IN))
    kw = dict(num_layers=1, bidirectional=False)
    with pytest.raises(ValueError, match="clip must be a positive finite"):
        reference_forward("gru", params, x, clip=0.0, **kw)
    with pytest.raises(ValueError, match="clip must be a positive finite"):
        reference_forward("gru", params, x, clip=float("inf"), **kw)
    with pytest.raises(ValueError, match="LSTM options"):
        reference_forward("gru", params, x, peephole=True, **kw)
    with pytest.raises(ValueError, match="LSTM only"):
        make_params("gru", IN, H, 1, False, 0, True, rng, peephole=True)
