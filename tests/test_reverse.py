"""reverse=True: a one-direction module that runs each sequence from its last valid step to
its first (ONNX's direction="reverse").

The backward direction of a bidirectional module is the same computation, already checked
against the NumPy reference and finite differences elsewhere: a reverse module with that
direction's weights must give its outputs, final state, running statistics and gradients
exactly (the same core code on the same inputs: compared at 1e-12 in float64, where they
are in fact bitwise equal). A finite-difference check of the reverse module itself, the
errors, copies, files and the ONNX paths complete it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import rnncore as rc

CELLS = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}
NORMS = [None, "layer", "batch", "batch_input"]
D, H = 3, 4


def pair(cell, norm, **kw):
    """A bidirectional module and a reverse module holding its backward direction's weights
    (and running statistics)."""
    bi = CELLS[cell](D, H, bidirectional=True, norm=norm, dtype="float64", seed=1, **kw)
    rng = np.random.default_rng(0)
    for p in bi.parameters().values():
        p[...] = rng.uniform(-0.7, 0.7, p.shape)
    rev = CELLS[cell](D, H, reverse=True, norm=norm, dtype="float64", seed=2, **kw)
    rev.load_state_dict({k.replace("_l0_reverse", "_l0"): v
                         for k, v in bi.state_dict().items() if "_reverse" in k})  # fmt: skip
    return bi, rev


def states(s):
    return list(s) if isinstance(s, tuple) else [s]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cell", CELLS)
def test_reverse_is_the_backward_direction_of_a_bidirectional_module(cell, norm, mode):
    bi, rev = pair(cell, norm)
    rng = np.random.default_rng(3)
    for m in (bi, rev):
        m.train() if mode == "train" else m.eval()
    x = rng.standard_normal((6, 4, D))
    lengths = [6, 3, 5, 1]
    out_bi, s_bi, tape_bi = bi.forward_train(x, lengths=lengths)
    out_rev, s_rev, tape_rev = rev.forward_train(x, lengths=lengths)
    tol = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_rev, out_bi[..., H:], **tol)
    for a, b in zip(states(s_rev), states(s_bi)):
        np.testing.assert_allclose(a[0], b[1], **tol)
    for name, value in rev.buffers().items():  # running statistics updated alike
        np.testing.assert_allclose(value, bi.buffers()[name.replace("_l0", "_l0_reverse")],
                                   **tol)  # fmt: skip
    # BPTT: a loss on the backward half only.
    g = rng.standard_normal(out_rev.shape)
    grad_bi = np.concatenate([np.zeros_like(g), g], axis=-1)
    gx_bi, _ = bi.backward(tape_bi, grad_bi)
    gx_rev, _ = rev.backward(tape_rev, g)
    np.testing.assert_allclose(gx_rev, gx_bi, **tol)
    for name, value in rev.grads.items():
        np.testing.assert_allclose(value, bi.grads[name.replace("_l0", "_l0_reverse")], **tol)


def test_layers_of_a_reverse_stack_each_run_backward():
    deep = rc.GRU(D, H, num_layers=2, reverse=True, dtype="float64", seed=4).eval()
    first = rc.GRU(D, H, reverse=True, dtype="float64").eval()
    second = rc.GRU(H, H, reverse=True, dtype="float64").eval()
    sd = deep.state_dict()
    first.load_state_dict({k.replace("_l0", "_l0"): v for k, v in sd.items() if "_l0" in k})
    second.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if "_l1" in k})
    x = np.random.default_rng(5).standard_normal((5, 2, D))
    lengths = [5, 2]
    y1, h1 = first(x, lengths=lengths)
    y2, h2 = second(y1, lengths=lengths)
    out, h_n = deep(x, lengths=lengths)
    np.testing.assert_allclose(out, y2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, np.concatenate([h1, h2]), rtol=0, atol=1e-12)


def test_gradients_against_finite_differences():
    """Central differences in float64 (step 1e-6: truncation ~1e-12, rounding ~1e-10 on O(1)
    losses), against backward's gradients of x and of every parameter: 1e-7 relative."""
    m = rc.LSTM(2, 3, reverse=True, norm="layer", dtype="float64", seed=6)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 2, 2))
    lengths = [4, 2]
    w = rng.standard_normal((4, 2, 3))

    def loss():
        out, (h, c) = m(x, lengths=lengths)
        return float(np.sum(out * w) + np.sum(h) + 0.5 * np.sum(c))

    m.zero_grad()
    out, (h, c), tape = m.forward_train(x, lengths=lengths)
    gx, _ = m.backward(tape, w, (np.ones_like(h), 0.5 * np.ones_like(c)))
    eps = 1e-6

    def numeric(arr, i):
        old = arr.flat[i]
        arr.flat[i] = old + eps
        up = loss()
        arr.flat[i] = old - eps
        down = loss()
        arr.flat[i] = old
        return (up - down) / (2 * eps)

    for i in range(x.size):
        assert numeric(x, i) == pytest.approx(gx.flat[i], rel=1e-7, abs=1e-9)
    for name, p in m.parameters().items():
        for i in range(p.size):
            assert numeric(p, i) == pytest.approx(m.grads[name].flat[i], rel=1e-7, abs=1e-9), name


def test_errors_copies_and_files(tmp_path):
    with pytest.raises(ValueError, match="reverse=True is for a one-direction module"):
        rc.LSTM(3, 4, bidirectional=True, reverse=True)
    with pytest.raises(TypeError, match="reverse"):
        rc.GRU(3, 4, reverse=1)
    m = rc.RNN(3, 4, reverse=True, seed=7).eval()
    assert m.reverse and "reverse=True" in repr(m)
    with pytest.raises(ValueError, match="forward module"):
        m.stream()
    with pytest.raises(ValueError, match="forward, unidirectional"):
        rc.StreamBatcher(m)
    x = np.random.default_rng(7).standard_normal((5, 2, 3)).astype(np.float32)
    want = m(x, lengths=[5, 3])[0]
    copy = pickle.loads(pickle.dumps(m))
    rc.save(m, tmp_path / "m.safetensors")
    loaded = rc.load(tmp_path / "m.safetensors")
    for other in (copy, loaded):
        assert other.reverse
        np.testing.assert_array_equal(other(x, lengths=[5, 3])[0], want)


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_export_and_import(tmp_path, cell, norm):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = CELLS[cell](D, H, num_layers=2, reverse=True, norm=norm, seed=8)
    rng = np.random.default_rng(8)
    if norm == "batch":
        for _ in range(2):
            m(rng.standard_normal((4, 3, D)))
    m.eval()
    path = tmp_path / "m.onnx"
    rc.to_onnx(m, path, lengths=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((6, 3, D)).astype(np.float32)
    lengths = np.array([6, 2, 4], np.int64)
    got = s.run(None, {"x": x, "lengths": lengths})
    want = m(x, lengths=lengths)
    want = [want[0], *states(want[1])]
    # float32 on both sides in different orders: the tolerance of the export tests
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    if norm is None:  # plain layers export as the standard operators, direction="reverse"
        directions = {a.s.decode() for n in onnx.load(str(path)).graph.node
                      for a in n.attribute if a.name == "direction"}  # fmt: skip
        assert directions == {"reverse"}
        layers = rc.from_onnx(path)
        assert all(layer.reverse for layer in layers.values())
        params = m.parameters()
        for k, layer in enumerate(layers.values()):
            for name, value in layer.parameters().items():
                assert value.tobytes() == params[name.replace("_l0", f"_l{k}")].tobytes()
