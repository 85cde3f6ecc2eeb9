"""rnncore.*.from_keras and rnncore.from_keras: Keras 3 recurrent layers as rnncore modules.

Keras runs on its torch backend here (``KERAS_BACKEND=torch``, set before Keras is first
imported unless the environment already chose one). Each layer gets random weights (also
random biases, which Keras initializes to zero or one), and its outputs and final states
are compared with the converted module's, with and without a right-padding mask (rnncore's
``lengths``), one- and bidirectional, with and without initial states.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnncore as rc

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
# Keras' torch backend converts tensors with np.array(x), which NumPy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

B, T, IN, H = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 4])
# name -> (rnncore class, Keras layer class name, Keras options)
KINDS = {
    "lstm": (rc.LSTM, "LSTM", {}),
    "gru": (rc.GRU, "GRU", {}),
    "gru_reset_before": (rc.GRU, "GRU", {"reset_after": False}),
    "rnn_tanh": (rc.RNN, "SimpleRNN", {}),
    "rnn_relu": (rc.RNN, "SimpleRNN", {"activation": "relu"}),
}


def randomize(layer, rng, scale=0.5):
    for w in layer.weights:
        w.assign(rng.uniform(-scale, scale, tuple(w.shape)).astype(w.dtype))


def numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def keras_layer(kind, bidirectional, rng, **options):
    _, name, extra = KINDS[kind]
    layer = getattr(keras.layers, name)(H, **extra, **options)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, T, IN))
    randomize(layer, rng)
    return layer


def split_states(kind, states, d):
    """Keras' returned states (per direction: h, or h and c) as rnncore's (D, B, H) stacks."""
    per = 2 if kind == "lstm" else 1
    h = np.stack([numpy(states[i * per]) for i in range(d)])
    c = np.stack([numpy(states[i * per + 1]) for i in range(d)]) if per == 2 else None
    return h, c


# Keras' torch backend and rnncore compute the same float32 equations in different orders:
# a few roundings (1.2e-7 relative) per step over 5 steps of values up to ~2 (relu RNN);
# measured at most 2.4e-7.
F32 = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "mask"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_layer_matches_keras(kind, bidirectional, masked):
    rng = np.random.default_rng(len(kind) + 2 * bidirectional + masked)
    layer = keras_layer(kind, bidirectional, rng, return_sequences=True, return_state=True)
    m = KINDS[kind][0].from_keras(layer)
    d = 2 if bidirectional else 1
    assert m.batch_first and m.bidirectional == bidirectional and not m.training
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    kwargs, lengths, hx = {}, None, None
    mask = np.ones((B, T), bool)
    if masked:
        mask = np.arange(T)[None, :] < LENGTHS[:, None]
        kwargs["mask"] = mask
        lengths = rc.lengths_from_mask(mask)
        assert np.array_equal(lengths, LENGTHS)
    if masked != bidirectional:  # initial states in half of the cases
        h0 = rng.standard_normal((d, B, H)).astype(np.float32)
        c0 = rng.standard_normal((d, B, H)).astype(np.float32)
        per_dir = [[h0[i], c0[i]] if kind == "lstm" else [h0[i]] for i in range(d)]
        kwargs["initial_state"] = [s for states in per_dir for s in states]
        hx = (h0, c0) if kind == "lstm" else h0
    result = layer(x, **kwargs)
    out, states = m(x, hx, lengths)
    h_n, c_n = states if kind == "lstm" else (states, None)
    want_h, want_c = split_states(kind, result[1:], d)
    np.testing.assert_allclose(out[mask], numpy(result[0])[mask], **F32)
    np.testing.assert_allclose(h_n, want_h, **F32)
    if c_n is not None:
        np.testing.assert_allclose(c_n, want_c, **F32)
    # past each length rnncore's outputs are 0 (Keras repeats the last output there, or
    # writes 0 inside a Bidirectional wrapper)
    assert not out[~mask].any()


@pytest.mark.parametrize("masked", [False, True], ids=["full", "mask"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_go_backwards_is_a_reverse_module(kind, masked):
    """Keras returns a go_backwards layer's outputs last step first; rnncore's reverse module
    keeps out in time order: Keras' output j is rnncore's at position T - 1 - j (with a
    right-padding mask, Keras skips the padding, which comes first in its order)."""
    rng = np.random.default_rng(11 + len(kind) + masked)
    layer = keras_layer(kind, False, rng, go_backwards=True, return_sequences=True,
                        return_state=True)  # fmt: skip
    m = KINDS[kind][0].from_keras(layer)
    assert m.reverse and not m.bidirectional
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    mask = np.arange(T)[None, :] < LENGTHS[:, None] if masked else np.ones((B, T), bool)
    result = layer(x, mask=mask) if masked else layer(x)
    out, states = m(x, lengths=rc.lengths_from_mask(mask) if masked else None)
    h_n, c_n = states if kind == "lstm" else (states, None)
    want_h, want_c = split_states(kind, result[1:], 1)
    np.testing.assert_allclose(out[mask], numpy(result[0])[:, ::-1][mask], **F32)
    np.testing.assert_allclose(h_n, want_h, **F32)
    if c_n is not None:
        np.testing.assert_allclose(c_n, want_c, **F32)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_return_sequences_false_is_the_last_state(bidirectional):
    rng = np.random.default_rng(5)
    layer = keras_layer("lstm", bidirectional, rng)  # return_sequences=False
    m = rc.LSTM.from_keras(layer)
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    want = numpy(layer(x, mask=mask))
    _, (h_n, _) = m(x, lengths=rc.lengths_from_mask(mask))
    # the output at each sequence's last valid step (forward) and at its first (reverse):
    # the final states of the directions, concatenated
    np.testing.assert_allclose(np.concatenate(list(h_n), axis=-1), want, **F32)


def test_dropout_maps_to_rnncore_regularizers():
    rng = np.random.default_rng(6)
    layer = keras_layer("gru", True, rng, dropout=0.25, recurrent_dropout=0.1,
                        return_sequences=True)  # fmt: skip
    m = rc.GRU.from_keras(layer)
    assert (m.input_dropout, m.recurrent_dropout, m.training) == (0.25, 0.1, False)
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    np.testing.assert_allclose(m(x)[0], numpy(layer(x)), **F32)  # inference: no dropout


def test_from_keras_model_walks_its_recurrent_layers():
    rng = np.random.default_rng(7)
    inp = keras.Input((T, IN))
    masked = keras.layers.Masking(0.0)(inp)
    first = keras.layers.LSTM(H, return_sequences=True, name="enc")
    second = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True,
                                                         reset_after=False), name="bi")  # fmt: skip
    hidden = second(first(masked))
    model = keras.Model(inp, keras.layers.Dense(2)(hidden))
    for layer in (first, second):
        randomize(layer, rng)
    outer = keras.Sequential([keras.Input((T, IN)), keras.layers.SimpleRNN(3, name="tail")])
    outer.layers[0].build((None, T, IN))
    modules = rc.from_keras(model)
    assert list(modules) == ["enc", "bi"]
    assert isinstance(modules["enc"], rc.LSTM) and isinstance(modules["bi"], rc.GRU)
    assert modules["bi"].bidirectional and not modules["bi"].reset_after
    # the modules chained with the mask's lengths compute the model up to its Dense head
    x = rng.standard_normal((B, T, IN)).astype(np.float32)
    x[np.arange(T)[None, :] >= LENGTHS[:, None]] = 0.0  # Masking's padding
    mask = numpy(model.layers[1].compute_mask(x))
    lengths = rc.lengths_from_mask(mask)
    y = x
    for module in modules.values():
        y = module(y, lengths=lengths)[0]
    want = numpy(keras.Model(inp, hidden)(x))
    np.testing.assert_allclose(y[mask], want[mask], **F32)
    # nested models' layers are named by their path; other layers are skipped
    nested = keras.Sequential([keras.Input((T, IN)), outer, keras.layers.Dense(2)])
    assert list(rc.from_keras(nested)) == [f"{outer.name}/tail"]
    assert list(rc.from_keras(first)) == ["enc"]


def test_gradients_match_keras_autograd():
    torch = pytest.importorskip("torch")
    if keras.backend.backend() != "torch":
        pytest.skip("needs Keras' torch backend")
    rng = np.random.default_rng(8)
    # A float64 layer (Keras' torch backend still rounds its matmuls to float32: its float64
    # GRU is 9e-8 from its own equations), so rnncore's side is exact and the difference is
    # Keras' float32 rounding: measured at most 2.2e-7 on gradients of magnitude up to 5.
    # A wrong gate order, transpose or bias mapping moves them by 1e-2 or more.
    layer = keras.layers.GRU(H, reset_after=False, return_sequences=True, return_state=True,
                             dtype="float64")  # fmt: skip
    layer.build((None, T, IN))
    randomize(layer, rng)
    m = rc.GRU.from_keras(layer)
    assert m.dtype == np.float64
    x = rng.standard_normal((B, T, IN))
    r_out, r_h = rng.standard_normal((B, T, H)), rng.standard_normal((B, H))
    xt = torch.tensor(x, requires_grad=True)
    out, h = layer(xt)
    loss = (out * torch.tensor(r_out)).sum() + (h * torch.tensor(r_h)).sum()
    loss.backward()
    m.zero_grad()
    _, _, tape = m.forward_train(x)
    grad_x, _ = m.backward(tape, r_out, r_h[None])
    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), **tol)
    perm = [1, 0, 2]  # rnncore r, z, n <-> Keras z, r, h (its own inverse)
    cell = layer.cell
    for variable, name in ((cell.kernel, "weight_ih_l0"), (cell.recurrent_kernel, "weight_hh_l0"),
                           (cell.bias, "bias_ih_l0")):  # fmt: skip
        grad = m.grads[name].reshape(3, H, -1)[perm].reshape(m.grads[name].shape).T
        np.testing.assert_allclose(grad, variable.value.grad.numpy(), err_msg=name, **tol)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before", "rnn_relu"])
def test_cells(kind):
    rng = np.random.default_rng(9)
    cls, name, extra = KINDS[kind]
    cell_cls = {rc.LSTM: rc.LSTMCell, rc.GRU: rc.GRUCell, rc.RNN: rc.RNNCell}[cls]
    kcell = getattr(keras.layers, f"{name}Cell")(H, **extra)
    kcell.build((None, IN))
    randomize(kcell, rng)
    cell = cell_cls.from_keras(kcell)
    x = rng.standard_normal((B, IN)).astype(np.float32)
    n_states = 2 if kind == "lstm" else 1
    states = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(n_states)]
    _, new = kcell(x, states)
    got = cell(x, tuple(states) if kind == "lstm" else states[0])
    got = got if kind == "lstm" else (got,)
    for g, w in zip(got, new):
        np.testing.assert_allclose(g, numpy(w), **F32)
    with pytest.raises(ValueError, match="dropout=0.2 cannot be represented"):
        kc = getattr(keras.layers, f"{name}Cell")(H, dropout=0.2, **extra)
        kc.build((None, IN))
        cell_cls.from_keras(kc)


def _built(layer):
    layer.build((None, T, IN))
    return layer


@pytest.mark.parametrize(
    "cls, make, match",
    [
        (rc.GRU, lambda: keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode="sum"),
         "merge_mode='sum'"),
        (rc.LSTM, lambda: keras.layers.LSTM(H, activation="relu"), "activation='relu'"),
        (rc.GRU, lambda: keras.layers.GRU(H, recurrent_activation="hard_sigmoid"),
         "recurrent_activation='hard_sigmoid'"),
        (rc.RNN, lambda: keras.layers.SimpleRNN(H, activation="sigmoid"), "activation='sigmoid'"),
        (rc.LSTM, lambda: keras.layers.Bidirectional(
            keras.layers.LSTM(H), backward_layer=keras.layers.LSTM(H, use_bias=False,
                                                                   go_backwards=True)),
         r"differ in \['bias'\]"),
    ],
)  # fmt: skip
def test_what_rnncore_cannot_represent_raises_naming_it(cls, make, match):
    with pytest.raises(ValueError, match=match):
        cls.from_keras(_built(make()))


def test_other_errors():
    with pytest.raises(ValueError, match="build it first"):
        rc.LSTM.from_keras(keras.layers.LSTM(H))
    with pytest.raises(TypeError, match="expects a keras.layers.LSTM"):
        rc.LSTM.from_keras(_built(keras.layers.GRU(H)))
    with pytest.raises(TypeError, match="expects a keras.layers.GRU"):
        rc.GRU.from_keras(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="expects a keras.layers.LSTMCell"):
        rc.LSTMCell.from_keras(_built(keras.layers.LSTM(H)))
    stateful = keras.layers.LSTM(H, stateful=True)
    stateful.build((2, T, IN))
    with pytest.raises(ValueError, match="stateful=True cannot be represented"):
        rc.LSTM.from_keras(stateful)
    stacked = keras.layers.RNN(keras.layers.StackedRNNCells([keras.layers.LSTMCell(H)]))
    model = keras.Sequential([keras.Input((T, IN)), stacked])
    with pytest.raises(ValueError, match="over a cell rnncore cannot represent"):
        rc.from_keras(model)


def test_lengths_from_mask():
    torch = pytest.importorskip("torch")
    good = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    assert rc.lengths_from_mask(good).tolist() == [2, 1, 3]
    assert rc.lengths_from_mask(torch.tensor(good, dtype=torch.bool)).dtype == np.int64
    with pytest.raises(ValueError, match=r"rows \[1\] are not right-padding masks"):
        rc.lengths_from_mask([[1, 1], [0, 1]])  # left padding
    with pytest.raises(ValueError, match=r"rows \[0\] mask every step"):
        rc.lengths_from_mask([[0, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        rc.lengths_from_mask([1, 1])
