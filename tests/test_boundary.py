"""The binding boundary: the core's calls take arrays of any real dtype and strides.

``rnncore._core`` converts ``x``, the states and the gradients to the model's dtype,
contiguous and aligned, in one copy (or reads them in place when they are all that
already), so the results equal those of the contiguous call of the model's dtype.
"""

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core


def _model(cell="lstm", dtype="float32"):
    cls = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}[cell]
    return cls(5, 7, num_layers=2, bidirectional=True, dtype=dtype, seed=3)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_any_strides_and_dtype_equal_contiguous_call(cell, dtype):
    m = _model(cell, dtype)
    core = m._model
    rng = np.random.default_rng(0)
    x_bf = rng.integers(-3, 4, size=(4, 6, 5))  # (B, T, D) integers: exact in any float dtype
    x = np.ascontiguousarray(x_bf.transpose(1, 0, 2), dtype=dtype)
    h0 = np.ascontiguousarray(rng.integers(-1, 2, size=(4, 4, 7)), dtype=dtype)
    c0 = h0 * 0.5 if cell == "lstm" else None
    ref = core.forward(x, h0=h0, c0=c0, record=True, training=True)
    variants = [
        x_bf.astype(np.float64).transpose(1, 0, 2),  # a transposed float64 view
        x_bf.transpose(1, 0, 2),  # int64, non-contiguous
        x_bf.astype(np.int32).transpose(1, 0, 2).copy(),  # int32, contiguous
        x_bf.astype(np.float16).transpose(1, 0, 2),  # float16
        np.ascontiguousarray(x)[:, ::1, :],  # the model's dtype, contiguous
        np.repeat(x, 2, axis=2)[:, :, ::2],  # the model's dtype, strided
    ]
    h0_views = [h0.astype(np.float64)[:, :, ::-1][:, :, ::-1], h0.astype(np.int64)]
    for i, xv in enumerate(variants):
        h0v = h0_views[i % 2]
        c0v = None if c0 is None else np.asfortranarray(c0.astype(np.float64))
        x_before, h0_before = xv.copy(), h0v.copy()
        got = core.forward(xv, h0=h0v, c0=c0v, record=True, training=True)
        for a, b in zip(ref[:3], got[:3]):
            if a is None:
                assert b is None
            else:
                assert b.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(xv, x_before)  # the caller's arrays are never written
        np.testing.assert_array_equal(h0v, h0_before)
        # backward: gradients of any dtype and strides
        gout = np.ones(ref[0].shape[::-1], dtype=np.int8).transpose(2, 1, 0)
        gh = np.ones((4, 4, 7), dtype=bool)
        r_ref = core.backward(ref[3] if i == 0 else core.forward(x, h0=h0, c0=c0, record=True,
                                                                   training=True)[3],
                              grad_out=np.ones(ref[0].shape, dtype=dtype),
                              grad_h_n=np.ones((4, 4, 7), dtype=dtype))
        r_got = core.backward(got[3], grad_out=gout, grad_h_n=gh)
        for a, b in zip(r_ref, r_got):
            if a is not None:
                np.testing.assert_array_equal(a, b)


def test_contiguous_aligned_input_read_in_place_is_not_written():
    m = _model()
    x = np.random.default_rng(1).standard_normal((3, 2, 5)).astype(np.float32)
    keep = x.copy()
    m._model.forward(x, record=True, training=True)
    np.testing.assert_array_equal(x, keep)


def test_non_real_dtypes_are_type_errors():
    core = _model()._model
    with pytest.raises(TypeError, match="x"):
        core.forward(np.zeros((2, 1, 5), dtype=np.complex64))
    with pytest.raises(TypeError, match="x"):
        core.forward(np.zeros((2, 1, 5), dtype=object))
    with pytest.raises(TypeError, match="h_0"):
        core.forward(np.zeros((2, 1, 5)), h0=np.array([["a"]]))
    with pytest.raises(ValueError, match="x"):
        core.forward(np.zeros((2, 1, 4)))


def test_dense_any_strides_and_dtype():
    lin = rc.Linear(5, 3, dtype="float32", seed=0)
    w, b = lin.parameters()["weight"], lin.parameters()["bias"]
    x = np.random.default_rng(2).integers(-4, 5, size=(5, 8))  # (D, R): x.T is (R, D)
    ref = _core.dense_forward(np.ascontiguousarray(x.T, dtype=np.float32), w, b)
    np.testing.assert_array_equal(_core.dense_forward(x.T, w, b), ref)
    np.testing.assert_array_equal(_core.dense_forward(x.T.astype(np.float64), w, b), ref)
    gy = np.ones((3, 8), dtype=np.int16).T
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dw2, db2 = np.zeros_like(w), np.zeros_like(b)
    dx = _core.dense_backward(x.T, gy, w, dw, db, True)
    dx2 = _core.dense_backward(
        np.ascontiguousarray(x.T, dtype=np.float32), np.ones((8, 3), np.float32), w, dw2, db2, True
    )
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_array_equal(db, db2)


def test_size_limits_are_exported():
    assert _core.MAX_DIM == 2**31 - 1
    assert _core.MAX_PARAMETER_BYTES == 2**40
