"""StreamBatcher: many streams stepped by many threads, run as batched core steps.

The batching lives in the core (``rnncore/batcher.h``): callers' threads queue their steps
and wait with the GIL released; a worker thread of the core runs the steps that arrive
together as one step over those streams' rows. This module checks arguments, turns
states into the core's layout, and closes batchers left open at interpreter exit.
"""

from __future__ import annotations

import atexit
import weakref
from concurrent.futures import Future
from typing import Any

import numpy as np

from . import _core, _stream
from . import _validation as v

_LIVE: weakref.WeakSet = weakref.WeakSet()  # batchers to close at interpreter exit


class StreamBatcher:
    """Steps of many streams of one module, from many threads, run as batched core steps.

    ``sid = b.open(hx=None)`` opens a stream; ``b.step(sid, x_t)`` runs one step of it and
    returns its output ``(H_out,)``; ``b.submit(sid, x_t)`` queues it and returns a
    ``concurrent.futures.Future`` (for asyncio: ``await asyncio.wrap_future(...)``). Steps
    that arrive within ``max_delay_ms`` of the first waiting one (or as soon as every open
    stream has one waiting) run as one step of the core over up to ``max_batch`` streams;
    each stream gets exactly what its own ``module.stream()`` would give, its steps in the
    order submitted.

    Thread-safe. A closed or unknown ``sid`` raises ``KeyError``; a step of the wrong shape
    raises ``ValueError`` in its caller and touches nothing else. At most ``max_pending``
    steps wait at once: ``submit`` and ``step`` block while the queues are full. A step
    whose Future is cancelled before it runs is skipped. ``close_all()`` (also on leaving a
    ``with`` block, and at interpreter exit) runs what was submitted, then stops the worker.

    The module must be unidirectional and in eval mode; its parameters are read live.
    """

    def __init__(self, module: Any, max_batch: int = 64, max_delay_ms: float = 1.0, *,
                 max_pending: int = 65536):  # fmt: skip
        from ._recurrent import RecurrentModule  # the modules import this file's package

        if not isinstance(module, RecurrentModule):
            raise TypeError(f"StreamBatcher takes an RNN, LSTM or GRU, got {type(module).__name__}")
        _stream.check_streamable(module, "StreamBatcher")
        o = module.options
        max_batch = v.check_int("max_batch", max_batch, 1)
        max_delay_ms = v.check_float("max_delay_ms", max_delay_ms, 0.0, 60_000.0,
                                     high_open=False)  # fmt: skip
        max_pending = v.check_int("max_pending", max_pending, 1)
        core_class = _core.BatcherF64 if o.np_dtype == np.float64 else _core.BatcherF32
        self._core = core_class(module._model, max_batch, max_delay_ms, max_pending)
        self._module = module
        self._max_batch = max_batch
        # The fast path: step goes straight to the core.
        self.step = self._core.step
        _LIVE.add(self)

    def open(self, hx: Any = None) -> int:
        """Opens a stream at step 0 with state ``hx`` (``(num_layers, H_out)``; LSTM a
        ``(h_0, c_0)`` pair; None: zeros) and returns its id."""
        return self._core.open(*self._states(hx))

    def step(self, sid: int, x: Any) -> np.ndarray:  # replaced per instance by the core's
        """One step of stream ``sid``: ``x`` ``(input_size,)`` -> its output ``(H_out,)``.

        Raises:
            KeyError: ``sid`` is not open. ValueError: ``x`` has the wrong shape.
            TypeError: ``x`` is not real numbers. RuntimeError: the batcher is closed.
        """
        return self._core.step(sid, x)  # pragma: no cover - shadowed in __init__

    def submit(self, sid: int, x: Any) -> Future:
        """Queues one step of stream ``sid``; returns a Future of its output ``(H_out,)``.

        Raises as ``step`` does (at once, not through the Future).
        """
        fut: Future = Future()
        self._core.submit(sid, x, fut)
        return fut

    def reset(self, sid: int, hx: Any = None) -> None:
        """Starts stream ``sid`` over (state ``hx`` or zeros, step 0) after its queued steps."""
        self._core.reset(sid, *self._states(hx))

    def close(self, sid: int) -> None:
        """Closes stream ``sid``: its queued steps still run; later use raises KeyError."""
        self._core.close(sid)

    def close_all(self) -> None:
        """Runs every queued step, then stops the worker thread. Idempotent."""
        self._core.close_all()
        _LIVE.discard(self)

    def __enter__(self) -> StreamBatcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_all()

    @property
    def open_streams(self) -> int:
        """The number of open streams."""
        return self._core.open_streams

    @property
    def module(self) -> Any:
        return self._module

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else f"{self.open_streams} open streams"
        return f"<rnncore.StreamBatcher of {self._module!r}, max_batch={self._max_batch}, {state}>"

    def _states(self, hx: Any) -> tuple[Any, Any]:
        m, o = self._module, self._module.options
        h0, c0 = m._split_hx(hx)
        if h0 is not None:
            h0 = m._state("h_0", h0, 1, o.out_size, True)[:, 0]
        if c0 is not None:
            c0 = m._state("c_0", c0, 1, o.hidden_size, True)[:, 0]
        return h0, c0


@atexit.register
def _close_live_batchers() -> None:
    for batcher in list(_LIVE):
        batcher.close_all()
