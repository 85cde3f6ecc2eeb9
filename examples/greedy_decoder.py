"""A greedy decoder: an LSTMCell emits one token per step, fed back as the next input.

The loop PyTorch users write around ``nn.LSTMCell``; ``rc.LSTMCell`` has its names, shapes
and weight layout (``rc.LSTMCell.from_torch(cell)`` takes a trained one). Untrained
weights here: the decoded tokens are arbitrary, the loop is the point.

Run: python examples/greedy_decoder.py
"""

import numpy as np

import rnncore as rc

VOCAB, EMBED, HIDDEN, BOS, EOS, MAX_LEN = 32, 16, 64, 0, 1, 20

rng = np.random.default_rng(0)
embedding = rng.standard_normal((VOCAB, EMBED)).astype(np.float32)
cell = rc.LSTMCell(EMBED, HIDDEN, seed=0)
project = rc.Linear(HIDDEN, VOCAB, seed=1)

encoder_state = rng.standard_normal((2, HIDDEN)).astype(np.float32)  # e.g. an encoder's (h, c)
h, c = encoder_state[0], encoder_state[1]
token, tokens = BOS, []
for _ in range(MAX_LEN):
    h, c = cell(embedding[token], (h, c))  # (EMBED,) -> (HIDDEN,), (HIDDEN,)
    token = int(np.argmax(project(h[None])[0]))
    if token == EOS:
        break
    tokens.append(token)

print("decoded:", tokens)
