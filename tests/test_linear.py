"""rnncore.Linear: forward against NumPy and PyTorch, backward against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnncore as rc


def _reference(x, w, b):
    """y = x W^T + b written elementwise in float64 (no matmul), independent of Linear."""
    x = np.asarray(x, np.float64)
    y = np.einsum("...i,oi->...o", x, np.asarray(w, np.float64))
    return y if b is None else y + np.asarray(b, np.float64)


@pytest.mark.parametrize("lead", [(), (5,), (4, 3), (2, 3, 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_reference(lead, dtype, bias, rng):
    m = rc.Linear(6, 4, bias=bias, dtype=dtype, seed=0)
    x = rng.standard_normal(lead + (6,))
    y = m(x)
    p = m.parameters()
    assert y.shape == lead + (4,) and y.dtype == np.dtype(dtype)
    want = _reference(x.astype(dtype), p["weight"], p.get("bias"))
    # float64: a 6-term dot product, error ~ 6 eps |x||w|; float32: sums of 6 products of
    # O(1) values in float32 carry ~1e-6 error.
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    y2, tape = m.forward_train(x)
    np.testing.assert_array_equal(y2, y)  # same computation with and without a tape


def test_any_strides_and_integer_input_and_input_untouched(rng):
    m = rc.Linear(3, 2, dtype="float64", seed=1)
    base = rng.standard_normal((5, 6, 4))
    x = base[::2, :, 1:][:, ::2]  # (3, 3, 3) non-contiguous view
    copy = base.copy()
    y, tape = m.forward_train(x)
    # float64 3-term dot products: ~1e-16 relative; 1e-12 is loose
    np.testing.assert_allclose(y, _reference(x, *m.parameters().values()), rtol=1e-12)
    m.backward(tape, np.ones_like(y))
    np.testing.assert_array_equal(base, copy)
    xi = np.arange(6).reshape(2, 3)
    np.testing.assert_allclose(m(xi), _reference(xi, *m.parameters().values()), rtol=1e-12)


def test_init_like_torch_and_seeded():
    m = rc.Linear(400, 300, seed=3, dtype="float64")
    w, b = m.parameters()["weight"], m.parameters()["bias"]
    bound = 1 / math.sqrt(400)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # 120000 draws of U(-L, L): variance L^2/3 to within 2% (relative sd sqrt(0.8/n) ~ 0.26%)
    # and the extremes within 0.1% of L (probability of missing ~ e^-120).
    np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.02)
    assert np.abs(w).max() > bound * 0.999
    # 300 bias draws: all in the bound, and spread (sd L/sqrt(3) ~ 0.029 L each side)
    assert b.min() < -0.5 * bound and b.max() > 0.5 * bound
    m2 = rc.Linear(400, 300, seed=3, dtype="float64")
    np.testing.assert_array_equal(m2.parameters()["weight"], w)
    np.testing.assert_array_equal(m2.parameters()["bias"], b)
    assert not np.array_equal(rc.Linear(400, 300, seed=4).parameters()["weight"], w)
    torch = pytest.importorskip("torch")
    t = torch.nn.Linear(400, 300)  # torch's own bound, for comparison
    assert np.abs(t.weight.detach().numpy()).max() <= bound + 1e-7


def test_parameters_are_live_views_of_one_flat_buffer():
    m = rc.Linear(3, 2, seed=0, dtype="float64")
    p, g = m.parameters(), m.grads
    assert list(p) == ["weight", "bias"] and list(g) == ["weight", "bias"]
    assert p["weight"].shape == (2, 3) and p["bias"].shape == (2,)
    assert m.num_parameters() == 8
    # one buffer: bias follows the weight in memory
    w_addr = p["weight"].__array_interface__["data"][0]
    b_addr = p["bias"].__array_interface__["data"][0]
    assert b_addr == w_addr + 6 * 8 and p["weight"].base is p["bias"].base
    p["weight"][...] = 0.0
    p["bias"][...] = [1.0, 2.0]
    np.testing.assert_array_equal(m(np.ones(3)), [1.0, 2.0])
    nb = rc.Linear(3, 2, bias=False)
    assert list(nb.parameters()) == ["weight"] and nb.num_parameters() == 6


@pytest.mark.parametrize("lead", [(), (4,), (3, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_central_differences(lead, bias, rng):
    m = rc.Linear(4, 3, bias=bias, dtype="float64", seed=2)
    x = rng.standard_normal(lead + (4,))
    r = rng.standard_normal(lead + (3,))  # loss = sum(y * r): dloss/dy = r

    def loss():
        return float(np.sum(m(x) * r))

    y, tape = m.forward_train(x)
    gx = m.backward(tape, r)
    assert gx.shape == x.shape
    eps = 1e-6
    # The loss is linear in x and in each parameter, so central differences are exact up to
    # rounding: ~1e-16 / 1e-6 = 1e-10 relative. 1e-8 leaves room.
    num_x = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = loss()
        x[i] = old - eps
        down = loss()
        x[i] = old
        num_x[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(gx, num_x, rtol=1e-8, atol=1e-8)
    for name, p in m.parameters().items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = loss()
            p[i] = old - eps
            down = loss()
            p[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(m.grads[name], num, rtol=1e-8, atol=1e-8, err_msg=name)


def test_backward_adds_into_grads_and_zero_grad(rng):
    m = rc.Linear(3, 2, dtype="float64", seed=0)
    x, gy = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    _, t1 = m.forward_train(x)
    m.backward(t1, gy)
    once = {k: g.copy() for k, g in m.grads.items()}
    # independent: dW = gy^T x, db = sum over rows
    np.testing.assert_allclose(once["weight"], np.einsum("no,ni->oi", gy, x), rtol=1e-12)
    np.testing.assert_allclose(once["bias"], gy.sum(0), rtol=1e-12)
    _, t2 = m.forward_train(x)
    m.backward(t2, gy)
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-12)  # added, not overwritten
    m.zero_grad()
    assert all(not g.any() for g in m.grads.values())


def test_tape_keeps_its_own_copies(rng):
    m = rc.Linear(3, 2, dtype="float64", seed=0)
    x = rng.standard_normal((4, 3))
    gy = rng.standard_normal((4, 2))
    w0 = m.parameters()["weight"].copy()
    _, tape = m.forward_train(x)
    x_at_forward = x.copy()
    x[...] = 100.0  # the caller reuses its buffer
    m.parameters()["weight"][...] = -5.0  # an optimizer step in between
    gx = m.backward(tape, gy)
    np.testing.assert_allclose(gx, gy @ w0, rtol=1e-12)
    np.testing.assert_allclose(m.grads["weight"], gy.T @ x_at_forward, rtol=1e-12)


def test_tape_errors(rng):
    m, other = rc.Linear(3, 2), rc.Linear(3, 2)
    y, tape = m.forward_train(np.ones((4, 3)))
    assert not tape.consumed
    with pytest.raises(ValueError, match="another module"):
        other.backward(tape, np.ones_like(y))
    with pytest.raises(ValueError, match="grad_y"):
        m.backward(tape, np.ones((4, 3)))
    assert not tape.consumed  # a rejected call does not consume the tape
    m.backward(tape, np.ones_like(y))
    assert tape.consumed and "consumed" in repr(tape)
    with pytest.raises(ValueError, match="already been used"):
        m.backward(tape, np.ones_like(y))
    with pytest.raises(TypeError, match="tape"):
        m.backward(object(), np.ones_like(y))
    _, _, lstm_tape = rc.LSTM(3, 2).forward_train(np.ones((2, 1, 3)))
    with pytest.raises(TypeError, match="tape"):
        m.backward(lstm_tape, np.ones((2, 1, 2)))
    _, tape = m.forward_train(np.ones((4, 3)))
    with pytest.raises(TypeError, match="grad_y"):
        m.backward(tape, np.ones((4, 2), dtype=complex))


def test_input_and_constructor_errors():
    m = rc.Linear(3, 2)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        m(np.float64(1.0))
    with pytest.raises(ValueError, match="3 features"):
        m(np.ones((4, 2)))
    with pytest.raises(TypeError, match="x"):
        m(np.ones(3, dtype=complex))
    with pytest.raises(TypeError, match="x"):
        m.forward_train("abc")
    with pytest.raises(ValueError, match="in_features"):
        rc.Linear(0, 2)
    with pytest.raises(TypeError, match="out_features"):
        rc.Linear(2, 2.0)
    with pytest.raises(TypeError, match="bias"):
        rc.Linear(2, 2, bias=1)
    with pytest.raises(ValueError, match="dtype"):
        rc.Linear(2, 2, dtype="float16")
    with pytest.raises(ValueError, match="seed"):
        rc.Linear(2, 2, seed=-1)


def test_state_dict_round_trip_and_errors():
    m = rc.Linear(3, 2, seed=0)
    sd = m.state_dict()
    sd["weight"][...] = 9.0  # a copy: the module is unchanged
    assert not np.any(m.parameters()["weight"] == 9.0)
    m2 = rc.Linear(3, 2, seed=1)
    m2.load_state_dict(sd)
    np.testing.assert_array_equal(m2.parameters()["weight"], 9.0)
    np.testing.assert_array_equal(m2.parameters()["bias"], sd["bias"])
    with pytest.raises(KeyError, match="missing keys \\['bias'\\]"):
        m2.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(KeyError, match="unexpected keys \\['extra'\\]"):
        m2.load_state_dict({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="weight: expected \\(2, 3\\), got \\(3, 2\\)"):
        m2.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
    np.testing.assert_array_equal(m2.parameters()["weight"], 9.0)  # nothing written
    with pytest.raises(TypeError, match="mapping"):
        m2.load_state_dict([("weight", np.zeros((2, 3)))])
    m2.load_state_dict({"bias": [5.0, 6.0], "other": 1}, strict=False)
    np.testing.assert_array_equal(m2.parameters()["bias"], [5.0, 6.0])
    np.testing.assert_array_equal(m2.parameters()["weight"], 9.0)


def test_modes_and_repr():
    m = rc.Linear(3, 2, bias=False, dtype="float64")
    assert m.training
    assert m.eval() is m and not m.training
    assert m.train() is m and m.training
    with pytest.raises(TypeError, match="mode"):
        m.train(1)
    assert repr(m) == "rnncore.Linear(3, 2, bias=False, dtype=float64)"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_parity_forward_backward(dtype, bias, rng):
    torch = pytest.importorskip("torch")
    tdt = torch.float64 if dtype == "float64" else torch.float32
    t = torch.nn.Linear(5, 3, bias=bias).to(tdt).eval()
    m = rc.Linear.from_torch(t)
    assert m.dtype == np.dtype(dtype) and m.bias == bias and not m.training
    x = rng.standard_normal((4, 2, 5)).astype(dtype)
    gy = rng.standard_normal((4, 2, 3)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = t(xt)
    yt.backward(torch.tensor(gy))
    y, tape = m.forward_train(x)
    gx = m.backward(tape, gy)
    # float64: same sums in possibly different order, ~1e-15; float32: ~1e-6 on O(1) values
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m.grads["weight"], t.weight.grad.numpy(), rtol=tol, atol=tol)
    if bias:
        np.testing.assert_allclose(m.grads["bias"], t.bias.grad.numpy(), rtol=tol, atol=tol)
    # load_state_dict takes tensors directly
    m2 = rc.Linear(5, 3, bias=bias, dtype=dtype)
    m2.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(m2.parameters()["weight"], t.weight.detach().numpy())
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        rc.Linear.from_torch(torch.nn.LSTM(2, 3))


# Sizes at which the core's dense layer packs its operands and splits rows and columns over
# threads (more rows than one chunk of 256, several panels of outputs).
BIG = dict(rows=(3, 211), in_features=70, out_features=45)


def _big_case(rng, dtype):
    m = rc.Linear(BIG["in_features"], BIG["out_features"], dtype=dtype, seed=3)
    m.parameters()["bias"][...] = rng.standard_normal(BIG["out_features"])
    x = rng.standard_normal(BIG["rows"] + (BIG["in_features"],)).astype(dtype)
    gy = rng.standard_normal(BIG["rows"] + (BIG["out_features"],)).astype(dtype)
    return m, x, gy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_forward_and_backward_match_float64_algebra(dtype, rng):
    """Forward and every gradient at sizes split over threads, against float64 einsum: dW =
    gy^T x, db = sum of gy, dx = gy W. Tolerances: float64 sums of <= 633 products of O(1)
    values, error ~ 633 * 1.1e-16 * |terms| ~ 1e-13 relative to sqrt(633) * O(1) sums: 1e-11
    relative to the largest value; float32 the same with 6e-8: 3e-5."""
    m, x, gy = _big_case(rng, dtype)
    tol = 1e-11 if dtype == "float64" else 3e-5
    p = {k: np.asarray(v, np.float64) for k, v in m.parameters().items()}
    before = rc.get_num_threads()
    rc.set_num_threads(2)
    try:
        y, tape = m.forward_train(x)
        gx = m.backward(tape, gy)
    finally:
        rc.set_num_threads(before)
    x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
    want = {
        "y": np.einsum("abi,oi->abo", x64, p["weight"]) + p["bias"],
        "gx": np.einsum("abo,oi->abi", gy64, p["weight"]),
        "weight": np.einsum("abo,abi->oi", gy64, x64),
        "bias": gy64.sum(axis=(0, 1)),
    }
    got = {"y": y, "gx": gx, **m.grads}
    for name, w in want.items():
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(got[name], w, rtol=0, atol=tol * scale, err_msg=name)


def test_large_results_do_not_depend_on_the_thread_count(rng):
    """Outputs, dx, dW and db bitwise identical for 1, 2 and 3 threads."""
    m, x, gy = _big_case(rng, "float32")
    before = rc.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            rc.set_num_threads(threads)
            m.zero_grad()
            y, tape = m.forward_train(x)
            gx = m.backward(tape, gy)
            results.append([y, gx, *(g.copy() for g in m.grads.values())])
    finally:
        rc.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_zero_rows(rng):
    m = rc.Linear(4, 3, seed=0)
    y, tape = m.forward_train(np.zeros((0, 4)))
    assert y.shape == (0, 3)
    gx = m.backward(tape, np.zeros((0, 3)))
    assert gx.shape == (0, 4)
    assert not np.any(m.grads["weight"]) and not np.any(m.grads["bias"])
