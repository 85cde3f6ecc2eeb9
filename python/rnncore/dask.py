"""Inference over dask arrays: ``rnncore.dask.predict``.

``predict`` maps a recurrent module over the batch chunks of a dask array. The model goes
into the task graph once, as one key that every block depends on (the pickled module, or
a file's path), and each worker process turns it into a module once and keeps it in a
small cache (``_cache``), whatever the number of chunks it computes. Dask is imported
here only: ``import rnncore`` does not import it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from collections import OrderedDict
from typing import Any

import dask
import dask.array as da
import numpy as np

from . import _files
from . import _validation as v
from ._recurrent import RecurrentModule

__all__ = ["predict"]

#: How many models a process keeps (the most recently used ones).
CACHE_SIZE = 4
#: A row's last bits can depend on where it sits in a call: the core's buffers start on
#: 64-byte boundaries, and Eigen peels the unaligned head of a row with scalar code that
#: rounds differently, so a row's address modulo 64 bytes matters (row t * B + b of the
#: time-major buffers); and calls of very few rows (one sequence, or at most 8 rows of
#: T * B) take other kernels. A block is therefore computed with its rows at their
#: position in the whole batch modulo _ALIGN_ROWS, in a call whose batch equals B modulo
#: _ALIGN_ROWS and is at least min(B, _ALIGN_ROWS) (so every row has the same address
#: modulo 64 bytes as in the local call, whatever the width), padded with copies of its
#: own rows: its outputs are bitwise the local call's.
_ALIGN_ROWS = 16

#: token -> module in eval mode, most recently used last; guarded by ``_lock``.
_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()
#: token -> how many times this process has unpickled or loaded that model (for tests and
#: diagnostics: a worker loads a model once however many chunks it computes).
_loads: dict[str, int] = {}


def predict(model_or_path: Any, x: Any, lengths: Any = None):
    """The output sequence of a recurrent module over a dask array, lazily.

    ``out = predict(model, x)`` is ``model.eval()(x)[0]`` computed block by block over the
    batch chunks of ``x``: nothing runs until ``out`` is computed, and the result equals
    the local call. ``predict`` is inference: the workers run the model in eval mode
    (running statistics, no dropout, zoneout's expectation), whatever mode ``model`` is
    in; ``model`` itself is not changed.

    The model reaches the workers once, not once per chunk: a module is pickled here,
    once, when ``predict`` is called, and goes into the graph as one key every block
    depends on (a snapshot: changing ``model`` afterwards does not change ``out``); a
    path goes in as the path, and each worker loads the file itself, so every worker must
    see it at the same path (shared storage), unchanged. Each worker process keeps the
    module it unpickled or loaded (the 4 most recently used models) and reuses it for
    every chunk and every later computation of the same model. Works with every dask
    scheduler: threads (the default), ``"synchronous"``, ``"processes"`` and a
    ``distributed`` cluster.

    Args:
        model_or_path: an rnncore ``LSTM``, ``GRU`` or ``RNN`` (a ``half_weights()`` copy
            too), or the path (``str`` or ``os.PathLike``) of a file ``rnncore.save``
            wrote with one such module.
        x: a dask array ``(T, B, input_size)``, or ``(B, T, input_size)`` for a
            ``batch_first`` model, of a floating dtype, chunked along the batch axis
            (chunks along time or features are merged into one).
        lengths: ``None``, an integer array-like ``(B,)`` with values in ``1..T``
            (checked here), or an integer dask array ``(B,)`` (rechunked to the batch
            chunks of ``x``; its values are checked when the blocks run).

    Returns:
        A dask array of the model's dtype, ``(T, B, D * H_out)`` (batch-first for a
        ``batch_first`` model), with the batch chunks of ``x`` and one chunk along time
        and features.

    Raises:
        TypeError: ``model_or_path`` is neither an rnncore recurrent module nor a path;
            ``x`` is not a dask array or not of a floating dtype; ``lengths`` is not an
            integer array.
        ValueError: ``x`` is not 3-D, has no step or sequence, unknown chunk sizes or the
            wrong feature count; ``lengths`` has the wrong shape or values; the file holds
            a mapping of modules, or a ``Linear``. What ``rnncore.load`` raises for a bad
            or missing file.
    """
    source, token, options = _source(model_or_path)
    x = _check_x(x, options)
    batch_axis = 0 if options.batch_first else 1
    steps, batch = x.shape[1 - batch_axis], x.shape[batch_axis]
    x = x.rechunk({1 - batch_axis: -1, 2: -1})
    batch_chunks = x.chunks[batch_axis]
    lengths = _check_lengths(lengths, batch, steps, batch_chunks, batch_axis)
    width = options.num_directions * options.out_size
    dtype = options.np_dtype
    return da.map_blocks(
        _predict_block,
        x,
        lengths,
        source,
        token,
        chunks=x.chunks[:2] + ((width,),),
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype),
        name=f"rnncore-predict-{dask.base.tokenize(token, x, lengths)}",
    )


# --------------------------------------------------------------------------- client
def _source(model_or_path: Any):
    """What goes into the graph for the model (one key for a module), its token (the key
    of the workers' cache) and its options."""
    if isinstance(model_or_path, RecurrentModule):
        payload = pickle.dumps(model_or_path, protocol=pickle.HIGHEST_PROTOCOL)
        token = "rnncore-model-" + hashlib.sha256(payload).hexdigest()
        source = dask.delayed(payload, name=token, traverse=False)
        return source, token, model_or_path.options
    if isinstance(model_or_path, (str, os.PathLike)) and not isinstance(model_or_path, bytes):
        path = os.path.abspath(os.fspath(model_or_path))
        entries = _files.module_entries(path)
        if len(entries) != 1 or entries[0][0] is not None:
            names = [name for name, _, _ in entries]
            raise ValueError(
                f"{path}: rnncore.dask.predict needs a file of one module, but it holds a "
                f"mapping of modules with keys {names}; save the one to run on its own"
            )
        _, class_name, options = entries[0]
        if class_name not in ("LSTM", "GRU", "RNN"):
            raise ValueError(
                f"{path}: holds a {class_name}; rnncore.dask.predict runs an LSTM, GRU or RNN"
            )
        stat = os.stat(path)
        source = (path, stat.st_mtime_ns, stat.st_size)
        return source, "rnncore-file-" + repr(source), options
    raise TypeError(
        "model_or_path must be an rnncore LSTM, GRU or RNN, or the path of a file "
        f"rnncore.save wrote, got {type(model_or_path).__name__}"
    )


def _check_x(x: Any, options: Any):
    if not isinstance(x, da.Array):
        raise TypeError(
            f"x must be a dask array, got {type(x).__name__}; wrap a NumPy array with "
            "dask.array.from_array(x, chunks=...), chunked along the batch axis"
        )
    layout = "(B, T, input_size)" if options.batch_first else "(T, B, input_size)"
    if x.ndim != 3:
        raise ValueError(f"x must have shape {layout}, got {x.ndim} dimensions")
    if any(np.isnan(n) for n in x.shape):
        raise ValueError(f"x has unknown chunk sizes {x.shape}; call x.compute_chunk_sizes() first")
    if x.dtype.kind != "f":
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if x.shape[2] != options.input_size:
        raise ValueError(
            f"x must have input_size = {options.input_size} features on its last axis "
            f"(the model's), got {x.shape[2]}"
        )
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have at least one time step and one sequence: {x.shape}")
    return x


def _check_lengths(lengths: Any, batch: int, steps: int, chunks: tuple, axis: int):
    """``lengths`` as a 3-D dask array (``B`` along ``axis``, 1 elsewhere) with the batch
    chunks of ``x``, which broadcasts against its blocks; or None."""
    if lengths is None:
        return None
    shape = (batch, 1, 1) if axis == 0 else (1, batch, 1)
    blocks = (chunks, (1,), (1,)) if axis == 0 else ((1,), chunks, (1,))
    if isinstance(lengths, da.Array):
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
        if lengths.shape != (batch,):
            raise ValueError(
                f"lengths must have shape ({batch},) (one per sequence), got {lengths.shape}"
            )
        return lengths.rechunk((chunks,)).reshape(shape).rechunk(blocks)
    arr = v.lengths_array(lengths, batch, steps)
    return da.from_array(arr.reshape(shape), chunks=blocks)


# --------------------------------------------------------------------------- workers
def _predict_block(
    x: np.ndarray, lengths: Any, source: Any, token: str, block_info: Any = None
) -> np.ndarray:
    """One block of ``predict``: the cached module of ``token`` over the block's rows.

    The rows are computed at their position in the whole batch modulo ``_ALIGN_ROWS``
    (``block_info`` says where the block starts), in a call of as many sequences as the
    whole batch modulo ``_ALIGN_ROWS`` and at least ``min(B, _ALIGN_ROWS)``, padded with
    copies of the block's first and last rows (rows are independent in eval mode; the
    copies are dropped).
    """
    model = _model(source, token)
    axis = 0 if model.batch_first else 1
    rows = x.shape[axis]
    if lengths is not None:
        lengths = lengths.reshape(rows)
    if rows == 0:  # an empty batch chunk (dask allows them; a module call does not)
        shape = list(x.shape)
        shape[2] = model.options.num_directions * model.options.out_size
        return np.empty(shape, model.dtype)
    where = block_info[None]
    batch = where["shape"][axis]
    front = where["array-location"][axis][0] % _ALIGN_ROWS
    total = front + rows + (batch - front - rows) % _ALIGN_ROWS  # = batch modulo 16
    if total < min(batch, _ALIGN_ROWS):
        total += _ALIGN_ROWS
    if (front, total) == (0, rows):
        return model(x, lengths=lengths)[0]
    take = np.clip(np.arange(total) - front, 0, rows - 1)
    x = np.take(x, take, axis=axis)
    lengths = None if lengths is None else np.take(lengths, take)
    out = model(x, lengths=lengths)[0]
    return np.take(out, np.arange(front, front + rows), axis=axis)


def _model(source: Any, token: str) -> RecurrentModule:
    """This process's module of ``token``, unpickled or loaded on first use, in eval mode.

    The lock is held while loading, so concurrent tasks of one process load a model once.
    """
    with _lock:
        model = _cache.get(token)
        if model is not None:
            _cache.move_to_end(token)
            return model
        model = _materialize(source)
        model.eval()
        _loads[token] = _loads.get(token, 0) + 1
        _cache[token] = model
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return model


def _materialize(source: Any) -> RecurrentModule:
    if isinstance(source, bytes):
        return pickle.loads(source)
    path, mtime_ns, size = source
    stat = os.stat(path)
    if (stat.st_mtime_ns, stat.st_size) != (mtime_ns, size):
        raise RuntimeError(
            f"{path} changed after rnncore.dask.predict() was called (or this worker sees "
            "another file at that path); call predict() again"
        )
    model = _files.load(path)
    if not isinstance(model, RecurrentModule):
        raise RuntimeError(f"{path} no longer holds one LSTM, GRU or RNN")
    return model
