"""Streams: step-by-step inference of a unidirectional module, state kept between calls.

``module.stream()`` returns a ``Stream``; the state, the step counts and the stepping
itself live in the compiled core (one call per step, no Python loop over time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core, _limits
from . import _validation as v


class Stream:
    """Step-by-step inference of an RNN, LSTM or GRU, its state kept between calls.

    Made by ``module.stream(batch_size=1, hx=None)``. Stepping a stream through a
    sequence, in one call or in pieces, gives what one eval-mode call of the module over
    the whole sequence gives (to float rounding). Each row (sequence) has its own state and
    step count; with ``norm="batch"``, a row at its step ``k`` uses running-statistics row
    ``min(k, S - 1)``, as a whole-sequence call does, whatever the other rows' steps.

    A stream reads its module's parameters live and always computes in eval mode. One
    stream is not thread-safe; different streams of one module may step concurrently
    (each step releases the GIL).
    """

    __slots__ = ("_core", "_module", "_lstm", "_batch")

    def __init__(self, module: Any, core_stream: Any):
        self._module = module
        self._core = core_stream
        self._lstm = module.options.cell == "lstm"
        self._batch = core_stream.batch

    def step(self, x: Any) -> np.ndarray:
        """Advances every row by one step, or by a chunk of steps.

        Args:
            x: one step ``(B, input_size)`` (or ``(input_size,)`` for a stream of one
                row), or a chunk ``(T, B, input_size)`` (``(B, T, input_size)`` for a
                ``batch_first`` module); any real dtype and strides.

        Returns:
            The module's outputs for those steps, in the layout of ``x``:
            ``(B, H_out)``, ``(H_out,)`` or ``(T, B, H_out)`` (``(B, T, H_out)``).

        Raises:
            ValueError: ``x`` has the wrong shape. TypeError: ``x`` is not real numbers.
        """
        return self._core.step(x)

    @property
    def state(self):
        """Copies of the state: ``h`` ``(num_layers, B, H_out)``; LSTM: ``(h, c)``."""
        h, c = self._core.state()
        return (h, c) if self._lstm else h

    @property
    def steps(self) -> np.ndarray:
        """A copy of the number of steps each row has taken since its reset, ``(B,)``."""
        return self._core.steps()

    @property
    def batch_size(self) -> int:
        """The number of rows B."""
        return self._batch

    @property
    def module(self) -> Any:
        """The module this stream steps."""
        return self._module

    def reset(self, rows: Any = None) -> None:
        """Zeroes the state and the step count of all rows, or of some.

        Args:
            rows: None for every row, a row index, or a sequence of row indices in
                ``0..B-1``.

        Raises:
            IndexError: a row out of range. TypeError: rows that are not integers.
        """
        if rows is None:
            self._core.reset(None)
            return
        arr = np.asarray(rows)
        if arr.dtype.kind not in "iu" or arr.ndim > 1:
            raise TypeError(f"rows must be None, an int or a sequence of ints, got {rows!r}")
        self._core.reset(np.atleast_1d(arr).astype(np.int64))

    def __repr__(self) -> str:
        return f"<rnncore.Stream of {self._module!r}, {self._batch} row(s)>"


def check_streamable(module: Any, what: str) -> None:
    """Raises ValueError unless ``module`` can be stepped: one forward direction, eval mode
    (for ``stream()`` and ``StreamBatcher``, named by ``what``)."""
    o = module.options
    if o.bidirectional:
        raise ValueError(
            f"{what} needs a unidirectional module: a bidirectional one reads the whole "
            f"sequence before its first output"
        )
    if o.reverse:
        raise ValueError(
            f"{what} needs a forward module: a reverse=True one starts from each sequence's "
            f"end (streams step forward, unidirectional modules)"
        )
    if module.training:
        raise ValueError(f"{what} needs eval mode (call .eval() first): a stream infers")


def new_stream(module: Any, batch_size: Any, hx: Any) -> Stream:
    """``module.stream(batch_size, hx)``: checks the module and the arguments."""
    check_streamable(module, "stream()")
    o = module.options
    batch = v.check_int("batch_size", batch_size, 1)
    _limits.require_memory(
        batch * o.num_layers * (o.out_size + o.hidden_size) * o.np_dtype.itemsize * 3,
        lambda: f"a stream of {batch} rows of {module!r}",
    )
    core_class = _core.StreamF64 if o.np_dtype == np.float64 else _core.StreamF32
    core = core_class(module._model, batch, o.batch_first)
    if hx is not None:
        h0, c0 = module._split_hx(hx)
        unbatched = batch == 1 and np.ndim(h0) == 2
        h0 = module._state("h_0", h0, batch, o.out_size, unbatched)
        c0 = module._state("c_0", c0, batch, o.hidden_size, unbatched)
        core.set_state(h0, c0)
    return Stream(module, core)
