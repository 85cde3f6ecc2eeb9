"""Voice-activity detection on a live audio feed: a small LSTM stepped one 32 ms frame at a time.

The model sees each frame once, when it arrives; its state stays in the stream between
frames. A stream gives exactly what the model gives on the whole recording, so it can be
trained on whole recordings and deployed frame by frame. (Untrained weights here: the point
is the loop, not the detector.)

Run: python examples/vad_stream.py
"""

import time

import numpy as np

import rnncore as rc

N_MELS, HIDDEN = 40, 64  # 40 log-mel features per 32 ms frame, a VAD-sized LSTM

lstm = rc.LSTM(N_MELS, HIDDEN, num_layers=2, seed=0).eval()
head = rc.Linear(HIDDEN, 1, seed=1)  # speech logit per frame

stream = lstm.stream()  # batch_size=1; the state starts at zero
frames = np.random.default_rng(0).standard_normal((200, N_MELS)).astype(np.float32)

start = time.perf_counter()
speech = []
for frame in frames:  # as each frame arrives
    h = stream.step(frame)  # (N_MELS,) -> (HIDDEN,)
    speech.append(head(h[None])[0, 0] > 0)
per_frame_us = (time.perf_counter() - start) / len(frames) * 1e6

# The same outputs as one call over the whole recording (to float rounding):
whole, _ = lstm(frames)
stream.reset()
stepped = np.stack([stream.step(f) for f in frames])
assert np.allclose(stepped, whole, atol=1e-5)

print(f"{len(frames)} frames, {sum(speech)} flagged as speech, {per_frame_us:.1f} us per frame "
      f"(LSTM + head), stream at step {stream.steps[0]}")
