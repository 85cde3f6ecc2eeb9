"""rnncore's normalized cells (``norm="layer"|"batch"|"batch_input"``) against the independent
NumPy reference (``rnncore.reference``, validated by tests/test_norm_reference.py) and the
worked example of docs/normalization.md section 5.

Tolerances. A normalization divides by a standard deviation, so it multiplies the absolute
rounding error of its input (~ eps * |a|) by up to ``kappa = max |a| / sqrt(var + eps)``
(``rnn_testing.norm_condition``; ~3-8 for layer norm and eval-mode or sequence-wise batch
norm, up to a few hundred for training-mode batch norm over 2-3 sequences with nearly equal
values). The tolerance is therefore the plain-cell one of tests/test_forward.py scaled by the
measured conditioning of each case, ``tol = base * max(1, kappa / 4)``, relative to
``max(1, max|reference|)``, with data redrawn until ``kappa <= 100``:

* float64, base 1e-12: the reference and a float64 core differ by ~ (a few ulps) * kappa *
  (12 sequential steps) ~ 1e-14 * kappa / 4 at most; >= 20x margin.
* float32, base 3e-5: a float32 transcription of the reference (every operation rounded to
  float32) stays within 18 * kappa * eps32 ~ 2.1e-6 * kappa of the float64 reference on these
  sizes (measured over 40 draws per cell x norm x mode); 3e-5 * kappa / 4 = 7.5e-6 * kappa
  leaves 3.5x for a fused / vectorized implementation and is still >= 10x below the effect of
  any semantic error (wrong statistics, rows, epsilon, active set: >= 1e-3).

The worked example is compared to 1e-7, as the spec demands (its values are printed with 8
significant digits).
"""

import numpy as np
import pytest
from rnn_testing import (
    NORM_VARIANTS,
    NORMS,
    VARIANTS,
    WORKED_EXPECTED,
    WORKED_X,
    Config,
    analytic_gradients,
    make_inputs,
    make_module,
    make_seeds,
    norm_condition,
    pack_states,
    random_buffers,
    reference_with_buffers,
    unpack_states,
    worked_example_hx,
    worked_example_params,
)

from rnncore.reference import buffer_names, init_buffers, init_norm_params, param_names

BASE_TOL = {"float64": 1e-12, "float32": 3e-5}  # see module docstring
MAX_KAPPA = 100.0
WORKED_TOL = 1e-7
T, B = 6, 4


def _tol(dtype, kappa):
    return BASE_TOL[dtype] * max(1.0, kappa / 4.0)


def assert_close(actual, expected, dtype, kappa, what):
    """``|a - e| <= tol * max(1, max|e|)`` plus exact dtype and shape."""
    assert isinstance(actual, np.ndarray), what
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    tol = _tol(dtype, kappa)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale, err_msg=what)


def assert_buffers_close(m, expected, dtype, kappa):
    got = m.buffers()
    assert set(got) == set(expected), f"buffers {sorted(got)} vs {sorted(expected)}"
    for name, want in expected.items():
        assert_close(np.asarray(got[name]), want, dtype, kappa, name)


def _cast(d, dtype):
    return {k: np.asarray(v).astype(dtype) for k, v in d.items()}


def _draw(cfg, rng, dtype, batch, lengths_kind, with_hx, training, rows):
    """Parameters, buffers and inputs in ``dtype`` (the reference sees the same rounded values),
    redrawn until the normalizations' conditioning is at most MAX_KAPPA. Returns the kappa."""
    for _ in range(40):
        params = _cast(cfg.make_params(rng, scale=0.6), dtype)
        bufs = _cast(random_buffers(cfg, rng, rows), dtype)
        x, states, lengths = make_inputs(cfg, rng, T, batch, lengths_kind, with_hx, dtype=dtype)
        kappa = norm_condition(cfg, params, x, states, lengths, training=training, buffers=bufs)
        if kappa <= MAX_KAPPA:
            return params, bufs, x, states, lengths, kappa
    raise AssertionError("could not draw well-conditioned data")  # pragma: no cover


def _module(rc, cfg, dtype, params, bufs=None, training=True):
    m = make_module(rc, cfg, dtype, {**params, **(bufs or {})})
    return m.train() if training else m.eval()


def _compare_call(rc, cfg, dtype, training, lengths_kind, rng, batch=B):
    params, bufs, x, states, lengths, kappa = _draw(
        cfg, rng, dtype, batch, lengths_kind, True, training, rows=3
    )
    m = make_module(rc, cfg, dtype, {**params, **bufs})
    if not training:
        assert m.eval() is m
    assert m.training is training
    copies = [np.array(a, copy=True) for a in [x] + states]
    out, hn = m(x, pack_states(cfg, states), lengths)
    for before, after in zip(copies, [x] + states):
        np.testing.assert_array_equal(after, before)  # inputs are never modified
    ref_out, ref_states, ref_bufs = reference_with_buffers(
        cfg, params, x, states, lengths, training=training, buffers=bufs
    )
    assert_close(out, ref_out, dtype, kappa, "out")
    for name, got, want in zip(("h_n", "c_n"), unpack_states(cfg, hn), ref_states):
        assert_close(got, want, dtype, kappa, name)
    if cfg.is_batch_norm:
        assert_buffers_close(m, ref_bufs, dtype, kappa)
    if lengths is not None:
        for b, ln in enumerate(lengths):
            tail = out[b, ln:] if cfg.batch_first else out[ln:, b]
            assert np.all(tail == 0.0), f"out past lengths[{b}]={ln} is not exactly 0"
    return m, params, bufs, x, states, lengths, kappa


# ---------------------------------------------------------------------------------------------
# Worked example (spec section 5).


@pytest.mark.parametrize("load", ["state_dict", "views"])
@pytest.mark.parametrize("cell,norm", list(WORKED_EXPECTED), ids=lambda v: str(v))
def test_worked_example(rc, cell, norm, load):
    cls = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}[cell]
    m = cls(2, 3, norm=norm, dtype="float64")
    plain = worked_example_params(cell)
    # the example uses the gains as initialized (LN 1, BN 0.1, shifts 0)
    for name, value in init_norm_params(cell, 3, 1, False, norm).items():
        np.testing.assert_array_equal(m.parameters()[name], value, err_msg=name)
    if load == "state_dict":
        m.load_state_dict(plain, strict=False)
    else:
        views = m.parameters()
        for name, value in plain.items():
            views[name][...] = value
    out, hn = m(WORKED_X, worked_example_hx(cell))
    expected = WORKED_EXPECTED[(cell, norm)]
    states = unpack_states(Config(cell), hn)
    np.testing.assert_allclose(states[0][0], expected["h"], rtol=0, atol=WORKED_TOL)
    np.testing.assert_allclose(out[1], expected["h"], rtol=0, atol=WORKED_TOL)
    if cell == "lstm":
        np.testing.assert_allclose(states[1][0], expected["c"], rtol=0, atol=WORKED_TOL)


# ---------------------------------------------------------------------------------------------
# Against the reference.


def _forward_cases():
    cases = []
    for variant in NORM_VARIANTS:
        for norm in NORMS:
            for training in (True, False):
                if norm == "layer" and not training:
                    continue  # layer norm has no mode (checked separately)
                mode = "train" if training else "eval"
                cases.append(pytest.param(variant, norm, training, id=f"{variant}-{norm}-{mode}"))
    return cases


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed"], ids=["nolen", "len"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant,norm,training", _forward_cases())
def test_forward_matches_reference(
    rc, rng, variant, norm, training, num_layers, bidirectional, lengths_kind, batch_first, dtype
):
    """Outputs, final states and (batch norms) the running statistics after the call, which
    start from 3 loaded random rows (T=6: the training call grows them to 6; eval steps 3..5
    reuse row 2)."""
    cfg = Config.from_variant(
        variant,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        norm=norm,
    )
    _compare_call(rc, cfg, dtype, training, lengths_kind, rng)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_forward_with_trailing_padding_and_no_bias(rc, rng, variant, norm):
    """'short' lengths (no sequence reaches T: trailing steps have no active sequence, the
    buffers grow to max(lengths) only) and bias=False."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm, bias=False)
    for training in (True, False):
        _compare_call(rc, cfg, "float64", training, "short", rng)


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_forward_train_runs_like_the_call_and_updates_the_buffers(rc, rng, variant, norm):
    """forward_train in training mode gives the call's results and also updates the running
    statistics (every training-mode forward does, PyTorch semantics); in eval mode it uses
    the running statistics and updates nothing."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params, bufs, x, states, lengths, kappa = _draw(cfg, rng, "float64", B, "mixed", True, True, 3)
    m = _module(rc, cfg, "float64", params, bufs)
    out, hn, _tape = m.forward_train(x, pack_states(cfg, states), lengths)
    ref_out, ref_states, ref_bufs = reference_with_buffers(
        cfg, params, x, states, lengths, buffers=bufs
    )
    assert_close(out, ref_out, "float64", kappa, "out")
    for got, want in zip(unpack_states(cfg, hn), ref_states):
        assert_close(got, want, "float64", kappa, "h_n/c_n")
    assert_buffers_close(m, ref_bufs, "float64", kappa)

    m.eval()
    kappa = norm_condition(cfg, params, x, states, lengths, training=False, buffers=ref_bufs)
    out, hn, _tape = m.forward_train(x, pack_states(cfg, states), lengths)
    ref_out, ref_states, same = reference_with_buffers(
        cfg, params, x, states, lengths, training=False, buffers=ref_bufs
    )
    assert_close(out, ref_out, "float64", kappa, "eval out")
    assert_buffers_close(m, same, "float64", kappa)


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_running_statistics_over_several_training_calls(rc, rng, variant, norm):
    """Several training calls with different T, lengths and layouts, starting from a never
    trained module (S = 0): the buffers follow the reference after every call (growth to the
    longest sequence so far, new rows 0 / 1, rows with < 2 active sequences untouched). Then
    eval mode on sequences LONGER than any seen in training (steps past S-1 reuse row S-1)."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    m = make_module(rc, cfg, "float64", params)
    bufs = init_buffers(cfg.cell, cfg.hidden_size, 2, True, norm)
    assert_buffers_close(m, bufs, "float64", 1.0)
    for t_len, kind, batch in [(3, None, 4), (5, "mixed", 4), (4, "short", 3), (2, None, 2)]:
        x, states, lengths = make_inputs(cfg, rng, t_len, batch, kind, True)
        out, _ = m(x, pack_states(cfg, states), lengths)
        ref_out, _, bufs = reference_with_buffers(cfg, params, x, states, lengths, buffers=bufs)
        np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-10)
        assert_buffers_close(m, bufs, "float64", MAX_KAPPA)
    if norm == "batch":
        assert all(v.shape[0] == 5 for v in m.buffers().values())  # longest so far: 5
    m.eval()
    x, states, lengths = make_inputs(cfg, rng, 8, 3, "mixed", True)
    out, hn = m(x, pack_states(cfg, states), lengths)
    ref_out, ref_states, same = reference_with_buffers(
        cfg, params, x, states, lengths, training=False, buffers=bufs
    )
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-10)
    for got, want in zip(unpack_states(cfg, hn), ref_states):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert_buffers_close(m, same, "float64", 1.0)


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_running_statistics_do_not_depend_on_the_padding(rc, rng, variant):
    """api.md: lengths are packed-sequence semantics without the packing, so the padded length
    T is not part of the data: the same sequences padded to T=5 or T=8 leave the same running
    statistics (S = the longest sequence, 5 -- not T) and give the same outputs."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm="batch")
    params = cfg.make_params(rng, scale=0.6)
    x, states, _ = make_inputs(cfg, rng, 8, 3, None, True)
    lengths = np.array([5, 3, 4])
    results = []
    for t_len in (5, 8):
        m = make_module(rc, cfg, "float64", params)
        out, _ = m(x[:t_len], pack_states(cfg, states), lengths)
        results.append((out[:5], m.buffers()))
    # to rounding (bitwise reproducibility is the business of the test further down)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=0, atol=1e-13)
    for name, value in results[0][1].items():
        assert value.shape[0] == 5, name
        assert results[1][1][name].shape == value.shape, name
        np.testing.assert_allclose(results[1][1][name], value, rtol=0, atol=1e-13)


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_eval_of_a_never_trained_module_uses_mean_0_variance_1(rc, rng, variant, norm):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    m = make_module(rc, cfg, "float64", params).eval()
    x, states, lengths = make_inputs(cfg, rng, T, 2, "mixed", True)
    out, _ = m(x, pack_states(cfg, states), lengths)
    ref_out, _, _ = reference_with_buffers(cfg, params, x, states, lengths, training=False)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-11)


# ---------------------------------------------------------------------------------------------
# Modes.


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_layer_norm_is_identical_in_train_and_eval_mode(rc, rng, variant):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm="layer")
    params = cfg.make_params(rng, scale=0.6)
    m = make_module(rc, cfg, "float32", _cast(params, "float32"))
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed", True, dtype=np.float32)
    hx = pack_states(cfg, states)
    out_t, hn_t = m(x, hx, lengths)
    out_e, hn_e = m.eval()(x, hx, lengths)
    np.testing.assert_array_equal(out_e, out_t)
    for a, b in zip(unpack_states(cfg, hn_t), unpack_states(cfg, hn_e)):
        np.testing.assert_array_equal(a, b)
    assert len(m.buffers()) == 0
    # single sequences work in both modes (no batch statistics)
    m.train()(x[:, 0], None)


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_batch_norm_eval_is_a_fixed_map_per_sequence(rc, rng, variant, norm):
    """In eval mode a sequence's result does not depend on the other sequences of the batch
    (batched with B=1, unbatched, or inside a batch with lengths) and nothing is updated."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, 3)
    m = _module(rc, cfg, "float64", params, bufs).eval()
    x, states, lengths = make_inputs(cfg, rng, T, 3, "mixed", True)
    out, hn = m(x, pack_states(cfg, states), lengths)
    full = unpack_states(cfg, hn)
    for b, ln in enumerate(lengths):
        one_states = [s[:, b : b + 1] for s in states]
        o1, h1 = m(x[:ln, b : b + 1], pack_states(cfg, one_states))
        np.testing.assert_allclose(o1[:, 0], out[:ln, b], rtol=0, atol=1e-12)
        for got, want in zip(unpack_states(cfg, h1), full):
            np.testing.assert_allclose(got[:, 0], want[:, b], rtol=0, atol=1e-12)
        ou, _ = m(x[:ln, b], pack_states(cfg, [s[:, b] for s in states]))
        np.testing.assert_allclose(ou, out[:ln, b], rtol=0, atol=1e-12)
    for name, value in m.buffers().items():
        np.testing.assert_array_equal(value, bufs[name])


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_training_batch_norm_needs_two_sequences(rc, rng, cell, norm):
    cls = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}[cell]
    m = cls(3, 4, norm=norm, dtype="float64")
    x = rng.standard_normal((5, 1, 3))
    for call in (lambda a: m(a), lambda a: m.forward_train(a)):
        with pytest.raises(ValueError):
            call(x)
        with pytest.raises(ValueError):
            call(x[:, 0])  # unbatched: one sequence
    for name, value in init_buffers(cell, 4, 1, False, norm).items():  # nothing was updated
        np.testing.assert_array_equal(m.buffers()[name], value)
    m(rng.standard_normal((5, 2, 3)))  # two sequences are enough
    m.eval()
    m(x)  # eval: fixed statistics, one sequence is fine
    m(x[:, 0])


# ---------------------------------------------------------------------------------------------
# Parameters, buffers, state_dict.


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_parameter_names_shapes_and_initial_values(rc, variant, norm):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    m = make_module(rc, cfg, "float64")
    params = m.parameters()
    assert list(params) == param_names(cfg.cell, 2, True, cfg.proj_size, True, norm)
    h, g = cfg.hidden_size, cfg.gates
    init = init_norm_params(cfg.cell, h, 2, True, norm)
    for name, value in init.items():
        assert params[name].shape == value.shape, name
        np.testing.assert_array_equal(params[name], value, err_msg=name)
    if cfg.proj_size:
        assert params["weight_hh_l1"].shape == (g * h, cfg.proj_size)
    assert set(m.grads) == set(params)
    assert m.num_parameters() == sum(v.size for v in params.values())
    bufs = m.buffers()
    assert set(bufs) == set(buffer_names(cfg.cell, 2, True, norm))
    for name, value in init_buffers(cfg.cell, h, 2, True, norm).items():
        assert bufs[name].shape == value.shape, name
        np.testing.assert_array_equal(bufs[name], value, err_msg=name)
    sd = m.state_dict()
    assert list(sd)[: len(params)] == list(params)  # parameters first, then the buffers
    assert set(list(sd)[len(params) :]) == set(bufs)
    assert not set(bufs) & set(params)


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "rnn_relu"])
def test_state_dict_round_trip_of_the_buffers(rc, rng, variant, norm):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    m = make_module(rc, cfg, "float64", params)
    for t_len in (4, 6):
        x, _, lengths = make_inputs(cfg, rng, t_len, B, "mixed", False)
        m(x, None, lengths)
    sd = m.state_dict()
    bufs = m.buffers()
    assert set(bufs) <= set(sd)
    for name, value in bufs.items():
        np.testing.assert_array_equal(sd[name], value)
        if norm == "batch":
            assert value.shape[0] == 6
    # copies: changing them changes nothing in m
    for value in list(sd.values()) + list(bufs.values()):
        value[...] = 7.0
    assert all(not np.all(v == 7.0) for v in m.buffers().values())
    sd = m.state_dict()
    m2 = make_module(rc, cfg, "float64")
    m2.load_state_dict(sd)
    for name, value in m.buffers().items():
        np.testing.assert_array_equal(m2.buffers()[name], value)
    x, states, lengths = make_inputs(cfg, rng, 8, 3, "mixed", True)
    o1, _ = m.eval()(x, pack_states(cfg, states), lengths)
    o2, _ = m2.eval()(x, pack_states(cfg, states), lengths)
    np.testing.assert_array_equal(o1, o2)
    # PyTorch tensors are accepted too
    torch = pytest.importorskip("torch")
    m3 = make_module(rc, cfg, "float64")
    m3.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    np.testing.assert_array_equal(m3.eval()(x, pack_states(cfg, states), lengths)[0], o1)


@pytest.mark.parametrize("rows", [0, 1, 9])
def test_load_state_dict_accepts_any_number_of_running_rows(rc, rng, rows):
    cfg = Config("lstm", num_layers=1, bidirectional=True, norm="batch")
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, rows)
    m = _module(rc, cfg, "float64", params, bufs).eval()
    for name, value in bufs.items():
        np.testing.assert_array_equal(m.buffers()[name], value)
    x, states, lengths = make_inputs(cfg, rng, T, 2, "mixed", True)
    out, _ = m(x, pack_states(cfg, states), lengths)
    ref, _, _ = reference_with_buffers(
        cfg, params, x, states, lengths, training=False, buffers=bufs
    )
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-11)


def test_load_state_dict_rejects_wrongly_shaped_buffers(rc, rng):
    cfg = Config("gru", norm="batch")
    m = make_module(rc, cfg, "float64")
    with pytest.raises(ValueError, match="bn_hh_running_mean_l0"):
        m.load_state_dict({"bn_hh_running_mean_l0": np.zeros((3, 5))}, strict=False)
    with pytest.raises(ValueError, match="bn_hh_running_var_l0"):
        m.load_state_dict({"bn_hh_running_var_l0": np.zeros(12)}, strict=False)
    mi = make_module(rc, cfg.replace(norm="batch_input"), "float64")
    with pytest.raises(ValueError, match="bn_ih_running_mean_l0"):
        mi.load_state_dict({"bn_ih_running_mean_l0": np.zeros((1, 12))}, strict=False)
    sd = dict(mi.state_dict(), bn_hh_weight_l0=np.zeros(12))  # not a batch_input parameter
    with pytest.raises(KeyError, match="bn_hh_weight_l0"):
        mi.load_state_dict(sd)


# ---------------------------------------------------------------------------------------------
# Options.


def test_ln_eps_has_its_effect(rc, rng):
    cfg = Config("lstm", norm="layer", norm_options=(("ln_eps", 0.1),))
    params = cfg.make_params(rng, scale=0.6)
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed", True)
    out, _ = make_module(rc, cfg, "float64", params)(x, pack_states(cfg, states), lengths)
    want, _, _ = reference_with_buffers(cfg, params, x, states, lengths)
    default, _, _ = reference_with_buffers(cfg.replace(norm_options=()), params, x, states, lengths)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-11)
    assert np.abs(want - default).max() > 1e-3


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("norm", ["batch", "batch_input"])
def test_bn_eps_and_bn_momentum_have_their_effect(rc, rng, norm, training):
    opts = (("bn_eps", 0.05), ("bn_momentum", 0.5))
    cfg = Config("gru", num_layers=2, norm=norm, norm_options=opts)
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, 2)
    m = _module(rc, cfg, "float64", params, bufs, training)
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed", True)
    out, _ = m(x, pack_states(cfg, states), lengths)
    kw = dict(training=training, buffers=bufs)
    want, _, want_bufs = reference_with_buffers(cfg, params, x, states, lengths, **kw)
    other, _, other_bufs = reference_with_buffers(
        cfg.replace(norm_options=()), params, x, states, lengths, **kw
    )
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-11)
    assert np.abs(want - other).max() > 1e-4  # bn_eps matters here
    assert_buffers_close(m, want_bufs, "float64", 1.0)
    if training:  # bn_momentum matters
        k = "bn_ih_running_mean_l1"
        assert np.abs(want_bufs[k] - other_bufs[k]).max() > 1e-3


@pytest.mark.parametrize("norm", ["batch", "batch_input"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bn_gamma_sets_the_initial_gains(rc, rng, cell, norm):
    cls = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}[cell]
    default = cls(3, 4, norm=norm, dtype="float64").parameters()
    m = cls(3, 4, norm=norm, bn_gamma=0.3, dtype="float64")
    want = init_norm_params(cell, 4, 1, False, norm, bn_gamma=0.3)
    for name, value in init_norm_params(cell, 4, 1, False, norm).items():
        np.testing.assert_array_equal(default[name], value)  # 0.1 ("batch") or 1.0
        np.testing.assert_array_equal(m.parameters()[name], want[name])
    cfg = Config(cell, norm=norm)
    plain = {k: v for k, v in cfg.make_params(rng, scale=0.6).items() if k in m.parameters()}
    plain = {k: v for k, v in plain.items() if not k.startswith(("bn_", "ln_"))}
    m.load_state_dict(plain, strict=False)
    x, states, _ = make_inputs(cfg, rng, T, B, None, True)
    out, _ = m(x, pack_states(cfg, states))
    ref, _, _ = reference_with_buffers(cfg, {**plain, **want}, x, states, None)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-11)


def test_gru_reset_before_with_a_norm_is_rejected(rc):
    for norm in NORMS:
        with pytest.raises(ValueError):
            rc.GRU(3, 4, reset_after=False, norm=norm)
    rc.GRU(3, 4, reset_after=False, norm=None)


# ---------------------------------------------------------------------------------------------
# Degenerate statistics.


@pytest.mark.parametrize("variant,norm,training", _forward_cases())
def test_zero_initial_state_gives_finite_results(rc, rng, variant, norm, training):
    """hx=None makes A^h_0 = 0: every layer-norm row and batch-norm column of the recurrent
    term is constant at step 0 (variance 0, only epsilon keeps the division finite). The
    first input step is all zeros too. Forward and backward stay finite and match."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, 2)
    x, _, lengths = make_inputs(cfg, rng, T, B, "mixed", False)
    x[0] = 0.0
    m = _module(rc, cfg, "float64", params, bufs, training)
    ref_out, ref_states, _ = reference_with_buffers(
        cfg, params, x, None, lengths, training=training, buffers=bufs
    )
    out, hn = m(x, None, lengths)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-10)
    for got, want in zip(unpack_states(cfg, hn), ref_states):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    seeds = make_seeds(cfg, rng, out.shape, B)
    grad_x, grad_states, grads = analytic_gradients(m, cfg, x, None, lengths, seeds)
    for g in [grad_x] + grad_states + list(grads.values()):
        assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------------------------------
# Reproducibility.


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_results_are_bitwise_reproducible_for_any_thread_count(rc, rng, variant, norm):
    """api.md: results do not depend on the number of threads (and the core aligns its buffers
    so that they never depend on addresses). Fresh modules and repeated calls, with 1 and 2
    threads, in training and eval mode: outputs, states, running statistics, input and state
    gradients and parameter gradients are bitwise identical."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, 3)
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed", True)
    seeds = make_seeds(cfg, rng, x.shape[:2] + (cfg.num_directions * cfg.h_out,), B)
    threads = rc.get_num_threads()
    results = []
    try:
        for n_threads in (1, 2, 1, 2):
            rc.set_num_threads(n_threads)
            for training in (True, False):
                m = _module(rc, cfg, "float64", params, bufs, training)
                for _ in range(2):
                    out, hn = m(x, pack_states(cfg, states), lengths)
                    gx, gs, grads = analytic_gradients(m, cfg, x, states, lengths, seeds)
                    arrays = [out, *unpack_states(cfg, hn), gx, *gs]
                    arrays += [grads[k] for k in sorted(grads)]
                    results.append((training, arrays))
                results.append((training, [m.buffers()[k] for k in sorted(m.buffers())]))
    finally:
        rc.set_num_threads(threads)
    for training in (True, False):
        same_mode = [r for t, r in results if t is training]
        firsts = same_mode[0::3], same_mode[1::3], same_mode[2::3]
        for group in firsts:
            for other in group[1:]:
                for a, b in zip(group[0], other):
                    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_eval_forward_is_identical_with_and_without_a_tape(rc, rng, variant, norm, threads):
    """In eval mode, a call without a tape normalizes each step's rows inside the cell's row
    loop, while forward_train (which records the normalized values) runs the step's own pass:
    both must give bitwise the same outputs. At these sizes the LSTM's and the GRU's steps
    (48 rows x 4*64 or 3*64 gate values) are split over threads when 2 are set."""
    cls = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}[VARIANTS[variant]["cell"]]
    kw = {k: v for k, v in VARIANTS[variant].items() if k != "cell"}
    m = cls(24, 64, num_layers=2, bidirectional=True, norm=norm, seed=3, **kw)
    x = rng.standard_normal((7, 48, 24)).astype(np.float32)
    lengths = rng.integers(1, 8, size=48)
    lengths[0] = 7
    previous = rc.get_num_threads()
    rc.set_num_threads(threads)
    try:
        for _ in range(2):  # running statistics that are not the initial ones
            m.train()(x[:5], None, np.minimum(lengths, 5))
        m.eval()
        out, hn = m(x, None, lengths)
        out_t, hn_t, _ = m.forward_train(x, None, lengths)
    finally:
        rc.set_num_threads(previous)
    np.testing.assert_array_equal(out, out_t)
    for a, b in zip(
        hn if isinstance(hn, tuple) else (hn,), hn_t if isinstance(hn_t, tuple) else (hn_t,)
    ):
        np.testing.assert_array_equal(a, b)
