"""Dropout, variational input/recurrent dropout and zoneout, and the per-step gradient
diagnostics of ``backward(..., return_step_norms=True)``.

How the regularizers are proven:

* The masks are inputs of the math, drawn by the core's counter-based generator. The tests
  rebuild them from the core's raw draws (``_core.mask_hits``) with ``reference.draw_masks``,
  which lays them out as cpp/src/regularize.h documents, and run the independent NumPy
  reference with them: variational masks are one row per sequence reused at every step,
  zoneout coefficients one per position and unit. Forward outputs and final states must
  match the reference for every cell x norm x mode x regularizer, with lengths, two layers and
  both directions. The generator itself is tested for its statistics.
* With the call's seed fixed (``seed=``), the loss is a smooth function of the parameters, the
  input and the initial states, so backward is checked against float64 central differences
  for every cell x norm x regularizer, in training mode and in eval mode (zoneout's
  expectation). Tolerances are those of tests/rnn_testing.py (plain cells) and
  tests/test_norm_gradcheck.py (normalized cells: Richardson-extrapolated differences),
  justified there; the regularizers only multiply by fixed masks and add no curvature.
"""

import numpy as np
import pytest
from rnn_testing import (
    NORM_VARIANTS,
    NORMS,
    VARIANTS,
    Config,
    check_gradients,
    draw_well_conditioned,
    make_inputs,
    make_module,
    pack_states,
    random_buffers,
    reference,
    reference_masks,
    unpack_states,
)

from rnncore import _core

T, B = 5, 4
SIZES = dict(input_size=3, hidden_size=4)
ALL = (("dropout", 0.3), ("input_dropout", 0.25), ("recurrent_dropout", 0.35), ("zoneout", 0.3))
REGULARIZERS = {
    "dropout": (("dropout", 0.4),),
    "input": (("input_dropout", 0.3),),
    "recurrent": (("recurrent_dropout", 0.3),),
    "zoneout": (("zoneout", 0.4),),
    "all": ALL,
}
CALL_SEED = 20261123
# float64 forward: the core and the reference compute the same sums in other orders; over
# T = 5 steps and two layers the difference stays within a few hundred ulp of O(1) values.
FWD_ATOL = 1e-12


def _combos():
    for variant in VARIANTS:
        for norm in [None, *NORMS]:
            if norm is not None and variant not in NORM_VARIANTS:
                continue
            yield pytest.param(variant, norm, id=f"{variant}-{norm or 'plain'}")


def _config(variant, norm, regs, **kw):
    base = dict(num_layers=2, bidirectional=True, norm=norm, regularizers=regs, **SIZES)
    base.update(kw)
    return Config.from_variant(variant, **base)


def _load(rc, cfg, params, bufs, training):
    m = make_module(rc, cfg, "float64", {**params, **bufs})
    return m.train() if training else m.eval()


# ---------------------------------------------------------------------------------------------
# The generator.


def test_mask_draws_have_the_requested_probability():
    """Hit frequency within 5 standard deviations of p, for several p and sites."""
    n = 200_000
    for p in (0.05, 0.3, 0.5, 0.9):
        for site in range(1, 6):
            hits = _core.mask_hits(seed=7, layer=1, direction=0, site=site, p=p, count=n)
            assert hits.dtype == bool and hits.shape == (n,)
            assert abs(hits.mean() - p) < 5 * np.sqrt(p * (1 - p) / n), (p, site)


def test_mask_draws_are_independent_across_seeds_sites_layers_directions():
    """Two masks that differ in any one key part coincide as often as independent draws do
    (p^2 joint hits), and a mask is a pure function of its key (same key, same draws)."""
    n, p = 100_000, 0.5
    base = dict(seed=3, layer=0, direction=0, site=2, p=p, count=n)
    a = _core.mask_hits(**base)
    np.testing.assert_array_equal(a, _core.mask_hits(**base))
    for change in (dict(seed=4), dict(layer=1), dict(direction=1), dict(site=3)):
        b = _core.mask_hits(**{**base, **change})
        assert abs((a & b).mean() - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / n), change
    # Successive elements are not correlated either.
    assert abs((a[1:] & a[:-1]).mean() - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / n)
    # start offsets address the same stream
    tail = _core.mask_hits(**{**base, "count": 100}, start=n - 100)
    np.testing.assert_array_equal(tail, a[-100:])


def test_inverted_dropout_masks_average_to_one():
    """Inverted scaling: E[mask] = 1, so eval mode (no mask) is the expectation of the input
    the next operation sees."""
    cfg = _config("lstm", None, (("dropout", 0.4), ("input_dropout", 0.3)), num_layers=2)
    means = []
    for s in range(40):
        masks = reference_masks(cfg, s, 50, 40, True)
        means += [masks.layer_out[0].mean(), masks.input[(0, 0)].mean()]
    # each mean: 2000-12000 values with std 0.8 / sqrt(n)
    assert abs(np.mean(means) - 1.0) < 0.01


# ---------------------------------------------------------------------------------------------
# Forward against the reference.


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("reg", list(REGULARIZERS))
@pytest.mark.parametrize("variant,norm", list(_combos()))
def test_forward_matches_reference(rc, rng, variant, norm, reg, training):
    cfg = _config(variant, norm, REGULARIZERS[reg])
    params = cfg.make_params(rng)
    bufs = random_buffers(cfg, rng, 3) if not training else {}
    m = _load(rc, cfg, params, bufs, training)
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed")
    out, hn = m(x, pack_states(cfg, states), lengths, seed=CALL_SEED)
    masks = reference_masks(cfg, CALL_SEED, T, B, training)
    ref_out, ref_states = reference(
        cfg, params, x, states, lengths, masks=masks, training=training, buffers=bufs
    )
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=FWD_ATOL)
    for got, want in zip(unpack_states(cfg, hn), ref_states):
        np.testing.assert_allclose(got, want, rtol=0, atol=FWD_ATOL)
    # forward_train draws the same masks (its recording path may round differently in the
    # last bits, so compare as the reference is compared).
    out2, _, tape = m.forward_train(x, pack_states(cfg, states), lengths, seed=CALL_SEED)
    np.testing.assert_allclose(out2, out, rtol=0, atol=FWD_ATOL)
    assert tape.seed == CALL_SEED


@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_float32_forward_matches_reference(rc, rng, variant):
    """float32 with every regularizer: same masks, float32 rounding (1e-5 on O(1) values
    over 2 layers x 5 steps, as the plain cells' float32 tests)."""
    cfg = _config(variant, "layer", ALL, batch_first=True)
    params = cfg.make_params(rng)
    m = make_module(rc, cfg, "float32", {k: v.astype(np.float32) for k, v in params.items()})
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed")
    out, _ = m(x, pack_states(cfg, states), lengths, seed=CALL_SEED)
    masks = reference_masks(cfg, CALL_SEED, T, B, True)
    ref_out, _ = reference(cfg, params, x, states, lengths, masks=masks)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Backward against central differences.


def _draw(cfg, rng, training, masks):
    """Well-conditioned data (the bound of tests/test_norm_gradcheck.py) under these masks."""
    return draw_well_conditioned(cfg, rng, T, B, training=training, max_kappa=150.0, masks=masks)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant,norm", list(_combos()))
def test_gradients_with_all_regularizers(rc, rng, variant, norm, training):
    """Every parameter, x and the initial states, with dropout, input and recurrent dropout
    and zoneout all on (eval: zoneout's expectation only)."""
    cfg = _config(variant, norm, ALL)
    masks = reference_masks(cfg, CALL_SEED, T, B, training)
    params, bufs, x, states, lengths, seeds = _draw(cfg, rng, training, masks)
    m = _load(rc, cfg, params, bufs, training)
    check_gradients(
        m, cfg, x, states, lengths, seeds, rng, richardson=norm is not None, call_seed=CALL_SEED
    )


@pytest.mark.parametrize("reg", ["dropout", "input", "recurrent", "zoneout"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_with_each_regularizer(rc, rng, variant, reg):
    cfg = _config(variant, None, REGULARIZERS[reg])
    masks = reference_masks(cfg, CALL_SEED, T, B, True)
    params, bufs, x, states, lengths, seeds = _draw(cfg, rng, True, masks)
    m = _load(rc, cfg, params, bufs, True)
    check_gradients(m, cfg, x, states, lengths, seeds, rng, call_seed=CALL_SEED)


# ---------------------------------------------------------------------------------------------
# Modes, seeds and replay.


def _lstm(rc, **kw):
    return rc.LSTM(3, 8, num_layers=2, dtype="float64", seed=5, **dict(ALL), **kw)


def test_training_calls_draw_fresh_masks_and_seed_replays_them(rc, rng):
    m = _lstm(rc)
    x = rng.standard_normal((6, 3, 3))
    a, _ = m(x)
    b, _ = m(x)
    assert not np.array_equal(a, b), "two training-mode calls drew the same masks"
    out, _, tape = m.forward_train(x)
    again, _ = m(x, seed=tape.seed)
    np.testing.assert_array_equal(again, out)
    # The module's generator is seeded by the constructor's seed.
    m2 = _lstm(rc)
    m2.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(m2(x)[0], a)
    np.testing.assert_array_equal(m2(x)[0], b)


def test_eval_mode_is_deterministic_and_dropout_free(rc, rng):
    """Eval mode: no dropout of any kind, so the output is exactly that of the same weights
    without dropout; zoneout blends with its expectation (checked against the reference in
    test_forward_matches_reference) and is deterministic."""
    x = rng.standard_normal((6, 3, 3))
    dropouts = rc.LSTM(3, 8, num_layers=2, dtype="float64", dropout=0.5, input_dropout=0.3,
                       recurrent_dropout=0.4).eval()  # fmt: skip
    plain = rc.LSTM(3, 8, num_layers=2, dtype="float64")
    plain.load_state_dict(dropouts.state_dict())
    np.testing.assert_array_equal(dropouts(x)[0], plain(x)[0])
    zoned = _lstm(rc).eval()
    np.testing.assert_array_equal(zoned(x)[0], zoned(x)[0])
    np.testing.assert_array_equal(zoned(x)[0], zoned(x, seed=1)[0])


def test_zero_probabilities_change_nothing(rc, rng):
    """All regularizers at 0 in training mode: bitwise the plain model."""
    x = rng.standard_normal((6, 3, 3))
    a = rc.GRU(3, 8, num_layers=2, dtype="float64", seed=1)
    b = rc.GRU(3, 8, num_layers=2, dtype="float64", seed=1, dropout=0.0, input_dropout=0.0,
               recurrent_dropout=0.0, zoneout=0.0)  # fmt: skip
    np.testing.assert_array_equal(a(x)[0], b(x, seed=99)[0])


def test_regularized_gradients_do_not_depend_on_threads(rc, rng):
    """Masks are a pure function of position: bitwise identical results for 1, 2 and 3
    threads at sizes where steps are split over threads."""
    old = rc.get_num_threads()
    m = rc.LSTM(64, 256, num_layers=2, bidirectional=True, seed=0, **dict(ALL))
    x = rng.standard_normal((3, 64, 64)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 3):
            rc.set_num_threads(threads)
            m.zero_grad()
            out, _, tape = m.forward_train(x, seed=11)
            gx = m.backward(tape, np.cos(out))[0]
            results.append((out, gx, {k: v.copy() for k, v in m.grads.items()}))
    finally:
        rc.set_num_threads(old)
    for res in results[1:]:
        np.testing.assert_array_equal(res[0], results[0][0])
        np.testing.assert_array_equal(res[1], results[0][1])
        for k in res[2]:
            np.testing.assert_array_equal(res[2][k], results[0][2][k], err_msg=k)


def test_repr_and_attributes(rc):
    m = rc.GRU(3, 4, num_layers=2, dropout=0.1, zoneout=0.2)
    assert (m.dropout, m.input_dropout, m.recurrent_dropout, m.zoneout) == (0.1, 0.0, 0.0, 0.2)
    assert "zoneout=0.2" in repr(m) and "dropout=0.1" in repr(m)


def test_from_torch_copies_dropout(rc):
    torch = pytest.importorskip("torch")
    t = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.25)
    assert rc.LSTM.from_torch(t).dropout == 0.25


# ---------------------------------------------------------------------------------------------
# Per-step gradient norms.


@pytest.mark.parametrize("variant,norm", [p for p in _combos() if p.values[1] in (None, "layer")])
def test_step_norms_are_the_norms_of_dL_dh_t(rc, rng, variant, norm):
    """Independent check by splitting the sequence at t: dL/dh_t is the loss's direct
    gradient at t (grad_out[t]) plus the gradient of the initial state of a second call that
    starts from h_t (and c_t) and runs the rest of the sequence. (Per-time-step batch norm
    cannot be split this way: the second piece would restart its step count.)"""
    cfg = Config.from_variant(variant, norm=norm, **SIZES)
    params = cfg.make_params(rng)
    m = make_module(rc, cfg, "float64", params)
    x, states, _ = make_inputs(cfg, rng, 6, 3)
    hx = pack_states(cfg, states)
    out, _, tape = m.forward_train(x, hx)
    gout = rng.standard_normal(out.shape)
    _, _, norms = m.backward(tape, gout, return_step_norms=True)
    assert norms.shape == (1, 6)
    for t in range(6):
        want = gout[t].copy()
        if t < 5:
            _, h_t, _ = m.forward_train(x[: t + 1], hx)
            _, _, tail = m.forward_train(x[t + 1 :], h_t)
            _, ghx = m.backward(tail, gout[t + 1 :])
            want += unpack_states(cfg, ghx)[0][0]
        np.testing.assert_allclose(norms[0, t], np.linalg.norm(want), rtol=1e-10, atol=1e-12)


def test_step_norms_shape_order_and_padding(rc, rng):
    """(D * num_layers, T), ordered like the states; zero at steps no sequence reaches; the
    last layer's forward direction at the last step sees grad_out + grad_h_n only."""
    m = rc.GRU(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = rng.standard_normal((7, 3, 3))
    lengths = np.array([5, 2, 4])
    out, _, tape = m.forward_train(x, lengths=lengths)
    gout = rng.standard_normal(out.shape)
    ghn = rng.standard_normal((4, 3, 4))
    _, _, norms = m.backward(tape, gout, ghn, return_step_norms=True)
    assert norms.shape == (4, 7)
    np.testing.assert_array_equal(norms[:, 5:], 0.0)
    assert (norms[:, :2] > 0).all()
    # Forward direction of layer 1 (index 2) at t = 4: only sequence 0 is active there, and
    # it is its last step: dL/dh = grad_out[4, 0, :H] + grad_h_n[2, 0].
    want = np.linalg.norm(gout[4, 0, :4] + ghn[2, 0])
    np.testing.assert_allclose(norms[2, 4], want, rtol=1e-12)


def test_step_norms_flag_is_checked(rc, rng):
    m = rc.RNN(3, 4)
    out, _, tape = m.forward_train(rng.standard_normal((3, 2, 3)))
    with pytest.raises(TypeError, match="return_step_norms"):
        m.backward(tape, np.ones_like(out), return_step_norms="yes")
