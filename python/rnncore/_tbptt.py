"""Truncated backpropagation through time: a long sequence in chunks."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _validation as v


def truncated_bptt(
    module,
    x,
    chunk_size: int,
    loss_fn: Callable[[np.ndarray, int, int], tuple[float, Any]],
    hx=None,
    *,
    after_chunk: Callable[[int, float], None] | None = None,
):
    """Runs ``module`` over a long sequence in chunks, backpropagating within each chunk only.

    For every chunk of ``chunk_size`` time steps (the last one may be shorter) this calls
    ``module.forward_train`` from the state the previous chunk ended in, asks ``loss_fn`` for
    the chunk's loss and its gradient with respect to the chunk's output, and calls
    ``module.backward``, which ADDS the chunk's parameter gradients into ``module.grads``.
    The state is carried forward as a constant: no gradient flows from one chunk into the one
    before it (Williams & Peng 1990). Without parameter updates between chunks, in eval mode
    and without batch normalization, the forward values are those of one call over the whole
    sequence up to rounding; only the gradient is truncated. (Training-mode dropout and
    zoneout draw their masks per chunk; batch norms take their statistics per chunk, see
    the notes.)

    Typical use, with an update after every chunk::

        opt = rnncore.optim.Adam([lstm, head], lr=1e-3)

        def loss_fn(out, start, stop):
            y, tape = head.forward_train(out)
            loss, grad_y = rnncore.mse_loss(y, target[start:stop])
            return loss, head.backward(tape, grad_y)

        def step(i, loss):
            opt.step()
            opt.zero_grad()

        losses, state = rnncore.truncated_bptt(lstm, x, 50, loss_fn, after_chunk=step)

    Args:
        module: an ``rnncore.RNN``, ``LSTM`` or ``GRU``.
        x: the whole input, in the module's layout (``(T, B, in)``, ``(B, T, in)`` with
            ``batch_first``, or unbatched ``(T, in)``).
        chunk_size: time steps per chunk (>= 1).
        loss_fn: ``loss_fn(out, start, stop) -> (loss, grad_out)`` for the chunk covering
            time steps ``start:stop``; ``out`` is the chunk's output (module layout) and
            ``grad_out`` must have its shape (or be None).
        hx: the initial state (as for calling the module), or None for zeros.
        after_chunk: optional ``after_chunk(index, loss)``, called after each chunk's backward
            (e.g. an optimizer step and ``zero_grad``). Without it the chunks' gradients
            accumulate over the whole sequence.

    Returns:
        ``(losses, h_n)``: the list of the chunks' losses and the final state (for the LSTM
        an ``(h_n, c_n)`` pair), ready to be passed as ``hx`` to the next call.

    Raises:
        TypeError: ``chunk_size`` is not an int, or a callback is not callable.
        ValueError: ``chunk_size < 1`` or ``x`` is not 2-D or 3-D.

    Notes:
        ``norm="batch"`` keeps statistics per time step of a call, so each chunk is
        normalized with the statistics of steps ``0 .. chunk_size - 1``; use
        ``norm="layer"`` (or keep chunks aligned with how the model will be used) when that
        matters. ``lengths`` are not supported here: pad and mask in ``loss_fn`` instead.
    """
    chunk_size = v.check_int("chunk_size", chunk_size, 1)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if after_chunk is not None and not callable(after_chunk):
        raise TypeError(f"after_chunk must be callable, got {type(after_chunk).__name__}")
    x = v.real_array("x", x)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be 2-D (unbatched) or 3-D, got {x.ndim} dimensions")
    time_axis = 1 if (x.ndim == 3 and module.batch_first) else 0
    steps = x.shape[time_axis]
    losses = []
    state = hx
    for index, start in enumerate(range(0, steps, chunk_size)):
        stop = min(start + chunk_size, steps)
        chunk = x[:, start:stop] if time_axis == 1 else x[start:stop]
        out, state, tape = module.forward_train(chunk, state)
        loss, grad_out = loss_fn(out, start, stop)
        module.backward(tape, grad_out)
        losses.append(float(loss))
        if after_chunk is not None:
            after_chunk(index, float(loss))
    return losses, state
