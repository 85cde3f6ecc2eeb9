"""Validates the normalized cells of the NumPy reference (``rnncore.reference``) itself.

Does not need the compiled core's normalized cells. Three kinds of evidence:

* the worked example of docs/normalization.md section 5 (LN-LSTM, BN-LSTM, LN-GRU, BN-GRU,
  LN-RNN) reproduced to 1e-7 (the spec prints 8 significant digits, i.e. the values are
  rounded by <= 5e-9 .. 5e-8; 1e-7 is what the spec demands);
* the normalization primitives against ``torch.nn.functional.layer_norm`` / ``batch_norm``,
  ``torch.nn.BatchNorm1d`` (running statistics) and autograd, in float64;
* the sequence-level semantics (which sequences a step's statistics use, the reverse
  direction, sequence-wise statistics, running rows, eval rows) against PyTorch recurrent
  modules with the normalization folded into the weights (eval mode, ``batch_input``), against
  ``torch.nn.BatchNorm1d`` fed with the pre-normalization terms recomputed from observable
  quantities, and by exact relations (per-sequence flips, padding independence).

Tolerances: float64 comparisons of a few dozen operations on values of size <= ~10 agree to a
few hundred ulps (~1e-13), except where a batch statistic is taken over 2 nearly equal values
(not the case for the fixed seeds used here). 1e-10 is used for whole recurrent passes and
1e-12 for single normalizations: >= 10x the rounding, and orders of magnitude below any
semantic error (a wrong active set, row or variance changes results by >= 1e-3).
"""

import numpy as np
import pytest
from rnn_testing import (
    NORM_VARIANTS,
    WORKED_C0,
    WORKED_EXPECTED,
    WORKED_H0,
    WORKED_X,
    Config,
    lengths_for,
    make_inputs,
    pack_states,
    random_buffers,
    reference_with_buffers,
    worked_example_hx,
    worked_example_params,
)

from rnncore.reference import (
    StepNorms,
    batch_norm,
    batch_norm_backward,
    batch_statistics,
    buffer_names,
    init_buffers,
    init_norm_params,
    layer_norm,
    layer_norm_backward,
    make_params,
    param_names,
    reference_forward,
    update_running_stats,
)

WORKED_TOL = 1e-7  # spec section 5: "a test must reproduce these to 1e-7"
PASS_TOL = 1e-10  # a whole recurrent pass, float64 (module docstring)
OP_TOL = 1e-12  # one normalization, float64 (module docstring)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------------------------------------
# Worked example (spec section 5).


@pytest.mark.parametrize("cell,norm", list(WORKED_EXPECTED), ids=lambda v: str(v))
def test_worked_example_reproduced_by_the_reference(cell, norm):
    # all gains as initialized (LN 1, BN 0.1), shifts 0
    params = {**worked_example_params(cell), **init_norm_params(cell, 3, 1, False, norm)}
    res = reference_forward(
        cell, params, WORKED_X, worked_example_hx(cell), num_layers=1, bidirectional=False,
        norm=norm, training=True,
    )  # fmt: skip
    out, states = res[0], res[1]
    expected = WORKED_EXPECTED[(cell, norm)]
    h_n = states[0] if cell == "lstm" else states
    np.testing.assert_allclose(h_n[0], expected["h"], rtol=0, atol=WORKED_TOL)
    np.testing.assert_array_equal(out[1], h_n[0])  # out at t=1 is h_2
    if cell == "lstm":
        np.testing.assert_allclose(states[1][0], expected["c"], rtol=0, atol=WORKED_TOL)
    if norm == "batch":
        bufs = res[2]
        assert set(bufs) == set(buffer_names(cell, 1, False, norm))
        assert all(v.shape[0] == 2 for v in bufs.values())  # T = 2 rows


def test_worked_example_initial_gains_are_the_spec_values():
    """The example runs with the gains "as initialized": LN 1, BN 0.1, shifts 0 (spec 4)."""
    ln = init_norm_params("lstm", 3, 1, False, "layer")
    assert set(ln) == {"ln_ih_weight_l0", "ln_hh_weight_l0", "ln_cell_weight_l0", "ln_cell_bias_l0"}
    assert all(np.all(v == (0.0 if "bias" in k else 1.0)) for k, v in ln.items())
    bn = init_norm_params("lstm", 3, 1, False, "batch")
    assert set(bn) == {"bn_ih_weight_l0", "bn_hh_weight_l0", "bn_cell_weight_l0", "bn_cell_bias_l0"}
    assert all(np.all(v == (0.0 if "bias" in k else 0.1)) for k, v in bn.items())
    assert set(init_norm_params("rnn", 3, 1, False, "layer")) == {"ln_weight_l0"}
    assert np.all(init_norm_params("gru", 3, 1, False, "batch_input")["bn_ih_weight_l0"] == 1.0)
    assert np.all(
        init_norm_params("gru", 3, 1, False, "batch", bn_gamma=0.3)["bn_hh_weight_l0"] == 0.3
    )


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_worked_example_gru_blocks_must_be_permuted(norm):
    """The spec's (z, r, n) -> (r, z, n) permutation matters: unpermuted, h_2 is far off."""
    params = {
        **worked_example_params("gru", permute_gru=False),
        **init_norm_params("gru", 3, 1, False, norm),
    }
    res = reference_forward(
        "gru", params, WORKED_X, WORKED_H0[None], num_layers=1, bidirectional=False, norm=norm
    )
    assert np.abs(res[1][0] - WORKED_EXPECTED[("gru", norm)]["h"]).max() > 1e-3


def _naive_forward(cell, norm, p, x, h0, c0=None, eps=1e-5):
    """A second, deliberately naive transcription of spec sections 1 and 3: per-element Python
    loops and ``math``, no helper of the reference; one layer, one direction, all sequences
    active, training mode. ``p``: parameter lists with the ``_l0`` names. Returns h_T (and
    c_T for the LSTM)."""
    import math

    def norm_rows(mat, gamma, beta):  # layer norm of every row
        out = []
        for row in mat:
            mu = sum(row) / len(row)
            var = sum((v - mu) ** 2 for v in row) / len(row)
            out.append(
                [gamma[j] * (v - mu) / math.sqrt(var + eps) + beta[j] for j, v in enumerate(row)]
            )
        return out

    def norm_cols(mat, gamma, beta):  # batch norm of every column
        n, width = len(mat), len(mat[0])
        out = [[0.0] * width for _ in range(n)]
        for j in range(width):
            col = [mat[b][j] for b in range(n)]
            mu = sum(col) / n
            var = sum((v - mu) ** 2 for v in col) / n
            for b in range(n):
                out[b][j] = gamma[j] * (col[b] - mu) / math.sqrt(var + eps) + beta[j]
        return out

    def matvec(w, v):
        return [sum(wi * vi for wi, vi in zip(row, v)) for row in w]

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v))

    def q(name, width):  # a parameter, or zeros (a missing shift)
        return p.get(name + "_l0", [0.0] * width)

    nb = len(h0)
    hs = len(h0[0])
    nrm = norm_rows if norm == "layer" else norm_cols
    pre = "ln" if norm == "layer" else "bn"
    h, c = [list(r) for r in h0], None if c0 is None else [list(r) for r in c0]
    for xt in x:
        ax = [matvec(p["weight_ih_l0"], xt[b]) for b in range(nb)]
        ah = [matvec(p["weight_hh_l0"], h[b]) for b in range(nb)]
        width = len(ax[0])
        bi, bh = p["bias_ih_l0"], p["bias_hh_l0"]
        if cell == "rnn" and norm == "layer":
            s = [[ax[b][j] + ah[b][j] for j in range(width)] for b in range(nb)]
            s = nrm(s, p["ln_weight_l0"], [0.0] * width)
            h = [[math.tanh(s[b][j] + bi[j] + bh[j]) for j in range(hs)] for b in range(nb)]
            continue
        nx = nrm(ax, p[f"{pre}_ih_weight_l0"], [0.0] * width)
        nh = nrm(ah, p[f"{pre}_hh_weight_l0"], [0.0] * width)
        if cell == "rnn":
            h = [
                [math.tanh(nh[b][j] + nx[b][j] + bi[j] + bh[j]) for j in range(hs)]
                for b in range(nb)
            ]
        elif cell == "gru":
            new = []
            for b in range(nb):
                xg = [nx[b][j] + bi[j] for j in range(width)]
                rg = [nh[b][j] + bh[j] for j in range(width)]
                r = [sig(xg[j] + rg[j]) for j in range(hs)]
                z = [sig(xg[hs + j] + rg[hs + j]) for j in range(hs)]
                n = [math.tanh(xg[2 * hs + j] + r[j] * rg[2 * hs + j]) for j in range(hs)]
                new.append([(1 - z[j]) * n[j] + z[j] * h[b][j] for j in range(hs)])
            h = new
        else:
            zs = [[nx[b][j] + bi[j] + nh[b][j] + bh[j] for j in range(width)] for b in range(nb)]
            c = [
                [sig(z[hs + j]) * c[b][j] + sig(z[j]) * math.tanh(z[2 * hs + j]) for j in range(hs)]
                for b, z in enumerate(zs)
            ]
            nc = nrm(c, p[f"{pre}_cell_weight_l0"], q(f"{pre}_cell_bias", hs))
            h = [
                [sig(zs[b][3 * hs + j]) * math.tanh(nc[b][j]) for j in range(hs)] for b in range(nb)
            ]
    return (h, c) if cell == "lstm" else (h,)


@pytest.mark.parametrize("cell,norm", list(WORKED_EXPECTED), ids=lambda v: str(v))
def test_worked_example_by_hand_written_loops(cell, norm):
    """The naive transcription reproduces the spec's numbers too (it validates the spec and
    itself; the next test then compares it with the reference on random parameters)."""
    params = {**worked_example_params(cell), **init_norm_params(cell, 3, 1, False, norm)}
    p = {k: v.tolist() for k, v in params.items()}
    got = _naive_forward(cell, norm, p, WORKED_X.tolist(), WORKED_H0.tolist(), WORKED_C0.tolist())
    expected = WORKED_EXPECTED[(cell, norm)]
    np.testing.assert_allclose(got[0], expected["h"], rtol=0, atol=WORKED_TOL)
    if cell == "lstm":
        np.testing.assert_allclose(got[1], expected["c"], rtol=0, atol=WORKED_TOL)


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reference_equals_naive_transcription_with_random_gains_and_shifts(cell, norm):
    """Random weights, biases, gains AND shifts (the worked example has every shift 0 and
    every gain equal), T=4, B=3: places each gamma / beta where spec section 3 says (this is
    also the only check of the BN-RNN, which has no worked example)."""
    rng = np.random.default_rng(21)
    cfg = Config(cell, input_size=2, hidden_size=3, norm=norm)
    params = cfg.make_params(rng, scale=0.8)
    x, states, _ = make_inputs(cfg, rng, 4, 3, None, True)
    out, st, _ = reference_with_buffers(cfg, params, x, states, None)
    p = {k: v.tolist() for k, v in params.items()}
    got = _naive_forward(
        cell,
        norm,
        p,
        x.tolist(),
        states[0][0].tolist(),
        states[1][0].tolist() if cfg.is_lstm else None,
    )
    for mine, theirs in zip(st, got):
        np.testing.assert_allclose(mine[0], theirs, rtol=0, atol=PASS_TOL)


# ---------------------------------------------------------------------------------------------
# Normalization primitives against PyTorch.


@pytest.mark.parametrize("shape", [(3, 12), (5, 4, 9), (1, 4)])
@pytest.mark.parametrize("with_beta", [False, True], ids=["LN0", "LN"])
def test_layer_norm_and_backward_match_torch(torch, shape, with_beta):
    rng = np.random.default_rng(sum(shape) + with_beta)
    a = rng.standard_normal(shape) * 3 + 1
    gamma = rng.uniform(0.5, 1.5, shape[-1])
    beta = rng.standard_normal(shape[-1]) if with_beta else None
    dy = rng.standard_normal(shape)
    eps = 1e-3  # a non-default epsilon, so that a hard-coded one would show
    ta = torch.tensor(a, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta if with_beta else np.zeros(shape[-1]), requires_grad=True)
    ty = torch.nn.functional.layer_norm(ta, (shape[-1],), tg, tb, eps)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer_norm(a, gamma, beta, eps), ty.detach().numpy(), atol=OP_TOL)
    da, dgamma, dbeta = layer_norm_backward(a, gamma, dy, eps)
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=0, atol=OP_TOL)
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), rtol=0, atol=OP_TOL)
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), rtol=0, atol=OP_TOL)


@pytest.mark.parametrize("mask", [None, [1, 0, 1, 1, 0], [0, 0, 1, 1, 0]], ids=["all", "3", "2"])
def test_batch_norm_training_and_backward_match_torch(torch, mask):
    """Batch statistics over the active rows only; inactive rows are normalized with the same
    statistics (their values are discarded by the cells) and get zero gradient."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 7)) * 2 - 1
    gamma, beta = rng.uniform(0.5, 1.5, 7), rng.standard_normal(7)
    dy = rng.standard_normal((5, 7))
    m = np.ones(5, dtype=bool) if mask is None else np.array(mask, dtype=bool)
    eps = 1e-3
    mean, var, n = batch_statistics(a, None if mask is None else m)
    assert n == m.sum()
    ta = torch.tensor(a[m], requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    ty = torch.nn.functional.batch_norm(ta, None, None, tg, tb, training=True, eps=eps)
    ty.backward(torch.tensor(dy[m]))
    y = batch_norm(a, gamma, beta, mean, var, eps)
    np.testing.assert_allclose(y[m], ty.detach().numpy(), rtol=0, atol=OP_TOL)
    np.testing.assert_allclose(
        y[~m], gamma * (a[~m] - a[m].mean(0)) / np.sqrt(a[m].var(0) + eps) + beta, atol=OP_TOL
    )
    da, dgamma, dbeta = batch_norm_backward(a, gamma, dy, None if mask is None else m, eps)
    np.testing.assert_allclose(da[m], ta.grad.numpy(), rtol=0, atol=OP_TOL)
    np.testing.assert_array_equal(da[~m], 0.0)
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), rtol=0, atol=OP_TOL)
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), rtol=0, atol=OP_TOL)


def test_batch_norm_eval_matches_torch(torch):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((4, 6))
    gamma, beta = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
    rm, rv = rng.standard_normal(6), rng.uniform(0.5, 2.0, 6)
    want = torch.nn.functional.batch_norm(
        torch.tensor(a), torch.tensor(rm), torch.tensor(rv), torch.tensor(gamma),
        torch.tensor(beta), training=False, eps=1e-5,
    )  # fmt: skip
    np.testing.assert_allclose(batch_norm(a, gamma, beta, rm, rv), want.numpy(), atol=OP_TOL)


@pytest.mark.parametrize("momentum", [0.1, 0.35])
def test_running_stats_update_matches_torch_batchnorm1d(torch, momentum):
    """Momentum, unbiased variance, several consecutive updates from non-trivial values; a
    batch of one row updates nothing (PyTorch refuses it in training mode)."""
    rng = np.random.default_rng(5)
    bn = torch.nn.BatchNorm1d(4, momentum=momentum).double().train()
    run_mean, run_var = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(run_mean))
        bn.running_var.copy_(torch.tensor(run_var))
    for n in (5, 2, 3, 7):
        a = rng.standard_normal((n, 4)) * 1.5 + 0.3
        bn(torch.tensor(a))
        mean, var, n_rows = batch_statistics(a)
        run_mean, run_var = update_running_stats(run_mean, run_var, mean, var, n_rows, momentum)
        np.testing.assert_allclose(run_mean, bn.running_mean.numpy(), rtol=0, atol=OP_TOL)
        np.testing.assert_allclose(run_var, bn.running_var.numpy(), rtol=0, atol=OP_TOL)
    with pytest.raises(ValueError):
        bn(torch.tensor(rng.standard_normal((1, 4))))
    mean, var, n_rows = batch_statistics(rng.standard_normal((1, 4)))
    same = update_running_stats(run_mean, run_var, mean, var, n_rows, momentum)
    np.testing.assert_array_equal(same[0], run_mean)
    np.testing.assert_array_equal(same[1], run_var)


def test_batch_statistics_are_two_pass():
    """E[a^2] - E[a]^2 would lose every digit here; the two-pass variance keeps them."""
    a = 1e8 + np.array([[0.0], [1.0], [2.0], [3.0]])
    mean, var, n = batch_statistics(a)
    assert n == 4 and mean[0] == 1e8 + 1.5
    assert abs(var[0] - 1.25) < 1e-9
    row = layer_norm(a.T, np.ones(4), None, 0.0)
    np.testing.assert_allclose(row[0], (a[:, 0] - mean[0]) / np.sqrt(1.25), rtol=0, atol=1e-8)


def test_norm_backward_helpers_invariants_and_central_differences():
    """Spec section 1: LN row sums and BN column sums of dL/da vanish; the helpers' gradients
    match central differences of the forward functions (step 1e-6, errors ~1e-9)."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 6))
    gamma, beta, dy = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6), rng.standard_normal((4, 6))
    mask = np.array([True, False, True, True])
    da_ln, dg_ln, db_ln = layer_norm_backward(a, gamma, dy)
    da_bn, dg_bn, db_bn = batch_norm_backward(a, gamma, dy, mask)
    np.testing.assert_allclose(da_ln.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(da_bn.sum(axis=0), 0.0, atol=1e-12)
    assert np.abs(da_ln).max() > 0.1 and np.abs(da_bn).max() > 0.1

    def loss_ln(a_, g_, b_):
        return float(np.sum(layer_norm(a_, g_, b_) * dy))

    def loss_bn(a_, g_, b_):
        mean, var, _ = batch_statistics(a_, mask)
        return float(np.sum((batch_norm(a_, g_, b_, mean, var) * dy)[mask]))

    for loss, grads in ((loss_ln, (da_ln, dg_ln, db_ln)), (loss_bn, (da_bn, dg_bn, db_bn))):
        for which, grad in enumerate(grads):
            args = [a.copy(), gamma.copy(), beta.copy()]
            for idx in np.ndindex(args[which].shape):
                orig = args[which][idx]
                args[which][idx] = orig + 1e-6
                plus = loss(*args)
                args[which][idx] = orig - 1e-6
                minus = loss(*args)
                args[which][idx] = orig
                assert abs((plus - minus) / 2e-6 - grad[idx]) < 1e-7, (loss.__name__, which, idx)


# ---------------------------------------------------------------------------------------------
# Names, shapes, initial buffers.


def test_names_and_initial_buffers():
    names = param_names("lstm", 2, True, 2, True, "batch")
    assert names[:7] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0",
        "bn_ih_weight_l0", "bn_hh_weight_l0",
    ]  # fmt: skip
    assert names[7:9] == ["bn_cell_weight_l0", "bn_cell_bias_l0"]
    assert names[9] == "weight_ih_l0_reverse" and names[-1] == "bn_cell_bias_l1_reverse"
    assert param_names("rnn", 1, False, 0, False, "layer") == [
        "weight_ih_l0", "weight_hh_l0", "ln_weight_l0",
    ]  # fmt: skip
    assert param_names("gru", 1, False, 0, True, "batch_input")[-1] == "bn_ih_weight_l0"
    bufs = init_buffers("lstm", 5, 1, True, "batch")
    assert list(bufs) == buffer_names("lstm", 1, True, "batch")
    assert bufs["bn_ih_running_mean_l0"].shape == (0, 20)
    assert bufs["bn_cell_running_var_l0_reverse"].shape == (0, 5)
    seq = init_buffers("gru", 5, 1, False, "batch_input")
    assert set(seq) == {"bn_ih_running_mean_l0", "bn_ih_running_var_l0"}
    np.testing.assert_array_equal(seq["bn_ih_running_mean_l0"], np.zeros(15))
    np.testing.assert_array_equal(seq["bn_ih_running_var_l0"], np.ones(15))
    assert init_buffers("lstm", 5, 1, True, "layer") == {}
    p = make_params("lstm", 3, 4, 1, False, 0, True, np.random.default_rng(0), norm="layer")
    assert list(p) == param_names("lstm", 1, False, 0, True, "layer")
    plain = make_params("lstm", 3, 4, 1, False, 0, True, np.random.default_rng(0))
    for k, v in plain.items():  # plain values do not depend on norm
        np.testing.assert_array_equal(p[k], v)


def test_batch_norms_in_training_need_two_sequences():
    x = np.random.default_rng(1).standard_normal((4, 1, 3))
    kw = dict(num_layers=1, bidirectional=False)
    for norm in ("batch", "batch_input"):
        p = make_params("gru", 3, 4, 1, False, 0, True, np.random.default_rng(0), norm=norm)
        with pytest.raises(ValueError, match="at least 2"):
            reference_forward("gru", p, x, norm=norm, **kw)
        with pytest.raises(ValueError, match="at least 2"):
            reference_forward("gru", p, x[:, 0], norm=norm, **kw)
        reference_forward("gru", p, x, norm=norm, training=False, **kw)  # eval: fine
        reference_forward("gru", p, x[:, 0], norm=norm, training=False, **kw)
    p = make_params("gru", 3, 4, 1, False, 0, True, np.random.default_rng(0), norm="layer")
    reference_forward("gru", p, x, norm="layer", **kw)  # layer norm: per sample, fine


# ---------------------------------------------------------------------------------------------
# Sequence-level semantics.


def _flip_within_lengths(x, lengths):
    """Reverses each sequence (time-major x) within its own length; padding stays in place."""
    y = x.copy()
    for b, ln in enumerate(lengths):
        y[:ln, b] = x[:ln, b][::-1]
    return y


@pytest.mark.parametrize("norm", ["layer", "batch", "batch_input"])
@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_reverse_direction_equals_forward_direction_on_flipped_sequences(variant, norm):
    """Spec section 2: the reverse direction's step k reads each sequence's element
    lengths[b]-1-k and is active for the same sequences as the forward step k. So the reverse
    half of a bidirectional layer equals a forward layer (with the reverse parameters) run on
    every sequence flipped within its length -- outputs, final states AND running statistics."""
    rng = np.random.default_rng(7)
    cfg = Config.from_variant(variant, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    x, states, lengths = make_inputs(cfg, rng, 6, 4, "mixed", True)
    bufs = random_buffers(cfg, rng, 3)
    out, st, new = reference_with_buffers(cfg, params, x, states, lengths, buffers=bufs)

    uni = cfg.replace(bidirectional=False)
    rev_params = {k.replace("_reverse", ""): v for k, v in params.items() if k.endswith("_reverse")}
    rev_bufs = {k.replace("_reverse", ""): v for k, v in bufs.items() if k.endswith("_reverse")}
    xf = _flip_within_lengths(x, lengths)
    out_f, st_f, new_f = reference_with_buffers(
        uni, rev_params, xf, [s[1:] for s in states], lengths, buffers=rev_bufs
    )
    h_out = cfg.h_out
    np.testing.assert_allclose(
        out[:, :, h_out:], _flip_within_lengths(out_f, lengths), rtol=0, atol=PASS_TOL
    )
    for s, s_f in zip(st, st_f):
        np.testing.assert_allclose(s[1:], s_f, rtol=0, atol=PASS_TOL)
    assert set(new_f) == {k.replace("_reverse", "") for k in new if k.endswith("_reverse")}
    for k, v in new_f.items():
        np.testing.assert_allclose(new[k + "_reverse"], v, rtol=0, atol=PASS_TOL)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("norm", ["layer", "batch", "batch_input"])
@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_padding_values_change_nothing(variant, norm, training):
    """Statistics use only active positions: garbage past each sequence's end changes neither
    the outputs nor the running statistics (2 layers, both directions)."""
    rng = np.random.default_rng(8)
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    x, states, lengths = make_inputs(cfg, rng, 6, 4, "short", True)
    bufs = random_buffers(cfg, rng, 2)
    junk = x.copy()
    for b, ln in enumerate(lengths):
        junk[ln:, b] = 100.0 * rng.standard_normal(junk[ln:, b].shape)
    kw = dict(training=training, buffers=bufs)
    a = reference_with_buffers(cfg, params, x, states, lengths, **kw)
    b = reference_with_buffers(cfg, params, junk, states, lengths, **kw)
    np.testing.assert_array_equal(a[0], b[0])
    for s1, s2 in zip(a[1], b[1]):
        np.testing.assert_array_equal(s1, s2)
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_layer_norm_is_per_sequence_and_mode_independent(variant):
    """Layer norm statistics are per sample: with lengths, each sequence's result equals
    running it alone (unbatched); training and eval mode agree exactly."""
    rng = np.random.default_rng(9)
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm="layer")
    params = cfg.make_params(rng, scale=0.6)
    x, states, lengths = make_inputs(cfg, rng, 5, 3, "mixed", True)
    out, st, _ = reference_with_buffers(cfg, params, x, states, lengths)
    out_e, st_e, _ = reference_with_buffers(cfg, params, x, states, lengths, training=False)
    np.testing.assert_array_equal(out, out_e)
    for b, ln in enumerate(lengths):
        o1, s1, _ = reference_with_buffers(cfg, params, x[:ln, b], [s[:, b] for s in states], None)
        np.testing.assert_allclose(out[:ln, b], o1, rtol=0, atol=PASS_TOL)
        for s, s_one in zip(st, s1):
            np.testing.assert_allclose(s[:, b], s_one, rtol=0, atol=PASS_TOL)


def _torch_bn_running(torch, rows_by_step, width, momentum, start_mean, start_var):
    """Running statistics of per-step ``torch.nn.BatchNorm1d`` modules fed with ``rows_by_step``
    (a list over calls of lists over steps of ``(n, width)`` arrays); new rows start 0 / 1."""
    mods = []
    for k in range(start_mean.shape[0]):
        m = torch.nn.BatchNorm1d(width, momentum=momentum).double().train()
        with torch.no_grad():
            m.running_mean.copy_(torch.tensor(start_mean[k]))
            m.running_var.copy_(torch.tensor(start_var[k]))
        mods.append(m)
    for call in rows_by_step:
        for k, rows in enumerate(call):
            while len(mods) <= k:
                mods.append(torch.nn.BatchNorm1d(width, momentum=momentum).double().train())
            if rows.shape[0] >= 2:  # PyTorch refuses one row; the spec updates nothing then
                mods[k](torch.tensor(rows))
    mean = np.array([m.running_mean.numpy() for m in mods])
    var = np.array([m.running_var.numpy() for m in mods])
    return mean, var


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_per_step_running_stats_match_torch_batchnorm1d(torch, variant):
    """norm="batch", one bidirectional layer, three training calls with different T and
    lengths. The pre-normalization terms are recomputed from observable quantities -- x and
    W_ih for A^x (position t forward, lengths[b]-1-k reverse), the outputs h_{t-1} (h_0 at
    step 0) and W_hh for A^h -- restricted to the active sequences, and fed to one
    torch.nn.BatchNorm1d per time step. The reference's buffers grow to the longest sequence
    seen (new rows 0 / 1) and match PyTorch's running statistics."""
    rng = np.random.default_rng(10)
    momentum = 0.2
    cfg = Config.from_variant(
        variant, bidirectional=True, norm="batch", norm_options=(("bn_momentum", momentum),)
    )
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, 2)  # start from 2 loaded rows
    start = {k: v.copy() for k, v in bufs.items()}
    feeds = {(part, sfx): [] for part in ("ih", "hh") for sfx in ("", "_reverse")}
    calls = [(4, "mixed"), (6, "short"), (3, None)]
    for t_len, kind in calls:
        x, states, lengths = make_inputs(cfg, rng, t_len, 4, kind, True)
        out, _, bufs = reference_with_buffers(cfg, params, x, states, lengths, buffers=bufs)
        lens = np.full(4, t_len) if lengths is None else lengths
        for d, sfx in enumerate(("", "_reverse")):
            h_prev_all = out[:, :, d * cfg.h_out : (d + 1) * cfg.h_out]
            ih, hh = [], []
            for k in range(int(lens.max())):
                active = np.flatnonzero(k < lens)
                pos = np.array([k if d == 0 else lens[b] - 1 - k for b in active])
                prev_pos = np.array([k - 1 if d == 0 else lens[b] - k for b in active])
                xs = x[pos, active]
                hs = states[0][d, active] if k == 0 else h_prev_all[prev_pos, active]
                ih.append(xs @ params[f"weight_ih_l0{sfx}"].T)
                hh.append(hs @ params[f"weight_hh_l0{sfx}"].T)
            feeds[("ih", sfx)].append(ih)
            feeds[("hh", sfx)].append(hh)
    for (part, sfx), feed in feeds.items():
        width = params[f"weight_ih_l0{sfx}"].shape[0]
        mean, var = _torch_bn_running(
            torch, feed, width, momentum,
            start[f"bn_{part}_running_mean_l0{sfx}"], start[f"bn_{part}_running_var_l0{sfx}"],
        )  # fmt: skip
        # grew to the longest sequence seen: 5 ("short" lengths on T=6 end at 5)
        assert mean.shape == (5, width)
        np.testing.assert_allclose(bufs[f"bn_{part}_running_mean_l0{sfx}"], mean, atol=PASS_TOL)
        np.testing.assert_allclose(bufs[f"bn_{part}_running_var_l0{sfx}"], var, atol=PASS_TOL)


def test_cell_running_stats_match_torch_batchnorm1d(torch):
    """The LSTM's cell statistics: c_t of a training-mode call is the c_n of the same call on
    the prefix x[:t+1] (step t's statistics depend on steps <= t only)."""
    rng = np.random.default_rng(11)
    cfg = Config("lstm", norm="batch")
    params = cfg.make_params(rng, scale=0.6)
    x, states, _ = make_inputs(cfg, rng, 5, 4, None, True)
    _, _, bufs = reference_with_buffers(cfg, params, x, states, None)
    cells = [
        reference_with_buffers(cfg, params, x[: t + 1], states, None)[1][1][0] for t in range(5)
    ]
    start = init_buffers("lstm", 4, 1, False, "batch")["bn_cell_running_mean_l0"]
    mean, var = _torch_bn_running(torch, [cells], 4, 0.1, start, start)
    np.testing.assert_allclose(bufs["bn_cell_running_mean_l0"], mean, rtol=0, atol=PASS_TOL)
    np.testing.assert_allclose(bufs["bn_cell_running_var_l0"], var, rtol=0, atol=PASS_TOL)


def test_running_rows_grow_to_the_longest_sequence_and_skip_single_sequence_steps():
    """Interpretation of "buffers grow to the longest training sequence": S becomes
    max(lengths) (not T: trailing all-padding steps have no sequence); a step with one active
    sequence leaves its (new) row at mean 0 / variance 1."""
    rng = np.random.default_rng(12)
    cfg = Config("gru", norm="batch")
    params = cfg.make_params(rng, scale=0.6)
    x, states, _ = make_inputs(cfg, rng, 6, 3, None, True)
    lengths = np.array([5, 2, 3])  # T = 6; step 3 and 4: one active sequence
    _, _, bufs = reference_with_buffers(cfg, params, x, states, lengths)
    for name, v in bufs.items():
        assert v.shape[0] == 5, name
        fill = 0.0 if "_mean_" in name else 1.0
        np.testing.assert_array_equal(v[3:], fill)
        assert np.all(v[:3] != fill)


@pytest.mark.parametrize("variant", ["rnn_tanh", "rnn_relu", "gru", "lstm", "lstm_proj"])
@pytest.mark.parametrize("norm", ["batch", "batch_input"])
def test_eval_mode_equals_torch_with_the_running_statistics_folded_in(torch, variant, norm):
    """Eval mode is a fixed affine map: N(a) = gamma (a - mean)/sqrt(var + eps) (+ beta), which
    folds into the weights and biases (W' = diag(gamma r) W, b' = b - gamma r mean). With ONE
    running row (norm="batch") or the sequence-wise statistics (batch_input) it is the same
    map at every step, so the reference must equal PyTorch's plain module with folded weights.
    The LSTM's cell norm cannot be folded; its gain and shift are chosen to make it the
    identity (gamma = sqrt(var + eps), beta = mean)."""
    rng = np.random.default_rng(13)
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm=norm)
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng, 1)
    eps = 1e-5
    folded = {}
    for k in range(2):
        for sfx in ("", "_reverse"):
            tag = f"_l{k}{sfx}"
            for part in ("ih", "hh"):
                w, b = params[f"weight_{part}{tag}"], params[f"bias_{part}{tag}"]
                if norm == "batch_input" and part == "hh":
                    scale, shift = np.ones(w.shape[0]), np.zeros(w.shape[0])
                else:
                    mean = bufs[f"bn_{part}_running_mean{tag}"].reshape(-1)
                    var = bufs[f"bn_{part}_running_var{tag}"].reshape(-1)
                    scale = params[f"bn_{part}_weight{tag}"] / np.sqrt(var + eps)
                    shift = -scale * mean
                folded[f"weight_{part}{tag}"] = scale[:, None] * w
                folded[f"bias_{part}{tag}"] = b + shift
            if cfg.proj_size:
                folded[f"weight_hr{tag}"] = params[f"weight_hr{tag}"]
            if cfg.is_lstm and norm == "batch":
                params[f"bn_cell_weight{tag}"] = np.sqrt(bufs[f"bn_cell_running_var{tag}"][0] + eps)
                params[f"bn_cell_bias{tag}"] = bufs[f"bn_cell_running_mean{tag}"][0].copy()
    x, states, lengths = make_inputs(cfg, rng, 5, 4, "mixed", True)
    out, st, after = reference_with_buffers(
        cfg, params, x, states, lengths, training=False, buffers=bufs
    )
    for k, v in bufs.items():  # eval updates nothing
        np.testing.assert_array_equal(after[k], v)

    kw = dict(num_layers=2, bidirectional=True)
    if cfg.cell == "rnn":
        m = torch.nn.RNN(3, 4, nonlinearity=cfg.nonlinearity, **kw)
    elif cfg.cell == "gru":
        m = torch.nn.GRU(3, 4, **kw)
    else:
        m = torch.nn.LSTM(3, 4, proj_size=cfg.proj_size, **kw)
    m = m.double()
    m.load_state_dict({k: torch.tensor(v) for k, v in folded.items()})
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), torch.tensor(lengths), enforce_sorted=False
    )
    thx = pack_states(cfg, [torch.tensor(s) for s in states])
    with torch.no_grad():
        pout, tst = m(packed, thx)
    tout, _ = torch.nn.utils.rnn.pad_packed_sequence(pout, total_length=5)
    np.testing.assert_allclose(out, tout.numpy(), rtol=0, atol=PASS_TOL)
    tst = [tst[0], tst[1]] if cfg.is_lstm else [tst]
    for s, ts in zip(st, tst):
        np.testing.assert_allclose(s, ts.numpy(), rtol=0, atol=PASS_TOL)


@pytest.mark.parametrize("variant", NORM_VARIANTS)
def test_batch_input_training_equals_torch_with_sequence_statistics_folded_in(torch, variant):
    """norm="batch_input" in training mode: each layer-direction's A^x is normalized with ONE
    mean/variance over all active (t, b) positions, so for a fixed batch it is an affine map
    that folds into W_ih / b_ih. Layer by layer (2 layers, bidirectional, lengths), the
    statistics are computed in PyTorch from the previous layer's packed outputs, folded, and
    the layer is run as a plain PyTorch module; the running statistics are checked against a
    torch.nn.BatchNorm1d fed with the same active positions."""
    rng = np.random.default_rng(14)
    cfg = Config.from_variant(variant, num_layers=2, bidirectional=True, norm="batch_input")
    params = cfg.make_params(rng, scale=0.6)
    bufs = random_buffers(cfg, rng)
    x, states, lengths = make_inputs(cfg, rng, 5, 4, "mixed", True)
    out, st, new_bufs = reference_with_buffers(cfg, params, x, states, lengths, buffers=bufs)

    eps = 1e-5
    active = np.arange(5)[:, None] < lengths[None, :]
    layer_in = torch.tensor(x)
    for k in range(2):
        folded = {}
        for sfx in ("", "_reverse"):
            tag = f"_l{k}{sfx}"
            w = torch.tensor(params[f"weight_ih{tag}"])
            a_act = (layer_in @ w.T)[torch.tensor(active)]  # (n, G*H), active positions
            var, mean = torch.var_mean(a_act, dim=0, unbiased=False)
            scale = torch.tensor(params[f"bn_ih_weight{tag}"]) / torch.sqrt(var + eps)
            folded[f"weight_ih_l0{sfx}"] = scale[:, None] * w
            folded[f"bias_ih_l0{sfx}"] = torch.tensor(params[f"bias_ih{tag}"]) - scale * mean
            for name in ("weight_hh", "bias_hh") + (("weight_hr",) if cfg.proj_size else ()):
                folded[f"{name}_l0{sfx}"] = torch.tensor(params[f"{name}{tag}"])
            bn = torch.nn.BatchNorm1d(a_act.shape[1], momentum=0.1).double().train()
            with torch.no_grad():
                bn.running_mean.copy_(torch.tensor(bufs[f"bn_ih_running_mean{tag}"]))
                bn.running_var.copy_(torch.tensor(bufs[f"bn_ih_running_var{tag}"]))
                bn(a_act)
            np.testing.assert_allclose(
                new_bufs[f"bn_ih_running_mean{tag}"], bn.running_mean.numpy(), atol=PASS_TOL
            )
            np.testing.assert_allclose(
                new_bufs[f"bn_ih_running_var{tag}"], bn.running_var.numpy(), atol=PASS_TOL
            )
        in_size = layer_in.shape[2]
        if cfg.cell == "rnn":
            m = torch.nn.RNN(in_size, 4, nonlinearity=cfg.nonlinearity, bidirectional=True)
        elif cfg.cell == "gru":
            m = torch.nn.GRU(in_size, 4, bidirectional=True)
        else:
            m = torch.nn.LSTM(in_size, 4, proj_size=cfg.proj_size, bidirectional=True)
        m = m.double()
        m.load_state_dict(folded)
        thx = pack_states(cfg, [torch.tensor(s[2 * k : 2 * k + 2]) for s in states])
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            layer_in, torch.tensor(lengths), enforce_sorted=False
        )
        with torch.no_grad():
            pout, tst = m(packed, thx)
        layer_in, _ = torch.nn.utils.rnn.pad_packed_sequence(pout, total_length=5)
        tst = [tst[0], tst[1]] if cfg.is_lstm else [tst]
        for s, ts in zip(st, tst):
            np.testing.assert_allclose(s[2 * k : 2 * k + 2], ts.numpy(), rtol=0, atol=PASS_TOL)
    np.testing.assert_allclose(out, layer_in.numpy(), rtol=0, atol=PASS_TOL)


@pytest.mark.parametrize("variant", ["lstm", "gru", "rnn_tanh"])
def test_eval_rows_are_min_t_and_last_row(variant):
    """Eval step t uses running row min(t, S-1): buffers of S=2 rows on T=5 act like buffers
    with the last row repeated to 5 rows; S=0 acts like mean 0 / variance 1 (and differs from
    S=2, so the rows are really read)."""
    rng = np.random.default_rng(15)
    cfg = Config.from_variant(variant, bidirectional=True, norm="batch")
    params = cfg.make_params(rng, scale=0.6)
    x, states, lengths = make_inputs(cfg, rng, 5, 3, "mixed", True)
    bufs = random_buffers(cfg, rng, 2)
    padded = {k: np.concatenate([v, np.repeat(v[-1:], 3, axis=0)]) for k, v in bufs.items()}
    neutral = {k: np.full((1, v.shape[1]), 0.0 if "_mean_" in k else 1.0) for k, v in bufs.items()}
    empty = {k: np.zeros((0, v.shape[1])) for k, v in bufs.items()}

    def run(b):
        return reference_with_buffers(cfg, params, x, states, lengths, training=False, buffers=b)

    a, b_, c, d = run(bufs), run(padded), run(neutral), run(empty)
    np.testing.assert_array_equal(a[0], b_[0])
    np.testing.assert_array_equal(c[0], d[0])
    assert np.abs(a[0] - c[0]).max() > 1e-3
    for k in empty:
        assert d[2][k].shape == (0, bufs[k].shape[1])  # eval never grows the buffers
    # rows 2..4 of the padded buffers are really used at steps 2..4: changing row 1 only
    # (which the padded copy repeats) changes the output from step 1 on
    changed = {k: v.copy() for k, v in bufs.items()}
    for k in changed:
        changed[k][1] += 0.3 if "_mean_" in k else 0.5
    e = run(changed)
    np.testing.assert_array_equal(e[0][0, :, : cfg.h_out], a[0][0, :, : cfg.h_out])
    assert np.abs(e[0][1:] - a[0][1:]).max() > 1e-4


def test_spec_bias_placement_layer_norm_never_sees_a_bias():
    """Spec: "normalization never sees a bias". A bias added before LN0 would be removed by
    it (LN0 of a + b differs from LN0(a) + b); the reference adds biases after, so changing
    b_ih changes the LN-GRU output even though every gain is 1."""
    rng = np.random.default_rng(16)
    cfg = Config("gru", norm="layer")
    params = cfg.make_params(rng, scale=0.6)
    x, _, _ = make_inputs(cfg, rng, 3, 2, None, False)
    out1 = reference_with_buffers(cfg, params, x, None, None)[0]
    bumped = dict(params, bias_ih_l0=params["bias_ih_l0"] + 0.5)
    out2 = reference_with_buffers(cfg, bumped, x, None, None)[0]
    assert np.abs(out1 - out2).max() > 1e-2
    # a bias of the same value on every unit of the LN-RNN passes straight to phi
    rcfg = Config("rnn", norm="layer")
    rp = rcfg.make_params(rng, scale=0.6)
    zero_b = dict(rp, bias_ih_l0=np.zeros(4), bias_hh_l0=np.zeros(4))
    shifted = dict(zero_b, bias_hh_l0=np.full(4, 0.25))
    pre0, pre1 = [], []
    for p, log in ((zero_b, pre0), (shifted, pre1)):
        reference_forward(
            "rnn", p, x, num_layers=1, bidirectional=False, norm="layer",
            step_norms=lambda *_a, log=log: StepNorms(pre=lambda a, log=log: log.append(a) or a),
        )  # fmt: skip
    assert len(pre0) == 3
    # steps 0 (h_0 = 0) agree: the normalized sum does not see the bias
    np.testing.assert_allclose(pre0[0], pre1[0], rtol=0, atol=OP_TOL)


def test_lengths_for_kinds_cover_single_sequence_steps():
    """The 'mixed' lengths of the test suite leave one active sequence at the last steps (the
    n < 2 rule) and 'short' has trailing all-padding steps."""
    mixed = lengths_for("mixed", 6, 4)
    short = lengths_for("short", 6, 4)
    assert (5 < mixed).sum() == 1 and short.max() < 6
