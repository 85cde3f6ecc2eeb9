"""What may run concurrently on one module, run under ThreadSanitizer by .ci/sanitize.

Eval-mode calls from many threads (while another thread changes the thread count),
concurrent backward calls, concurrent training-mode calls of a batch-normalized module,
and concurrent backward calls of a Linear layer. Any data race in the compiled core ends
the process with ThreadSanitizer's report; the results are also checked against serial
calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import rnncore as rc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rnn_testing import run_concurrently as together  # noqa: E402 - after the path is set


def eval_calls_while_the_thread_count_changes():
    m = rc.LSTM(16, 64, num_layers=2, bidirectional=True, seed=0).eval()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((20, 4, 16)).astype(np.float32) for _ in range(4)]
    want = [m(x)[0] for x in xs]
    got = [None] * 4

    def work(i):
        if i == 4:  # the fifth thread toggles the thread count
            for n in (1, 3, 2, 1, 2):
                rc.set_num_threads(n)
            return
        for _ in range(3):
            got[i] = m(xs[i])[0]

    together(work, 5)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def concurrent_backward():
    m = rc.GRU(8, 48, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((6, 3, 8)) for _ in range(16)]
    tapes = [m.forward_train(x) for x in xs]
    grads = [rng.standard_normal(out.shape) for out, _, _ in tapes]
    together(lambda i: [m.backward(tapes[k][2], grads[k]) for k in range(i, 16, 4)], 4)


def concurrent_batch_norm_training():
    m = rc.LSTM(8, 32, norm="batch", seed=2)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((t, 4, 8)).astype(np.float32) for t in (5, 9, 3, 12)]
    together(lambda i: [m(xs[i]) for _ in range(3)], 4)
    m.eval()
    together(lambda i: m(xs[i]), 4)


def concurrent_linear_backward():
    m = rc.Linear(32, 16, seed=3)
    rng = np.random.default_rng(3)
    tapes = [m.forward_train(rng.standard_normal((20, 32)))[1] for _ in range(8)]
    together(lambda i: [m.backward(tapes[k], np.ones((20, 16))) for k in (i, i + 4)], 4)


def streams_and_a_batcher_while_a_module_trains():
    """Streams of one batch-normalized module stepping concurrently (each reads the running
    statistics) while a training-mode call of the same module updates them, and a batcher
    stepping streams submitted by four threads."""
    m = rc.GRU(8, 32, norm="batch", seed=4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 4, 8)).astype(np.float32)
    m(x)
    streams = [m.eval().stream(2) for _ in range(4)]

    def work(i):
        if i == 4:
            m.train()
            for _ in range(3):
                m(x)  # writes the running statistics the streams read
            return
        for t in range(6):
            streams[i].step(x[t, :2])  # a stream always computes in eval mode

    together(work, 5)
    m.eval()
    with rc.StreamBatcher(m, max_batch=4) as b:
        def client(i):
            sid = b.open()
            for t in range(6):
                b.step(sid, x[t, i])
        together(client, 4)


if __name__ == "__main__":
    for check in (eval_calls_while_the_thread_count_changes, concurrent_backward,
                  concurrent_batch_norm_training, concurrent_linear_backward,
                  streams_and_a_batcher_while_a_module_trains):  # fmt: skip
        check()
        print(f"{check.__name__}: ok", flush=True)
