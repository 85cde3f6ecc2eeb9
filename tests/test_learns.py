"""End to end: an LSTM + Linear head trained with Adam learns the adding problem.

The adding problem (Hochreiter & Schmidhuber 1997): each step carries a value in U(0, 1)
and a marker; exactly two steps are marked and the target is the sum of their values. The
answer depends on remembering two values chosen by a flag, which no linear function of the
inputs and no constant can approximate well; the test computes both baselines.
"""

from __future__ import annotations

import numpy as np

import rnncore as rc

T, H = 20, 16


def _adding_batch(rng, batch):
    values = rng.uniform(0.0, 1.0, (T, batch))
    marks = np.zeros((T, batch))
    first = rng.integers(0, T, batch)
    second = (first + rng.integers(1, T, batch)) % T  # a different step
    marks[first, np.arange(batch)] = 1.0
    marks[second, np.arange(batch)] = 1.0
    x = np.stack([values, marks], axis=-1)  # (T, B, 2)
    y = (values * marks).sum(axis=0)[:, None]  # (B, 1)
    return x, y


def _predict(lstm, head, x):
    out, _ = lstm(x)
    return head(out[-1])


def test_lstm_with_linear_head_learns_the_adding_problem():
    rng = np.random.default_rng(0)
    lstm = rc.LSTM(2, H, seed=1)
    head = rc.Linear(H, 1, seed=2)
    x_test, y_test = _adding_batch(np.random.default_rng(123), 2000)

    # Baselines: predicting the mean (the target's variance, ~1/6) and the best linear
    # function of all 2T inputs, fitted by least squares on a large sample.
    variance = float(y_test.var())
    x_fit, y_fit = _adding_batch(np.random.default_rng(7), 20000)

    def features(x):
        return np.concatenate([x.transpose(1, 0, 2).reshape(x.shape[1], -1),
                               np.ones((x.shape[1], 1))], axis=1)  # fmt: skip

    w, *_ = np.linalg.lstsq(features(x_fit), y_fit, rcond=None)
    linear_mse = float(np.mean((features(x_test) @ w - y_test) ** 2))
    untrained_mse = float(np.mean((_predict(lstm, head, x_test) - y_test) ** 2))
    threshold = 0.1 * min(variance, linear_mse)
    assert variance > 0.15 and linear_mse > 0.1  # the baselines are far from the goal
    assert untrained_mse > threshold

    opt = rc.optim.Adam([lstm, head], lr=1e-2)
    for _ in range(800):
        x, y = _adding_batch(rng, 32)
        opt.zero_grad()
        out, _, tape = lstm.forward_train(x)
        pred, head_tape = head.forward_train(out[-1])
        loss, grad = rc.mse_loss(pred, y)
        grad_out = np.zeros_like(out)
        grad_out[-1] = head.backward(head_tape, grad)
        lstm.backward(tape, grad_out)
        rc.clip_grad_norm([lstm, head], 1.0)
        opt.step()
    trained_mse = float(np.mean((_predict(lstm, head, x_test) - y_test) ** 2))
    # Seeded, so deterministic; for robustness to rounding differences (thread counts, ISA
    # paths) the margin was checked over 12 seeds: 800 steps reach 0.0004-0.003 in every
    # one (at most 2% of the variance), against a threshold of 10% of the best baseline
    # (~0.016).
    assert trained_mse < threshold, (trained_mse, threshold, variance, linear_mse)
