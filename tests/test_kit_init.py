"""rnncore.init: weight initializers, gate-bias initializers, and the unchanged default init."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnncore as rc
from rnncore import init

# --------------------------------------------------------------------------- orthogonal


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (1, 6), (6, 1)])
@pytest.mark.parametrize("gain", [1.0, 0.5, -2.0])
def test_orthogonal_has_orthonormal_rows_or_columns(shape, gain):
    w = init.orthogonal(shape, gain=gain, rng=0)
    assert w.shape == shape and w.dtype == np.float64
    rows, cols = shape
    gram = w @ w.T if rows <= cols else w.T @ w
    # Householder QR in float64 is orthonormal to a few ulps times the size: 1e-12 is loose.
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_more_dims_is_flattened_like_torch():
    w = init.orthogonal((4, 3, 2), rng=1)
    flat = w.reshape(4, 6)
    np.testing.assert_allclose(flat @ flat.T, np.eye(4), atol=1e-12)  # as above


def test_orthogonal_is_haar_distributed():
    # Under the Haar measure every entry of a random 3x3 orthogonal matrix has mean 0 and
    # variance 1/3. Plain QR without the sign fix has E[Q_00] ~ -0.5 (z-score ~ 50 at this
    # sample size), so a 5-sigma bound on the sample means separates the two clearly.
    gen = np.random.default_rng(123)
    n = 2000
    mean = sum(init.orthogonal((3, 3), rng=gen) for _ in range(n)) / n
    sigma = math.sqrt(1.0 / 3.0 / n)
    assert np.abs(mean).max() < 5 * sigma, mean


# --------------------------------------------------------------------------- glorot


def _fans_torch(shape):
    torch = pytest.importorskip("torch")
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("shape", [(200, 300), (40, 30, 5)])
def test_glorot_uniform_bound_and_variance(shape):
    gain = 1.7
    w = init.glorot_uniform(shape, gain=gain, rng=3)
    receptive = int(np.prod(shape[2:]))
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    assert w.shape == shape
    assert np.abs(w).max() <= bound
    # 60000 iid draws: the largest |w| is within bound * (1 - 1e-3) with probability
    # 1 - (1 - 1e-3)^60000 ~ 1 - e^-60.
    assert np.abs(w).max() > bound * (1 - 1e-3)
    # Var U(-L, L) = L^2 / 3; the sample variance of n = 60000 draws has relative standard
    # deviation sqrt(0.8 / n) ~ 0.4%: 3% is more than 5 sigma.
    np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.03)


@pytest.mark.parametrize("shape", [(200, 300), (40, 30, 5)])
def test_glorot_fans_match_torch(shape):
    fan_in, fan_out = _fans_torch(shape)
    w = init.glorot_uniform(shape, rng=0)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert bound * (1 - 1e-3) < np.abs(w).max() <= bound  # as in the test above


def test_glorot_normal_std():
    shape, gain = (300, 200), 0.8
    w = init.glorot_normal(shape, gain=gain, rng=4)
    std = gain * math.sqrt(2.0 / (300 + 200))
    # n = 60000 normal draws: relative sd of the sample std is 1/sqrt(2n) ~ 0.3%, of the
    # mean std/sqrt(n) ~ 0.004 std: 2% and 0.03 std are beyond 5 sigma.
    np.testing.assert_allclose(w.std(), std, rtol=0.02)
    assert abs(w.mean()) < 0.03 * std
    # not truncated (as torch.nn.init.xavier_normal_): beyond 3 std occurs ~0.27% of the time
    assert np.count_nonzero(np.abs(w) > 3 * std) > 50


# --------------------------------------------------------------------------- rng handling


@pytest.mark.parametrize("fn", [init.orthogonal, init.glorot_uniform, init.glorot_normal])
def test_rng_seed_generator_and_none(fn):
    np.testing.assert_array_equal(fn((4, 3), rng=7), fn((4, 3), rng=7))
    assert not np.array_equal(fn((4, 3), rng=7), fn((4, 3), rng=8))
    gen = np.random.default_rng(7)
    first, second = fn((4, 3), rng=gen), fn((4, 3), rng=gen)
    np.testing.assert_array_equal(first, fn((4, 3), rng=7))  # a seed is default_rng(seed)
    assert not np.array_equal(first, second)  # the generator advanced
    assert not np.array_equal(fn((4, 3)), fn((4, 3)))  # None: fresh entropy


@pytest.mark.parametrize("fn", [init.orthogonal, init.glorot_uniform, init.glorot_normal])
def test_weight_initializer_errors(fn):
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fn((5,))
    with pytest.raises(ValueError, match=r"shape\[1\]"):
        fn((5, 0))
    with pytest.raises(TypeError, match="shape"):
        fn(5)
    with pytest.raises(TypeError, match=r"shape\[0\]"):
        fn((2.0, 3))
    with pytest.raises(ValueError, match="gain"):
        fn((2, 3), gain=float("nan"))
    with pytest.raises(ValueError, match="gain"):
        fn((2, 3), gain=float("inf"))
    with pytest.raises(TypeError, match="gain"):
        fn((2, 3), gain="1")
    with pytest.raises(TypeError, match="rng"):
        fn((2, 3), rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="rng"):
        fn((2, 3), rng=1.5)
    with pytest.raises(ValueError, match="rng"):
        fn((2, 3), rng=-1)


# --------------------------------------------------------------------------- default init


def _old_glorot(rng, rows, cols):
    # The implementation _init.py had before the initializers moved to rnncore.init.
    limit = np.sqrt(6.0 / (rows + cols))
    return rng.uniform(-limit, limit, size=(rows, cols))


def _old_orthogonal(rng, rows, cols):
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


@pytest.mark.parametrize(
    "make, cell, gates, seed",
    [
        (lambda: rc.LSTM(5, 7, num_layers=2, bidirectional=True, seed=123), "lstm", 4, 123),
        (lambda: rc.GRU(3, 6, seed=5, update_bias=0.5, dtype="float64"), "gru", 3, 5),
        (lambda: rc.LSTM(4, 6, proj_size=3, seed=7, dtype="float64"), "lstm", 4, 7),
    ],
)
def test_default_init_draws_exactly_as_before(make, cell, gates, seed):
    # Seeded modules must keep their parameters bit for bit: rebuild them with the old code.
    m = make()
    rng = np.random.default_rng(seed)
    h = m.hidden_size
    for name, p in m.parameters().items():
        if name.startswith("weight_ih"):
            want = np.concatenate([_old_glorot(rng, h, p.shape[1]) for _ in range(gates)])
        elif name.startswith("weight_hh"):
            want = np.concatenate([_old_orthogonal(rng, h, p.shape[1]) for _ in range(gates)])
        elif name.startswith("weight_hr"):
            want = _old_glorot(rng, *p.shape)
        else:
            want = np.zeros(p.shape)
            if name.startswith("bias_ih"):
                want[h : 2 * h] = m.forget_bias if cell == "lstm" else m.update_bias
        want = want.astype(m.dtype)
        assert p.tobytes() == want.tobytes(), name


# --------------------------------------------------------------------------- gate biases


def _blocks_unchanged(before, after, h, changed):
    """Every parameter equal except rows ``changed`` (block indices) of the biases."""
    for name, p in after.items():
        if name.startswith("bias_"):
            keep = np.ones(p.shape, bool)
            for k in changed:
                keep[k * h : (k + 1) * h] = False
            np.testing.assert_array_equal(p[keep], before[name][keep], err_msg=name)
        else:
            np.testing.assert_array_equal(p, before[name], err_msg=name)


def test_forget_gate_bias_sets_f_blocks_every_layer_and_direction():
    m = rc.LSTM(3, 5, num_layers=2, bidirectional=True, seed=0, init="torch")
    before = m.state_dict()
    assert init.forget_gate_bias(m, 2.5) is None
    after = m.parameters()
    names = [n for n in after if n.startswith("bias_ih")]
    assert len(names) == 4
    for n in names:
        np.testing.assert_array_equal(after[n][5:10], 2.5)
        np.testing.assert_array_equal(after[n.replace("_ih", "_hh")][5:10], 0.0)
    _blocks_unchanged(before, after, 5, changed=[1])


def test_forget_gate_bias_default_value_and_projection():
    m = rc.LSTM(3, 4, proj_size=2, seed=1, init="torch")
    init.forget_gate_bias(m)
    np.testing.assert_array_equal(m.parameters()["bias_ih_l0"][4:8], 1.0)
    np.testing.assert_array_equal(m.parameters()["bias_hh_l0"][4:8], 0.0)


def test_forget_gate_bias_is_the_forget_gate():
    # Behavioural check of the block order: with zero weights, the input gate shut
    # (b_i = -30) and the forget gate open (b_f = 30 via forget_gate_bias), c stays c_0
    # (sigmoid(30) = 1 - 9.4e-14, sigmoid(-30) = 9.4e-14: 1e-10 covers 3 steps).
    m = rc.LSTM(2, 3, seed=0, dtype="float64")
    for p in m.parameters().values():
        p[...] = 0.0
    m.parameters()["bias_ih_l0"][0:3] = -30.0
    init.forget_gate_bias(m, 30.0)
    c0 = np.array([[[0.3, -0.7, 1.2]]])
    x = np.random.default_rng(0).standard_normal((3, 1, 2))
    _, (_, c_n) = m(x, (np.zeros((1, 1, 3)), c0))
    np.testing.assert_allclose(c_n, c0, atol=1e-10)


def test_update_gate_bias_sets_z_blocks_and_is_the_update_gate():
    m = rc.GRU(3, 4, num_layers=2, bidirectional=True, seed=0, init="torch", dtype="float64")
    before = m.state_dict()
    init.update_gate_bias(m, 30.0)
    after = m.parameters()
    for n in [n for n in after if n.startswith("bias_ih")]:
        np.testing.assert_array_equal(after[n][4:8], 30.0)
        np.testing.assert_array_equal(after[n.replace("_ih", "_hh")][4:8], 0.0)
    _blocks_unchanged(before, after, 4, changed=[1])
    # With z ~ 1 every direction keeps its state: h_n ~ h_0. The weights are U(-0.5, 0.5)
    # and |x|, |h| <= 1, so z's pre-activation is >= 30 - 0.5 * (8 + 4) = 24 and each step
    # moves h by at most (1 - z) * 2 < 1e-10; 1e-8 covers 3 steps with margin.
    h0 = np.random.default_rng(1).uniform(-1, 1, (4, 2, 4))
    x = np.random.default_rng(2).uniform(-1, 1, (3, 2, 3))
    _, h_n = m(x, h0)
    np.testing.assert_allclose(h_n, h0, atol=1e-8)


@pytest.mark.parametrize("fn", [init.forget_gate_bias, init.update_gate_bias])
def test_gate_bias_errors(fn):
    right = rc.LSTM if fn is init.forget_gate_bias else rc.GRU
    wrong = rc.GRU if fn is init.forget_gate_bias else rc.LSTM
    with pytest.raises(TypeError, match=right.__name__):
        fn(wrong(2, 3), 1.0)
    with pytest.raises(TypeError, match=right.__name__):
        fn(rc.RNN(2, 3), 1.0)
    with pytest.raises(TypeError, match=right.__name__):
        fn(rc.Linear(2, 3), 1.0)
    with pytest.raises(TypeError, match="bias=True"):
        fn(right(2, 3, bias=False), 1.0)
    with pytest.raises(ValueError, match="value"):
        fn(right(2, 3), float("nan"))
    with pytest.raises(TypeError, match="value"):
        fn(right(2, 3), "1")


# --------------------------------------------------------------------------- chrono


def test_chrono_lstm():
    t_max, h = 50.0, 400
    m = rc.LSTM(1, h, num_layers=2, seed=0, init="torch", dtype="float64")
    before = m.state_dict()
    init.chrono(m, t_max, rng=0)
    after = m.parameters()
    firsts = []
    for k in range(2):
        b_ih, b_hh = after[f"bias_ih_l{k}"], after[f"bias_hh_l{k}"]
        b_f = b_ih[h : 2 * h]
        np.testing.assert_array_equal(b_ih[0:h], -b_f)
        np.testing.assert_array_equal(b_hh[0 : 2 * h], 0.0)
        u = np.exp(b_f)  # must be U(1, t_max - 1)
        assert u.min() >= 1.0 and u.max() <= t_max - 1.0
        # Uniform on [1, 49]: mean 25, sd 48/sqrt(12) ~ 13.9; the mean of 400 draws has sd
        # 0.69, so +-3.5 is 5 sigma. The extremes of 400 draws lie within 1 of the ends with
        # probability 1 - 2 (1 - 1/48)^400 ~ 1 - 4e-4 (fixed seed: deterministic).
        assert abs(u.mean() - 25.0) < 3.5
        assert u.min() < 2.0 and u.max() > t_max - 2.0
        firsts.append(b_f[:5].copy())
    assert not np.array_equal(firsts[0], firsts[1])  # each layer draws its own values
    _blocks_unchanged(before, after, h, changed=[0, 1])
    # reproducible with a seed
    m2 = rc.LSTM(1, h, num_layers=2, seed=0, init="torch", dtype="float64")
    init.chrono(m2, t_max, rng=0)
    np.testing.assert_array_equal(m2.parameters()["bias_ih_l1"], after["bias_ih_l1"])


def test_chrono_gru():
    t_max, h = 10.0, 300
    m = rc.GRU(2, h, bidirectional=True, seed=0, init="torch")
    before = m.state_dict()
    init.chrono(m, t_max, rng=np.random.default_rng(5))
    after = m.parameters()
    for suffix in ("", "_reverse"):
        b_z = after["bias_ih_l0" + suffix][h : 2 * h].astype(np.float64)
        np.testing.assert_array_equal(after["bias_hh_l0" + suffix][h : 2 * h], 0.0)
        # float32 storage: log values in [0, log 9] rounded to ~1e-7 relative
        u = np.exp(b_z)
        assert u.min() >= 1.0 - 1e-6 and u.max() <= t_max - 1.0 + 1e-5
        assert abs(u.mean() - 5.0) < 5 * (8 / math.sqrt(12)) / math.sqrt(h)  # 5 sigma
    _blocks_unchanged(before, after, h, changed=[1])


def test_chrono_errors():
    with pytest.raises(ValueError, match="t_max"):
        init.chrono(rc.LSTM(2, 3), 2.0)
    with pytest.raises(ValueError, match="t_max"):
        init.chrono(rc.GRU(2, 3), 1.5)
    with pytest.raises(ValueError, match="t_max"):
        init.chrono(rc.GRU(2, 3), float("inf"))
    with pytest.raises(TypeError, match="t_max"):
        init.chrono(rc.GRU(2, 3), "10")
    with pytest.raises(TypeError, match="LSTM or rnncore.GRU"):
        init.chrono(rc.RNN(2, 3), 10)
    with pytest.raises(TypeError, match="bias=True"):
        init.chrono(rc.LSTM(2, 3, bias=False), 10)
    with pytest.raises(TypeError, match="bias=True"):
        init.chrono(rc.GRU(2, 3, bias=False), 10)
    with pytest.raises(TypeError, match="rng"):
        init.chrono(rc.GRU(2, 3), 10, rng="x")
    init.chrono(rc.GRU(2, 3), 2.5)  # the smallest sensible horizons work


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_chrono_constructor_option(kind):
    """``chrono=T_max`` in the constructor: the gate biases of every layer and direction are
    chrono-initialized (log U(1, T_max - 1); LSTM input gate the negative), reproducibly with
    ``seed``; the weights are those of the same seed without it."""
    t_max = 40.0
    kw = dict(num_layers=2, bidirectional=True, seed=3, dtype="float64")
    m = getattr(rc, kind)(3, 5, chrono=t_max, **kw)
    plain = getattr(rc, kind)(3, 5, **kw)
    again = getattr(rc, kind)(3, 5, chrono=t_max, **kw)
    H = 5
    for name, p in m.parameters().items():
        np.testing.assert_array_equal(p, again.parameters()[name])
        if name.startswith("weight"):
            np.testing.assert_array_equal(p, plain.parameters()[name])
        elif name.startswith("bias_ih"):
            gate = p[H : 2 * H]  # f (LSTM) or z (GRU)
            assert (gate >= 0).all() and (gate <= np.log(t_max - 1)).all()
            assert len(np.unique(gate)) == H
            if kind == "LSTM":
                np.testing.assert_array_equal(p[:H], -gate)
        elif name.startswith("bias_hh"):
            blocks = slice(0, 2 * H) if kind == "LSTM" else slice(H, 2 * H)
            np.testing.assert_array_equal(p[blocks], 0.0)
    with pytest.raises(ValueError, match="t_max"):
        getattr(rc, kind)(3, 5, chrono=2)
