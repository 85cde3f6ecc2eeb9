"""Parity of rnncore with torch.nn.RNN / LSTM / GRU: outputs, final states and every gradient.

The reference is always PyTorch in float64 (a float32 torch module is converted with
``.double()``, which is exact because every float32 value is a float64 value), so that a
float32 rnncore result is compared with the exact answer for the very same float32 weights
and inputs, and the error measured is rnncore's own.

Gradients come from PyTorch autograd of the scalar loss

    L = sum(out * R_out) + sum(h_n * R_h) (+ sum(c_n * R_c) for the LSTM),

whose gradient with respect to ``out``, ``h_n`` and ``c_n`` is exactly ``R_out``, ``R_h``,
``R_c``; those are what rnncore's ``backward`` receives as ``grad_out`` / ``grad_h_n``.
Variable lengths are run through ``pack_padded_sequence(..., enforce_sorted=False)`` and
``pad_packed_sequence`` on the torch side, which is the semantics the spec asks for.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import rnncore

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# Small sizes: the point is coverage of layouts, not speed.
T, B, INPUT, HIDDEN, PROJ = 5, 4, 3, 4, 2

# name -> (class name, extra constructor keywords shared by torch and rnncore)
CELLS = {
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "lstm_proj": ("LSTM", {"proj_size": PROJ}),
    "gru": ("GRU", {}),
}

# Layout configurations. Lengths are deliberately unsorted (enforce_sorted=False) and include
# 1 and T; the last set has max(lengths) < T so that trailing all-padding steps exist.
CONFIGS = {
    "l1_uni_tm": dict(
        num_layers=1, bidirectional=False, batch_first=False, lengths=None, hx=True, bias=True
    ),
    "l2_uni_bf_len": dict(
        num_layers=2,
        bidirectional=False,
        batch_first=True,
        lengths=[3, 5, 1, 4],
        hx=True,
        bias=True,
    ),
    "l1_bi_tm_len": dict(
        num_layers=1,
        bidirectional=True,
        batch_first=False,
        lengths=[2, 5, 5, 1],
        hx=True,
        bias=True,
    ),
    "l2_bi_bf": dict(
        num_layers=2, bidirectional=True, batch_first=True, lengths=None, hx=True, bias=True
    ),
    "l2_bi_tm_len_nohx": dict(
        num_layers=2,
        bidirectional=True,
        batch_first=False,
        lengths=[4, 2, 3, 1],
        hx=False,
        bias=True,
    ),
    "l3_bi_bf_len_nobias": dict(
        num_layers=3,
        bidirectional=True,
        batch_first=True,
        lengths=[1, 5, 3, 2],
        hx=True,
        bias=False,
    ),
}

DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


def _tolerances(np_dtype, num_layers):
    """Return (rtol, atol) for comparing rnncore with the float64 torch reference.

    float64: both sides evaluate the same expressions, only the order of the roundings
    differs; each result is a short chain (<= 3 layers x 5 steps x 2 directions) of dot
    products with < 20 terms, so differences stay around 1e-14; 1e-10 leaves ample room
    while any bug (wrong gate order, missing term, wrong step) shows up at >= 1e-3.

    float32: unit roundoff u = 6e-8. A forward value passes through up to num_layers * T
    sequential steps of dot products with <= INPUT + 2 * HIDDEN < 12 terms; weight gradients
    add a sum over T * B = 20 terms. PyTorch's own float32 path, measured against this float64
    reference on exactly these cases, is off by at most 2.7e-7 (relative to max(1, |value|)).
    5e-5 per layer leaves a margin of ~200x for a different summation order and for
    approximated exp/tanh (design.md allows them with a documented bound), while a real bug
    (wrong gate, step, direction or length handling) shows up at >= 1e-3.
    """
    if np_dtype == np.float64:
        return 1e-10, 1e-10
    return 5e-5 * num_layers, 5e-5 * num_layers


def assert_close(actual, expected, np_dtype, num_layers, what):
    """Compare an rnncore array with a torch float64 reference value."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    assert isinstance(actual, np.ndarray), f"{what}: expected an ndarray, got {type(actual)}"
    assert actual.dtype == np_dtype, f"{what}: dtype {actual.dtype}, expected {np_dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    rtol, atol = _tolerances(np_dtype, num_layers)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def make_torch(cell, cfg, torch_dtype, seed=0):
    """Build a randomly initialized torch module for a cell/config pair."""
    kind, extra = CELLS[cell]
    torch.manual_seed(seed)
    tm = getattr(torch.nn, kind)(
        INPUT,
        HIDDEN,
        num_layers=cfg["num_layers"],
        bias=cfg["bias"],
        batch_first=cfg["batch_first"],
        bidirectional=cfg["bidirectional"],
        **extra,
    )
    return tm.to(torch_dtype)


def make_rnncore(cell, cfg, tm, np_dtype, build):
    """Build the rnncore module equivalent to ``tm``, by from_torch or by load_state_dict."""
    kind, extra = CELLS[cell]
    cls = getattr(rnncore, kind)
    if build == "from_torch":
        m = cls.from_torch(tm)
    else:
        m = cls(
            INPUT,
            HIDDEN,
            num_layers=cfg["num_layers"],
            bias=cfg["bias"],
            batch_first=cfg["batch_first"],
            bidirectional=cfg["bidirectional"],
            dtype=np_dtype,
            **extra,
        )
        m.load_state_dict(tm.state_dict())
    assert m.dtype == np.dtype(np_dtype)
    return m


def state_shapes(cell, cfg, batch=B):
    """Shapes of (h, c) states; c is None for RNN/GRU."""
    kind, extra = CELLS[cell]
    d = 2 if cfg["bidirectional"] else 1
    h_out = extra.get("proj_size", 0) or HIDDEN
    lead = (cfg["num_layers"] * d,) + ((batch,) if batch is not None else ())
    h_shape = lead + (h_out,)
    c_shape = lead + (HIDDEN,) if kind == "LSTM" else None
    return h_shape, c_shape


def make_inputs(cell, cfg, np_dtype, seed=1):
    """Random x, h0, c0, and the loss weights R_out, R_h, R_c (float32-representable)."""
    rng = np.random.default_rng(seed)
    kind, extra = CELLS[cell]
    d = 2 if cfg["bidirectional"] else 1
    h_out = extra.get("proj_size", 0) or HIDDEN
    x_shape = (B, T, INPUT) if cfg["batch_first"] else (T, B, INPUT)
    out_shape = x_shape[:2] + (d * h_out,)
    h_shape, c_shape = state_shapes(cell, cfg)

    def rand(shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(np_dtype) if shape is not None else None

    return dict(
        x=rand(x_shape),
        h0=rand(h_shape, 0.5),
        c0=rand(c_shape, 0.5),
        r_out=rand(out_shape),
        r_h=rand(h_shape),
        r_c=rand(c_shape),
    )


def torch_reference(tm, cell, cfg, inp):
    """Run the float64 torch reference; return outputs, states and all gradients as numpy."""
    kind, _ = CELLS[cell]
    ref = copy.deepcopy(tm).double()
    ref.zero_grad(set_to_none=True)

    def t(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)

    x = t(inp["x"])
    h_shape, c_shape = state_shapes(cell, cfg)
    # With hx=None rnncore uses zeros; torch gets explicit zeros so their gradient exists.
    h0 = t(inp["h0"]) if cfg["hx"] else t(np.zeros(h_shape))
    c0 = None
    if kind == "LSTM":
        c0 = t(inp["c0"]) if cfg["hx"] else t(np.zeros(c_shape))
    hx = (h0, c0) if kind == "LSTM" else h0

    lengths = cfg["lengths"]
    if lengths is None:
        out, state = ref(x, hx)
    else:
        packed = pack_padded_sequence(
            x,
            torch.tensor(lengths, dtype=torch.int64),
            batch_first=cfg["batch_first"],
            enforce_sorted=False,
        )
        out_p, state = ref(packed, hx)
        out, _ = pad_packed_sequence(out_p, batch_first=cfg["batch_first"], total_length=T)
    h_n, c_n = state if kind == "LSTM" else (state, None)

    loss = (out * torch.from_numpy(inp["r_out"].astype(np.float64))).sum()
    loss = loss + (h_n * torch.from_numpy(inp["r_h"].astype(np.float64))).sum()
    if kind == "LSTM":
        loss = loss + (c_n * torch.from_numpy(inp["r_c"].astype(np.float64))).sum()
    loss.backward()

    res = dict(
        out=out.detach().numpy(),
        h_n=h_n.detach().numpy(),
        grad_x=x.grad.numpy(),
        grad_h0=h0.grad.numpy(),
        params={n: p.grad.numpy() for n, p in ref.named_parameters()},
    )
    if kind == "LSTM":
        res["c_n"] = c_n.detach().numpy()
        res["grad_c0"] = c0.grad.numpy()
    return res


@pytest.mark.parametrize("build", ["from_torch", "load_state_dict"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_parity_forward_and_gradients(cell, config, dtype, build):
    """Outputs, final states and all gradients equal PyTorch's."""
    cfg = CONFIGS[config]
    np_dtype, torch_dtype = DTYPES[dtype]
    kind, _ = CELLS[cell]
    nl = cfg["num_layers"]
    tm = make_torch(cell, cfg, torch_dtype)
    m = make_rnncore(cell, cfg, tm, np_dtype, build)
    inp = make_inputs(cell, cfg, np_dtype)
    ref = torch_reference(tm, cell, cfg, inp)

    hx = None
    if cfg["hx"]:
        hx = (inp["h0"], inp["c0"]) if kind == "LSTM" else inp["h0"]
    lengths = None if cfg["lengths"] is None else np.array(cfg["lengths"], dtype=np.int64)

    # Inference call.
    res = m(inp["x"], hx=hx, lengths=lengths)
    out, state = res
    h_n, c_n = state if kind == "LSTM" else (state, None)
    assert_close(out, ref["out"], np_dtype, nl, "out")
    assert_close(h_n, ref["h_n"], np_dtype, nl, "h_n")
    if kind == "LSTM":
        assert_close(c_n, ref["c_n"], np_dtype, nl, "c_n")
    if lengths is not None:
        # Padding is exactly zero, not merely small.
        for b, n in enumerate(cfg["lengths"]):
            pad = out[b, n:] if cfg["batch_first"] else out[n:, b]
            assert np.all(pad == 0), f"out past lengths[{b}]={n} is not exactly 0"

    # Training call + backward.
    m.zero_grad()
    out2, state2, tape = m.forward_train(inp["x"], hx=hx, lengths=lengths)
    h_n2, c_n2 = state2 if kind == "LSTM" else (state2, None)
    assert_close(out2, ref["out"], np_dtype, nl, "forward_train out")
    assert_close(h_n2, ref["h_n"], np_dtype, nl, "forward_train h_n")
    if kind == "LSTM":
        assert_close(c_n2, ref["c_n"], np_dtype, nl, "forward_train c_n")
        grad_h_n = (inp["r_h"], inp["r_c"])
    else:
        grad_h_n = inp["r_h"]
    grad_x, grad_hx = m.backward(tape, inp["r_out"], grad_h_n)

    assert_close(grad_x, ref["grad_x"], np_dtype, nl, "grad_x")
    if kind == "LSTM":
        assert isinstance(grad_hx, tuple) and len(grad_hx) == 2
        assert_close(grad_hx[0], ref["grad_h0"], np_dtype, nl, "grad_h0")
        assert_close(grad_hx[1], ref["grad_c0"], np_dtype, nl, "grad_c0")
    else:
        assert_close(grad_hx, ref["grad_h0"], np_dtype, nl, "grad_h0")

    assert list(m.grads) == list(ref["params"]), "grads keys differ from torch's parameters"
    for name, g in ref["params"].items():
        assert_close(m.grads[name], g, np_dtype, nl, f"grads[{name}]")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("cell", list(CELLS))
def test_parity_unbatched(cell, dtype):
    """Unbatched input (T, input_size) matches torch's unbatched mode, gradients included."""
    cfg = dict(
        num_layers=2, bidirectional=True, batch_first=False, lengths=None, hx=True, bias=True
    )
    np_dtype, torch_dtype = DTYPES[dtype]
    kind, _ = CELLS[cell]
    tm = make_torch(cell, cfg, torch_dtype, seed=3)
    m = make_rnncore(cell, cfg, tm, np_dtype, "from_torch")
    rng = np.random.default_rng(5)
    h_shape, c_shape = state_shapes(cell, cfg, batch=None)
    x = rng.standard_normal((T, INPUT)).astype(np_dtype)
    h0 = (0.5 * rng.standard_normal(h_shape)).astype(np_dtype)
    c0 = (0.5 * rng.standard_normal(c_shape)).astype(np_dtype) if c_shape else None
    d = 2
    r_out = rng.standard_normal((T, d * h_shape[-1])).astype(np_dtype)
    r_h = rng.standard_normal(h_shape).astype(np_dtype)
    r_c = rng.standard_normal(c_shape).astype(np_dtype) if c_shape else None

    ref = copy.deepcopy(tm).double()
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    h0t = torch.tensor(h0.astype(np.float64), requires_grad=True)
    if kind == "LSTM":
        c0t = torch.tensor(c0.astype(np.float64), requires_grad=True)
        out_t, (hn_t, cn_t) = ref(xt, (h0t, c0t))
        loss = (out_t * torch.from_numpy(r_out.astype(np.float64))).sum()
        loss = loss + (hn_t * torch.from_numpy(r_h.astype(np.float64))).sum()
        loss = loss + (cn_t * torch.from_numpy(r_c.astype(np.float64))).sum()
    else:
        out_t, hn_t = ref(xt, h0t)
        loss = (out_t * torch.from_numpy(r_out.astype(np.float64))).sum()
        loss = loss + (hn_t * torch.from_numpy(r_h.astype(np.float64))).sum()
    loss.backward()

    hx = (h0, c0) if kind == "LSTM" else h0
    m.zero_grad()
    out, state, tape = m.forward_train(x, hx=hx)
    h_n = state[0] if kind == "LSTM" else state
    assert_close(out, out_t, np_dtype, 2, "out")
    assert_close(h_n, hn_t, np_dtype, 2, "h_n")
    if kind == "LSTM":
        assert_close(state[1], cn_t, np_dtype, 2, "c_n")
    grad_x, grad_hx = m.backward(tape, r_out, (r_h, r_c) if kind == "LSTM" else r_h)
    assert_close(grad_x, xt.grad, np_dtype, 2, "grad_x")
    if kind == "LSTM":
        assert_close(grad_hx[0], h0t.grad, np_dtype, 2, "grad_h0")
        assert_close(grad_hx[1], c0t.grad, np_dtype, 2, "grad_c0")
    else:
        assert_close(grad_hx, h0t.grad, np_dtype, 2, "grad_h0")
    for name, p in ref.named_parameters():
        assert_close(m.grads[name], p.grad, np_dtype, 2, f"grads[{name}]")


@pytest.mark.parametrize("cell", list(CELLS))
def test_parity_grad_out_only_and_state_only(cell):
    """grad_out=None / grad_h_n=None mean zero cotangents (float64, checked against torch)."""
    cfg = dict(
        num_layers=2,
        bidirectional=True,
        batch_first=False,
        lengths=[5, 2, 4, 3],
        hx=True,
        bias=True,
    )
    kind, _ = CELLS[cell]
    tm = make_torch(cell, cfg, torch.float64, seed=7)
    m = make_rnncore(cell, cfg, tm, np.float64, "from_torch")
    inp = make_inputs(cell, cfg, np.float64, seed=8)
    hx = (inp["h0"], inp["c0"]) if kind == "LSTM" else inp["h0"]
    lengths = np.array(cfg["lengths"])

    for drop in ("out", "state"):
        zeroed = dict(inp)
        if drop == "out":
            zeroed["r_out"] = np.zeros_like(inp["r_out"])
        else:
            zeroed["r_h"] = np.zeros_like(inp["r_h"])
            if kind == "LSTM":
                zeroed["r_c"] = np.zeros_like(inp["r_c"])
        ref = torch_reference(tm, cell, cfg, zeroed)
        m.zero_grad()
        _, _, tape = m.forward_train(inp["x"], hx=hx, lengths=lengths)
        if drop == "out":
            g_state = (inp["r_h"], inp["r_c"]) if kind == "LSTM" else inp["r_h"]
            grad_x, grad_hx = m.backward(tape, None, g_state)
        else:
            grad_x, grad_hx = m.backward(tape, inp["r_out"], None)
        assert_close(grad_x, ref["grad_x"], np.float64, 2, f"grad_x ({drop} dropped)")
        g_h0 = grad_hx[0] if kind == "LSTM" else grad_hx
        assert_close(g_h0, ref["grad_h0"], np.float64, 2, f"grad_h0 ({drop} dropped)")
        for name, g in ref["params"].items():
            assert_close(m.grads[name], g, np.float64, 2, f"grads[{name}] ({drop} dropped)")


def test_parity_lstm_partial_state_grads():
    """LSTM grad_h_n=(None, gc) and (gh, None) equal torch with the missing part zero."""
    cell = "lstm_proj"
    cfg = dict(
        num_layers=2, bidirectional=True, batch_first=True, lengths=[4, 5, 1, 2], hx=True, bias=True
    )
    tm = make_torch(cell, cfg, torch.float64, seed=11)
    m = make_rnncore(cell, cfg, tm, np.float64, "from_torch")
    inp = make_inputs(cell, cfg, np.float64, seed=12)
    for missing in ("h", "c"):
        zeroed = dict(inp)
        zeroed["r_" + missing] = np.zeros_like(inp["r_" + missing])
        ref = torch_reference(tm, cell, cfg, zeroed)
        m.zero_grad()
        _, _, tape = m.forward_train(
            inp["x"], hx=(inp["h0"], inp["c0"]), lengths=np.array(cfg["lengths"])
        )
        g = (None, inp["r_c"]) if missing == "h" else (inp["r_h"], None)
        grad_x, (g_h0, g_c0) = m.backward(tape, inp["r_out"], g)
        assert_close(grad_x, ref["grad_x"], np.float64, 2, f"grad_x (no g{missing})")
        assert_close(g_h0, ref["grad_h0"], np.float64, 2, f"grad_h0 (no g{missing})")
        assert_close(g_c0, ref["grad_c0"], np.float64, 2, f"grad_c0 (no g{missing})")
        for name, gr in ref["params"].items():
            assert_close(m.grads[name], gr, np.float64, 2, f"grads[{name}] (no g{missing})")


# --------------------------------------------------------------------------------------
# from_torch: options, weights and training mode are copied.

FROM_TORCH_CASES = {
    "rnn_relu_nobias_bf": (
        "RNN",
        dict(nonlinearity="relu", bias=False, batch_first=True, bidirectional=False, num_layers=2),
    ),
    "rnn_tanh_bi": (
        "RNN",
        dict(nonlinearity="tanh", bias=True, batch_first=False, bidirectional=True, num_layers=1),
    ),
    "lstm_proj_bi_bf": (
        "LSTM",
        dict(proj_size=2, bias=True, batch_first=True, bidirectional=True, num_layers=2),
    ),
    "lstm_nobias": (
        "LSTM",
        dict(proj_size=0, bias=False, batch_first=False, bidirectional=False, num_layers=3),
    ),
    "gru_bi_nobias": ("GRU", dict(bias=False, batch_first=True, bidirectional=True, num_layers=2)),
}


@pytest.mark.parametrize("torch_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", list(FROM_TORCH_CASES))
def test_from_torch_copies_options_weights_and_mode(case, training, torch_dtype):
    """from_torch copies sizes, every option, the weights (bit-exactly) and the mode."""
    kind, opts = FROM_TORCH_CASES[case]
    torch.manual_seed(0)
    tm = getattr(torch.nn, kind)(3, 5, **opts).to(torch_dtype)
    tm.train(training)
    m = getattr(rnncore, kind).from_torch(tm)

    assert isinstance(m, getattr(rnncore, kind))
    assert m.training is training
    assert m.input_size == 3
    assert m.hidden_size == 5
    assert m.num_layers == opts["num_layers"]
    assert m.batch_first == opts["batch_first"]
    assert m.bidirectional == opts["bidirectional"]
    if kind == "RNN":
        assert m.nonlinearity == opts["nonlinearity"]
    if kind == "LSTM":
        assert m.proj_size == opts["proj_size"]
    if kind == "GRU":
        assert m.reset_after  # torch's GRU is the reset-after variant
    # Weights: same dtype as the torch module (assumed; see the report), same names in the
    # same order, same values exactly (a copy of float32/float64 data must be exact).
    np_dtype = np.float32 if torch_dtype == torch.float32 else np.float64
    assert m.dtype == np.dtype(np_dtype)
    params = m.parameters()
    tnamed = list(tm.named_parameters())
    assert list(params) == [n for n, _ in tnamed]
    if not opts["bias"]:
        assert not any(n.startswith("bias") for n in params)
    for n, p in tnamed:
        np.testing.assert_array_equal(params[n], p.detach().numpy().astype(np_dtype), err_msg=n)

    # A copy: changing the torch module afterwards does not change the rnncore module.
    before = {n: v.copy() for n, v in params.items()}
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(1.0)
    for n, v in m.parameters().items():
        np.testing.assert_array_equal(v, before[n], err_msg=f"{n} follows the torch module")


def test_from_torch_then_train_eval_independent():
    """Switching the torch module's mode after from_torch does not affect the copy."""
    tm = torch.nn.GRU(2, 3)
    tm.eval()
    m = rnncore.GRU.from_torch(tm)
    tm.train()
    assert m.training is False
    assert m.train() is m and m.training is True
