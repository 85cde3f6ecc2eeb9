"""Validates the NumPy reference (rnncore.reference) itself against PyTorch and by hand.

Does not need rnncore. Every comparison is in float64; PyTorch's CPU float64 recurrent modules
and the reference compute the same expressions in a different order, so they agree to a few
ulps of the values involved (|values| <= ~2 here): 1e-12 absolute is > 1000x that, and far
below any modelling error (a wrong gate order, bias or direction changes results by >= 1e-3).
"""

import math

import numpy as np
import pytest

from rnncore.reference import (
    StepNorms,
    gru_cell,
    lstm_cell,
    make_params,
    param_names,
    reference_forward,
    rnn_cell,
    sigmoid,
)

torch = pytest.importorskip("torch")

TOL = 1e-12  # see module docstring

# (cell, extra reference kwargs, id)
CELLS = [
    pytest.param("rnn", {"nonlinearity": "tanh"}, id="rnn_tanh"),
    pytest.param("rnn", {"nonlinearity": "relu"}, id="rnn_relu"),
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("lstm", {"proj_size": 2}, id="lstm_proj"),
    pytest.param("gru", {}, id="gru"),
]


def _torch_module(cell, input_size, hidden, num_layers, bidirectional, batch_first, bias, extra):
    kw = dict(
        input_size=input_size,
        hidden_size=hidden,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
    )
    if cell == "rnn":
        m = torch.nn.RNN(nonlinearity=extra.get("nonlinearity", "tanh"), **kw)
    elif cell == "lstm":
        m = torch.nn.LSTM(proj_size=extra.get("proj_size", 0), **kw)
    else:
        m = torch.nn.GRU(**kw)
    return m.double()


def _load(m, params):
    m.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=True)


def _torch_run(m, cell, x, hx, lengths, batch_first):
    """Runs a torch module; with lengths through pack_padded_sequence, zero-padded back."""
    tx = torch.from_numpy(x)
    if hx is not None:
        thx = tuple(torch.from_numpy(s) for s in hx) if cell == "lstm" else torch.from_numpy(hx)
    else:
        thx = None
    with torch.no_grad():
        if lengths is None:
            out, st = m(tx, thx)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                tx, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False
            )
            pout, st = m(packed, thx)
            t_len = x.shape[1] if batch_first else x.shape[0]
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                pout, batch_first=batch_first, padding_value=0.0, total_length=t_len
            )
    if cell == "lstm":
        return out.numpy(), (st[0].numpy(), st[1].numpy())
    return out.numpy(), st.numpy()


def _assert_same(cell, ref, tch):
    np.testing.assert_allclose(ref[0], tch[0], rtol=0, atol=TOL)
    if cell == "lstm":
        np.testing.assert_allclose(ref[1][0], tch[1][0], rtol=0, atol=TOL)
        np.testing.assert_allclose(ref[1][1], tch[1][1], rtol=0, atol=TOL)
    else:
        np.testing.assert_allclose(ref[1], tch[1], rtol=0, atol=TOL)


def _make_hx(cell, rng, num_layers, d, batch, hidden, h_out):
    shape = (num_layers * d,) + ((batch,) if batch else ())
    h0 = rng.standard_normal(shape + (h_out,)) * 0.5
    if cell == "lstm":
        return h0, rng.standard_normal(shape + (hidden,)) * 0.5
    return h0


@pytest.mark.parametrize("cell,extra", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths_kind", [None, "mixed", "short"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_reference_matches_torch(
    cell, extra, num_layers, bidirectional, batch_first, lengths_kind, with_hx
):
    rng = np.random.default_rng(1234)
    t_len, batch, input_size, hidden = 5, 4, 3, 4
    proj = extra.get("proj_size", 0)
    h_out = proj or hidden
    d = 2 if bidirectional else 1
    params = make_params(cell, input_size, hidden, num_layers, bidirectional, proj, True, rng, 0.7)
    m = _torch_module(cell, input_size, hidden, num_layers, bidirectional, batch_first, True, extra)
    _load(m, params)
    x = rng.standard_normal(
        (batch, t_len, input_size) if batch_first else (t_len, batch, input_size)
    )
    hx = _make_hx(cell, rng, num_layers, d, batch, hidden, h_out) if with_hx else None
    lengths = {None: None, "mixed": [5, 1, 3, 4], "short": [3, 1, 2, 3]}[lengths_kind]
    lengths = None if lengths is None else np.array(lengths, dtype=np.int64)

    ref = reference_forward(
        cell,
        params,
        x,
        hx,
        lengths,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        **extra,
    )
    _assert_same(cell, ref, _torch_run(m, cell, x, hx, lengths, batch_first))
    assert ref[0].shape == ((batch, t_len) if batch_first else (t_len, batch)) + (d * h_out,)


@pytest.mark.parametrize("cell,extra", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_reference_matches_torch_without_bias(cell, extra, bidirectional):
    rng = np.random.default_rng(7)
    params = make_params(cell, 3, 4, 2, bidirectional, extra.get("proj_size", 0), False, rng, 0.7)
    assert not any(k.startswith("bias") for k in params)
    m = _torch_module(cell, 3, 4, 2, bidirectional, False, False, extra)
    _load(m, params)
    x = rng.standard_normal((5, 3, 3))
    lengths = np.array([5, 2, 4])
    ref = reference_forward(
        cell,
        params,
        x,
        None,
        lengths,
        num_layers=2,
        bidirectional=bidirectional,
        bias=False,
        **extra,
    )
    _assert_same(cell, ref, _torch_run(m, cell, x, None, lengths, False))


@pytest.mark.parametrize("cell,extra", CELLS)
@pytest.mark.parametrize("with_hx", [False, True])
def test_reference_unbatched_matches_torch(cell, extra, with_hx):
    rng = np.random.default_rng(11)
    proj = extra.get("proj_size", 0)
    params = make_params(cell, 3, 4, 2, True, proj, True, rng, 0.7)
    m = _torch_module(cell, 3, 4, 2, True, False, True, extra)
    _load(m, params)
    x = rng.standard_normal((6, 3))
    hx = _make_hx(cell, rng, 2, 2, 0, 4, proj or 4) if with_hx else None
    ref = reference_forward(cell, params, x, hx, num_layers=2, bidirectional=True, **extra)
    tch = _torch_run(m, cell, x, hx, None, False)
    assert ref[0].shape == (6, 2 * (proj or 4))
    _assert_same(cell, ref, tch)


def test_make_params_loads_into_torch_and_names_match():
    rng = np.random.default_rng(0)
    for cell, extra in [("rnn", {}), ("lstm", {"proj_size": 2}), ("gru", {})]:
        for bias in (False, True):
            params = make_params(cell, 3, 4, 2, True, extra.get("proj_size", 0), bias, rng)
            m = _torch_module(cell, 3, 4, 2, True, False, bias, extra)
            assert list(params) == list(m.state_dict())  # same names, same (PyTorch) order
            assert all(tuple(v.shape) == params[k].shape for k, v in m.state_dict().items())
            assert list(params) == param_names(cell, 2, True, extra.get("proj_size", 0), bias)


def test_lengths_outputs_past_end_are_zero_and_states_taken_at_own_end():
    """Packed semantics spelled out directly: the result for a sequence of length l equals the
    result of running that sequence alone, truncated to l."""
    rng = np.random.default_rng(3)
    params = make_params("lstm", 2, 3, 2, True, 0, True, rng, 0.8)
    x = rng.standard_normal((5, 3, 2))
    lengths = np.array([5, 2, 3])
    out, (h_n, c_n) = reference_forward(
        "lstm", params, x, None, lengths, num_layers=2, bidirectional=True
    )
    for b, ln in enumerate(lengths):
        o1, (h1, c1) = reference_forward(
            "lstm", params, x[:ln, b], num_layers=2, bidirectional=True
        )
        np.testing.assert_array_equal(out[ln:, b], 0.0)
        np.testing.assert_allclose(out[:ln, b], o1, rtol=0, atol=TOL)
        np.testing.assert_allclose(h_n[:, b], h1, rtol=0, atol=TOL)
        np.testing.assert_allclose(c_n[:, b], c1, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------------
# GRU reset_after=False: no PyTorch counterpart.


def _scalar_gru_reset_before(x_seq, h0, w_ih, w_hh, b_ih, b_hh):
    """Original GRU (spec section 3, reset_after=False) with explicit scalar loops and math."""
    hs = len(h0)
    h = list(h0)

    def dot(row, vec):
        return sum(a * b for a, b in zip(row, vec))

    for xt in x_seq:
        r = [
            1 / (1 + math.exp(-(dot(w_ih[j], xt) + b_ih[j] + dot(w_hh[j], h) + b_hh[j])))
            for j in range(hs)
        ]
        z = [
            1
            / (
                1
                + math.exp(
                    -(dot(w_ih[hs + j], xt) + b_ih[hs + j] + dot(w_hh[hs + j], h) + b_hh[hs + j])
                )
            )
            for j in range(hs)
        ]
        rh = [r[j] * h[j] for j in range(hs)]
        n = [
            math.tanh(
                dot(w_ih[2 * hs + j], xt)
                + b_ih[2 * hs + j]
                + dot(w_hh[2 * hs + j], rh)
                + b_hh[2 * hs + j]
            )
            for j in range(hs)
        ]
        h = [(1 - z[j]) * n[j] + z[j] * h[j] for j in range(hs)]
    return h


def test_gru_reset_before_hand_computed_single_step():
    """T=1, B=1, in=1, H=1, numbers chosen so each gate is computed by hand:

    r = sigmoid(0.5*2 + 0.1 + (-1)*0.4 + 0.2)        = sigmoid(0.9)
    z = sigmoid(-1*2 + 0 + 0.5*0.4 + 0.3)            = sigmoid(-1.5)
    n = tanh(0.25*2 + (-0.2) + 2*(r*0.4) + 0.1)      = tanh(0.4 + 0.8 r)
    h = (1 - z) n + z * 0.4
    (reset_after=True would instead give n = tanh(0.3 + r*(2*0.4 + 0.1)) = tanh(0.3 + 0.9 r).)
    """
    r = 1 / (1 + math.exp(-0.9))
    z = 1 / (1 + math.exp(1.5))
    expected = (1 - z) * math.tanh(0.4 + 0.8 * r) + z * 0.4
    w_ih = np.array([[0.5], [-1.0], [0.25]])
    w_hh = np.array([[-1.0], [0.5], [2.0]])
    b_ih = np.array([0.1, 0.0, -0.2])
    b_hh = np.array([0.2, 0.3, 0.1])
    x = np.array([[2.0]])
    h0 = np.array([[0.4]])
    got = gru_cell(x, h0, w_ih, w_hh, b_ih, b_hh, reset_after=False)
    assert got.shape == (1, 1)
    assert abs(got[0, 0] - expected) < TOL
    other = (1 - z) * math.tanh(0.3 + 0.9 * r) + z * 0.4
    assert abs(other - expected) > 1e-3  # the two variants are distinguishable here
    assert abs(gru_cell(x, h0, w_ih, w_hh, b_ih, b_hh, reset_after=True)[0, 0] - other) < TOL

    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    out, h_n = reference_forward(
        "gru", params, x[None], h0[None], num_layers=1, bidirectional=False, reset_after=False
    )
    assert abs(out[0, 0, 0] - expected) < TOL and abs(h_n[0, 0, 0] - expected) < TOL


def test_gru_reset_before_matches_scalar_loops():
    """Several steps, H=3, against an independent scalar implementation of spec section 3."""
    rng = np.random.default_rng(5)
    params = make_params("gru", 2, 3, 1, False, 0, True, rng, 0.9)
    x = rng.standard_normal((4, 1, 2))
    h0 = rng.standard_normal((1, 1, 3))
    out, h_n = reference_forward(
        "gru", params, x, h0, num_layers=1, bidirectional=False, reset_after=False
    )
    p = {k: v.tolist() for k, v in params.items()}
    h = h0[0, 0].tolist()
    for t in range(4):
        h = _scalar_gru_reset_before(
            [x[t, 0].tolist()],
            h,
            p["weight_ih_l0"],
            p["weight_hh_l0"],
            p["bias_ih_l0"],
            p["bias_hh_l0"],
        )
        np.testing.assert_allclose(out[t, 0], h, rtol=0, atol=TOL)
    np.testing.assert_allclose(h_n[0, 0], h, rtol=0, atol=TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
def test_gru_reset_before_equals_torch_when_reset_gate_is_one(bidirectional, lengths):
    """With r == 1 exactly, (r*h) W^T + b == r*(h W^T + b), so both GRU variants coincide.

    A +60 bias on the r block saturates sigmoid to 1.0 in float64 (1 - 1e-26 rounds to 1), which
    lets PyTorch check the reset_after=False driver (stacking, directions, lengths)."""
    rng = np.random.default_rng(9)
    params = make_params("gru", 3, 4, 2, bidirectional, 0, True, rng, 0.7)
    for k in params:
        if k.startswith("bias_ih"):
            params[k][:4] = 60.0
    x = rng.standard_normal((5, 3, 3))
    lens = None if lengths is None else np.array(lengths)
    m = _torch_module("gru", 3, 4, 2, bidirectional, False, True, {})
    _load(m, params)
    kw = dict(num_layers=2, bidirectional=bidirectional)
    ref = reference_forward("gru", params, x, None, lens, reset_after=False, **kw)
    _assert_same("gru", ref, _torch_run(m, "gru", x, None, lens, False))
    # and without the saturation the variants really differ (so the check above is not vacuous)
    params2 = make_params("gru", 3, 4, 2, bidirectional, 0, True, np.random.default_rng(9), 0.7)
    a = reference_forward("gru", params2, x, None, lens, reset_after=False, **kw)[0]
    b = reference_forward("gru", params2, x, None, lens, reset_after=True, **kw)[0]
    assert np.abs(a - b).max() > 1e-3


def test_single_step_cells_against_torch_cells():
    """The per-step functions against torch.nn.{RNN,LSTM,GRU}Cell (B=3)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    h = rng.standard_normal((3, 5))
    c = rng.standard_normal((3, 5))
    for name, g in [("rnn", 1), ("lstm", 4), ("gru", 3)]:
        w_ih = rng.uniform(-0.6, 0.6, (g * 5, 4))
        w_hh = rng.uniform(-0.6, 0.6, (g * 5, 5))
        b_ih = rng.uniform(-0.6, 0.6, g * 5)
        b_hh = rng.uniform(-0.6, 0.6, g * 5)
        tcell = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[name]
        m = tcell(4, 5).double()
        m.load_state_dict(
            {
                k: torch.from_numpy(v)
                for k, v in dict(weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh).items()
            }
        )
        with torch.no_grad():
            if name == "lstm":
                th, tc = m(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
                rh, rc = lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
                np.testing.assert_allclose(rc, tc.numpy(), rtol=0, atol=TOL)
            elif name == "gru":
                th = m(torch.from_numpy(x), torch.from_numpy(h))
                rh = gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
            else:
                th = m(torch.from_numpy(x), torch.from_numpy(h))
                rh = rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh)
        np.testing.assert_allclose(rh, th.numpy(), rtol=0, atol=TOL)


def test_sigmoid_stable_and_accurate():
    a = np.array([-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0])
    s = sigmoid(a)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(
        s, [1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in a], rtol=1e-15, atol=0
    )


# ---------------------------------------------------------------------------------------------
# The normalization hooks (used by later tests of normalized cells) are wired where the spec
# puts N_x, N_h, N_c: scaling A^x (or A^h) by 2 through a hook equals doubling W_ih (or W_hh).


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("which", ["x", "h"])
def test_step_norm_hooks_are_applied_before_the_bias(cell, which):
    rng = np.random.default_rng(4)
    params = make_params(cell, 3, 4, 2, True, 0, True, rng, 0.7)
    x = rng.standard_normal((5, 3, 3))
    lengths = np.array([5, 2, 4])
    calls = []

    def step_norms(layer, direction, k, active):
        calls.append((layer, direction, k, tuple(active)))
        return StepNorms(**{which: lambda a: 2.0 * a})

    kw = dict(num_layers=2, bidirectional=True)
    got = reference_forward(cell, params, x, None, lengths, step_norms=step_norms, **kw)
    doubled = {
        k: 2.0 * v if k.startswith(f"weight_{'ih' if which == 'x' else 'hh'}") else v
        for k, v in params.items()
    }
    want = reference_forward(cell, doubled, x, None, lengths, **kw)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=TOL)
    plain = reference_forward(cell, params, x, None, lengths, **kw)
    assert np.abs(plain[0] - got[0]).max() > 1e-3
    # one call per layer, direction and step; step k of both directions has the same mask
    assert sorted(c[:3] for c in calls) == [
        (layer, d, k) for layer in range(2) for d in range(2) for k in range(5)
    ]
    for _layer, _direction, k, active in calls:
        assert active == tuple(k < lengths)


def test_lstm_cell_norm_hook_on_output_path_only():
    """N_c changes h_t but not the carried c_t (spec section 3)."""
    rng = np.random.default_rng(6)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    w_ih, w_hh = rng.standard_normal((16, 3)), rng.standard_normal((16, 4))
    h1, c1 = lstm_cell(x, h, c, w_ih, w_hh)
    h2, c2 = lstm_cell(x, h, c, w_ih, w_hh, norms=StepNorms(c=lambda a: 0.5 * a))
    np.testing.assert_array_equal(c1, c2)
    o = sigmoid((x @ w_ih.T + h @ w_hh.T)[:, 12:])
    np.testing.assert_allclose(h2, o * np.tanh(0.5 * c1), rtol=0, atol=TOL)
    assert np.abs(h1 - h2).max() > 1e-3
