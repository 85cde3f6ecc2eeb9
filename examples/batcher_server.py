"""A threaded server stepping many streams: one thread per connection, one batched core step.

Each connection's thread calls ``batcher.step(sid, x_t)`` as its data arrives, as if it had
the model to itself; the batcher runs the steps that arrive within ``max_delay_ms`` of each
other as one step of the core over all those streams, and hands each thread its own row.
Every stream gets exactly what its own ``model.stream()`` would give.

Run: python examples/batcher_server.py
"""

import threading
import time

import numpy as np

import rnncore as rc

CONNECTIONS, STEPS, FEATURES, HIDDEN = 64, 50, 32, 128

model = rc.GRU(FEATURES, HIDDEN, seed=0).eval()
data = np.random.default_rng(0).standard_normal((CONNECTIONS, STEPS, FEATURES)).astype(np.float32)
results = np.zeros((CONNECTIONS, STEPS, HIDDEN), np.float32)


def connection(batcher, i):
    sid = batcher.open()  # this connection's stream, state zero
    for t in range(STEPS):  # a frame arrives ...
        results[i, t] = batcher.step(sid, data[i, t])  # ... and its output comes back
    batcher.close(sid)


with rc.StreamBatcher(model, max_batch=64, max_delay_ms=1.0) as batcher:
    threads = [threading.Thread(target=connection, args=(batcher, i)) for i in range(CONNECTIONS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start

# Each connection got what the model gives its sequence on its own:
expected, _ = model(data.transpose(1, 0, 2))  # (T, B, D) -> (T, B, H)
assert np.allclose(results, expected.transpose(1, 0, 2), atol=1e-5)
print(f"{CONNECTIONS} connections x {STEPS} steps in {elapsed * 1e3:.0f} ms: "
      f"{CONNECTIONS * STEPS / elapsed:,.0f} steps/s")
