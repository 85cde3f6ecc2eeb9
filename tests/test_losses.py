"""rnncore.losses: values by hand and against PyTorch, gradients by central differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnncore as rc
from rnncore.losses import mse_loss, softmax_cross_entropy


def _central_differences(f, x, eps=1e-6):
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        num[i] = (up - down) / (2 * eps)
    return num


# --------------------------------------------------------------------------- mse


def test_mse_by_hand():
    loss, grad = mse_loss(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0]))
    assert loss == pytest.approx(5.0 / 3.0, rel=1e-15)  # (1 + 0 + 4) / 3
    np.testing.assert_allclose(grad, [2 / 3, 0.0, -4 / 3], rtol=1e-15)  # 2 (p - t) / 3


def test_mse_mask_by_hand_and_padding_ignored():
    pred = np.array([[1.0, np.nan], [3.0, 4.0]])  # NaN in a padded position
    target = np.array([[0.0, 7.0], [1.0, 1.0]])
    mask = np.array([[1, 0], [1, 1]])
    loss, grad = mse_loss(pred, target, mask)
    assert loss == pytest.approx((1 + 4 + 9) / 3, rel=1e-15)
    np.testing.assert_allclose(grad, [[2 / 3, 0.0], [4 / 3, 2.0]], rtol=1e-15)


def test_lower_rank_mask_covers_leading_axes():
    # (T, B) flags per position for a (T, B) square array: mask (2,) selects ROW 0 here.
    pred = np.array([[1.0, 2.0], [10.0, 20.0]])
    loss, grad = mse_loss(pred, np.zeros((2, 2)), np.array([True, False]))
    assert loss == pytest.approx((1 + 4) / 2, rel=1e-15)
    np.testing.assert_allclose(grad, [[1.0, 2.0], [0.0, 0.0]], rtol=1e-15)


@pytest.mark.parametrize("mask_shape", [(5, 3), (5, 3, 1), (5, 3, 2), (1, 3, 1), (5,)])
def test_mse_mask_broadcast_matches_torch(mask_shape, rng):
    torch = pytest.importorskip("torch")
    pred = rng.standard_normal((5, 3, 2))
    target = rng.standard_normal((5, 3, 2))
    mask = rng.random(mask_shape) < 0.6
    mask.flat[0] = True
    # the elements selected, built independently: lower-rank masks cover the leading axes
    full = np.broadcast_to(mask.reshape(mask_shape + (1,) * (3 - mask.ndim)), pred.shape)
    pt = torch.tensor(pred, requires_grad=True)
    sel = torch.tensor(np.ascontiguousarray(full))
    ref = torch.nn.functional.mse_loss(pt[sel], torch.tensor(target)[sel])
    ref.backward()
    loss, grad = mse_loss(pred, target, mask)
    # float64 sums of <= 30 terms: agreement to ~1e-16 relative; 1e-12 is loose
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_mse_gradient_by_central_differences(rng):
    pred = rng.standard_normal((4, 3))
    target = rng.standard_normal((4, 3))
    mask = rng.random((4, 1)) < 0.7
    mask[0] = True
    _, grad = mse_loss(pred, target, mask)
    num = _central_differences(lambda: mse_loss(pred, target, mask)[0], pred)
    # quadratic loss: central differences are exact up to rounding (~1e-16 / 1e-6)
    np.testing.assert_allclose(grad, num, rtol=1e-8, atol=1e-9)


def test_mse_dtypes_and_inputs_untouched(rng):
    pred = rng.standard_normal((3, 4)).astype(np.float32)
    target = rng.integers(-2, 3, (3, 4))
    pred_copy, target_copy = pred.copy(), target.copy()
    loss, grad = mse_loss(pred, target)
    assert isinstance(loss, float) and grad.dtype == np.float32 and grad.shape == pred.shape
    want = np.mean((pred.astype(np.float64) - target) ** 2)
    assert loss == pytest.approx(want, rel=1e-12)  # computed from float32 values in float64
    np.testing.assert_array_equal(pred, pred_copy)
    np.testing.assert_array_equal(target, target_copy)


def test_mse_errors():
    p = np.zeros((2, 3))
    with pytest.raises(ValueError, match="target must have pred's shape"):
        mse_loss(p, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="target must have pred's shape"):
        mse_loss(p, np.zeros(3))  # broadcasting targets are a bug, not a convenience
    with pytest.raises(TypeError, match="pred must have a floating dtype"):
        mse_loss(np.zeros((2, 3), int), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="target"):
        mse_loss(p, np.zeros((2, 3), complex))
    with pytest.raises(ValueError, match="at least one element"):
        mse_loss(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="selects no element"):
        mse_loss(p, p, np.zeros((2, 1), bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        mse_loss(p, p, np.full((2, 3), 2))
    with pytest.raises(ValueError, match="does not broadcast"):
        mse_loss(p, p, np.ones((3,), bool))  # not trailing-aligned: ambiguous for squares
    with pytest.raises(ValueError, match="does not broadcast"):
        mse_loss(p, p, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        mse_loss(p, p, np.ones((1, 2, 3), bool))  # would enlarge pred's shape
    with pytest.raises(TypeError, match="mask"):
        mse_loss(p, p, np.ones((2, 3), complex))


# --------------------------------------------------------------------------- cross-entropy


def test_cross_entropy_by_hand():
    loss, grad = softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(math.log(2.0), rel=1e-15)
    np.testing.assert_allclose(grad, [[0.5, -0.5]], rtol=1e-15)
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    loss, grad = softmax_cross_entropy(z, np.array([2, 0]))
    s = math.exp(1) + math.exp(2) + math.exp(3)
    want = ((math.log(s) - 3.0) + math.log(3.0)) / 2
    assert loss == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(
        grad,
        [
            [math.exp(1) / s / 2, math.exp(2) / s / 2, (math.exp(3) / s - 1) / 2],
            [1 / 6 - 0.5, 1 / 6, 1 / 6],
        ],
        rtol=1e-14,
    )


@pytest.mark.parametrize("masked", [False, True])
def test_cross_entropy_matches_torch(masked, rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 4, 5)) * 3
    target = rng.integers(0, 5, (6, 4))
    mask = None
    if masked:
        mask = rng.random((6, 4)) < 0.6
        mask[0, 0] = True
        target[~mask] = -100  # padding: ignored where masked out
        logits[~mask] = np.nan
    lt = torch.tensor(logits, requires_grad=True)
    tt = torch.tensor(target)
    sel = torch.ones(6, 4, dtype=torch.bool) if mask is None else torch.tensor(mask)
    ref = torch.nn.functional.cross_entropy(lt[sel], tt[sel])
    ref.backward()
    loss, grad = softmax_cross_entropy(logits, target, mask)
    # float64 log-softmax of 5 classes summed over <= 24 positions: ~1e-15; 1e-12 is loose
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cross_entropy_gradient_by_central_differences(rng):
    logits = rng.standard_normal((3, 2, 4))
    target = rng.integers(0, 4, (3, 2))
    mask = np.array([[1, 1], [0, 1], [1, 0]])
    _, grad = softmax_cross_entropy(logits, target, mask)

    def f():
        return softmax_cross_entropy(logits, target, mask)[0]

    num = _central_differences(f, logits, eps=1e-5)
    # smooth loss with O(1) third derivatives: truncation error ~ eps^2 = 1e-10, rounding
    # ~1e-16 / 1e-5 = 1e-11; 1e-8 leaves room.
    np.testing.assert_allclose(grad, num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    z = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]], dtype=dtype)
    t = np.array([1, 0])
    loss, grad = softmax_cross_entropy(z, t)
    small, small_grad = softmax_cross_entropy(z - z.max(axis=1, keepdims=True), t)
    assert math.isfinite(loss) and grad.dtype == dtype
    # shift invariance; the float32 shift of 1000 leaves the differences exact (integers)
    assert loss == pytest.approx(small, rel=1e-6)
    np.testing.assert_allclose(grad, small_grad, rtol=1e-6, atol=1e-7)
    # by hand: log(1 + e + e^-1) - 1 ... for the first row: target is the max
    row0 = math.log(math.exp(0) + math.exp(1) + math.exp(-1)) - 1.0
    row1 = math.log(1 + math.exp(-2) + math.exp(-1))
    assert loss == pytest.approx((row0 + row1) / 2, rel=1e-6)  # float32: ~1e-7


def test_cross_entropy_dtype_and_inputs_untouched(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    target = np.array([0, 2, 1, 2], dtype=np.uint8)
    copy = logits.copy()
    loss, grad = softmax_cross_entropy(logits, target)
    assert grad.dtype == np.float32 and isinstance(loss, float)
    np.testing.assert_array_equal(logits, copy)
    # each row of the gradient sums to zero (softmax sums to 1, onehot too); float32 ~1e-7
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-7)


def test_cross_entropy_unbatched_single_position():
    loss, grad = softmax_cross_entropy(np.array([2.0, 0.0]), np.array(0))
    assert loss == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-15)
    assert grad.shape == (2,)


def test_cross_entropy_errors():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"0\.\.2, got 3"):
        softmax_cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"0\.\.2, got -1"):
        softmax_cross_entropy(z, np.array([-1, 0]))
    softmax_cross_entropy(z, np.array([-1, 0]), mask=np.array([False, True]))  # ignored
    with pytest.raises(TypeError, match="integer"):
        softmax_cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target must have shape logits.shape\[:-1\]"):
        softmax_cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="selects no element"):
        softmax_cross_entropy(z, np.array([0, 1]), mask=np.array([0, 0]))
    with pytest.raises(ValueError, match="does not broadcast"):
        softmax_cross_entropy(z, np.array([0, 1]), mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="C >= 1"):
        softmax_cross_entropy(np.zeros((2, 0)), np.array([0, 1]))
    with pytest.raises(ValueError, match="C >= 1"):
        softmax_cross_entropy(np.float64(1.0), np.array(0))
    with pytest.raises(ValueError, match="at least one position"):
        softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        softmax_cross_entropy(np.zeros((2, 3), int), np.array([0, 1]))


def test_exported_at_top_level():
    assert rc.mse_loss is mse_loss and rc.softmax_cross_entropy is softmax_cross_entropy
    assert rc.losses.mse_loss is mse_loss
