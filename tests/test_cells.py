"""rnncore.RNNCell / LSTMCell / GRUCell: one time step of one layer.

A cell is a one-layer, unidirectional module under the hood, so it must compute exactly
what the module computes for one step (bit for bit: the same core call) and train like it
(a loop over the steps of a sequence, backpropagated from the last, gives the module's
BPTT gradient). Against PyTorch's cells, the reference is always float64 (a float32 torch
cell is converted with ``.double()``, which is exact), so the error measured is rnncore's.
"""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core
from rnncore.reference import reference_forward

try:
    import torch
except ImportError:  # torch is a test dependency, but the rest runs without it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

IN, H, B = 3, 4, 5

# name -> (cell class, module class, keywords shared by both, torch class name)
CASES = {
    "rnn_tanh": (rc.RNNCell, rc.RNN, {"nonlinearity": "tanh"}, "RNNCell"),
    "rnn_relu": (rc.RNNCell, rc.RNN, {"nonlinearity": "relu"}, "RNNCell"),
    "lstm": (rc.LSTMCell, rc.LSTM, {}, "LSTMCell"),
    "gru": (rc.GRUCell, rc.GRU, {}, "GRUCell"),
}
# Every architecture a cell has: the torch ones, the original GRU, and the layer norms.
VARIANTS = {
    **{k: (c, m, kw) for k, (c, m, kw, _) in CASES.items()},
    "gru_reset_before": (rc.GRUCell, rc.GRU, {"reset_after": False}),
    "rnn_relu_layer": (rc.RNNCell, rc.RNN, {"nonlinearity": "relu", "norm": "layer"}),
    "lstm_layer": (rc.LSTMCell, rc.LSTM, {"norm": "layer"}),
    "gru_layer": (rc.GRUCell, rc.GRU, {"norm": "layer"}),
}
DTYPES = ["float32", "float64"]

# float32 against the float64 torch reference: one step is a dot product of
# n = IN + H + 2 = 9 terms (biases included) per pre-activation, then the activations. The
# classic bound n * u * sum|terms| with u = 2**-24 and sum|terms| <= 5 for these inputs
# is 2.7e-6, plus a few ulps for sigmoid/tanh; measured: at most 1.8e-7 (3 ulps) over 120
# random draws. A wrong gate, term or order shows up at >= 1e-2.
TOL32 = 4e-6
# float64: the same expressions in another rounding order, ~1e-16 per operation.
TOL64 = 1e-12


def _tol(dtype) -> float:
    return TOL32 if np.dtype(dtype) == np.float32 else TOL64


def _close(actual, expected, dtype, what=""):
    if torch is not None and torch.is_tensor(expected):
        expected = expected.detach().numpy()
    expected = np.asarray(expected)
    assert actual.dtype == np.dtype(dtype), what
    assert actual.shape == expected.shape, f"{what}: {actual.shape} vs {expected.shape}"
    tol = _tol(dtype) * max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol, err_msg=what)


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _flat(result) -> list:
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in _flat(part)]
    return [result]


def _assert_same(a, b, what=""):
    fa, fb = _flat(a), _flat(b)
    assert len(fa) == len(fb), what
    for i, (x, y) in enumerate(zip(fa, fb)):
        assert _same_bits(x, y), f"{what}: array {i} differs"


def _is_lstm(cell) -> bool:
    return isinstance(cell, rc.LSTMCell)


def _inputs(cell, batched=True, seed=1):
    """x and a random state (an (h, c) pair for the LSTM) of the cell's dtype."""
    rng = np.random.default_rng(seed)
    lead = (B,) if batched else ()
    x = rng.standard_normal(lead + (IN,)).astype(cell.dtype)
    h = (0.5 * rng.standard_normal(lead + (H,))).astype(cell.dtype)
    c = (0.5 * rng.standard_normal(lead + (H,))).astype(cell.dtype)
    return x, ((h, c) if _is_lstm(cell) else h)


def _module_of(cell, module_class, kw):
    """The one-layer module with the cell's weights (names with ``_l0``)."""
    m = module_class(IN, H, bias=cell.bias, dtype=cell.dtype, **kw)
    m.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    return m


def _seq_state(hx):
    """A cell state as the module's state (a leading axis of one layer)."""
    if hx is None:
        return None
    return tuple(a[None] for a in hx) if isinstance(hx, tuple) else hx[None]


def _step_of(states):
    """The module's ``h_n`` (or ``(h_n, c_n)``) as a cell state."""
    return tuple(a[0] for a in states) if isinstance(states, tuple) else states[0]


# --------------------------------------------------------------------------- torch
@needs_torch
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_cells(case, dtype, bias, batched, with_hx):
    cell_class, _, kw, torch_name = CASES[case]
    torch.manual_seed(0)
    tc = getattr(torch.nn, torch_name)(IN, H, bias=bias, **kw).to(getattr(torch, dtype))
    cell = cell_class.from_torch(tc)
    assert type(cell) is cell_class and cell.dtype == np.dtype(dtype) and cell.bias == bias
    assert cell.training
    x, hx = _inputs(cell, batched)
    ref = copy.deepcopy(tc).double()

    def t(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    t_hx = None
    if with_hx:
        t_hx = tuple(t(a) for a in hx) if isinstance(hx, tuple) else t(hx)
    with torch.no_grad():
        expected = ref(t(x), t_hx)
    got = cell(x, hx if with_hx else None)
    if _is_lstm(cell):
        assert isinstance(got, tuple) and len(got) == 2
        _close(got[0], expected[0], dtype, "h'")
        _close(got[1], expected[1], dtype, "c'")
    else:
        _close(got, expected, dtype, "h'")


@needs_torch
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_match_torch(case, batched):
    """float64: grad_x, grad_hx and every parameter gradient equal autograd's."""
    cell_class, _, kw, torch_name = CASES[case]
    torch.manual_seed(1)
    tc = getattr(torch.nn, torch_name)(IN, H, **kw).double()
    cell = cell_class.from_torch(tc)
    x, hx = _inputs(cell, batched, seed=2)
    rng = np.random.default_rng(3)
    r_h = rng.standard_normal(x.shape[:-1] + (H,))
    r_c = rng.standard_normal(x.shape[:-1] + (H,))

    def leaf(a):
        return torch.tensor(a, requires_grad=True)

    tx = leaf(x)
    if _is_lstm(cell):
        th = (leaf(hx[0]), leaf(hx[1]))
        h1, c1 = tc(tx, th)
        loss = (h1 * torch.from_numpy(r_h)).sum() + (c1 * torch.from_numpy(r_c)).sum()
        grad = (r_h, r_c)
    else:
        th = leaf(hx)
        loss = (tc(tx, th) * torch.from_numpy(r_h)).sum()
        grad = r_h
    loss.backward()
    cell.zero_grad()
    _, tape = cell.forward_train(x, hx)
    gx, ghx = cell.backward(tape, grad)
    _close(gx, tx.grad, "float64", "grad_x")
    if _is_lstm(cell):
        _close(ghx[0], th[0].grad, "float64", "grad_h")
        _close(ghx[1], th[1].grad, "float64", "grad_c")
    else:
        _close(ghx, th.grad, "float64", "grad_h")
    for name, p in tc.named_parameters():
        _close(cell.grads[name], p.grad, "float64", name)


@needs_torch
def test_from_torch_copies_mode_and_refuses_other_classes():
    tc = torch.nn.GRUCell(IN, H).eval()
    cell = rc.GRUCell.from_torch(tc)
    assert not cell.training and cell.reset_after and cell.norm is None
    relu = rc.RNNCell.from_torch(torch.nn.RNNCell(IN, H, nonlinearity="relu"))
    assert relu.nonlinearity == "relu"
    assert rc.LSTMCell.from_torch(torch.nn.LSTMCell(IN, H).half()).dtype == np.float32
    with pytest.raises(TypeError, match="from_torch expects a torch.nn.LSTMCell"):
        rc.LSTMCell.from_torch(torch.nn.LSTM(IN, H))
    with pytest.raises(TypeError, match="from_torch expects a torch.nn.LSTM,"):
        rc.LSTM.from_torch(torch.nn.LSTMCell(IN, H))


@needs_torch
@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_into_a_torch_cell_and_back(case):
    cell_class, _, kw, torch_name = CASES[case]
    cell = cell_class(IN, H, seed=4, **kw)
    sd = cell.state_dict()
    tc = getattr(torch.nn, torch_name)(IN, H, **kw)
    tc.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})  # strict: same names
    x, hx = _inputs(cell)
    t_hx = tuple(torch.from_numpy(a) for a in hx) if isinstance(hx, tuple) else torch.from_numpy(hx)
    with torch.no_grad():
        expected = tc.double()(torch.from_numpy(x).double(), _double(t_hx))
    for a, e in zip(_flat(cell(x, hx)), _flat(expected)):
        _close(a, e, "float32")
    back = cell_class(IN, H, **kw)
    back.load_state_dict(tc.float().state_dict())
    _assert_same(list(back.state_dict().values()), list(sd.values()))


def _double(t_hx):
    return tuple(a.double() for a in t_hx) if isinstance(t_hx, tuple) else t_hx.double()


# --------------------------------------------------------------------------- the module
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_step_of_the_module_bitwise(variant, dtype, batched, with_hx):
    """Call, forward_train and backward are the module's for T = 1, bit for bit."""
    cell_class, module_class, kw = VARIANTS[variant]
    cell = cell_class(IN, H, dtype=dtype, seed=5, **kw)
    m = _module_of(cell, module_class, kw)
    x, hx = _inputs(cell, batched)
    hx = hx if with_hx else None
    _, states = m(x[None], _seq_state(hx))
    _assert_same(cell(x, hx), _step_of(states), "call")
    _assert_same(cell.forward(x, hx), _step_of(states), "forward")

    got, tape = cell.forward_train(x, hx)
    _assert_same(got, _step_of(states), "forward_train")
    rng = np.random.default_rng(6)
    g = rng.standard_normal(x.shape[:-1] + (H,)).astype(cell.dtype)
    grad = (g, 2 * g) if _is_lstm(cell) else g
    cell.zero_grad()
    m.zero_grad()
    gx, ghx = cell.backward(tape, grad)
    _, _, m_tape = m.forward_train(x[None], _seq_state(hx))
    m_gx, m_ghx = m.backward(m_tape, None, _seq_state(grad))
    _assert_same(gx, m_gx[0], "grad_x")
    _assert_same(ghx, _step_of(m_ghx), "grad_hx")
    for k, g_cell in cell.grads.items():
        assert _same_bits(g_cell, m.grads[k + "_l0"]), k


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_against_the_numpy_reference(variant):
    """float64 against rnncore.reference (independent of the core), layer norms included."""
    cell_class, _, kw = VARIANTS[variant]
    cell = cell_class(IN, H, dtype="float64", seed=7, ln_eps=1e-3, **kw)
    for name, p in cell.parameters().items():  # gains and shifts away from 1 and 0
        if name.startswith("ln_"):
            p += np.random.default_rng(8).uniform(-0.5, 0.5, p.shape)
    x, hx = _inputs(cell)
    params = {k + "_l0": v for k, v in cell.state_dict().items()}
    _, expected = reference_forward(
        variant.split("_")[0], params, x[None], _seq_state(hx), num_layers=1,
        bidirectional=False, nonlinearity=cell.nonlinearity, reset_after=cell.reset_after,
        norm=cell.norm, ln_eps=1e-3,
    )  # fmt: skip
    for a, e in zip(_flat(cell(x, hx)), _flat(_step_of(expected))):
        _close(a, e, "float64", variant)


@pytest.mark.parametrize("variant", ["rnn_tanh", "lstm", "gru", "gru_reset_before", "lstm_layer"])
def test_a_loop_of_cell_steps_trains_like_the_module(variant):
    """A greedy-decoder-style loop: T forward_train steps, then backward from the last step,
    each carrying the state gradient to the step before; the accumulated gradients are the
    module's BPTT gradients over the whole sequence. float64; only the summation order
    differs (the module sums the weight gradients over T*B rows at once), so 1e-12."""
    cell_class, module_class, kw = VARIANTS[variant]
    T = 6
    m = module_class(IN, H, dtype="float64", seed=9, **kw)
    cell = cell_class(IN, H, dtype="float64", **kw)
    cell.load_state_dict({k[:-3]: v for k, v in m.state_dict().items()})
    rng = np.random.default_rng(10)
    x = rng.standard_normal((T, B, IN))
    h0 = 0.5 * rng.standard_normal((B, H))
    hx = (h0, 0.5 * rng.standard_normal((B, H))) if _is_lstm(cell) else h0
    r_out = rng.standard_normal((T, B, H))  # dL/dh_t of L = sum_t <h_t, r_t> + <c_T, r_c>
    r_c = rng.standard_normal((B, H))

    m.zero_grad()
    out, _, tape = m.forward_train(x, _seq_state(hx))
    m_gx, m_ghx = m.backward(tape, r_out, (None, r_c[None]) if _is_lstm(cell) else None)

    cell.zero_grad()
    state, tapes = hx, []
    for t in range(T):
        state, step_tape = cell.forward_train(x[t], state)
        tapes.append(step_tape)
        _close(state[0] if _is_lstm(cell) else state, out[t], "float64", f"h_{t}")
    grad_x = np.zeros_like(x)
    carry_h, carry_c = np.zeros((B, H)), r_c
    for t in reversed(range(T)):
        grad_h = r_out[t] + carry_h
        if _is_lstm(cell):
            grad_x[t], (carry_h, carry_c) = cell.backward(tapes[t], (grad_h, carry_c))
        else:
            grad_x[t], carry_h = cell.backward(tapes[t], grad_h)
    _close(grad_x, m_gx, "float64", "grad_x")
    if _is_lstm(cell):
        _close(carry_h, m_ghx[0][0], "float64", "grad_h0")
        _close(carry_c, m_ghx[1][0], "float64", "grad_c0")
    else:
        _close(carry_h, m_ghx[0], "float64", "grad_h0")
    for k, g in cell.grads.items():
        _close(g, m.grads[k + "_l0"], "float64", k)


# --------------------------------------------------------------------------- parameters
def test_parameter_names_and_initialization():
    lstm = rc.LSTMCell(IN, H, seed=0, forget_bias=0.5)
    assert list(lstm.parameters()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert lstm.parameters()["weight_ih"].shape == (4 * H, IN)
    assert np.all(lstm.parameters()["bias_ih"][H : 2 * H] == 0.5)
    # the default initialization draws what the one-layer module draws for the same seed
    m = rc.LSTM(IN, H, seed=0, forget_bias=0.5)
    for k, p in lstm.parameters().items():
        assert _same_bits(p, m.parameters()[k + "_l0"]), k
    gru_ln = rc.GRUCell(IN, H, norm="layer")
    assert list(gru_ln.parameters())[4:] == ["ln_ih_weight", "ln_hh_weight"]
    assert list(rc.RNNCell(IN, H, bias=False, norm="layer").parameters()) == [
        "weight_ih", "weight_hh", "ln_weight",
    ]  # fmt: skip
    assert list(rc.LSTMCell(IN, H, norm="layer").parameters())[4:] == [
        "ln_ih_weight", "ln_hh_weight", "ln_cell_weight", "ln_cell_bias",
    ]  # fmt: skip
    gru = rc.GRUCell(IN, H, seed=1, update_bias=-1.0)
    assert np.all(gru.parameters()["bias_ih"][H : 2 * H] == -1.0)
    torch_init = rc.RNNCell(IN, H, seed=1, init="torch")
    assert all(np.all(np.abs(p) <= 1 / np.sqrt(H)) for p in torch_init.parameters().values())
    # the gate-bias initializers take cells
    rc.init.forget_gate_bias(lstm, 2.0)
    assert np.all(lstm.parameters()["bias_ih"][H : 2 * H] == 2.0)
    rc.init.update_gate_bias(gru, 3.0)
    assert np.all(gru.parameters()["bias_ih"][H : 2 * H] == 3.0)
    rc.init.chrono(lstm, 10.0, rng=0)
    b_f = lstm.parameters()["bias_ih"][H : 2 * H]
    assert np.all((b_f >= 0) & (b_f <= np.log(9.0) + 1e-6))


def test_options_and_attributes():
    cell = rc.GRUCell(IN, H, reset_after=False, dtype="float64", seed=0, ln_eps=1e-3)
    assert cell.options == type(cell.options).from_dict(cell.options.to_dict())
    assert (cell.input_size, cell.hidden_size, cell.bias, cell.reset_after) == (IN, H, True, False)
    assert cell.num_layers == 1 and cell.norm is None and cell.norm_options["ln_eps"] == 1e-3
    with pytest.raises(AttributeError):
        cell.hidden_size = 5
    # a sequence module's options are not a cell's
    for name in ("batch_first", "bidirectional", "dropout", "proj_size", "zoneout", "chrono"):
        assert not hasattr(cell, name)
    with pytest.raises(AttributeError, match="GRUCell has no 'batch_first'"):
        _ = cell.batch_first
    assert repr(rc.LSTMCell(8, 16)) == "rnncore.LSTMCell(8, 16, dtype=float32)"
    assert repr(cell) == "rnncore.GRUCell(3, 4, reset_after=False, dtype=float64)"
    assert repr(rc.RNNCell(2, 3, bias=False, nonlinearity="relu", norm="layer")) == (
        "rnncore.RNNCell(2, 3, bias=False, nonlinearity='relu', norm='layer', dtype=float32)"
    )
    # eval mode changes nothing (no batch norm, no dropout)
    x, hx = _inputs(cell)
    _assert_same(cell(x, hx), cell.eval()(x, hx))
    # inputs of any real dtype and layout, never modified
    x64 = np.asfortranarray(x.astype(np.float64))
    before = x64.copy()
    _assert_same(cell(x64, hx.tolist()), cell(x, hx))
    assert np.array_equal(x64, before)


# --------------------------------------------------------------------------- copies
def _trained_cell(cell_class, **kw):
    cell = cell_class(IN, H, seed=11, **kw)
    x, hx = _inputs(cell)
    h, tape = cell.forward_train(x, hx)
    cell.backward(tape, tuple(np.ones_like(a) for a in h) if isinstance(h, tuple) else h)
    return cell


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
@pytest.mark.parametrize("variant", ["rnn_relu", "lstm_layer", "gru_reset_before"])
def test_copies_are_independent_and_equal(variant, how):
    cell_class, _, kw = VARIANTS[variant]
    cell = _trained_cell(cell_class, **kw)
    cell.tag = {"epoch": 3}
    other = {"pickle": lambda c: pickle.loads(pickle.dumps(c)), "deepcopy": copy.deepcopy,
             "copy": copy.copy}[how](cell)  # fmt: skip
    assert type(other) is cell_class and other.options == cell.options
    assert other.tag == {"epoch": 3} and other.training == cell.training
    _assert_same(list(other.state_dict().values()), list(cell.state_dict().values()))
    _assert_same(list(other.grads.values()), list(cell.grads.values()))
    x, hx = _inputs(cell)
    _assert_same(other(x, hx), cell(x, hx))
    cell.parameters()["weight_hh"][...] += 1.0
    cell.zero_grad()
    assert not np.array_equal(other.parameters()["weight_hh"], cell.parameters()["weight_hh"])
    assert np.any(other.grads["weight_ih"] != 0)


@pytest.mark.parametrize("variant", ["rnn_tanh", "lstm", "gru", "lstm_layer"])
def test_half_weights(variant):
    cell_class, module_class, kw = VARIANTS[variant]
    cell = cell_class(IN, H, seed=12, **kw)
    half = cell.half_weights()
    assert type(half) is cell_class and not half.training and repr(half).endswith("half_weights)")
    assert half.parameters()["weight_ih"].dtype == np.float32
    assert np.array_equal(
        half.parameters()["weight_hh"],
        cell.parameters()["weight_hh"].astype(np.float16).astype(np.float32),
    )
    m_half = _module_of(cell, module_class, kw).half_weights()
    for batched in (True, False):
        x, hx = _inputs(cell, batched)
        _, states = m_half(x[None], _seq_state(hx))
        _assert_same(half(x, hx), _step_of(states), f"batched={batched}")
    with pytest.raises(RuntimeError, match="half_weights"):
        half.forward_train(x, hx)
    with pytest.raises(ValueError, match="float32"):
        cell_class(IN, H, dtype="float64", **kw).half_weights()


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_and_load(tmp_path, variant):
    cell_class, _, kw = VARIANTS[variant]
    cell = _trained_cell(cell_class, dtype="float64", **kw)
    path = tmp_path / "cell.safetensors"
    rc.save(cell, path)
    back = rc.load(path)
    assert type(back) is cell_class and back.options == cell.options and back.training
    _assert_same(list(back.state_dict().values()), list(cell.state_dict().values()))
    x, hx = _inputs(cell)
    _assert_same(back(x, hx), cell(x, hx))
    meta, tensors = _core.read_safetensors(str(path))
    assert json.loads(meta["rnncore"])["modules"][0]["class"] == cell_class.__name__
    assert sorted(tensors) == sorted(cell.state_dict())


def test_save_and_load_a_half_cell_in_a_mapping(tmp_path):
    half = rc.LSTMCell(IN, H, seed=13, norm="layer").half_weights()
    head = rc.Linear(H, 2, seed=14)
    path = tmp_path / "decoder.safetensors"
    rc.save({"cell": half, "head": head}, path)
    back = rc.load(path)
    assert type(back["cell"]) is rc.LSTMCell and back["cell"]._half
    _assert_same(list(back["cell"].state_dict().values()), list(half.state_dict().values()))
    _, tensors = _core.read_safetensors(str(path))
    assert tensors["cell.weight_ih"].dtype == np.float16
    assert tensors["cell.ln_ih_weight"].dtype == np.float32


def _edited_file(tmp_path, module, edit_entry=None, rename=None):
    entry = {"name": None, "class": type(module).__name__, "options": module.options.to_dict(),
             "training": True, "weights": str(module.dtype)}  # fmt: skip
    if edit_entry:
        edit_entry(entry)
    info = {"format_version": 1, "modules": [entry]}
    tensors = [((rename or (lambda k: k))(k), v) for k, v in module.state_dict().items()]
    path = tmp_path / "edited.safetensors"
    _core.write_safetensors(str(path), {"rnncore": json.dumps(info)}, tensors)
    return path


def test_load_checks_a_cell_against_its_class(tmp_path):
    cell = rc.LSTMCell(IN, H, seed=0)

    def expect(path, phrase):
        with pytest.raises(ValueError, match=phrase) as info:
            rc.load(path)
        assert str(path) in str(info.value)

    # options of a two-layer model recorded for a cell
    two = _edited_file(tmp_path, cell, lambda e: e["options"].update(num_layers=2))
    expect(two, "LSTMCell is one step of one layer: it has no num_layers=2")
    batch = _edited_file(tmp_path, cell, lambda e: e["options"].update(norm="batch"))
    expect(batch, "norm must be None or 'layer'")
    gru = _edited_file(tmp_path, cell, lambda e: e["options"].update(cell="gru"))
    expect(gru, "does not match its options' cell")
    # a cell's tensors recorded as an LSTM module, and a module's as a cell
    as_module = _edited_file(tmp_path, cell, lambda e: e.update({"class": "LSTM"}))
    expect(as_module, "tensor 'weight_ih_l0' is missing")
    as_cell = _edited_file(tmp_path, cell, rename=lambda k: k + "_l0")
    expect(as_cell, "tensor 'weight_ih' is missing")


# --------------------------------------------------------------------------- errors
def test_constructor_errors():
    with pytest.raises(ValueError, match=r"LSTMCell: norm must be None or 'layer', got 'batch'"):
        rc.LSTMCell(IN, H, norm="batch")
    with pytest.raises(ValueError, match=r"GRUCell: norm must be None or 'layer', got 'batch_i"):
        rc.GRUCell(IN, H, norm="batch_input")
    with pytest.raises(ValueError, match="RNNCell: norm must be None or 'layer', got 'group'"):
        rc.RNNCell(IN, H, norm="group")
    with pytest.raises(ValueError, match="input_size must be >= 1, got 0"):
        rc.RNNCell(0, H)
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got -2"):
        rc.GRUCell(IN, -2)
    with pytest.raises(TypeError, match="hidden_size must be an int, got float"):
        rc.LSTMCell(IN, 4.0)
    with pytest.raises(TypeError, match="bias must be a bool"):
        rc.LSTMCell(IN, H, 1)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        rc.RNNCell(IN, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="reset_after=False is only available with norm=None"):
        rc.GRUCell(IN, H, reset_after=False, norm="layer")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        rc.LSTMCell(IN, H, dtype="float16")
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_layers'"):
        rc.LSTMCell(IN, H, num_layers=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bn_eps'"):
        rc.LSTMCell(IN, H, bn_eps=1e-3)
    with pytest.raises(ValueError, match="ln_eps must be in"):
        rc.LSTMCell(IN, H, ln_eps=-1.0)


@pytest.mark.parametrize("case", list(CASES))
def test_call_errors(case):
    cell = CASES[case][0](IN, H)
    x, hx = _inputs(cell)
    shape = rf"must have shape \(B, {IN}\) or unbatched \({IN},\)"
    with pytest.raises(ValueError, match=shape + r".*got shape \(1, 5, 3\)"):
        cell(x[None], hx)  # a sequence is not a step
    with pytest.raises(ValueError, match=shape + r".*got shape \(5, 2\)"):
        cell(x[:, :2], hx)
    with pytest.raises(ValueError, match=shape + r".*got shape \(0, 3\)"):
        cell(x[:0])
    with pytest.raises(ValueError, match=shape + r".*got shape \(\)"):
        cell(np.float32(1.0))
    with pytest.raises(TypeError, match="x must have a real"):
        cell(x.astype(np.complex64))
    if _is_lstm(cell):
        h, c = hx
        with pytest.raises(TypeError, match=r"hx must be None or an \(h, c\) pair .* got ndarray"):
            cell(x, h)
        with pytest.raises(TypeError, match=r"hx must be None or an \(h, c\) pair"):
            cell(x, (h, None))
        with pytest.raises(TypeError, match=r"hx must be None or an \(h, c\) pair"):
            cell(x, (h, c, c))
        with pytest.raises(ValueError, match=r"hx\[1\] \(c\) must have shape \(B, hidden_size\) "
                           r"= \(5, 4\), got \(4, 4\)"):  # fmt: skip
            cell(x, (h, c[:4]))
        with pytest.raises(ValueError, match=r"hx\[0\] \(h\) must have shape \(hidden_size,\) "
                           r"= \(4,\) for unbatched x, got \(5, 4\)"):  # fmt: skip
            cell(x[0], (h, c[0]))
    else:
        with pytest.raises(ValueError, match=r"hx must have shape \(B, hidden_size\) = \(5, 4\), "
                           r"got \(6, 4\)"):  # fmt: skip
            cell(x, np.zeros((B + 1, H)))
        with pytest.raises(ValueError, match=r"hx must have shape \(hidden_size,\) = \(4,\) for "
                           r"unbatched x, got \(1, 4\)"):  # fmt: skip
            cell(x[0], hx[:1])
        with pytest.raises(TypeError, match="hx must have a real"):
            cell(x, hx.astype(bool))


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm"])
def test_backward_errors(case):
    cell, other = CASES[case][0](IN, H), CASES[case][0](IN, H)
    x, hx = _inputs(cell)
    h, tape = cell.forward_train(x, hx)
    g = np.ones((B, H), np.float32)
    grad = (g, g) if _is_lstm(cell) else g
    with pytest.raises(TypeError, match="tape must be an rnncore Tape"):
        cell.backward(object(), grad)
    with pytest.raises(ValueError, match="tape was recorded by another module"):
        other.backward(tape, grad)
    if _is_lstm(cell):
        with pytest.raises(TypeError, match=r"grad_h must be None or a \(grad_h, grad_c\) pair"):
            cell.backward(tape, g)
        with pytest.raises(ValueError, match=r"grad_h\[1\] \(c\) must have shape \(B, hidden_"
                           r"size\) = \(5, 4\), got \(4,\)"):  # fmt: skip
            cell.backward(tape, (None, g[0]))
    else:
        with pytest.raises(ValueError, match=r"grad_h must have shape \(B, hidden_size\) = "
                           r"\(5, 4\), got \(1, 5, 4\)"):  # fmt: skip
            cell.backward(tape, g[None])
    b = cell.parameters()["bias_hh"]
    saved = b.copy()
    b[0] += 1.0
    with pytest.raises(RuntimeError, match="parameters changed"):
        cell.backward(tape, grad)
    b[...] = saved
    gx, _ = cell.backward(tape, None)  # None: a zero gradient, parameters untouched
    assert gx.shape == x.shape and not np.any(gx)
    with pytest.raises(ValueError, match="already been used"):
        cell.backward(tape, grad)
    _, tape = cell.forward_train(x[0], tuple(a[0] for a in hx) if _is_lstm(cell) else hx[0])
    with pytest.raises(ValueError, match=r"for an unbatched step, got \(5, 4\)"):
        cell.backward(tape, (g, None) if _is_lstm(cell) else g)
    with pytest.raises(TypeError, match="a tape cannot be pickled"):
        pickle.dumps(tape)
