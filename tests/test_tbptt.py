"""Truncated BPTT (rnncore.truncated_bptt).

The truncated gradient is checked independently: with the chunk-start states s_i fixed at
their values, the truncated gradient is that of sum_i L_i(params; s_i) where L_i is the loss
of chunk i run from the constant state s_i. Central differences of that surrogate (float64,
step 1e-6; tolerances as tests/rnn_testing.py justifies) must match what the helper
accumulates. With one chunk it is plain BPTT.
"""

import numpy as np
import pytest
from rnn_testing import GRAD_ATOL, GRAD_RTOL, GRAD_STEP, central_difference, sample_indices

from rnncore._tbptt import truncated_bptt

T, B, IN, H = 11, 3, 2, 4


def _setup(rc, kind, rng, batch_first=False):
    m = getattr(rc, kind)(IN, H, dtype="float64", seed=3, batch_first=batch_first)
    shape = (B, T, IN) if batch_first else (T, B, IN)
    x = rng.standard_normal(shape)
    width = H
    target = rng.standard_normal(shape[:2] + (width,))
    return m, x, target


def _slice(a, start, stop, batch_first):
    return a[:, start:stop] if batch_first else a[start:stop]


def _loss_fn(target, batch_first):
    def loss_fn(out, start, stop):
        diff = out - _slice(target, start, stop, batch_first)
        return 0.5 * float(np.sum(diff**2)), diff

    return loss_fn


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_truncated_gradient_matches_surrogate_differences(rc, rng, kind, batch_first):
    m, x, target = _setup(rc, kind, rng, batch_first)
    chunk = 4
    m.zero_grad()
    losses, final = truncated_bptt(m, x, chunk, _loss_fn(target, batch_first))
    assert len(losses) == 3  # 4 + 4 + 3 steps
    grads = {k: g.copy() for k, g in m.grads.items()}

    # The chunk-start states, computed once and then held fixed.
    starts, state = [], None
    for s in range(0, T, chunk):
        starts.append(state)
        _, state = m(_slice(x, s, s + chunk, batch_first), state)

    def surrogate():
        total = 0.0
        for i, s in enumerate(range(0, T, chunk)):
            out, _ = m(_slice(x, s, s + chunk, batch_first), starts[i])
            total += 0.5 * float(np.sum((out - _slice(target, s, s + chunk, batch_first)) ** 2))
        return total

    np.testing.assert_allclose(sum(losses), surrogate(), rtol=1e-12)
    params = m.parameters()
    for name, p in params.items():
        for idx in sample_indices(p.shape, rng, 6):
            num = central_difference(surrogate, p, idx, GRAD_STEP)
            ana = grads[name][idx]
            assert abs(ana - num) <= GRAD_ATOL + GRAD_RTOL * abs(num), (name, idx, ana, num)
    # Forward values are untouched by the truncation: the final state is the full call's.
    _, full = m(x)
    pairs = zip(final, full) if kind == "LSTM" else [(final, full)]
    for got, want in pairs:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_one_chunk_is_full_bptt(rc, rng):
    m, x, target = _setup(rc, "LSTM", rng)
    m.zero_grad()
    truncated_bptt(m, x, T, _loss_fn(target, False))
    got = {k: g.copy() for k, g in m.grads.items()}
    m.zero_grad()
    out, _, tape = m.forward_train(x)
    m.backward(tape, out - target)
    for k, g in m.grads.items():
        np.testing.assert_allclose(got[k], g, rtol=0, atol=1e-14, err_msg=k)


def test_after_chunk_and_carried_state(rc, rng):
    """after_chunk runs once per chunk with its loss; hx is taken and h_n returned in the
    module's state structure, so calls can be chained over a stream."""
    m, x, target = _setup(rc, "LSTM", rng)
    calls = []
    losses, (h, c) = truncated_bptt(
        m, x, 5, _loss_fn(target, False), after_chunk=lambda i, loss: calls.append((i, loss))
    )
    assert [i for i, _ in calls] == [0, 1, 2]
    assert [loss for _, loss in calls] == losses
    assert h.shape == (1, B, H) and c.shape == (1, B, H)
    losses2, _ = truncated_bptt(m, x, 5, _loss_fn(target, False), hx=(h, c))
    assert losses2 != losses  # a different starting state


def test_argument_errors(rc, rng):
    m, x, target = _setup(rc, "GRU", rng)
    fn = _loss_fn(target, False)
    with pytest.raises(ValueError, match="chunk_size"):
        truncated_bptt(m, x, 0, fn)
    with pytest.raises(TypeError, match="chunk_size"):
        truncated_bptt(m, x, 2.5, fn)
    with pytest.raises(TypeError, match="loss_fn"):
        truncated_bptt(m, x, 2, None)
    with pytest.raises(TypeError, match="after_chunk"):
        truncated_bptt(m, x, 2, fn, after_chunk=3)
    with pytest.raises(ValueError, match="x must be"):
        truncated_bptt(m, x[None], 2, fn)
