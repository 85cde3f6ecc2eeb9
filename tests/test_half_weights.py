"""``half_weights()``: inference copies with float16 weight matrices.

The copy must compute exactly the model whose weight matrices are the float16 roundings of
the original's: its forward pass is compared with the float64 reference (rnncore.reference)
fed those rounded values. Single-use products of at most 8 rows (streamed steps) and the
steps of sequences of 1 or 2 rows take the float16 kernels (kernels/dots.h), the others the
float32 GEMM on the rounded values; all are checked, whole sequences and streamed steps,
for every cell variant and norm, with sizes that leave partial vectors and partial row
groups (input 37 = 2 x 16 + 5, hidden 19).

Tolerance: the float32 one of test_forward.py (3e-5, see its docstring). The reference sees
the rounded weights exactly, so only float32 arithmetic separates the two, as there; the
rounding itself moves outputs by ~1e-4 here, so a copy that kept the unrounded weights
anywhere would fail.
"""

import numpy as np
import pytest
from rnn_testing import (
    NORM_VARIANTS,
    NORMS,
    VARIANTS,
    Config,
    make_inputs,
    make_module,
    pack_states,
    random_buffers,
    reference,
    run_concurrently,
    unpack_states,
)

import rnncore as rc

TOL = 3e-5  # test_forward.py's float32 tolerance
T = 7


def assert_close(actual, expected, what):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL * scale, err_msg=what)


def rounded(params):
    """The weight matrices rounded to float16 (to nearest even), as float64; others as is."""
    return {
        k: (v.astype(np.float16) if k.startswith("weight_") else v).astype(np.float64)
        for k, v in params.items()
    }


def _cases():
    for vid in VARIANTS:
        yield pytest.param(vid, None, id=f"{vid}-none")
    for vid in NORM_VARIANTS:
        for norm in NORMS:
            yield pytest.param(vid, norm, id=f"{vid}-{norm}")


def _setup(vid, norm, rng, **over):
    cfg = Config(**{**VARIANTS[vid], "input_size": 37, "hidden_size": 19, "norm": norm, **over})
    params = {k: v.astype(np.float32) for k, v in cfg.make_params(rng, scale=0.6).items()}
    params.update({k: v.astype(np.float32) for k, v in random_buffers(cfg, rng, rows=4).items()})
    m = make_module(rc, cfg, "float32", params).eval()
    return cfg, params, m


@pytest.mark.parametrize("vid,norm", _cases())
def test_forward_matches_reference_with_rounded_weights(vid, norm):
    rng = np.random.default_rng(11)
    cfg, params, m = _setup(vid, norm, rng, num_layers=2, bidirectional=True)
    half = m.half_weights()
    ref_params = rounded({k: v.astype(np.float64) for k, v in params.items()})
    bufs = {k: v for k, v in ref_params.items() if "running" in k}
    kw = {"training": False, "buffers": bufs} if bufs else {"training": False}
    for batch, lengths_kind in ((1, None), (2, "mixed"), (3, "mixed")):
        x, states, lengths = make_inputs(cfg, rng, T, batch, lengths_kind, dtype=np.float32)
        ref_out, ref_states = reference(
            cfg, ref_params, x.astype(np.float64), [s.astype(np.float64) for s in states],
            lengths, **kw,
        )  # fmt: skip
        out, hn = half(x, pack_states(cfg, states), lengths)
        assert out.dtype == np.float32
        assert_close(out, ref_out, f"out, batch {batch}")
        for got, want in zip(unpack_states(cfg, hn), ref_states):
            assert_close(got, want, f"final state, batch {batch}")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("vid,norm", _cases())
def test_streamed_steps_match_reference(vid, norm, batch):
    """One call per step (the case the float16 kernels are for: single-use products of at most
    8 rows), state carried."""
    rng = np.random.default_rng(12)
    cfg, params, m = _setup(vid, norm, rng, num_layers=2)
    half = m.half_weights()
    ref_params = rounded({k: v.astype(np.float64) for k, v in params.items()})
    bufs = {k: v for k, v in ref_params.items() if "running" in k}
    x, states, _ = make_inputs(cfg, rng, T, batch, None, dtype=np.float32)
    hx = pack_states(cfg, states)
    ref_states = [s.astype(np.float64) for s in states]
    for t in range(T):
        out, hx = half(x[t : t + 1], hx)
        # eval-mode batch norm at step t of a stream reads running row 0 (each call is a
        # sequence of its own); the reference is run the same way.
        kw = {"training": False, "buffers": bufs} if bufs else {"training": False}
        ref_out, ref_states = reference(
            cfg, ref_params, x[t : t + 1].astype(np.float64), ref_states, None, **kw
        )
        assert_close(out, ref_out, f"out at step {t}")
        for got, want in zip(unpack_states(cfg, hx), ref_states):
            assert_close(got, want, f"state at step {t}")


def test_parameters_are_rounded_copies_and_the_original_is_untouched():
    rng = np.random.default_rng(3)
    m = rc.LSTM(37, 19, num_layers=2, proj_size=5, norm="layer", seed=4)
    for p in m.parameters().values():  # give the norm parameters values of their own
        p[...] = rng.standard_normal(p.shape).astype(np.float32)
    before = m.state_dict()
    half = m.half_weights()
    assert isinstance(half, rc.LSTM) and not half.training
    for k, p in half.parameters().items():
        want = (
            before[k].astype(np.float16).astype(np.float32)
            if k.startswith("weight_")
            else before[k]
        )
        np.testing.assert_array_equal(p, want, err_msg=k)
    weights = [k for k in before if k.startswith("weight_")]
    assert any(not np.array_equal(half.parameters()[k], before[k]) for k in weights)
    for k, p in m.parameters().items():
        np.testing.assert_array_equal(p, before[k], err_msg=f"original {k}")
    assert m.training  # the original keeps its mode
    # Later changes to the original do not reach the copy.
    m.parameters()["weight_hh_l0"][...] = 0
    assert np.any(half.parameters()["weight_hh_l0"] != 0)
    assert "half_weights" in repr(half)


def test_batch_one_uses_float16_and_agrees_with_larger_batches():
    """Row 0 of a batch-2 call (float32 kernels on the rounded values) against the batch-1
    call (float16 kernels): same model, so equal to float32 accuracy; and large enough that
    the products are split over threads, with results independent of the thread count."""
    m = rc.LSTM(256, 256, seed=5).eval()
    half = m.half_weights()
    x = np.random.default_rng(6).standard_normal((12, 2, 256)).astype(np.float32)
    old = rc.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            rc.set_num_threads(threads)
            outs.append(half(x[:, :1])[0])
    finally:
        rc.set_num_threads(old)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    assert_close(outs[0], half(x)[0][:, :1], "batch 1 vs row 0 of batch 2")


def test_inference_only():
    half = rc.GRU(8, 6, seed=1).half_weights()
    x = np.zeros((3, 2, 8), np.float32)
    with pytest.raises(RuntimeError, match="inference only"):
        half.forward_train(x)
    with pytest.raises(RuntimeError, match="inference only"):
        half.train()
    with pytest.raises(RuntimeError, match="inference only"):
        half.load_state_dict(half.state_dict())
    with pytest.raises(ValueError, match="read-only"):
        half.parameters()["weight_ih_l0"][0, 0] = 1.0
    assert half.eval() is half and half.train(False) is half
    m = rc.GRU(8, 6, seed=1)
    _, _, tape = m.forward_train(x)
    with pytest.raises(RuntimeError, match="inference only"):
        half.backward(tape, np.zeros((3, 2, 6), np.float32))


def test_refuses_float64_and_out_of_range_weights():
    with pytest.raises(ValueError, match="float32"):
        rc.RNN(4, 3, dtype="float64").half_weights()
    m = rc.RNN(4, 3)
    m.parameters()["weight_hh_l0"][1, 2] = 7e4
    with pytest.raises(ValueError, match="weight_hh_l0.*float16 range"):
        m.half_weights()
    m.parameters()["weight_hh_l0"][1, 2] = 65504.0  # the largest float16: fine
    assert m.half_weights().parameters()["weight_hh_l0"][1, 2] == 65504.0


def test_concurrent_calls_equal_serial():
    """8 Python threads streaming through one half_weights() copy (batch 1 and 3, sizes whose
    products are split over the core's threads) get exactly the serial results."""
    half = rc.LSTM(256, 256, seed=7).half_weights()
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((6, 1 + 2 * (i % 2), 256)).astype(np.float32) for i in range(8)]

    def stream(x):
        state, outs = None, []
        for t in range(x.shape[0]):
            out, state = half(x[t : t + 1], state)
            outs.append(out)
        return np.concatenate(outs), state[0], state[1]

    serial = [stream(x) for x in xs]
    results = run_concurrently(lambda i: [stream(xs[i]) for _ in range(3)], 8)
    for i in range(8):
        for got in results[i]:
            for a, b in zip(got, serial[i]):
                np.testing.assert_array_equal(a, b, err_msg=f"thread {i}")
