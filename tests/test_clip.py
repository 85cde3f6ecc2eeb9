"""rnncore.clip_grad_norm / clip_grad_value: known norms, PyTorch parity, input forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnncore as rc
from rnncore import clip_grad_norm, clip_grad_value


def test_three_four_five():
    a, b = np.array([3.0]), np.array([[4.0]])
    assert clip_grad_norm([a, b], 10.0) == 5.0  # sqrt(9 + 16) exactly
    assert a[0] == 3.0 and b[0, 0] == 4.0  # below max_norm: untouched
    assert clip_grad_norm([a, b], 1.0) == 5.0  # the norm BEFORE clipping
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose([a[0], b[0, 0]], [3 * coef, 4 * coef], rtol=1e-15)
    # the new norm is max_norm up to the 1e-6 guard: 5 / (5 + 1e-6)
    assert math.hypot(a[0], b[0, 0]) == pytest.approx(1.0, abs=3e-7)


def test_input_forms_dict_module_nested_and_duplicates():
    m = rc.Linear(2, 1, dtype="float64")
    m.grads["weight"][...] = [[3.0, 0.0]]
    m.grads["bias"][...] = [4.0]
    extra = {"x": np.array([0.0, 12.0])}
    # module + its own grads dict listed again: each array counts once (not sqrt(50 + 144))
    norm = clip_grad_norm([m, m.grads, (extra,)], 6.5)
    assert norm == 13.0  # sqrt(9 + 16 + 144)
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(m.grads["weight"], [[3 * coef, 0.0]], rtol=1e-15)
    np.testing.assert_allclose(m.grads["bias"], [4 * coef], rtol=1e-15)
    np.testing.assert_allclose(extra["x"], [0.0, 12 * coef], rtol=1e-15)
    single = np.array([[6.0, 8.0]])
    assert clip_grad_norm(single, 100.0) == 10.0
    assert clip_grad_norm({"a": single}, 100.0) == 10.0


def test_float32_norm_accumulated_in_float64(rng):
    g = rng.standard_normal((3, 1000)).astype(np.float32)
    want = float(np.linalg.norm(g.astype(np.float64)))
    # float64 accumulation of float32 values: rounding ~1e-16 relative per term, so 1e-12
    got = clip_grad_norm([g[0], g[1], g[2]], 1e9)
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_norm_clipping_matches_torch(max_norm, rng):
    torch = pytest.importorskip("torch")
    arrays = [rng.standard_normal(s) for s in [(4, 3), (7,), (2, 2, 2)]]
    params = [torch.nn.Parameter(torch.zeros(a.shape, dtype=torch.float64)) for a in arrays]
    for p, a in zip(params, arrays):
        p.grad = torch.tensor(a.copy())
    ref = torch.nn.utils.clip_grad_norm_(params, max_norm)
    got = clip_grad_norm(arrays, max_norm)
    # float64 sums of 23 squares in different orders: ~1e-16 relative; 1e-13 is loose
    assert got == pytest.approx(ref.item(), rel=1e-13)
    for p, a in zip(params, arrays):
        np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_norm_leaves_grads_untouched(bad):
    a = np.array([1.0, 2.0])
    b = np.array([bad, 3.0])
    got = clip_grad_norm([a, b], 1.0)
    assert math.isinf(got) if not np.isnan(bad) else math.isnan(got)
    np.testing.assert_array_equal(a, [1.0, 2.0])
    np.testing.assert_array_equal(b, [bad, 3.0])


def test_huge_and_tiny_finite_values_get_their_true_norm():
    a = np.array([3e200, 4e200])  # squares overflow float64
    b = np.array([[0.0]])
    # rescaled pass: a few roundings, ~1e-16 relative; 1e-14 is loose
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5e200, rel=1e-14)
    np.testing.assert_allclose(a, [0.6, 0.8], rtol=1e-14)
    tiny = np.array([3e-200, 4e-200])  # squares underflow to 0
    assert clip_grad_norm(tiny, 1.0) == pytest.approx(5e-200, rel=1e-14)
    np.testing.assert_array_equal(tiny, [3e-200, 4e-200])
    assert clip_grad_norm([np.zeros(3), np.zeros((0, 2))], 1.0) == 0.0


def test_clip_grad_value_by_hand_and_against_torch(rng):
    a = np.array([-3.0, 0.5, 2.0, np.nan])
    m = rc.Linear(2, 2, dtype="float64")
    m.grads["weight"][...] = [[-2.0, 0.1], [5.0, -0.2]]
    assert clip_grad_value([a, m], 1.0) is None
    np.testing.assert_array_equal(a[:3], [-1.0, 0.5, 1.0])
    assert np.isnan(a[3])  # NaN stays NaN
    np.testing.assert_array_equal(m.grads["weight"], [[-1.0, 0.1], [1.0, -0.2]])
    np.testing.assert_array_equal(m.grads["bias"], 0.0)
    torch = pytest.importorskip("torch")
    g = rng.standard_normal((5, 4)) * 3
    p = torch.nn.Parameter(torch.zeros(5, 4, dtype=torch.float64))
    p.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_([p], 1.5)
    clip_grad_value({"g": g}, 1.5)
    np.testing.assert_array_equal(g, p.grad.numpy())  # clamping is exact


@pytest.mark.parametrize("fn", [clip_grad_norm, clip_grad_value])
def test_errors(fn):
    with pytest.raises(TypeError, match="floating"):
        fn(np.array([1, 2]), 1.0)
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn([np.ones(2), ro], 1.0)
    with pytest.raises(TypeError, match=r"grads\[1\]"):
        fn([np.ones(2), "x"], 1.0)
    with pytest.raises(TypeError, match="grads"):
        fn(3.0, 1.0)
    name = "max_norm" if fn is clip_grad_norm else "clip"
    with pytest.raises(ValueError, match=name):
        fn(np.ones(2), -1.0)
    with pytest.raises(ValueError, match=name):
        fn(np.ones(2), float("inf"))
    with pytest.raises(TypeError, match=name):
        fn(np.ones(2), "1")
