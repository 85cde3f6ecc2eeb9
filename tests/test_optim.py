"""rnncore.optim: hand-computed updates, parity with torch.optim, state_dict round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnncore as rc
from rnncore.optim import SGD, Adam, RMSProp


def _scalar_module(p0=1.0, dtype="float64"):
    m = rc.Linear(1, 1, bias=False, dtype=dtype, seed=0)
    m.parameters()["weight"][...] = p0
    return m


def _run(opt, m, grads):
    """Steps with the given scalar gradients; returns the parameter after each step."""
    out = []
    for g in grads:
        m.grads["weight"][...] = g
        opt.step()
        out.append(float(m.parameters()["weight"][0, 0]))
    return out


# --------------------------------------------------------------------------- by hand
# p0 = 1 and the gradients listed; every expected value is worked out from the documented
# update rule. The arithmetic is float64 with a handful of roundings: rel 1e-12 is loose.


@pytest.mark.parametrize(
    "kwargs, want",
    [
        # p -= 0.1 * 0.5 each step
        ({"lr": 0.1}, [0.95, 0.90, 0.85]),
        # buf: 0.5, 0.95, 1.355; p -= 0.1 * buf
        ({"lr": 0.1, "momentum": 0.9}, [0.95, 0.855, 0.7195]),
        # buf as above; d = 0.5 + 0.9 buf: 0.95, 1.355, 1.7195
        ({"lr": 0.1, "momentum": 0.9, "nesterov": True}, [0.905, 0.7695, 0.59755]),
        # d = 0.5 + 0.1 p: 0.6, 0.594, 0.58806
        ({"lr": 0.1, "weight_decay": 0.1}, [0.94, 0.8806, 0.821794]),
    ],
)
def test_sgd_by_hand(kwargs, want):
    m = _scalar_module()
    got = _run(SGD(m, **kwargs), m, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_adam_by_hand():
    m = _scalar_module()
    got = _run(Adam(m, lr=0.1), m, [1.0, -1.0, 0.5])
    # t=1: m = 0.1, v = 0.001, m^ = 1, v^ = 1
    p1 = 1 - 0.1 * 1 / (1 + 1e-8)
    # t=2: m = 0.09 - 0.1 = -0.01, m^ = -0.01 / 0.19 = -1/19; v = 0.000999 + 0.001 =
    #      0.001999, v^ = 0.001999 / (1 - 0.998001) = 1
    p2 = p1 + 0.1 * (1 / 19) / (1 + 1e-8)
    # t=3: m = -0.009 + 0.05 = 0.041, m^ = 0.041 / (1 - 0.729); v = 0.999 * 0.001999 +
    #      0.00025 = 0.002247001, v^ = 0.002247001 / (1 - 0.999^3 = 0.002997001)
    p3 = p2 - 0.1 * (0.041 / 0.271) / (math.sqrt(0.002247001 / 0.002997001) + 1e-8)
    np.testing.assert_allclose(got, [p1, p2, p3], rtol=1e-12)
    np.testing.assert_allclose([p1, p2, p3], [0.900000001, 0.905263159, 0.887790606], rtol=1e-9)


def test_adam_weight_decay_is_l2_not_decoupled():
    m = _scalar_module(2.0)
    got = _run(Adam(m, lr=0.1, weight_decay=0.5), m, [0.0])
    # g = 0 + 0.5 * 2 = 1: first Adam step moves by lr (AdamW would give 2 - 0.1 - 0.1)
    np.testing.assert_allclose(got, [2.0 - 0.1 / (1 + 1e-8)], rtol=1e-12)


def test_rmsprop_by_hand():
    m = _scalar_module()
    got = _run(RMSProp(m, lr=0.01), m, [0.5, 0.5])
    a1 = math.sqrt(0.0025) + 1e-8  # s = 0.01 * 0.25
    a2 = math.sqrt(0.004975) + 1e-8  # s = 0.99 * 0.0025 + 0.0025
    p1 = 1 - 0.01 * 0.5 / a1
    np.testing.assert_allclose(got, [p1, p1 - 0.01 * 0.5 / a2], rtol=1e-12)
    m = _scalar_module()
    got = _run(RMSProp(m, lr=0.01, momentum=0.5), m, [0.5, 0.5])
    buf1 = 0.5 / a1
    buf2 = 0.5 * buf1 + 0.5 / a2
    q1 = 1 - 0.01 * buf1
    np.testing.assert_allclose(got, [q1, q1 - 0.01 * buf2], rtol=1e-12)
    np.testing.assert_allclose(got, [0.90000002, 0.77911192], rtol=1e-8)


# --------------------------------------------------------------------------- torch parity

CONFIGS = [
    (SGD, "SGD", {"lr": 0.05}),
    (SGD, "SGD", {"lr": 0.05, "momentum": 0.9}),
    (SGD, "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (SGD, "SGD", {"lr": 0.05, "weight_decay": 0.1}),
    (Adam, "Adam", {}),
    (Adam, "Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    (RMSProp, "RMSprop", {}),
    (RMSProp, "RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "momentum": 0.8}),
    (RMSProp, "RMSprop", {"lr": 1e-3, "weight_decay": 0.02}),
]


def _modules(dtype="float64", seed=0):
    return [
        rc.LSTM(3, 4, dtype=dtype, seed=seed),
        rc.Linear(4, 2, dtype=dtype, seed=seed + 1),
    ]


def _grad_stream(modules, seed):
    """A function filling the modules' grads for a step: noise plus a pull toward 0.3 p."""
    rng = np.random.default_rng(seed)

    def fill():
        for m in modules:
            params, grads = m.parameters(), m.grads
            for name, g in grads.items():
                g[...] = rng.standard_normal(g.shape) + 0.3 * params[name]

    return fill


def _flat_params(modules):
    return np.concatenate([p.ravel() for m in modules for p in m.parameters().values()])


@pytest.mark.parametrize("cls, torch_name, kwargs", CONFIGS)
def test_parity_with_torch_optim(cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    modules = _modules()
    pairs = [(p, g) for m in modules for p, g in zip(m.parameters().values(), m.grads.values())]
    tparams = [torch.nn.Parameter(torch.tensor(p.copy())) for p, _ in pairs]
    opt = cls(modules, **kwargs)
    topt = getattr(torch.optim, torch_name)(tparams, **kwargs)
    fill = _grad_stream(modules, seed=42)
    for step in range(20):
        if step == 10:  # a learning-rate schedule: both optimizers see the change
            opt.lr = opt.lr * 0.5
            for group in topt.param_groups:
                group["lr"] = group["lr"] * 0.5
        fill()
        for (_, g), tp in zip(pairs, tparams):
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
        # The same float64 operations up to PyTorch's fused forms (lerp, addcmul, addcdiv):
        # a few ulps per step; after 20 steps differences stay below 1e-13 on O(1) values.
        for (p, _), tp in zip(pairs, tparams):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-13)
    assert opt.step_count == 20


@pytest.mark.parametrize("cls, torch_name, kwargs", [CONFIGS[2], CONFIGS[5], CONFIGS[7]])
def test_float32_modules_stay_float32(cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    modules = _modules("float32")
    opt = cls(modules, **kwargs)
    pairs = [(p, g) for m in modules for p, g in zip(m.parameters().values(), m.grads.values())]
    tparams = [torch.nn.Parameter(torch.tensor(p.copy())) for p, _ in pairs]
    topt = getattr(torch.optim, torch_name)(tparams, **kwargs)
    fill = _grad_stream(modules, seed=1)
    for _ in range(5):
        fill()
        for (_, g), tp in zip(pairs, tparams):
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    for (p, _), tp in zip(pairs, tparams):
        assert p.dtype == np.float32
        # float32 arithmetic in both, different operation order: ~1e-7 relative per step
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    for state in opt.state_dict()["state"].values():
        assert all(a.dtype == np.float32 for a in state.values())


# --------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize("cls, _torch_name, kwargs", CONFIGS)
def test_state_dict_round_trip_continues_identically(cls, _torch_name, kwargs):
    modules = _modules()
    opt = cls(modules, **kwargs)
    fill = _grad_stream(modules, seed=7)
    for _ in range(5):
        fill()
        opt.step()
    snapshot = opt.state_dict()
    weights = [m.state_dict() for m in modules]
    grads_next = []
    for _ in range(5):
        fill()
        grads_next.append([g.copy() for m in modules for g in m.grads.values()])
        opt.step()
    want = _flat_params(modules)

    # A fresh set of modules and an optimizer built with other hyper-parameters.
    other = _modules(seed=100)
    for m, w in zip(other, weights):
        m.load_state_dict(w)
    opt2 = cls(other, lr=0.123)
    opt2.load_state_dict(snapshot)
    assert opt2.lr == opt.lr and opt2.step_count == 5
    for gs in grads_next:
        flat = [g for m in other for g in m.grads.values()]
        for g, src in zip(flat, gs):
            g[...] = src
        opt2.step()
    # the same operations on the same values: bit-for-bit equal
    np.testing.assert_array_equal(_flat_params(other), want)


def test_state_dict_is_a_copy_and_load_is_atomic():
    m = _scalar_module()
    opt = Adam(m, lr=0.1)
    _run(opt, m, [1.0])
    sd = opt.state_dict()
    assert sd["type"] == "Adam" and sd["step"] == 1
    assert sd["hyper"] == {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    assert set(sd["state"]) == {"0.weight"}
    np.testing.assert_allclose(sd["state"]["0.weight"]["exp_avg"], [[0.1]], rtol=1e-15)
    _run(opt, m, [1.0])
    np.testing.assert_allclose(sd["state"]["0.weight"]["exp_avg"], [[0.1]], rtol=1e-15)
    before = opt.state_dict()
    bad = {**sd, "state": {"0.weight": {"exp_avg": np.zeros((2, 2)), "exp_avg_sq": [[1.0]]}}}
    with pytest.raises(ValueError, match="expected \\(1, 1\\), got \\(2, 2\\)"):
        opt.load_state_dict(bad)
    with pytest.raises(KeyError, match="unknown parameters"):
        opt.load_state_dict({**sd, "state": {"1.weight": {}}})
    with pytest.raises(KeyError, match="unknown buffers"):
        opt.load_state_dict({**sd, "state": {"0.weight": {"momentum_buffer": [[1.0]]}}})
    with pytest.raises(ValueError, match="betas"):
        opt.load_state_dict({**sd, "hyper": {**sd["hyper"], "betas": (1.5, 0.9)}})
    with pytest.raises(KeyError, match="hyper"):
        opt.load_state_dict({**sd, "hyper": {"lr": 0.1}})
    with pytest.raises(KeyError, match="missing entries"):
        opt.load_state_dict({"type": "Adam"})
    with pytest.raises(TypeError, match="'SGD' snapshot"):
        opt.load_state_dict(SGD(m, lr=0.1).state_dict())
    with pytest.raises(TypeError, match="mapping"):
        opt.load_state_dict([1])
    after = opt.state_dict()  # nothing changed by the failed loads
    assert after["step"] == before["step"] and after["hyper"] == before["hyper"]
    np.testing.assert_array_equal(
        after["state"]["0.weight"]["exp_avg"], before["state"]["0.weight"]["exp_avg"]
    )


# --------------------------------------------------------------------------- behaviour


def test_step_reads_grads_without_changing_them_and_zero_grad():
    modules = _modules()
    opt = Adam(modules, weight_decay=0.1)
    _grad_stream(modules, seed=3)()
    grads = [g.copy() for m in modules for g in m.grads.values()]
    params = _flat_params(modules)
    opt.step()
    for g, before in zip([g for m in modules for g in m.grads.values()], grads):
        np.testing.assert_array_equal(g, before)
    assert not np.array_equal(_flat_params(modules), params)
    opt.zero_grad()
    assert all(not g.any() for m in modules for g in m.grads.values())


def test_single_module_and_tuple_accepted_and_lr_setter():
    m = _scalar_module()
    opt = SGD((m,), lr=0.1)
    opt.lr = 0.0
    _run(opt, m, [5.0])
    assert m.parameters()["weight"][0, 0] == 1.0  # lr 0: no change
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "0.1"
    assert "SGD(lr=0.0" in repr(opt)


def test_constructor_errors():
    m = _scalar_module()
    with pytest.raises(TypeError, match="params must be a module"):
        SGD(5, lr=0.1)
    with pytest.raises(TypeError, match="params must be a module"):
        SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="at least one module"):
        Adam([])
    with pytest.raises(ValueError, match="more than once"):
        Adam([m, m])
    with pytest.raises(TypeError, match=r"params\[1\]"):
        Adam([m, 3])
    with pytest.raises(ValueError, match="lr"):
        SGD(m, lr=-0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD(m, lr=float("nan"))
    with pytest.raises(ValueError, match="momentum"):
        SGD(m, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(m, lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="nesterov"):
        SGD(m, lr=0.1, momentum=0.9, nesterov=1)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        Adam(m, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adam(m, betas=(0.9, -0.1))
    with pytest.raises(TypeError, match="betas"):
        Adam(m, betas=0.9)
    with pytest.raises(ValueError, match="eps"):
        Adam(m, eps=-1e-8)
    with pytest.raises(ValueError, match="weight_decay"):
        Adam(m, weight_decay=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        RMSProp(m, alpha=1.5)
    with pytest.raises(ValueError, match="momentum"):
        RMSProp(m, momentum=-0.1)
