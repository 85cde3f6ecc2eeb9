"""StreamBatcher: many streams stepped by many threads, run as batched core steps.

Design. Every open stream is one row of a single core stream (grown as streams open).
Callers' threads only validate and queue; one worker thread takes the head of every stream
that has something queued (at most ``max_batch`` streams, waiting at most ``max_delay_ms``
for more once the first arrived, and not at all once every open stream has a step queued)
and runs them as one step of the core over those rows. A stream's queue is first in, first
out, and a stream appears at most once in a batch, so its steps run in the order they were
submitted. Resets and closes travel through the same queues, so they happen between the
steps submitted before and after them.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any

import numpy as np

from . import _stream
from . import _validation as v

_LIVE: weakref.WeakSet = weakref.WeakSet()  # batchers to close at interpreter exit
_STEP, _RESET, _CLOSE = 0, 1, 2


class StreamBatcher:
    """Steps of many streams of one module, from many threads, run as batched core steps.

    ``sid = b.open(hx=None)`` opens a stream; ``b.submit(sid, x_t)`` queues one step of it
    and returns a ``concurrent.futures.Future`` of its output ``(H_out,)`` (for asyncio:
    ``await asyncio.wrap_future(b.submit(sid, x_t))``); ``b.step(sid, x_t)`` waits for it.
    Steps submitted within ``max_delay_ms`` of each other run as one step of the core over
    up to ``max_batch`` streams; each stream gets exactly what its own ``module.stream()``
    would give, its steps in the order submitted.

    Thread-safe. A closed or unknown ``sid`` raises ``KeyError``; a step of the wrong shape
    raises ``ValueError`` in the caller and touches nothing else. At most ``max_pending``
    steps wait at once: ``submit`` blocks while the queues are full. ``close_all()`` (also
    on leaving a ``with`` block, and at interpreter exit) runs what was submitted, then
    stops the worker thread.

    The module must be unidirectional and in eval mode; its parameters are read live.
    """

    def __init__(self, module: Any, max_batch: int = 64, max_delay_ms: float = 1.0, *,
                 max_pending: int = 65536):  # fmt: skip
        self._max_batch = v.check_int("max_batch", max_batch, 1)
        self._max_delay = v.check_float("max_delay_ms", max_delay_ms, 0.0, 60_000.0,
                                        high_open=False) / 1000.0  # fmt: skip
        self._max_pending = v.check_int("max_pending", max_pending, 1)
        self._stream = _stream.new_stream(module, min(self._max_batch, 64), None)
        self._core = self._stream._core
        self._module = module
        o = module.options
        self._in_shape = (o.input_size,)
        self._dtype = o.np_dtype
        self._cond = threading.Lock()  # guards everything below but the core stream
        self._work = threading.Condition(self._cond)  # the worker waits here for steps
        self._space = threading.Condition(self._cond)  # full queues: submitters wait here
        self._core_lock = threading.Lock()  # the core stream: resized, started, stepped
        self._rows: dict[int, int] = {}  # open sid -> row
        self._free_rows: list[int] = list(range(self._core.batch - 1, -1, -1))
        self._queues: dict[int, collections.deque] = {}
        self._ready: collections.deque = collections.deque()  # sids with queued entries
        self._first_at = 0.0  # when the oldest queued entry arrived
        self._pending = 0
        self._sids = itertools.count()
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="rnncore-StreamBatcher",
                                        daemon=True)  # fmt: skip
        self._worker.start()
        _LIVE.add(self)

    # ------------------------------------------------------------------ streams
    def open(self, hx: Any = None) -> int:
        """Opens a stream at step 0 with state ``hx`` (``(num_layers, H_out)``; LSTM a
        ``(h_0, c_0)`` pair; None: zeros) and returns its id."""
        h0, c0 = self._module._split_hx(hx)
        o = self._module.options
        if h0 is not None:
            h0 = self._module._state("h_0", h0, 1, o.out_size, True)[:, 0]
        if c0 is not None:
            c0 = self._module._state("c_0", c0, 1, o.hidden_size, True)[:, 0]
        with self._cond:
            self._check_open()
            if not self._free_rows:
                with self._core_lock:
                    old = self._core.batch
                    self._core.resize(2 * old)
                self._free_rows.extend(range(2 * old - 1, old - 1, -1))
            row = self._free_rows.pop()
            with self._core_lock:
                self._core.start_row(row, h0, c0)
            sid = next(self._sids)
            self._rows[sid] = row
            self._queues[sid] = collections.deque()
            return sid

    def submit(self, sid: int, x: Any) -> Future:
        """Queues one step of stream ``sid``; returns a Future of its output ``(H_out,)``.

        Raises:
            KeyError: ``sid`` is not open. ValueError: ``x`` is not ``(input_size,)``.
            TypeError: ``x`` is not real numbers. RuntimeError: the batcher is closed.
        """
        arr = v.real_array("x", x)
        if arr.shape != self._in_shape:
            raise ValueError(f"x must have shape {self._in_shape}, got {arr.shape}")
        arr = np.array(arr, dtype=self._dtype)  # a copy: the caller may reuse x at once
        fut: Future = Future()
        self._enqueue(sid, _STEP, arr, fut)
        return fut

    def step(self, sid: int, x: Any) -> np.ndarray:
        """``submit(sid, x).result()``: one step of stream ``sid``, its output ``(H_out,)``."""
        return self.submit(sid, x).result()

    def reset(self, sid: int, hx: Any = None) -> None:
        """Starts stream ``sid`` over (state ``hx`` or zeros, step 0) after its queued steps."""
        h0, c0 = self._module._split_hx(hx)
        o = self._module.options
        if h0 is not None:
            h0 = self._module._state("h_0", h0, 1, o.out_size, True)[:, 0]
        if c0 is not None:
            c0 = self._module._state("c_0", c0, 1, o.hidden_size, True)[:, 0]
        self._enqueue(sid, _RESET, (h0, c0), None)

    def close(self, sid: int) -> None:
        """Closes stream ``sid``: its queued steps still run; later use raises KeyError."""
        with self._cond:
            self._check_open()
            self._check_sid(sid)
            if self._queues[sid]:  # the row is freed once the queued entries have run
                self._push(sid, (_CLOSE, None, None, self._rows[sid]))
            else:
                del self._queues[sid]
                self._free_rows.append(self._rows[sid])
                self._work.notify()  # one stream fewer to wait for
            del self._rows[sid]

    def close_all(self, timeout: float | None = None) -> None:
        """Runs every queued step, then stops the worker thread. Idempotent."""
        with self._cond:
            self._closing = True
            self._work.notify_all()
            self._space.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)
        _LIVE.discard(self)

    def __enter__(self) -> StreamBatcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_all()

    @property
    def open_streams(self) -> int:
        """The number of open streams."""
        with self._cond:
            return len(self._rows)

    def __repr__(self) -> str:
        state = "closed" if self._closing else f"{self.open_streams} open streams"
        return f"<rnncore.StreamBatcher of {self._module!r}, max_batch={self._max_batch}, {state}>"

    # ----------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("this StreamBatcher is closed")

    def _check_sid(self, sid: int) -> None:
        if sid not in self._rows:
            raise KeyError(f"no open stream {sid!r} in this StreamBatcher")

    def _enqueue(self, sid: int, kind: int, payload: Any, fut: Future | None) -> None:
        with self._cond:
            self._check_open()
            self._check_sid(sid)
            while self._pending >= self._max_pending:
                self._space.wait()
                self._check_open()
                self._check_sid(sid)
            self._push(sid, (kind, payload, fut, self._rows[sid]))

    def _push(self, sid: int, entry: tuple) -> None:
        queue = self._queues[sid]
        if not queue:
            if not self._ready:
                self._first_at = time.monotonic()
            self._ready.append(sid)
        queue.append(entry)
        self._pending += 1
        # Wake the worker only when it may go: a first step to wait on, or a full batch.
        if len(self._ready) == 1 or len(self._ready) >= self._batch_goal():
            self._work.notify()

    def _batch_goal(self) -> int:
        """Streams worth waiting for: every open one (or with queued entries), at most
        max_batch."""
        return min(self._max_batch, len(self._queues))

    def _take(self) -> list | None:
        """Waits for work; returns the next batch's (sid, row, entry) or None to stop."""
        with self._cond:
            while not self._ready and not self._closing:
                self._work.wait()
            if not self._ready:
                return None
            # Wait for more streams while there is room, time, and a stream that might come.
            deadline = self._first_at + self._max_delay
            while not self._closing and len(self._ready) < self._batch_goal():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._work.wait(left)
            batch = []
            for _ in range(min(self._max_batch, len(self._ready))):
                sid = self._ready.popleft()
                queue = self._queues[sid]
                entry = queue.popleft()
                batch.append((sid, entry))
                if entry[0] == _CLOSE:
                    del self._queues[sid]
                elif queue:
                    self._ready.append(sid)  # its next entry goes into a later batch
            full = self._pending >= self._max_pending
            self._pending -= len(batch)
            self._first_at = 0.0  # what is left has waited already: the next batch goes at once
            if full:
                self._space.notify_all()
            return batch

    def _run(self) -> None:
        # Lock order: the condition, then the core lock (open); never the other way.
        while True:
            batch = self._take()
            if batch is None:
                return
            rows, xs, futures, resets, freed = [], [], [], [], []
            for _, (kind, payload, fut, row) in batch:
                if kind == _RESET:
                    resets.append((row, payload))
                elif kind == _CLOSE:
                    freed.append(row)
                elif fut.set_running_or_notify_cancel():  # a cancelled step is skipped
                    rows.append(row)
                    xs.append(payload)
                    futures.append(fut)
            out, error = None, None
            with self._core_lock:
                for row, (h0, c0) in resets:
                    self._core.start_row(row, h0, c0)
                if rows:
                    try:
                        out = self._core.step_rows(np.array(rows, dtype=np.int64), np.stack(xs))
                    except BaseException as e:  # noqa: BLE001 - handed to the callers
                        error = e
            if freed:
                with self._cond:
                    self._free_rows.extend(freed)
            for i, fut in enumerate(futures):
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(out[i])


@atexit.register
def _close_live_batchers() -> None:
    for batcher in list(_LIVE):
        batcher.close_all(timeout=5.0)
