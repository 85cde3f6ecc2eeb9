"""Copies and pickles of every module and optimizer.

``pickle``, ``copy.deepcopy`` and ``copy.copy`` must give an object of the same class,
options, parameters, buffers (running statistics), mode, gradients and mask-generator
state, sharing no memory with the original. Modules are trained first (``forward_train`` +
``backward``), so that running statistics, gradients and the generator are not at their
initial values. Everything is compared bit for bit: a copy computes exactly what the
original computes.
"""

from __future__ import annotations

import concurrent.futures
import copy
import importlib.util
import multiprocessing
import pickle

import numpy as np
import pytest

import rnncore as rc
import rnncore._module as rc_module
import rnncore.optim as rc_optim

# --------------------------------------------------------------------------- helpers
HOWS = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
}
CLASSES = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}
NORMS = (None, "layer", "batch", "batch_input")
OPTIONS = {
    "plain": {},
    "bidirectional": {"bidirectional": True},
    "two_layers": {"num_layers": 2},
    "proj_size": {"proj_size": 3},
    "reset_before": {"reset_after": False},
    "dropout": {"num_layers": 2, "dropout": 0.3},
    "zoneout": {"zoneout": 0.25},
    "input_dropout": {"input_dropout": 0.3},
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "float64": {"dtype": "float64"},
    "batch_first": {"batch_first": True, "zoneout": 0.1},
}


def _cases():
    for cell in CLASSES:
        for norm in NORMS:
            for name in OPTIONS:
                if name == "proj_size" and cell != "lstm":
                    continue
                if name == "reset_before" and (cell != "gru" or norm is not None):
                    continue
                yield pytest.param(cell, norm, name, id=f"{cell}-{norm}-{name}")


def same_bits(a, b) -> bool:
    """Whether two arrays have the same dtype, shape and bytes."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def flat(result) -> list:
    """The arrays of a call's result (``(out, h)``, ``(out, (h, c))`` or an array)."""
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in flat(part)]
    return [result]


def assert_same_result(a, b, what):
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb), what
    for i, (x, y) in enumerate(zip(fa, fb)):
        assert same_bits(x, y), f"{what}: array {i} differs"


def snapshot(m) -> dict:
    """Copies of everything a module's state holds: state_dict and grads."""
    out = {f"state/{k}": a for k, a in m.state_dict().items()}
    out.update({f"grad/{k}": g.copy() for k, g in m.grads.items()})
    return out


def assert_same_snapshot(a: dict, b: dict, what: str):
    assert list(a) == list(b), what
    for k in a:
        assert same_bits(a[k], b[k]), f"{what}: {k} differs"


def assert_no_shared_memory(m, c):
    for (k, p), q in zip(m.parameters().items(), c.parameters().values()):
        assert not np.shares_memory(p, q), f"parameter {k} is shared"
    for (k, g), h in zip(m.grads.items(), c.grads.values()):
        assert not np.shares_memory(g, h), f"gradient {k} is shared"


def train_module(m, x, calls=2):
    """Seedless training calls with backward (running stats, grads and generator move)."""
    for _ in range(calls):
        out, _, tape = m.forward_train(x)
        m.backward(tape, np.cos(out))
    return m


def trained_recurrent(cell, norm, option):
    kw = dict(OPTIONS[option])
    m = CLASSES[cell](3, 5, norm=norm, seed=7, **kw)
    x = np.random.default_rng(1).standard_normal((4, 3, 3))
    return train_module(m, x), x


def check_round_trip(m, c, x):
    """The whole contract for a trained recurrent module ``m`` and its copy ``c``."""
    assert type(c) is type(m) and c is not m
    assert c.options == m.options and c.training is m.training is True
    assert repr(c) == repr(m)
    assert_same_snapshot(snapshot(c), snapshot(m), "copy")
    assert_no_shared_memory(m, c)
    # the same seeded call, then the same seedless one (the generator state came along)
    assert_same_result(c(x, seed=5), m(x, seed=5), "training call with seed")
    assert_same_result(c(x), m(x), "next seedless training call")
    oc, _, tc = c.forward_train(x)
    om, _, tm = m.forward_train(x)
    assert same_bits(oc, om)
    assert_same_result(c.backward(tc, np.sin(oc)), m.backward(tm, np.sin(om)), "backward")
    with pytest.raises(ValueError, match="another module"):
        c.backward(tm, om)
    assert_same_snapshot(snapshot(c), snapshot(m), "after training the two")
    c.eval()
    m.eval()
    assert_same_result(c(x), m(x), "eval call")
    # independence: writes into the copy do not reach the original, and back
    before = snapshot(m)
    for p in c.parameters().values():
        p += 1
    for g in c.grads.values():
        g[...] = 7
    if c.buffers():
        c.load_state_dict({k: b + 1 for k, b in c.buffers().items()}, strict=False)
    assert_same_snapshot(snapshot(m), before, "original after writing into the copy")
    c.zero_grad()
    assert all(not g.any() for g in c.grads.values()), "zero_grad() on the copy"
    assert any(g.any() for g in m.grads.values())
    after = snapshot(c)
    for p in m.parameters().values():
        p *= 0.5
    m.zero_grad()
    assert_same_snapshot(snapshot(c), after, "copy after writing into the original")


# ------------------------------------------------------------------- recurrent modules
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("cell,norm,option", _cases())
def test_recurrent_round_trip(cell, norm, option, how):
    m, x = trained_recurrent(cell, norm, option)
    check_round_trip(m, HOWS[how](m), x)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol(protocol):
    m, x = trained_recurrent("lstm", "batch", "dropout")
    check_round_trip(m, pickle.loads(pickle.dumps(m, protocol=protocol)), x)


def test_eval_mode_and_options_survive():
    m = rc.GRU(
        3,
        4,
        norm="batch",
        bn_eps=1e-3,
        bn_momentum=0.3,
        bn_gamma=0.5,
        seed=1,
        update_bias=0.5,
        init="torch",
    ).eval()
    c = pickle.loads(pickle.dumps(m))
    assert c.training is False and c.options == m.options
    assert c.norm_options == {"ln_eps": 1e-5, "bn_eps": 1e-3, "bn_momentum": 0.3, "bn_gamma": 0.5}


def test_the_pickled_state_is_plain_python_and_numpy():
    m, _ = trained_recurrent("lstm", "batch", "zoneout")

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, val in obj.items():
                assert isinstance(k, str), path
                walk(val, f"{path}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, val in enumerate(obj):
                walk(val, f"{path}/{i}")
        else:
            ok = (type(None), bool, int, float, str, np.ndarray)
            assert isinstance(obj, ok), f"{path}: {type(obj).__name__}"

    state = m.__getstate__()
    assert state["version"] == rc_module.PICKLE_VERSION
    walk(state, "state")


def test_other_attributes_are_carried_and_deep_copied():
    m = rc.RNN(2, 3, seed=0)
    m.note = {"epochs": [1, 2]}
    for how, f in HOWS.items():
        c = f(m)
        assert c.note == m.note and c.note is not m.note, how
        assert c.note["epochs"] is not m.note["epochs"], how


def test_copy_of_a_copy_and_unseeded_module():
    m = rc.LSTM(3, 4, zoneout=0.2)  # generator seeded from the OS
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    c = copy.copy(copy.deepcopy(m))
    assert_same_result(c(x), m(x), "seedless training call")


# ------------------------------------------------------------------------ half copies
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("cell", CLASSES)
@pytest.mark.parametrize("norm", NORMS)
def test_half_weights_copy_round_trip(cell, norm, how):
    m, x = trained_recurrent(cell, norm, "bidirectional")
    half = m.eval().half_weights()
    c = HOWS[how](half)
    assert type(c) is type(half) and c.options == half.options and repr(c) == repr(half)
    assert c.training is False
    assert_same_snapshot(snapshot(c), snapshot(half), "half copy")
    assert all(not p.flags.writeable for p in c.parameters().values())
    with pytest.raises(RuntimeError, match="half_weights"):
        c.train()
    with pytest.raises(RuntimeError, match="half_weights"):
        c.forward_train(x)
    # batch 1 and single steps read the float16 weights, batch 3 the rounded float32 ones
    for xs in (x, x[:, :1], x[:1, :1], x[0]):
        assert_same_result(c(xs), half(xs), f"half copy, x {xs.shape}")
    assert_no_shared_memory(half, c)


# ----------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_round_trip(how, bias, dtype):
    m = rc.Linear(3, 4, bias=bias, dtype=dtype, seed=2)
    x = np.random.default_rng(3).standard_normal((2, 5, 3))
    for _ in range(2):
        y, tape = m.forward_train(x)
        m.backward(tape, np.cos(y))
    m.eval()
    c = HOWS[how](m)
    assert type(c) is rc.Linear and c.options == m.options and c.training is False
    assert_same_snapshot(snapshot(c), snapshot(m), "Linear copy")
    assert_no_shared_memory(m, c)
    assert same_bits(c(x), m(x))
    # the views of the copy are views of its own buffers: zero_grad clears them
    c.zero_grad()
    assert all(not g.any() for g in c.grads.values())
    assert any(g.any() for g in m.grads.values())
    y, tape = c.forward_train(x)
    c.backward(tape, np.ones_like(y))
    assert c.grads["weight"].any()
    before = snapshot(m)
    c.parameters()["weight"][...] = 0
    if bias:
        assert same_bits(c(x), np.broadcast_to(c.parameters()["bias"], y.shape))
    assert_same_snapshot(snapshot(m), before, "original after writing into the copy")


# ------------------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "sgd": (rc_optim.SGD, {"lr": 0.1}),
    "sgd_nesterov": (
        rc_optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    "adam": (rc_optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "rmsprop": (rc_optim.RMSProp, {"lr": 0.01, "momentum": 0.5}),
}
X = np.random.default_rng(4).standard_normal((4, 3, 3))
Y = np.random.default_rng(5).standard_normal((4, 3, 2))


def train_step(lstm, head, opt):
    opt.zero_grad()
    out, _, t1 = lstm.forward_train(X, seed=9)
    pred, t2 = head.forward_train(out)
    lstm.backward(t1, head.backward(t2, pred - Y))
    opt.step()


def trained_optimizer(name):
    cls, kw = OPTIMIZERS[name]
    lstm = rc.LSTM(3, 5, norm="batch", zoneout=0.2, seed=1)
    head = rc.Linear(5, 2, seed=2)
    opt = cls([lstm, head], **kw)
    for _ in range(3):
        train_step(lstm, head, opt)
    return lstm, head, opt


def assert_same_optimizer_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["type"] == sb["type"] and sa["hyper"] == sb["hyper"] and sa["step"] == sb["step"]
    assert list(sa["state"]) == list(sb["state"])
    for key, bufs in sa["state"].items():
        assert list(bufs) == list(sb["state"][key]), key
        for n, arr in bufs.items():
            assert same_bits(arr, sb["state"][key][n]), f"{key}/{n}"


def assert_no_shared_state(a, b):
    for key, bufs in a._state.items():
        for n, arr in bufs.items():
            assert not np.shares_memory(arr, b._state[key][n]), f"{key}/{n} is shared"


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_with_its_modules(name, how):
    lstm, head, opt = trained_optimizer(name)
    lstm2, head2, opt2 = HOWS[how]((lstm, head, opt))
    assert type(opt2) is type(opt) and opt2._modules[0] is lstm2 and opt2._modules[1] is head2
    assert_same_optimizer_state(opt2, opt)
    assert_no_shared_state(opt, opt2)
    before = snapshot(lstm), snapshot(head)
    train_step(lstm2, head2, opt2)  # drives the copies only
    assert_same_snapshot(snapshot(lstm), before[0], "original LSTM")
    assert_same_snapshot(snapshot(head), before[1], "original head")
    train_step(lstm, head, opt)
    assert_same_snapshot(snapshot(lstm2), snapshot(lstm), "LSTM after the next step")
    assert_same_snapshot(snapshot(head2), snapshot(head), "head after the next step")
    assert_same_optimizer_state(opt2, opt)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_an_optimizer_alone_carries_copies_of_its_modules(how):
    lstm, head, opt = trained_optimizer("adam")
    opt2 = HOWS[how](opt)
    assert opt2._modules[0] is not lstm and opt2._modules[1] is not head
    before = snapshot(lstm)
    opt2.step()
    opt2.zero_grad()
    assert_same_snapshot(snapshot(lstm), before, "original after the copy's step")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_shallow_copy_of_an_optimizer(name):
    lstm, head, opt = trained_optimizer(name)
    opt2 = copy.copy(opt)
    assert opt2._modules[0] is lstm and opt2._modules[1] is head  # the same modules
    assert_no_shared_state(opt, opt2)
    start = lstm.state_dict(), head.state_dict()
    opt.step()
    after = snapshot(lstm), snapshot(head)
    lstm.load_state_dict(start[0])
    head.load_state_dict(start[1])
    opt2.step()  # its state was not moved by opt's step
    assert_same_snapshot(snapshot(lstm), after[0], "LSTM")
    assert_same_snapshot(snapshot(head), after[1], "head")
    assert_same_optimizer_state(opt2, opt)


# ------------------------------------------------------------------ other processes
def _process_cases():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 3))
    cases = [
        trained_recurrent("lstm", "batch", "dropout")[0],
        trained_recurrent("gru", "layer", "bidirectional")[0],
        trained_recurrent("rnn", "batch_input", "float64")[0],
    ]
    cases.append(cases[0].eval().half_weights())
    for m in cases:
        m.eval()
    head = rc.Linear(3, 2, seed=3).eval()
    return [(m, x) for m in cases] + [(head, x)]


def test_spawned_processes():
    cases = _process_cases()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        calls = [pool.apply_async(m.__call__, (x,)) for m, x in cases]
        back = pool.apply_async(pickle.loads, (pickle.dumps(cases[0][0]),))
        for (m, x), call in zip(cases, calls):
            assert_same_result(call.get(timeout=60), m(x), repr(m))
        c = back.get(timeout=60)  # unpickled there, pickled back
        assert_same_snapshot(snapshot(c), snapshot(cases[0][0]), "round trip via a process")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        m, x = cases[1]
        assert_same_result(ex.submit(m.__call__, x).result(timeout=60), m(x), "executor")


@pytest.mark.skipif(importlib.util.find_spec("cloudpickle") is None, reason="no cloudpickle")
def test_cloudpickle():
    import cloudpickle  # noqa: PLC0415 - optional

    m, x = trained_recurrent("lstm", "layer", "zoneout")
    check_round_trip(m, cloudpickle.loads(cloudpickle.dumps(m)), x)


@pytest.mark.skipif(importlib.util.find_spec("joblib") is None, reason="no joblib")
def test_joblib(tmp_path):
    import joblib  # noqa: PLC0415 - optional

    m, x = trained_recurrent("gru", "batch", "two_layers")
    joblib.dump(m, tmp_path / "m.joblib")
    check_round_trip(m, joblib.load(tmp_path / "m.joblib"), x)


# ------------------------------------------------------------------ versions, tapes
@pytest.mark.parametrize(
    "make",
    [lambda: rc.LSTM(2, 3), lambda: rc.Linear(2, 3), lambda: rc.optim.SGD(rc.Linear(2, 3), lr=0.1)],
)
def test_a_newer_pickle_is_refused(make, monkeypatch):
    obj = make()
    with monkeypatch.context() as mp:
        mp.setattr(rc_module, "PICKLE_VERSION", rc_module.PICKLE_VERSION + 1)
        mp.setattr(rc_optim, "PICKLE_VERSION", rc_module.PICKLE_VERSION + 1)
        newer = pickle.dumps(obj)
    with pytest.raises(ValueError, match=r"format version 2, newer .*format version 1"):
        pickle.loads(newer)
    state = obj.__getstate__()
    state["version"] = "1"
    with pytest.raises(ValueError, match="no valid format version"):
        type(obj).__new__(type(obj)).__setstate__(state)
    pickle.loads(pickle.dumps(obj))  # the current version loads


def test_a_pickle_with_invalid_options_is_refused():
    state = rc.LSTM(2, 3).__getstate__()
    state["options"]["hidden_size"] = 0
    with pytest.raises(ValueError, match="hidden_size"):
        rc.LSTM.__new__(rc.LSTM).__setstate__(state)
    state = rc.LSTM(2, 3).__getstate__()
    with pytest.raises(ValueError, match="cell='gru'"):
        rc.GRU.__new__(rc.GRU).__setstate__(state)


@pytest.mark.parametrize("how", [*HOWS, "cloudpickle"])
def test_tapes_are_not_picklable(how):
    x = np.ones((2, 2, 3))
    _, _, tape = rc.LSTM(3, 4).forward_train(x)
    _, linear_tape = rc.Linear(3, 2).forward_train(x)
    if how == "cloudpickle":
        cloudpickle = pytest.importorskip("cloudpickle")
        f = cloudpickle.dumps
    else:
        f = HOWS[how]
    for t in (tape, linear_tape):
        with pytest.raises(TypeError, match="a tape cannot be pickled or copied: "):
            f(t)
