"""Float64 central-difference checks of BPTT through the normalized cells, and the gradient
invariants of docs/normalization.md section 1 as they show through the public API.

The loss is ``L = sum(out*Ro) + sum(h_n*Rh) (+ sum(c_n*Rc))`` (tests/rnn_testing.py); its
gradient with respect to x, the initial states and EVERY parameter -- the layer-norm and
batch-norm gains and shifts included -- is compared with central differences through the plain
forward call, for every cell x norm x mode (training; eval for the batch norms, with loaded
running statistics of fewer rows than steps) x layers x directions x lengths.

Step and tolerance: atol 1e-7 + rtol 1e-6, as for the plain cells (justified next to
``GRAD_STEP`` in tests/rnn_testing.py), but with Richardson-extrapolated central differences
(``(4 D(h) - D(2h)) / 3``). A normalization makes the loss strongly curved: its scale is a
row's or column's standard deviation, which for a training-mode batch norm over 2-3 active
sequences can be ~1e-3, so the plain difference's truncation error ``h^2 L''' / 6`` reached
1e-5 relative with h = 1e-6 (measured against float80 differences of the reference);
extrapolation removes the ``h^2`` term and leaves its rounding error ~0.02-0.1 of the
tolerance (same measurement). Training-mode batch-norm data is redrawn until its conditioning
(``rnn_testing.norm_condition``) is <= 150: beyond, a column's spread is so small that even
the extrapolated difference is unreliable (two draws in ~100 measured), and such batches test
nothing the others do not.

At a zero initial state the recurrent term is constant at step 0 (variance 0, only epsilon
keeps ``1/sqrt(var + eps) ~ 316`` finite), so the loss is curved on the scale
``sqrt(eps) / 316`` in h_0: those checks use h = 2e-7 for the initial states (rounding error
~0.1-0.25 of the tolerance, measured; the other tensors keep h = 1e-6).
"""

import numpy as np
import pytest
from rnn_testing import (
    NORM_VARIANTS,
    Config,
    analytic_gradients,
    check_gradients,
    draw_well_conditioned,
    make_module,
    pack_states,
    reference_with_buffers,
    unpack_states,
)

T, B = 5, 4
SIZES = dict(input_size=3, hidden_size=4)
MAX_KAPPA = 150.0  # see module docstring
ZERO_STATE_STEP = 2e-7  # see module docstring

MODES = [
    pytest.param("layer", True, id="layer"),
    pytest.param("batch", True, id="batch-train"),
    pytest.param("batch", False, id="batch-eval"),
    pytest.param("batch_input", True, id="batch_input-train"),
    pytest.param("batch_input", False, id="batch_input-eval"),
]
# (num_layers, bidirectional, lengths kind, batch_first)
STRUCTURES = [
    pytest.param(1, False, None, False, id="L1-uni-nolen"),
    pytest.param(1, True, "mixed", True, id="L1-bi-len-bfirst"),
    pytest.param(2, False, "mixed", False, id="L2-uni-len"),
    pytest.param(2, True, None, False, id="L2-bi-nolen"),
    pytest.param(2, True, "mixed", False, id="L2-bi-len"),
]


def _draw(cfg, rng, training, lengths_kind, with_hx):
    """Params, buffers (3 rows for norm="batch"), inputs and loss seeds; redrawn until
    well-conditioned (batch norm, see module docstring) and, for the ReLU RNN, until no
    pre-activation lies within 1e-4 of the kink."""
    return draw_well_conditioned(cfg, rng, T, B, training=training, max_kappa=MAX_KAPPA,
                                 lengths_kind=lengths_kind, with_hx=with_hx)  # fmt: skip


def _module(rc, cfg, params, bufs, training):
    m = make_module(rc, cfg, "float64", {**params, **bufs})
    return m.train() if training else m.eval()


@pytest.mark.parametrize("num_layers,bidirectional,lengths_kind,batch_first", STRUCTURES)
@pytest.mark.parametrize("norm,training", MODES)
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_gradients_match_central_differences(
    rc, rng, variant, norm, training, num_layers, bidirectional, lengths_kind, batch_first
):
    cfg = Config.from_variant(
        variant,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        norm=norm,
        **SIZES,
    )
    params, bufs, x, states, lengths, seeds = _draw(cfg, rng, training, lengths_kind, True)
    m = _module(rc, cfg, params, bufs, training)
    norm_names = [k for k in m.parameters() if k.startswith(("ln_", "bn_"))]
    assert norm_names, "no normalization parameters to check"
    check_gradients(m, cfg, x, states, lengths, seeds, rng, richardson=True)
    if not training:  # eval mode: the running statistics never move
        for name, value in m.buffers().items():
            np.testing.assert_array_equal(value, bufs[name])


@pytest.mark.parametrize("norm,training", MODES)
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_gradients_wrt_zero_initial_state(rc, rng, variant, norm, training):
    """hx=None: the gradient with respect to the implicit zero state, where the recurrent
    term's statistics are degenerate at step 0."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm, **SIZES)
    params, bufs, x, _, lengths, seeds = _draw(cfg, rng, training, "mixed", False)
    m = _module(rc, cfg, params, bufs, training)
    check_gradients(
        m, cfg, x, None, lengths, seeds, rng, richardson=True, state_step=ZERO_STATE_STEP
    )


@pytest.mark.parametrize("norm,training", MODES)
@pytest.mark.parametrize("variant", ["lstm", "gru"])
def test_gradients_without_bias(rc, rng, variant, norm, training):
    cfg = Config.from_variant(
        variant, num_layers=2, bidirectional=True, bias=False, norm=norm, **SIZES
    )
    params, bufs, x, states, lengths, seeds = _draw(cfg, rng, training, "mixed", True)
    m = _module(rc, cfg, params, bufs, training)
    assert not any(k.startswith("bias") for k in m.parameters())
    check_gradients(m, cfg, x, states, lengths, seeds, rng, richardson=True)


# ---------------------------------------------------------------------------------------------
# Invariants (spec section 1). dL/da itself is not observable through the public API, but
# each invariant has an exact consequence for gradients that are:
#
# * Layer norm: LN0(a + c*1) = LN0(a) for any per-row constant c, i.e. the row sums of dL/da
#   vanish. Adding the same vector u to every row of W_ih (or W_hh) adds the per-row constant
#   x_t.u to A^x_t, so the loss does not change: the column sums of dL/dW_ih and dL/dW_hh over
#   the G*H rows are zero (LSTM/GRU: N_x and N_h are LN0 over all gates; RNN: LN0 of the sum).
# * Batch norm (training): BN(a + 1 c^T) = BN(a) for a per-column constant over the active
#   rows, i.e. the column sums of dL/da vanish. Shifting x_t by the same vector for every
#   sequence shifts A^x_t that way (layer 0, forward direction; also the reverse direction
#   without lengths), so sum_b dL/dx[t, b] = 0. The LSTM's and RNN's h_0 enters only through
#   A^h_0 (every sequence active at step 0): sum_b dL/dh_0[l, b] = 0.
# * batch_input (training): one set of statistics over all active positions, so shifting
#   every x[t, b] by the same vector changes nothing: sum_{t, b} dL/dx[t, b] = 0.
#
# Each is also checked to FAIL where it must not hold (no normalization, or eval mode, whose
# affine map has fixed statistics), so the tests can fail.
#
# Tolerance: the sums are of O(50) terms of size <= ~10, each exact to ~1e-15 relative, so
# they vanish to ~1e-13 * max|grad|; 1e-10 * max(1, max|grad|) is 1000x that, and 1e7x below
# the violation measured where the invariant does not hold (>= 1e-3).

INV_TOL = 1e-10


def _grads(rc, cfg, rng, training, lengths_kind):
    params, bufs, x, states, lengths, seeds = _draw(cfg, rng, training, lengths_kind, True)
    m = _module(rc, cfg, params, bufs, training)
    return analytic_gradients(m, cfg, x, states, lengths, seeds)


def _assert_zero(arr, scale_of, what):
    scale = max(1.0, float(np.abs(scale_of).max()))
    assert np.abs(arr).max() <= INV_TOL * scale, f"{what}: {np.abs(arr).max():.3g}"


def _assert_nonzero(arr, what):
    assert np.abs(arr).max() > 1e-3, f"{what} vanishes where it should not"


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_layer_norm_weight_gradient_columns_sum_to_zero(rc, rng, variant):
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm="layer", **SIZES)
    _, _, grads = _grads(rc, cfg, rng, True, "mixed")
    for name, g in grads.items():
        if name.startswith(("weight_ih", "weight_hh")):
            _assert_zero(g.sum(axis=0), g, name)
    _, _, plain = _grads(rc, cfg.replace(norm=None), rng, True, "mixed")
    _assert_nonzero(plain["weight_ih_l0"].sum(axis=0), "norm=None weight_ih_l0 column sums")


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_batch_norm_input_gradient_sums_over_the_batch_vanish(rc, rng, variant):
    for bidirectional, lengths_kind in [(False, "mixed"), (True, None)]:
        cfg = Config.from_variant(
            variant, num_layers=2, bidirectional=bidirectional, norm="batch", **SIZES
        )
        grad_x, grad_states, _ = _grads(rc, cfg, rng, True, lengths_kind)
        _assert_zero(grad_x.sum(axis=1), grad_x, f"sum_b dL/dx (bi={bidirectional})")
        if cfg.cell in ("lstm", "rnn"):
            gh0 = grad_states[0]
            _assert_zero(gh0.sum(axis=1), gh0, f"sum_b dL/dh_0 (bi={bidirectional})")
        grad_x, grad_states, _ = _grads(rc, cfg, rng, False, lengths_kind)  # eval: no invariant
        _assert_nonzero(grad_x.sum(axis=1), "eval-mode sum_b dL/dx")
        _assert_nonzero(grad_states[0].sum(axis=1), "eval-mode sum_b dL/dh_0")


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_batch_input_gradient_sum_over_all_positions_vanishes(rc, rng, variant):
    cfg = Config.from_variant(
        variant, num_layers=2, bidirectional=True, norm="batch_input", **SIZES
    )
    grad_x, _, _ = _grads(rc, cfg, rng, True, "mixed")
    _assert_zero(grad_x.sum(axis=(0, 1)), grad_x, "sum_{t,b} dL/dx")
    _assert_nonzero(grad_x.sum(axis=1), "per-step sums")  # only the total vanishes
    grad_x, _, _ = _grads(rc, cfg, rng, False, "mixed")
    _assert_nonzero(grad_x.sum(axis=(0, 1)), "eval-mode sum_{t,b} dL/dx")


# Sizes at which the core splits a step's normalization over threads: a step's rows x width
# reaches 2**13 values (parallel_chunks.h), so the batch norms run in column chunks and the layer
# norms' (and eval batch norms') backward in row chunks that keep their parameter gradients in
# per-chunk slots. B_SPLIT sequences times the widest site: LSTM 4 * 96, GRU 3 * 128, RNN 352.
B_SPLIT = 24
SPLIT_HIDDEN = {"lstm": 96, "gru": 128, "rnn_tanh": 352}
SPLIT_PASS_TOL = 1e-10  # float64 whole pass: rounding ~1e-14 * kappa / 4 <= 4e-13; 250x margin


@pytest.mark.parametrize("norm,training", MODES)
@pytest.mark.parametrize("variant", list(SPLIT_HIDDEN))
def test_forward_and_gradients_at_sizes_split_over_threads(rc, rng, variant, norm, training):
    assert B_SPLIT * {"lstm": 4, "gru": 3}.get(variant, 1) * SPLIT_HIDDEN[variant] >= 2**13
    cfg = Config.from_variant(
        variant, norm=norm, input_size=5, hidden_size=SPLIT_HIDDEN[variant], bidirectional=True
    )
    params, bufs, x, states, lengths, seeds = draw_well_conditioned(
        cfg, rng, 3, B_SPLIT, training=training, max_kappa=MAX_KAPPA
    )
    threads = rc.get_num_threads()
    rc.set_num_threads(2)
    try:
        m = _module(rc, cfg, params, bufs, training)
        out, hn = m(x, pack_states(cfg, states), lengths)
        ref_out, ref_states, ref_bufs = reference_with_buffers(
            cfg, params, x, states, lengths, training=training, buffers=bufs
        )
        for got, want in zip([out, *unpack_states(cfg, hn)], [ref_out, *ref_states]):
            np.testing.assert_allclose(got, want, rtol=0, atol=SPLIT_PASS_TOL)
        for name, want in ref_bufs.items():  # running statistics updated column chunk by chunk
            np.testing.assert_allclose(m.buffers()[name], want, rtol=0, atol=SPLIT_PASS_TOL)
        m = _module(rc, cfg, params, bufs, training)
        check_gradients(m, cfg, x, states, lengths, seeds, rng, entries=6, richardson=True)
    finally:
        rc.set_num_threads(threads)
