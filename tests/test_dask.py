"""rnncore.dask.predict: a recurrent module over the batch chunks of a dask array.

The result must be bitwise the local eval-mode call (every cell, bidirectional, batch
norm after training-mode calls, batch-first, lengths as NumPy and as dask arrays, half
copies, files), whatever the chunks (one-sequence chunks included) and the scheduler;
nothing may run before ``compute``; the model is a snapshot taken by ``predict``; bad
arguments fail at once with clear errors; and on a cluster of process workers each worker
loads a model once, however many chunks it computes.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncore as rc

da = pytest.importorskip("dask.array")
import rnncore.dask as rcd  # noqa: E402 - after the skip: it imports dask

CLASSES = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}


def _trained(cell, *, input_size=5, hidden=6, batch_first=False, seed=0, **kw):
    """A module after two training-mode calls (running statistics moved), still training."""
    m = CLASSES[cell](input_size, hidden, batch_first=batch_first, seed=seed, **kw)
    x = np.random.default_rng(seed).standard_normal((7, 4, input_size))
    if batch_first:
        x = x.transpose(1, 0, 2)
    for _ in range(2):
        m(x)
    return m


def _data(model, steps=9, batch=23, seed=1):
    """x in the model's layout and lengths (one sequence of each length 1 and T)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, model.input_size)).astype(np.float32)
    if model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    lengths = rng.integers(1, steps + 1, batch)
    lengths[:2] = (1, steps)[:batch]
    return x, lengths


def _local(model, x, lengths=None):
    """The local eval-mode call, on a copy (the model's own mode is left alone)."""
    return copy.deepcopy(model).eval()(x, lengths=lengths)[0]


def _chunks(model, x, size):
    return (size, -1, -1) if model.batch_first else (-1, size, -1)


def _pythonpath() -> str:
    """PYTHONPATH for processes that import the rnncore this process imported (the source
    tree in development, site-packages once installed)."""
    here = str(Path(rc.__file__).resolve().parents[1])
    return os.pathsep.join(p for p in [here, os.environ.get("PYTHONPATH", "")] if p)


# --------------------------------------------------------------------------- equality
MODELS = {
    "lstm": lambda: _trained("lstm", num_layers=2),
    "gru": lambda: _trained("gru"),
    "rnn": lambda: _trained("rnn", nonlinearity="relu"),
    "lstm-bidirectional-proj": lambda: _trained("lstm", bidirectional=True, proj_size=3),
    "gru-batch-norm": lambda: _trained("gru", norm="batch", bidirectional=True),
    "lstm-batch-norm-batch-first": lambda: _trained("lstm", norm="batch", batch_first=True),
    "rnn-layer-norm-float64": lambda: _trained("rnn", norm="layer", dtype="float64"),
    "lstm-regularized": lambda: _trained("lstm", zoneout=0.3, recurrent_dropout=0.2),
    "gru-half": lambda: _trained("gru", norm="batch", batch_first=True).eval().half_weights(),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [1, 4, 10])
def test_equals_the_local_call(name, size):
    model = MODELS[name]()
    training = model.training
    x, lengths = _data(model)
    xd = da.from_array(x, chunks=_chunks(model, x, size))
    out = rcd.predict(model, xd)
    assert out.dtype == model.dtype and out.shape == _local(model, x).shape
    assert np.array_equal(out.compute(), _local(model, x))
    # lengths as NumPy, and as a dask array of other chunks (rechunked to x's)
    for lens in (lengths, da.from_array(lengths, chunks=7)):
        got = rcd.predict(model, xd, lengths=lens).compute()
        assert np.array_equal(got, _local(model, x, lengths))
    assert model.training == training  # predict does not change the model's mode


def test_short_sequences_and_small_batches():
    # The core sums in another order for calls of very few rows; predict pads small blocks
    # so that every row takes the local call's path, for any T, B and chunk size.
    lstm = _trained("lstm", hidden=16)
    for model in (lstm, lstm.eval().half_weights()):
        for steps in (1, 2, 3):
            for batch in (1, 2, 5, 12):
                x, lengths = _data(model, steps=steps, batch=batch)
                for size in (1, 2, 3):
                    xd = da.from_array(x, chunks=(-1, size, -1))
                    got = rcd.predict(model, xd, lengths=lengths).compute(scheduler="sync")
                    assert np.array_equal(got, _local(model, x, lengths)), (steps, batch, size)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _trained("gru", input_size=8, hidden=41, bidirectional=True, norm="layer",
                         dtype="float64", batch_first=True),
        lambda: _trained("lstm", input_size=17, hidden=61, num_layers=2, proj_size=2,
                         norm="layer").eval().half_weights(),
        lambda: _trained("rnn", input_size=3, hidden=37, norm="batch", bidirectional=True),
    ],
)  # fmt: skip
def test_irregular_chunks(make):
    # Rows keep their address modulo 64 bytes in every block (row t * B + b of the core's
    # time-major buffers, where Eigen's unaligned heads round differently): irregular
    # chunks of any size give the local call's bits.
    model = make()
    rng = np.random.default_rng(5)
    for steps, batch in [(10, 34), (5, 51), (3, 17)]:
        x, lengths = _data(model, steps=steps, batch=batch)
        cuts = np.sort(rng.choice(np.arange(1, batch), size=6, replace=False))
        chunks = tuple(np.diff([0, *cuts, batch]).tolist())
        xd = da.from_array(x, chunks=(chunks, -1, -1) if model.batch_first else (-1, chunks, -1))
        for lens in (None, lengths):
            got = rcd.predict(model, xd, lengths=lens).compute()
            assert np.array_equal(got, _local(model, x, lens)), (steps, batch, chunks)


@pytest.mark.parametrize("scheduler", ["threads", "synchronous", "processes"])
def test_every_local_scheduler(scheduler, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _pythonpath())  # for the "processes" pool's children
    model = _trained("lstm", norm="batch", bidirectional=True)
    x, lengths = _data(model, batch=30)
    xd = da.from_array(x, chunks=(-1, 4, -1))
    got = rcd.predict(model, xd, lengths=lengths).compute(scheduler=scheduler)
    assert np.array_equal(got, _local(model, x, lengths))


def test_chunks_along_time_and_features_are_merged():
    model = _trained("gru", bidirectional=True)
    x, _ = _data(model, steps=12, batch=20)
    xd = da.from_array(x, chunks=(5, 6, 2))
    out = rcd.predict(model, xd)
    assert out.chunks == ((12,), (6, 6, 6, 2), (12,))
    assert np.array_equal(out.compute(), _local(model, x))


def test_a_float64_input_gives_the_models_dtype():
    model = _trained("lstm")
    x, _ = _data(model)
    out = rcd.predict(model, da.from_array(x.astype(np.float64), chunks=(-1, 5, -1)))
    assert out.dtype == np.float32
    assert np.array_equal(out.compute(), _local(model, x.astype(np.float64)))


@pytest.mark.parametrize("half", [False, True])
def test_a_file(tmp_path, half):
    model = _trained("lstm", norm="batch", proj_size=2)
    if half:
        model = model.eval().half_weights()
    path = tmp_path / "m.safetensors"
    rc.save(model, path)
    x, lengths = _data(model)
    xd = da.from_array(x, chunks=(-1, 3, -1))
    for p in (path, str(path)):
        got = rcd.predict(p, xd, lengths=lengths).compute()
        assert np.array_equal(got, _local(model, x, lengths))


# ---------------------------------------------------------------- laziness, snapshot
def test_nothing_runs_before_compute_and_the_model_is_a_snapshot():
    model = _trained("gru", norm="batch")
    x, _ = _data(model)
    expected = _local(model, x)
    ran = []

    def record(block):
        ran.append(block.shape)
        return block

    xd = da.from_array(x, chunks=(-1, 5, -1)).map_blocks(record, meta=x[:0, :0, :0])
    loads = dict(rcd._loads)
    out = rcd.predict(model, xd)
    assert ran == [] and rcd._loads == loads  # lazy: no block read, no model loaded
    for p in model.parameters().values():  # changed after predict: not seen
        p[...] = 0
    model.eval()
    assert np.array_equal(out.compute(), expected)
    assert len(ran) == 5
    # one load for the whole graph (the default scheduler's threads share the process)
    token = [t for t in rcd._loads if t not in loads]
    assert len(token) == 1 and rcd._loads[token[0]] == 1


def test_the_model_is_one_key_of_the_graph():
    model = _trained("lstm", hidden=16)
    x, _ = _data(model, batch=40)
    out = rcd.predict(model, da.from_array(x, chunks=(-1, 4, -1)))
    graph = dict(out.__dask_graph__())
    model_keys = [k for k in graph if isinstance(k, str) and k.startswith("rnncore-model-")]
    assert len(model_keys) == 1
    blocks = [k for k in graph if isinstance(k, tuple) and k[0] == out.name]
    assert len(blocks) == 10
    payload = len(graph[model_keys[0]].value)
    for key in blocks:
        task = graph[key]
        assert model_keys[0] in task.dependencies
        # the bytes are not inside the task: only the key is
        assert len(pickle.dumps(task)) < payload


def test_a_changed_file_is_refused_when_computed(tmp_path):
    model = _trained("rnn")
    path = tmp_path / "m.safetensors"
    rc.save(model, path)
    x, _ = _data(model)
    out = rcd.predict(path, da.from_array(x, chunks=(-1, 5, -1)))
    rc.save(_trained("rnn", seed=1), path)
    os.utime(path, ns=(0, 12345))
    with pytest.raises(RuntimeError, match="changed after rnncore.dask.predict"):
        out.compute()


def test_import_rnncore_does_not_import_dask():
    code = (
        "import sys, rnncore\n"
        "assert 'dask' not in sys.modules\n"
        "f = rnncore.dask.predict\n"
        "assert 'dask' in sys.modules and rnncore.dask.__name__ == 'rnncore.dask'\n"
        "try:\n    rnncore.no_such_thing\nexcept AttributeError:\n    print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --------------------------------------------------------------------------- errors
def _module_error(model, x, lengths):
    with pytest.raises((TypeError, ValueError)) as info:
        model.eval()(x, lengths=lengths)
    return info.type, str(info.value)


def test_bad_x():
    model = _trained("lstm")
    x, _ = _data(model)
    with pytest.raises(TypeError, match=r"x must be a dask array, got ndarray.*from_array"):
        rcd.predict(model, x)
    with pytest.raises(ValueError, match=r"shape \(T, B, input_size\), got 2 dimensions"):
        rcd.predict(model, da.from_array(x[:, 0]))
    bf = _trained("lstm", batch_first=True)
    with pytest.raises(ValueError, match=r"shape \(B, T, input_size\), got 4 dimensions"):
        rcd.predict(bf, da.from_array(x[None]))
    with pytest.raises(ValueError, match=r"input_size = 5 features .*got 3"):
        rcd.predict(model, da.from_array(x[..., :3]))
    with pytest.raises(TypeError, match="floating dtype, got int64"):
        rcd.predict(model, da.from_array(x.astype(np.int64)))
    with pytest.raises(ValueError, match="at least one time step and one sequence"):
        rcd.predict(model, da.from_array(x[:, :0]))
    bt = da.from_array(x.transpose(1, 0, 2), chunks=(5, -1, -1))
    unknown = bt[bt[:, 0, 0] > -10].transpose(1, 0, 2)  # boolean indexing: unknown sizes
    with pytest.raises(ValueError, match="unknown chunk sizes.*compute_chunk_sizes"):
        rcd.predict(model, unknown)


def test_bad_lengths_match_the_modules_errors():
    model = _trained("gru")
    x, lengths = _data(model)
    xd = da.from_array(x, chunks=(-1, 5, -1))
    for bad in (lengths[:-1], lengths.astype(np.float64), lengths * 0, lengths + x.shape[0]):
        kind, message = _module_error(model, x, bad)
        with pytest.raises(kind) as info:
            rcd.predict(model, xd, lengths=bad)
        assert str(info.value) == message
    with pytest.raises(TypeError, match="lengths must have an integer dtype, got float64"):
        rcd.predict(model, xd, lengths=da.from_array(lengths.astype(np.float64)))
    with pytest.raises(ValueError, match=r"lengths must have shape \(23,\)"):
        rcd.predict(model, xd, lengths=da.from_array(lengths[:5]))
    # a dask array's values are checked by the module when the blocks run
    out = rcd.predict(model, xd, lengths=da.from_array(lengths * 0))
    with pytest.raises(ValueError, match=r"lengths must be in 1..T"):
        out.compute()


def test_bad_models(tmp_path):
    x = da.from_array(np.zeros((3, 4, 2), np.float32))
    for bad in (rc.Linear(2, 3), object(), None, b"m.safetensors", 3):
        with pytest.raises(TypeError, match="model_or_path must be an rnncore LSTM, GRU or RNN"):
            rcd.predict(bad, x)
    lstm, head = rc.LSTM(2, 3), rc.Linear(3, 2)
    rc.save({"encoder": lstm, "head": head}, tmp_path / "pair.safetensors")
    with pytest.raises(ValueError, match=r"mapping of modules with keys \['encoder', 'head'\]"):
        rcd.predict(tmp_path / "pair.safetensors", x)
    rc.save({"encoder": lstm}, tmp_path / "one.safetensors")
    with pytest.raises(ValueError, match=r"keys \['encoder'\]"):
        rcd.predict(tmp_path / "one.safetensors", x)
    rc.save(head, tmp_path / "head.safetensors")
    with pytest.raises(ValueError, match="holds a Linear"):
        rcd.predict(tmp_path / "head.safetensors", x)
    with pytest.raises(FileNotFoundError):
        rcd.predict(tmp_path / "missing.safetensors", x)
    (tmp_path / "junk.safetensors").write_bytes(b"not a model file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        rcd.predict(tmp_path / "junk.safetensors", x)
    rc.save(lstm, tmp_path / "lstm.safetensors")
    with pytest.raises(ValueError, match=r"input_size = 2 features"):
        rcd.predict(tmp_path / "lstm.safetensors", x[..., :1])


# --------------------------------------------------------------------------- cluster
def test_a_cluster_of_process_workers_loads_each_model_once_per_worker(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    # The workers are new processes: they must import the rnncore this test imported.
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    model = _trained("lstm", norm="batch", bidirectional=True, hidden=16)
    path = tmp_path / "m.safetensors"
    rc.save(model, path)
    x, lengths = _data(model, steps=20, batch=64)
    xd = da.from_array(x, chunks=(-1, 4, -1))  # 16 chunks
    expected = _local(model, x, lengths)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        for source in (model, path):
            out = rcd.predict(source, xd, lengths=lengths)
            assert np.array_equal(out.compute(), expected)
            assert np.array_equal(out.compute(), expected)  # again: the workers' cache
        loads = client.run(lambda: dict(__import__("rnncore.dask").dask._loads))
        files = client.run(lambda: __import__("rnncore").__file__)
    assert len(loads) == 2 and set(files.values()) == {rc.__file__}
    tokens = set()
    for per_worker in loads.values():
        assert all(n == 1 for n in per_worker.values()), loads
        tokens.update(per_worker)
    assert len(tokens) == 2  # the pickled module and the file
