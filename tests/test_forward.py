"""rnncore's forward pass against the independent NumPy reference (rnncore.reference).

Tolerances, relative to ``scale = max(1, max|reference|)`` (ReLU outputs can exceed 1):

* float64: 1e-12. The computation is <= T*L = 12 sequential cell steps deep, each a dot product
  over <= in+H ~ 10 terms plus a transcendental function; rounding error is therefore bounded by
  roughly (10 + a few ulp of a vectorized exp/tanh) * 12 steps ~ 200 eps64 ~ 4e-14 (the
  recurrences here are contractive, Jacobian norm <~ 1). 1e-12 leaves > 20x margin and is
  nine orders of magnitude below the effect of any logic error (>= 1e-3).
* float32: 3e-5. The same bound with eps32 = 1.19e-7 gives ~200 eps32 ~ 2.4e-5; PyTorch's float32
  modules measured against the reference on these sizes stay within ~1.5 eps32, so this only
  leaves room for fast approximate exp/tanh, and is still 30x below a logic error. Inputs and
  parameters are rounded to float32 before the reference sees them, so only rnncore's float32
  arithmetic is measured.
"""

import numpy as np
import pytest
from rnn_testing import (
    NORM_VARIANTS,
    VARIANTS,
    Config,
    make_inputs,
    make_module,
    pack_states,
    reference,
    unpack_states,
)

TOLERANCE = {"float64": 1e-12, "float32": 3e-5}  # see module docstring
T, B = 6, 4


def assert_close(actual, expected, dtype, what):
    """``|a - e| <= tol * (max(1, max|e|) + |e|)`` elementwise, plus exact dtype and shape."""
    assert isinstance(actual, np.ndarray), what
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    tol = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def _setup(cfg, rng, dtype, batch, lengths_kind, with_hx):
    """Params and inputs in ``dtype``; float64 copies of exactly the same values for the ref."""
    params = {k: v.astype(dtype) for k, v in cfg.make_params(rng, scale=0.6).items()}
    x, states, lengths = make_inputs(cfg, rng, T, batch, lengths_kind, with_hx, dtype=dtype)
    return params, x, states, lengths


def _run_and_compare(rc, cfg, dtype, params, x, states, lengths):
    m = make_module(rc, cfg, dtype, params)
    inputs = [a for a in [x, lengths] + list(states or []) if a is not None]
    copies = [np.array(a, copy=True) for a in inputs]
    out, hn = m(x, pack_states(cfg, states), lengths)
    # no input is modified (api.md)
    for before, after in zip(copies, inputs):
        assert after.dtype == before.dtype
        np.testing.assert_array_equal(after, before)

    ref_out, ref_states = reference(cfg, params, x, states, lengths)
    assert_close(out, ref_out, dtype, "out")
    if cfg.is_lstm:
        assert isinstance(hn, tuple) and len(hn) == 2
        assert_close(hn[0], ref_states[0], dtype, "h_n")
        assert_close(hn[1], ref_states[1], dtype, "c_n")
    else:
        assert_close(hn, ref_states[0], dtype, "h_n")
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("lengths_kind", [None, "mixed", "short"], ids=["nolen", "mixed", "short"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_matches_reference(
    rc, rng, variant, num_layers, bidirectional, lengths_kind, batch_first, with_hx, bias, dtype
):
    cfg = Config.from_variant(
        variant,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
    )
    params, x, states, lengths = _setup(cfg, rng, dtype, B, lengths_kind, with_hx)
    out = _run_and_compare(rc, cfg, dtype, params, x, states, lengths)
    assert out.shape == cfg.x_shape(T, B)[:2] + (cfg.num_directions * cfg.h_out,)
    if lengths is not None:
        # outputs past each sequence's end are exactly zero, not merely small
        for b, ln in enumerate(lengths):
            tail = out[b, ln:] if batch_first else out[ln:, b]
            assert np.all(tail == 0.0), f"out past lengths[{b}]={ln} is not exactly 0"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_unbatched_matches_reference(
    rc, rng, variant, num_layers, bidirectional, with_hx, dtype
):
    cfg = Config.from_variant(variant, num_layers=num_layers, bidirectional=bidirectional)
    params, x, states, _ = _setup(cfg, rng, dtype, None, None, with_hx)
    out = _run_and_compare(rc, cfg, dtype, params, x, states, None)
    assert out.shape == (T, cfg.num_directions * cfg.h_out)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batch_first_is_a_transpose_of_time_major(rc, rng, variant):
    """The batch-first module on x.transpose(1, 0, 2) gives the transposed time-major output and
    the same states (checked against the reference for both layouts, plus the relation)."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True)
    params = cfg.make_params(rng, scale=0.6)
    x, states, lengths = make_inputs(cfg, rng, T, B, "mixed", True)
    out_t = _run_and_compare(rc, cfg, "float64", params, x, states, lengths)
    cfg_b = cfg.replace(batch_first=True)
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))
    out_b = _run_and_compare(rc, cfg_b, "float64", params, xb, states, lengths)
    np.testing.assert_allclose(out_b, out_t.transpose(1, 0, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_non_contiguous_and_other_dtype_inputs(rc, rng, variant):
    """Strided views and a different real dtype are accepted and give the reference result."""
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True)
    params = cfg.make_params(rng, scale=0.6)
    big = rng.standard_normal((2 * T, B, 2 * cfg.input_size)).astype(np.float32)
    x = big[::2, :, ::2]  # non-contiguous float32 view, fed to a float64 module
    assert not x.flags.c_contiguous
    _, states, lengths = make_inputs(cfg, rng, T, B, "short", True)
    states = [np.asfortranarray(s) for s in states]
    big_before = big.copy()
    _run_and_compare(rc, cfg, "float64", params, x, states, lengths)
    np.testing.assert_array_equal(big, big_before)


def test_hidden_state_is_threaded_between_calls(rc, rng):
    """Feeding h_n of the first half as hx of the second half equals one call on the whole."""
    cfg = Config.from_variant("lstm", num_layers=2)
    params = cfg.make_params(rng, scale=0.6)
    m = make_module(rc, cfg, "float64", params)
    x, _, _ = make_inputs(cfg, rng, T, B, None, False)
    out_all, (h_all, c_all) = m(x)
    out1, hc1 = m(x[:3])
    out2, (h2, c2) = m(x[3:], hc1)
    ref_out, ref_states = reference(cfg, params, x, None, None)
    assert_close(out_all, ref_out, "float64", "out")
    np.testing.assert_allclose(np.concatenate([out1, out2]), ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h2, ref_states[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(c2, ref_states[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_all, ref_states[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(c_all, ref_states[1], rtol=0, atol=1e-12)


def _check_reference_and_thread_counts(rc, cfg, call, ref_out, ref_states):
    """Runs ``call()`` (returning ``(out, hx)``) at 1, 2 and 3 threads: the float64 result
    matches the reference, and the runs are bitwise identical."""
    old = rc.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            rc.set_num_threads(threads)
            out, hx = call()
            runs.append((out, *unpack_states(cfg, hx)))
    finally:
        rc.set_num_threads(old)
    got = runs[0]
    assert_close(got[0], ref_out, "float64", "out")
    for i, want in enumerate(ref_states):
        assert_close(got[1 + i], want, "float64", f"state {i}")
    for threads, run in zip((2, 3), runs[1:]):
        for a, b in zip(run, got):
            np.testing.assert_array_equal(a, b, err_msg=f"{threads} threads")


@pytest.mark.parametrize(
    "variant,norm", [(v, None) for v in VARIANTS] + [(v, "layer") for v in NORM_VARIANTS]
)
@pytest.mark.parametrize("batch", [1, 16])
def test_streamed_steps_at_split_sizes(rc, rng, variant, norm, batch):
    """One call per time step, the state carried (a streamed sequence), at sizes where a
    single step's input projection and recurrent product are split over threads (the core
    then runs both in one parallel region; for the RNN and the projected LSTM only one of
    the two is large enough to split). Every step matches the float64 reference of the whole
    sequence, and results are bitwise identical for 1, 2 and 3 threads."""
    cfg = Config.from_variant(variant, input_size=96, hidden_size=256, norm=norm)
    steps = 3
    # Weights ~ 1/sqrt(fan-in), so that gates are not saturated and a wrong or missing
    # product shows in every output.
    params = cfg.make_params(rng, scale=1.0 / np.sqrt(cfg.hidden_size))
    x, states, _ = make_inputs(cfg, rng, steps, batch)  # a non-zero initial state
    ref_out, ref_states = reference(cfg, params, x, states, None)
    m = make_module(rc, cfg, "float64", params)

    def streamed():
        hx, outs = pack_states(cfg, states), []
        for t in range(steps):
            out, hx = m(x[t : t + 1], hx)
            outs.append(out)
        return np.concatenate(outs), hx

    _check_reference_and_thread_counts(rc, cfg, streamed, ref_out, ref_states)


@pytest.mark.parametrize(
    "variant,norm", [(v, None) for v in VARIANTS] + [(v, "layer") for v in NORM_VARIANTS]
)
def test_steps_split_by_rows(rc, rng, variant, norm):
    """Sizes at which the core splits each step over threads by batch rows (a small
    recurrent weight matrix, B >= 16: every thread multiplies its own rows and finishes
    them in the same parallel region): outputs and final states match the float64
    reference, bitwise the same for 1, 2 and 3 threads."""
    cfg = Config.from_variant(variant, input_size=32, hidden_size=64, norm=norm)
    params = cfg.make_params(rng, scale=1.0 / np.sqrt(cfg.hidden_size))
    x, states, lengths = make_inputs(cfg, rng, 5, 24, "mixed")
    ref_out, ref_states = reference(cfg, params, x, states, lengths)
    m = make_module(rc, cfg, "float64", params)
    _check_reference_and_thread_counts(
        rc, cfg, lambda: m(x, pack_states(cfg, states), lengths), ref_out, ref_states
    )


# Hidden sizes at which a batch-1 step product (a matrix-vector product, not the packed GEMM of
# larger batches) is split over threads in chunks of 128 columns (G*H*H >= 2**16
# multiply-adds); for the RNN and the GRU the last chunk is partial.
_SPLIT_H = {"rnn": 288, "gru": 160, "lstm": 160}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("variant", ["rnn_tanh", "lstm", "gru", "gru_reset_before"])
def test_batch_one_split_products(rc, rng, variant, threads):
    """Batch 1 at sizes whose step products are split: the forward pass against the reference,
    and the backward pass against the same sequence run twice in a batch of 2 (whose products
    are packed GEMMs, not the batch-1 path): parameter gradients twice as large, the same dx."""
    over = VARIANTS[variant]
    cfg = Config(**over, input_size=40, hidden_size=_SPLIT_H[over["cell"]], num_layers=2)
    params = cfg.make_params(rng, scale=0.3)
    x, states, _ = make_inputs(cfg, rng, 7, 1, None, True)
    old = rc.get_num_threads()
    rc.set_num_threads(threads)
    try:
        out = _run_and_compare(rc, cfg, "float64", params, x, states, None)
        m = make_module(rc, cfg, "float64", params)
        grad_out = rng.standard_normal(out.shape)
        _, _, tape = m.forward_train(x, pack_states(cfg, states))
        dx1, _ = m.backward(tape, grad_out)
        g1 = {k: v.copy() for k, v in m.grads.items()}
        m.zero_grad()
        two = [np.concatenate([s, s], axis=1) for s in states]
        _, _, tape = m.forward_train(np.concatenate([x, x], axis=1), pack_states(cfg, two))
        dx2, _ = m.backward(tape, np.concatenate([grad_out, grad_out], axis=1))
    finally:
        rc.set_num_threads(old)
    for b in range(2):
        np.testing.assert_allclose(dx2[:, b : b + 1], dx1, rtol=1e-10, atol=1e-12)
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, 2 * g1[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("batch", [2, 3, 5, 8])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_streamed_steps_of_small_batches(rc, rng, variant, batch):
    """One call per step with a few sequences, state carried: single-use products of at most 8
    rows read the weights as they are (kernels/dots.h) instead of packing them. Input 37 and
    hidden 19 leave partial vectors; float32 against the reference, as above."""
    cfg = Config(**VARIANTS[variant], input_size=37, hidden_size=19, num_layers=2)
    params, x, states, _ = _setup(cfg, rng, "float32", batch, None, True)
    m = make_module(rc, cfg, "float32", params)
    hx = pack_states(cfg, states)
    ref_states = states
    for t in range(x.shape[0]):
        out, hx = m(x[t : t + 1], hx)
        ref_out, ref_states = reference(cfg, params, x[t : t + 1], ref_states, None)
        assert_close(out, ref_out, "float32", f"out at step {t}")
        for got, want in zip(unpack_states(cfg, hx), ref_states):
            assert_close(got, want, "float32", f"state at step {t}")
