"""Loss functions that return the loss and its gradient with respect to the prediction.

Both take an optional ``mask`` selecting the positions that count (e.g. the valid time
steps of padded sequences): the loss is the mean over the selected positions only, and
the gradient is exactly zero elsewhere, whatever values (even NaN) the prediction holds
there. A mask is a bool or 0/1 array that either has the masked array's rank with each
size equal or 1 (NumPy broadcasting, e.g. ``(T, B, 1)`` for ``(T, B, F)``), or whose shape
is a leading part of the masked array's shape (``(T, B)`` for ``(T, B, F)``: one flag per
position, spread over the trailing axes). Lower-rank masks are never aligned on the
trailing axes: for a square array that would silently mask the wrong axis.

The loss is accumulated in float64 and returned as a Python float; the gradient has the
prediction's dtype and shape, ready to pass to a module's ``backward``.

Example:
    >>> loss, grad = rc.losses.mse_loss(y, target, mask=steps_valid)  # y: (T, B, F)
    >>> grad_x = head.backward(tape, grad)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validation as v

__all__ = ["mse_loss", "softmax_cross_entropy"]


def _float_array(name: str, value: Any) -> np.ndarray:
    arr = v.real_array(name, value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must have a floating dtype, got {arr.dtype}")
    return arr


def _mask(mask: Any, shape: tuple[int, ...], against: str) -> np.ndarray | None:
    """``mask`` as a bool array of ``shape`` (broadcast, read-only), or None.

    Raises:
        TypeError: not a bool or real array. ValueError: values other than 0/1, a shape
        that does not broadcast to ``shape``, or nothing selected.
    """
    if mask is None:
        return None
    try:
        arr = v.to_numpy(mask)
    except Exception as e:  # noqa: BLE001 - any failure to convert is a type error here
        raise TypeError(f"mask must be a bool or 0/1 array: {e}") from e
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must be a bool or 0/1 array, got dtype {arr.dtype}")
    if arr.dtype.kind != "b":
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("mask must hold only 0 and 1 (or be a bool array)")
        arr = arr != 0
    shape = tuple(shape)
    if arr.ndim < len(shape) and arr.shape == shape[: arr.ndim]:
        arr = arr.reshape(arr.shape + (1,) * (len(shape) - arr.ndim))  # (T, B) -> (T, B, 1)
    ok = arr.ndim == len(shape) and all(m in (1, n) for m, n in zip(arr.shape, shape))
    if not ok:
        raise ValueError(
            f"mask of shape {arr.shape} does not broadcast to {against}'s shape {shape}: it "
            f"must have that rank with sizes equal or 1, or be a leading part of it "
            f"(e.g. (T, B) for (T, B, F))"
        )
    arr = np.broadcast_to(arr, shape)
    if not arr.any():
        raise ValueError("mask selects no element: the mean over nothing is undefined")
    return arr


def mse_loss(pred: Any, target: Any, mask: Any = None) -> tuple[float, np.ndarray]:
    """Mean squared error over the selected elements, and its gradient.

    ``loss = sum(mask * (pred - target)^2) / count``, ``count`` the number of selected
    elements (every element of ``pred`` when ``mask`` is None), and
    ``grad = 2 * (pred - target) / count`` where selected, 0 elsewhere.

    Args:
        pred: predictions, a floating array of any shape with at least one element.
        target: targets of the same shape (any real dtype).
        mask: optional bool or 0/1 array broadcastable to ``pred``'s shape (see the module
            docstring), e.g. ``(T, B)`` or ``(T, B, 1)`` for predictions ``(T, B, F)`` of
            padded sequences. The mean is over selected elements (positions times ``F``).

    Returns:
        ``(loss, grad)``: a float, and ``dloss/dpred`` with ``pred``'s shape and dtype.

    Raises:
        TypeError: ``pred`` not a floating array, ``target`` or ``mask`` not real arrays.
        ValueError: ``target``'s shape differs from ``pred``'s, ``pred`` is empty, or the
            mask does not broadcast, holds values other than 0/1 or selects nothing.
    """
    pred = _float_array("pred", pred)
    target = v.real_array("target", target)
    if target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {pred.shape}, got {target.shape}")
    if pred.size == 0:
        raise ValueError("pred must have at least one element")
    keep = _mask(mask, pred.shape, "pred")
    work = np.result_type(pred.dtype, target.dtype)
    diff = np.subtract(pred, target, dtype=work)
    if keep is None:
        count = diff.size
    else:
        count = int(np.count_nonzero(keep))
        diff = np.where(keep, diff, work.type(0))  # not a product: 0 * NaN padding is NaN
    loss = float(np.sum(np.square(diff), dtype=np.float64)) / count
    grad = np.multiply(diff, 2.0 / count, dtype=work).astype(pred.dtype, copy=False)
    return loss, grad


def softmax_cross_entropy(logits: Any, target: Any, mask: Any = None) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the selected positions, and its gradient.

    For each selected position ``p`` with class ``t = target[p]``:
    ``loss_p = logsumexp(logits[p]) - logits[p, t]``, computed after subtracting the row's
    maximum (no overflow); the loss is their mean and
    ``grad[p] = (softmax(logits[p]) - onehot(t)) / count``, 0 at positions not selected.
    Targets at positions the mask leaves out are ignored (any value, e.g. -100 padding).

    Args:
        logits: ``(..., C)`` floating array, ``C >= 1``.
        target: integer class indices of shape ``logits.shape[:-1]``, each in ``0..C-1``
            where selected.
        mask: optional bool or 0/1 array broadcastable to ``target``'s shape (see the
            module docstring), e.g. ``(T, B)`` for logits ``(T, B, C)`` of padded sequences.

    Returns:
        ``(loss, grad)``: a float, and ``dloss/dlogits`` with ``logits``' shape and dtype.

    Raises:
        TypeError: ``logits`` not a floating array, ``target`` not an integer array,
            ``mask`` not a bool or real array.
        ValueError: ``logits`` rank 0 or without classes, ``target``'s shape not
            ``logits.shape[:-1]``, no position, selected targets outside ``0..C-1``, or a
            mask that does not broadcast, holds values other than 0/1 or selects nothing.
    """
    logits = _float_array("logits", logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., C) with C >= 1, got {logits.shape}")
    try:
        target = v.to_numpy(target)
    except Exception as e:  # noqa: BLE001 - any failure to convert is a type error here
        raise TypeError(f"target must be an integer array of class indices: {e}") from e
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must be an integer array of class indices, got {target.dtype}")
    lead, classes = logits.shape[:-1], logits.shape[-1]
    if target.shape != lead:
        raise ValueError(f"target must have shape logits.shape[:-1] = {lead}, got {target.shape}")
    if target.size == 0:
        raise ValueError("logits must have at least one position")
    keep = _mask(mask, lead, "target")
    z = logits.reshape(-1, classes)
    t = target.reshape(-1)
    if keep is not None:  # only the selected rows: padding may hold anything
        rows = np.flatnonzero(keep.reshape(-1))
        z, t = z[rows], t[rows]
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise ValueError(
            f"target must hold class indices in 0..{classes - 1}, got {t[bad][0]} "
            f"({int(np.count_nonzero(bad))} out of range)"
        )
    count = t.size
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    picks = np.arange(count)
    per_row = np.log(total[:, 0]) - shifted[picks, t]
    loss = float(np.sum(per_row, dtype=np.float64)) / count
    g = e / total
    g[picks, t] -= 1
    g *= logits.dtype.type(1.0 / count)
    if keep is None:
        grad = g.reshape(logits.shape)
    else:
        grad = np.zeros(logits.shape, dtype=logits.dtype)
        grad.reshape(-1, classes)[rows] = g
    return loss, grad
