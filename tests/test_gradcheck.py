"""Float64 central-difference checks of rnncore's BPTT (``forward_train`` + ``backward``).

The loss is ``L = sum(out*Ro) + sum(h_n*Rh) (+ sum(c_n*Rc))`` with fixed random ``R``; its
gradient with respect to x, the initial states and every parameter (read from ``m.grads``) is
compared with central differences computed through the plain forward call, perturbing the
parameters through the live views of ``m.parameters()``. Step and tolerances are justified
next to ``GRAD_STEP`` in tests/rnn_testing.py (atol 1e-7 + rtol 1e-6, step 1e-6).
"""

import numpy as np
import pytest
from rnn_testing import (
    VARIANTS,
    Config,
    analytic_gradients,
    check_gradients,
    make_inputs,
    make_module,
    make_seeds,
    pack_states,
    reference,
    relu_margin,
)

T, B = 5, 3
SIZES = dict(input_size=3, hidden_size=4)


def _draw(cfg, rng, batch, lengths_kind, with_hx):
    """Params, inputs and loss seeds; for the ReLU RNN, redrawn until no pre-activation lies
    within 1e-4 of the kink (a central difference with step 1e-6 moves them by <~ 1e-5)."""
    for _ in range(50):
        params = cfg.make_params(rng, scale=0.7)
        x, states, lengths = make_inputs(cfg, rng, T, batch, lengths_kind, with_hx)
        if relu_margin(cfg, params, x, states, lengths) > 1e-4:
            break
    else:  # pragma: no cover - 50 draws all near a kink is practically impossible
        raise AssertionError("could not draw ReLU inputs away from the kink")
    out_shape = cfg.x_shape(T, batch)[:-1] + (cfg.num_directions * cfg.h_out,)
    seeds = make_seeds(cfg, rng, out_shape, batch)
    return params, x, states, lengths, seeds


@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed"], ids=["nolen", "len"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_match_central_differences(
    rc, rng, variant, num_layers, bidirectional, lengths_kind, batch_first
):
    cfg = Config.from_variant(
        variant,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        **SIZES,
    )
    params, x, states, lengths, seeds = _draw(cfg, rng, B, lengths_kind, True)
    m = make_module(rc, cfg, "float64", params)
    check_gradients(m, cfg, x, states, lengths, seeds, rng)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_without_bias(rc, rng, variant):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, bias=False, **SIZES)
    params, x, states, lengths, seeds = _draw(cfg, rng, B, "mixed", True)
    m = make_module(rc, cfg, "float64", params)
    assert not any(k.startswith("bias") for k in m.parameters())
    check_gradients(m, cfg, x, states, lengths, seeds, rng)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_wrt_implicit_zero_initial_state(rc, rng, variant):
    """hx=None: backward still returns the gradient with respect to the zero initial state."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, **SIZES)
    params, x, _, lengths, seeds = _draw(cfg, rng, B, "mixed", False)
    m = make_module(rc, cfg, "float64", params)
    check_gradients(m, cfg, x, None, lengths, seeds, rng)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_unbatched(rc, rng, variant, bidirectional):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=bidirectional, **SIZES)
    params, x, states, _, seeds = _draw(cfg, rng, None, None, True)
    m = make_module(rc, cfg, "float64", params)
    check_gradients(m, cfg, x, states, None, seeds, rng)


def _partial_seed_cases(cfg):
    """Loss terms to drop (None seeds): grad_out=None, grad_h_n=None, and for the LSTM each part
    of the (grad_h_n, grad_c_n) pair."""
    n = 3 if cfg.is_lstm else 2
    cases = [(0,), tuple(range(1, n))]
    if cfg.is_lstm:
        cases += [(1,), (2,), (0, 2)]
    return cases


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_with_missing_output_gradients(rc, rng, variant):
    """backward(tape, None, ...) / backward(tape, g, None) / LSTM (None, gc), (gh, None) mean
    zero gradients for the missing parts: checked against central differences of the loss
    without those terms."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, **SIZES)
    params, x, states, lengths, seeds = _draw(cfg, rng, B, "mixed", True)
    m = make_module(rc, cfg, "float64", params)
    for drop in _partial_seed_cases(cfg):
        partial = [None if i in drop else s for i, s in enumerate(seeds)]
        check_gradients(m, cfg, x, states, lengths, partial, rng, entries=4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_accumulate_and_zero_grad_resets(rc, rng, variant):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, **SIZES)
    params, x, states, lengths, seeds = _draw(cfg, rng, B, "mixed", True)
    m = make_module(rc, cfg, "float64", params)

    # forward_train computes the same forward pass as the reference
    out, hn, _tape = m.forward_train(x, pack_states(cfg, states), lengths)
    ref_out, ref_states = reference(cfg, params, x, states, lengths)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    for got, want in zip([hn[0], hn[1]] if cfg.is_lstm else [hn], ref_states):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    gx1, gs1, g1 = analytic_gradients(m, cfg, x, states, lengths, seeds)  # zero_grad inside
    assert any(np.any(v != 0) for v in g1.values())
    # a second forward_train/backward without zero_grad ADDS the same gradients again; the
    # returned input/state gradients are not accumulated. 2*g and g+g differ only by rounding
    # of one addition (exact unless the accumulation order differs), hence 1e-12.
    _o, _h, tape = m.forward_train(x, pack_states(cfg, states), lengths)
    grad_hn = pack_states(cfg, seeds[1:]) if cfg.is_lstm else seeds[1]
    gx2, gs2 = m.backward(tape, seeds[0], grad_hn)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-12, atol=1e-14)
    for a, b in zip(gs2 if cfg.is_lstm else [gs2], gs1):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    grads = m.grads
    assert set(grads) == set(g1)
    for k, v in g1.items():
        np.testing.assert_allclose(grads[k], 2 * v, rtol=1e-12, atol=1e-14, err_msg=k)

    m.zero_grad()
    grads = m.grads
    assert set(grads) == set(m.parameters())
    for k, v in m.parameters().items():
        assert grads[k].shape == v.shape
        assert np.all(grads[k] == 0.0), k
    # zero_grad does not touch the parameters
    for k, v in m.parameters().items():
        np.testing.assert_array_equal(v, params[k])


@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_grad_x_is_exactly_zero_at_padded_positions(rc, rng, variant, bidirectional, batch_first):
    """Padded inputs never influence anything, even with grad_out nonzero past the lengths; and
    backward leaves grad_out / grad_h_n unmodified."""
    cfg = Config.from_variant(
        variant, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, **SIZES
    )
    params, x, states, lengths, seeds = _draw(cfg, rng, B, "short", True)
    m = make_module(rc, cfg, "float64", params)
    seed_copies = [s.copy() for s in seeds]
    grad_x, _, _ = analytic_gradients(m, cfg, x, states, lengths, seeds)
    for s, c in zip(seeds, seed_copies):
        np.testing.assert_array_equal(s, c)
    for b, ln in enumerate(lengths):
        pad = grad_x[b, ln:] if batch_first else grad_x[ln:, b]
        valid = grad_x[b, :ln] if batch_first else grad_x[:ln, b]
        assert np.all(pad == 0.0), f"grad_x past lengths[{b}]={ln} is not exactly 0"
        assert np.any(valid != 0.0)
