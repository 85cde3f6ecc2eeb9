"""The cell options of the modules (``clip``; the LSTM's ``peephole``, ``cell_clip``,
``input_forget``) against the NumPy reference, central differences, and everything around
them (errors, copies, files, initialization, half weights, streams, ONNX).

The reference's options are checked against ONNX Runtime and a NumPy loop in
tests/test_cell_options.py; here the compiled core is checked against the reference for every
cell x norm (training and eval mode for the batch norms) x option set x direction (forward,
bidirectional, reverse) x projection, and its BPTT against float64 central differences.

Clip bounds are chosen per test from a pilot forward pass without clipping: the 0.65 quantile
of the magnitudes the clip would see, rounded to 0.05, so that a good share of the entries is
clipped and a good share is not, whatever the norm's scale. Every test asserts both shares
(at least 5 %), so it cannot pass with a clip ignored. Gradient checks also redraw the data
until no clipped quantity lies within 1e-4 of its bound (a central difference of step 1e-6
moves them by ~1e-5 at most: across the bound the loss has a kink).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from rnn_testing import (
    Config,
    check_gradients,
    clip_statistics,
    make_inputs,
    make_module,
    make_seeds,
    norm_condition,
    pack_states,
    random_buffers,
    reference,
    reference_masks,
    reference_with_buffers,
    relu_margin,
    unpack_states,
)

from rnncore.reference import StepNorms

T, B = 5, 4
SIZES = dict(input_size=3, hidden_size=4)
AUTO = "auto"  # a clip bound chosen from a pilot pass (see the module docstring)
CALL_SEED = 20261203
# The tolerances of tests/test_norm.py (justified there): base * max(1, kappa / 4) with the
# data's conditioning kappa <= MAX_KAPPA (rnn_testing.norm_condition; 1 for norm=None).
BASE_TOL = {"float64": 1e-12, "float32": 3e-5}
MIN_SHARE = 0.05
MARGIN = 1e-4
MAX_KAPPA = 100.0  # as tests/test_norm.py

MODES = [
    pytest.param(None, True, id="plain"),
    pytest.param("layer", True, id="layer"),
    pytest.param("batch", True, id="batch-train"),
    pytest.param("batch", False, id="batch-eval"),
    pytest.param("batch_input", True, id="batch_input-train"),
    pytest.param("batch_input", False, id="batch_input-eval"),
]
LSTM_OPTIONS = {
    "peephole": dict(peephole=True),
    "clip": dict(clip=AUTO),
    "cell_clip": dict(cell_clip=AUTO),
    "input_forget": dict(input_forget=True),
    "peephole-input_forget": dict(peephole=True, input_forget=True),
    "clip-cell_clip": dict(clip=AUTO, cell_clip=AUTO),
    "all": dict(peephole=True, clip=AUTO, cell_clip=AUTO, input_forget=True),
}
DIRECTIONS = {
    "uni": dict(),
    "bi": dict(bidirectional=True),
    "reverse": dict(reverse=True),
}


def _cases():
    """(variant, option-set id, options) of every cell."""
    for variant in ("lstm", "lstm_proj"):
        for name, opts in LSTM_OPTIONS.items():
            yield variant, name, opts
    for variant in ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before"):
        yield variant, "clip", dict(clip=AUTO)


CASES = [pytest.param(v, o, id=f"{v}-{n}") for v, n, o in _cases()]


def _q(values, q=0.65) -> float:
    """The ``q`` quantile of ``values`` rounded to 0.05 (at least 0.05)."""
    return max(0.05, round(float(np.quantile(values, q)) / 0.05) * 0.05)


def resolve(cfg: Config, rng, training: bool) -> Config:
    """``cfg`` with its ``AUTO`` bounds replaced by values from a pilot pass (no clipping)."""
    opts = dict(cfg.cell_options)
    auto = [k for k in ("clip", "cell_clip") if opts.get(k) == AUTO]
    if not auto:
        return cfg
    pilot = cfg.replace(cell_options=tuple((k, v) for k, v in opts.items() if v != AUTO))
    params = pilot.make_params(rng, scale=0.7)
    bufs = random_buffers(pilot, rng, 3) if not training else {}
    x, states, lengths = make_inputs(pilot, rng, T, B, "mixed")
    seen = {"gate": [], "cell": []}

    def step_norms(_layer, _direction, _k, active):
        return StepNorms(observe=lambda what, a: seen[what].append(np.abs(a[active]).ravel()))

    reference(pilot, params, x, states, lengths, step_norms=step_norms, training=training,
              buffers=bufs)  # fmt: skip
    if "clip" in auto:
        opts["clip"] = _q(np.concatenate(seen["gate"]))
    if "cell_clip" in auto:
        opts["cell_clip"] = _q(np.concatenate(seen["cell"]))
    return cfg.replace(cell_options=tuple(opts.items()))


def config(variant, opts, norm, training, rng, **kw) -> Config:
    cfg = Config.from_variant(variant, norm=norm, num_layers=2, cell_options=tuple(opts.items()),
                              **SIZES, **kw)  # fmt: skip
    return resolve(cfg, rng, training)


def assert_clipping(cfg, stats, margin=0.0):
    """Both shares of every clip, and (for gradient checks) the margin to the bound."""
    for what, (clipped, kept, dist) in stats.items():
        total = clipped + kept
        assert clipped >= MIN_SHARE * total, f"{what}: {clipped}/{total} clipped ({cfg})"
        assert kept >= MIN_SHARE * total, f"{what}: {kept}/{total} not clipped ({cfg})"
        assert dist > margin, f"{what}: an entry lies {dist} from the bound"


def draw(cfg, rng, training, *, margin, masks=None, lengths_kind="mixed", with_hx=True):
    """Params (scale 0.7), buffers, inputs and loss seeds, redrawn until the clips clip both
    ways (and stay ``margin`` away from their bounds), the batch norms are well
    conditioned and no ReLU input lies near its kink."""
    kw = {} if masks is None else {"masks": masks}
    for _ in range(100):
        params = cfg.make_params(rng, scale=0.7)
        bufs = random_buffers(cfg, rng, 3)
        x, states, lengths = make_inputs(cfg, rng, T, B, lengths_kind, with_hx)
        ref_kw = dict(training=training, buffers=bufs, **kw)
        stats = clip_statistics(cfg, params, x, states, lengths, **ref_kw)
        if any(c < MIN_SHARE * (c + k) or k < MIN_SHARE * (c + k) or d <= margin
               for c, k, d in stats.values()):  # fmt: skip
            continue
        if norm_condition(cfg, params, x, states, lengths, **ref_kw) > MAX_KAPPA:
            continue
        if margin and relu_margin(cfg, params, x, states, lengths, **ref_kw) <= 1e-4:
            continue
        break
    else:  # pragma: no cover
        raise AssertionError(f"could not draw data that clips both ways for {cfg}")
    assert_clipping(cfg, stats, margin)
    out_shape = cfg.x_shape(T, B)[:-1] + (cfg.num_directions * cfg.h_out,)
    seeds = make_seeds(cfg, rng, out_shape, B)
    return params, bufs, x, states, lengths, seeds


def load(rc, cfg, params, bufs, training, dtype="float64"):
    given = {**params, **bufs}  # the running statistics the reference starts from
    m = make_module(rc, cfg, dtype, {k: np.asarray(v, dtype) for k, v in given.items()})
    return m.train() if training else m.eval()


# ---------------------------------------------------------------------------------------------
# Forward against the reference.


# every case x mode, but the original GRU (reset_after=False) is norm=None only
FORWARD_CASES = [
    pytest.param(*case.values, *mode.values, id=f"{case.id}-{mode.id}")
    for case in CASES
    for mode in MODES
    if not (case.values[0] == "gru_reset_before" and mode.values[0] is not None)
]


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("variant,opts,norm,training", FORWARD_CASES)
def test_forward_matches_reference(rc, rng, variant, opts, norm, training, direction):
    cfg = config(variant, opts, norm, training, rng, **DIRECTIONS[direction])
    params, bufs, x, states, lengths, _ = draw(cfg, rng, training, margin=0.0)
    for dtype in ("float64", "float32"):
        m = load(rc, cfg, params, bufs, training, dtype)
        out, hn = m(x.astype(dtype), pack_states(cfg, states), lengths)
        ref_out, ref_states, ref_bufs = reference_with_buffers(
            cfg, params, x, states, lengths, training=training, buffers=bufs
        )
        kappa = norm_condition(cfg, params, x, states, lengths, training=training, buffers=bufs)
        tol = dict(rtol=0, atol=BASE_TOL[dtype] * max(1.0, kappa / 4.0))
        np.testing.assert_allclose(out, ref_out, **tol)
        for got, want in zip(unpack_states(cfg, hn), ref_states):
            np.testing.assert_allclose(got, want, **tol)
        if training and cfg.is_batch_norm:  # the running statistics move alike
            for name, value in m.buffers().items():
                np.testing.assert_allclose(value, ref_bufs[name], **tol)
        # forward_train computes the same
        out2, _, _ = m.forward_train(x.astype(dtype), pack_states(cfg, states), lengths)
        np.testing.assert_allclose(out2, ref_out, **tol)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant,opts", [c for c in CASES if "gru_reset" not in c.id])
def test_forward_with_zoneout_and_dropouts(rc, rng, variant, opts, training):
    regs = (("dropout", 0.3), ("input_dropout", 0.25), ("recurrent_dropout", 0.35),
            ("zoneout", 0.3))  # fmt: skip
    cfg = config(variant, opts, "layer", training, rng, bidirectional=True, regularizers=regs,
                 batch_first=True)  # fmt: skip
    masks = reference_masks(cfg, CALL_SEED, T, B, training)
    params, bufs, x, states, lengths, _ = draw(cfg, rng, training, margin=0.0, masks=masks)
    m = load(rc, cfg, params, bufs, training)
    out, hn = m(x, pack_states(cfg, states), lengths, seed=CALL_SEED)
    ref_out, ref_states = reference(cfg, params, x, states, lengths, masks=masks)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    for got, want in zip(unpack_states(cfg, hn), ref_states):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant,opts", [c for c in CASES if "gru_reset" not in c.id])
def test_unbatched_input(rc, rng, variant, opts):
    cfg = config(variant, opts, "layer", True, rng, reverse=True)
    m = load(rc, cfg, cfg.make_params(rng, scale=0.7), {}, False)
    x = 2 * rng.standard_normal((T, cfg.input_size))
    out, hn = m(x)
    ref_out, ref_states = reference(cfg, m.state_dict(), x, None, None)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    for got, want in zip(unpack_states(cfg, hn), ref_states):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Backward against central differences.

GRAD_CASES = [
    pytest.param("lstm", LSTM_OPTIONS["all"], id="lstm-all"),
    pytest.param("lstm_proj", LSTM_OPTIONS["all"], id="lstm_proj-all"),
    pytest.param("lstm", LSTM_OPTIONS["peephole"], id="lstm-peephole"),
    pytest.param("lstm", LSTM_OPTIONS["clip-cell_clip"], id="lstm-clip-cell_clip"),
    pytest.param("lstm_proj", LSTM_OPTIONS["peephole-input_forget"], id="lstm_proj-pif"),
    pytest.param("rnn_tanh", dict(clip=AUTO), id="rnn_tanh-clip"),
    pytest.param("rnn_relu", dict(clip=AUTO), id="rnn_relu-clip"),
    pytest.param("gru", dict(clip=AUTO), id="gru-clip"),
]


@pytest.mark.parametrize("direction", ["bi", "reverse"])
@pytest.mark.parametrize("norm,training", MODES)
@pytest.mark.parametrize("variant,opts", GRAD_CASES)
def test_gradients_match_central_differences(rc, rng, variant, opts, norm, training, direction):
    cfg = config(variant, opts, norm, training, rng, **DIRECTIONS[direction])
    params, bufs, x, states, lengths, seeds = draw(cfg, rng, training, margin=MARGIN)
    m = load(rc, cfg, params, bufs, training)
    check_gradients(m, cfg, x, states, lengths, seeds, rng, richardson=norm is not None)


def test_gradients_of_the_original_gru_with_clip(rc, rng):
    cfg = config("gru_reset_before", dict(clip=AUTO), None, True, rng, bidirectional=True)
    params, bufs, x, states, lengths, seeds = draw(cfg, rng, True, margin=MARGIN)
    m = load(rc, cfg, params, bufs, True)
    check_gradients(m, cfg, x, states, lengths, seeds, rng)


@pytest.mark.parametrize("variant,opts", [GRAD_CASES[0], GRAD_CASES[6]])
def test_gradients_with_zoneout_and_dropouts(rc, rng, variant, opts):
    regs = (("dropout", 0.3), ("input_dropout", 0.25), ("recurrent_dropout", 0.35),
            ("zoneout", 0.3))  # fmt: skip
    cfg = config(variant, opts, "layer", True, rng, bidirectional=True, regularizers=regs)
    masks = reference_masks(cfg, CALL_SEED, T, B, True)
    params, bufs, x, states, lengths, seeds = draw(cfg, rng, True, margin=MARGIN, masks=masks)
    m = load(rc, cfg, params, bufs, True)
    check_gradients(m, cfg, x, states, lengths, seeds, rng, richardson=True,
                    call_seed=CALL_SEED)  # fmt: skip


@pytest.mark.parametrize("norm", [None, "layer"])
def test_gradients_wrt_the_zero_initial_state(rc, rng, norm):
    cfg = config("lstm", LSTM_OPTIONS["all"], norm, True, rng, bidirectional=True)
    params, bufs, x, _, lengths, seeds = draw(cfg, rng, True, margin=MARGIN, with_hx=False)
    m = load(rc, cfg, params, bufs, True)
    check_gradients(m, cfg, x, None, lengths, seeds, rng, richardson=norm is not None,
                    state_step=2e-7 if norm else None)  # fmt: skip


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_input_forget_leaves_the_forget_gate_without_gradient(rc, rng, norm):
    cfg = config("lstm", dict(peephole=True, input_forget=True), norm, True, rng,
                 bidirectional=True)  # fmt: skip
    params, bufs, x, states, lengths, seeds = draw(cfg, rng, True, margin=0.0)
    m = load(rc, cfg, params, bufs, True)
    m.zero_grad()
    out, hn, tape = m.forward_train(x, pack_states(cfg, states), lengths)
    m.backward(tape, seeds[0], (seeds[1], seeds[2]))
    hs = cfg.hidden_size
    # The forget block of the weights still enters the layer norm's statistics over all
    # four gates: with norm="layer" only what comes after the norm is unused.
    unused = ("bias_ih", "bias_hh", "ln_ih_weight", "ln_hh_weight", "bn_ih_weight",
              "bn_hh_weight")  # fmt: skip
    if norm != "layer":
        unused += ("weight_ih", "weight_hh")
    for name, grad in m.grads.items():
        if name.startswith(("weight_ih", "weight_hh", *unused)) and grad.shape[0] == 4 * hs:
            assert (not grad[hs : 2 * hs].any()) == name.startswith(unused), name
            assert grad[:hs].any() and grad[2 * hs :].any(), name
        elif name.startswith("weight_cf"):
            assert not grad.any(), name
        elif name.startswith(("weight_ci", "weight_co")):
            assert grad.any(), name


def test_clipped_entries_get_no_gradient(rc):
    """With every gate input far beyond a tiny clip, the output depends on nothing but the
    initial cell state through f (RNN: nothing at all)."""
    m = rc.RNN(2, 3, clip=1e-3, dtype="float64", seed=1)
    for p in m.parameters().values():
        p[...] = 5.0
    x = np.ones((4, 2, 2))
    m.zero_grad()
    out, _, tape = m.forward_train(x)
    np.testing.assert_allclose(out, np.tanh(1e-3))
    gx, gh = m.backward(tape, np.ones_like(out))
    assert not gx.any() and not gh.any()
    assert not any(g.any() for g in m.grads.values())


# ---------------------------------------------------------------------------------------------
# Options, errors, copies, files, initialization.


def test_errors(rc):
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="clip must be a positive finite number or None"):
            rc.GRU(3, 4, clip=bad)
        with pytest.raises(ValueError, match="cell_clip must be a positive finite number"):
            rc.LSTM(3, 4, cell_clip=bad)
    for bad in (True, "1", [1.0]):
        with pytest.raises(TypeError, match="clip must be a positive finite number or None"):
            rc.RNN(3, 4, clip=bad)
    with pytest.raises(TypeError, match="peephole"):
        rc.LSTM(3, 4, peephole=1)
    with pytest.raises(TypeError, match="input_forget"):
        rc.LSTM(3, 4, input_forget=None)
    for cls in (rc.RNN, rc.GRU):
        for key, value in (("peephole", True), ("cell_clip", 1.0), ("input_forget", True)):
            with pytest.raises(TypeError, match=f"{key} is an LSTM option"):
                cls(3, 4, **{key: value})
    from rnncore._options import RecurrentOptions

    with pytest.raises(ValueError, match="peephole is an LSTM option"):
        RecurrentOptions.from_dict(dict(cell="gru", input_size=3, hidden_size=4, peephole=True))
    with pytest.raises(TypeError):  # cells do not take the options
        rc.LSTMCell(3, 4, peephole=True)


def test_attributes_repr_copies_and_files(rc, tmp_path):
    m = rc.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, clip=0.75, peephole=True,
                cell_clip=1.5, input_forget=True, norm="layer", seed=2).eval()  # fmt: skip
    assert (m.clip, m.cell_clip, m.peephole, m.input_forget) == (0.75, 1.5, True, True)
    r = repr(m)
    for text in ("clip=0.75", "cell_clip=1.5", "peephole=True", "input_forget=True"):
        assert text in r
    assert "clip" not in repr(rc.LSTM(3, 4))
    names = list(m.parameters())
    i = names.index("weight_hr_l0")
    assert names[i + 1 : i + 4] == ["weight_ci_l0", "weight_cf_l0", "weight_co_l0"]
    assert names[i + 4].startswith("ln_")
    assert m.parameters()["weight_co_l1_reverse"].shape == (4,)
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    want = m(x, lengths=[5, 3])
    rc.save(m, tmp_path / "m.safetensors")
    for other in (pickle.loads(pickle.dumps(m)), rc.load(tmp_path / "m.safetensors"),
                  copy.copy(m), copy.deepcopy(m)):  # fmt: skip
        assert other.options == m.options
        got = other(x, lengths=[5, 3])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1][1], want[1][1])
    g = rc.GRU(3, 4, clip=0.5, seed=3)
    rc.save(g, tmp_path / "g.safetensors")
    assert rc.load(tmp_path / "g.safetensors").clip == 0.5


def test_files_without_the_options_load_with_the_defaults(rc):
    from rnncore._options import RecurrentOptions

    d = rc.LSTM(3, 4).options.to_dict()
    for key in ("clip", "cell_clip", "peephole", "input_forget"):
        del d[key]
    o = RecurrentOptions.from_dict(d)
    assert (o.clip, o.cell_clip, o.peephole, o.input_forget) == (None, None, False, False)


@pytest.mark.parametrize("init", ["default", "torch"])
def test_peephole_initialization(rc, init):
    m = rc.LSTM(3, 16, num_layers=2, bidirectional=True, peephole=True, init=init, seed=4)
    bound = 1 / np.sqrt(16)
    peeps = [p for n, p in m.parameters().items() if n.startswith("weight_c")]
    assert len(peeps) == 12
    for p in peeps:
        assert np.all(np.abs(p) <= bound) and np.abs(p).max() > bound / 4
    assert len({p.tobytes() for p in peeps}) == 12  # each drawn on its own
    # a model without peepholes draws what it always drew (peepholes come last in a layer)
    plain = rc.LSTM(3, 16, init=init, seed=4)
    peep = rc.LSTM(3, 16, peephole=True, init=init, seed=4)
    for name, value in plain.parameters().items():
        np.testing.assert_array_equal(peep.parameters()[name], value)


def test_half_weights_keep_the_peepholes_in_float32(rc):
    m = rc.LSTM(3, 4, peephole=True, clip=0.8, cell_clip=1.2, seed=5).eval()
    for p in m.parameters().values():
        if p.ndim == 1 and p.shape == (4,):
            p[...] = np.float32(0.123456789)  # not a float16 value
    h = m.half_weights()
    assert h.parameters()["weight_ci_l0"][0] == np.float32(0.123456789)
    assert h.peephole and h.clip == 0.8
    x = np.random.default_rng(5).standard_normal((6, 2, 3)).astype(np.float32)
    params = {k: np.asarray(v, np.float64) for k, v in h.state_dict().items()}
    cfg = Config("lstm", cell_options=(("peephole", True), ("clip", 0.8), ("cell_clip", 1.2)),
                 **SIZES)  # fmt: skip
    ref_out, _ = reference(cfg, params, x, None, None)
    np.testing.assert_allclose(h(x)[0], ref_out, rtol=0, atol=2e-5)


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_streams_step_what_the_call_computes(rc, norm):
    m = rc.LSTM(3, 5, num_layers=2, peephole=True, clip=0.9, cell_clip=1.1, input_forget=True,
                norm=norm, dtype="float64", seed=6)  # fmt: skip
    rng = np.random.default_rng(6)
    for _ in range(2):
        m(2 * rng.standard_normal((4, 3, 3)))
    m.eval()
    x = 2 * rng.standard_normal((7, 2, 3))
    want, (h, c) = m(x)
    s = m.stream(batch_size=2)
    got = np.stack([s.step(x[t]) for t in range(7)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.state[1], c, rtol=0, atol=1e-12)
    g = rc.GRU(3, 4, clip=0.5, seed=7).eval()
    with rc.StreamBatcher(g, max_batch=4) as batcher:
        sid = batcher.open()
        y = [batcher.step(sid, x[t, 0].astype(np.float32)) for t in range(7)]
    np.testing.assert_allclose(np.stack(y), g(x[:, 0].astype(np.float32))[0], rtol=0,
                               atol=1e-6)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# ONNX: rnncore's exports run in ONNX Runtime; the operators' options import.

ONNX_CASES = [
    pytest.param("lstm", dict(peephole=True), None, "LSTM", id="lstm-peephole-std"),
    pytest.param(
        "lstm",
        dict(clip=0.6, input_forget=True, peephole=True),
        None,
        "LSTM",
        id="lstm-all-onnx-std",
    ),
    pytest.param("lstm", dict(cell_clip=0.5, clip=1.0), None, "Loop", id="lstm-cell_clip-loop"),
    pytest.param(
        "lstm",
        dict(peephole=True, cell_clip=0.7, input_forget=True, clip=0.9),
        "layer",
        "Loop",
        id="lstm-all-layer-loop",
    ),
    pytest.param("lstm", dict(peephole=True, clip=0.8), "batch", "Loop", id="lstm-batch-loop"),
    pytest.param("gru", dict(clip=0.5), None, "GRU", id="gru-clip-std"),
    pytest.param("gru", dict(clip=0.5), "batch_input", "Loop", id="gru-clip-loop"),
    pytest.param("rnn", dict(clip=0.4), None, "RNN", id="rnn-clip-std"),
    pytest.param("rnn", dict(clip=0.4), "layer", "Loop", id="rnn-clip-loop"),
    pytest.param(
        "lstm",
        dict(peephole=True, clip=0.6, input_forget=True, dtype="float64"),
        None,
        "Loop",
        id="lstm-float64-loop",
    ),
    pytest.param(
        "gru",
        dict(clip=0.5, reset_after=False, dtype="float64"),
        None,
        "Loop",
        id="gru-reset_before-float64-loop",
    ),
]


def _session(ort, model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,opts,norm,op", ONNX_CASES)
def test_onnx_export_runs_in_onnx_runtime(rc, cell, opts, norm, op, direction):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cls = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}[cell]
    kw = dict(bidirectional=direction == "bidirectional", reverse=direction == "reverse")
    m = cls(3, 4, num_layers=2, norm=norm, seed=8, **kw, **opts)
    rng = np.random.default_rng(8)
    for p in m.parameters().values():
        p *= 2.0  # larger pre-activations: the clips clip
    if norm in ("batch", "batch_input"):
        for _ in range(2):
            m(rng.standard_normal((4, 3, 3)))
    m.eval()
    model = rc.to_onnx(m, lengths=True, initial_state=True)
    assert op in {n.op_type for n in model.graph.node}
    sess = _session(ort, model)
    d = 2 if kw["bidirectional"] else 1
    # One file, two sequence lengths and batch sizes (T and B are symbolic).
    for lengths in (np.array([6, 2, 4], np.int64), np.array([1, 2, 1, 2, 2], np.int64)):
        T, B = int(lengths.max()), len(lengths)
        x = 2 * rng.standard_normal((T, B, 3)).astype(m.dtype)
        h0 = rng.standard_normal((2 * d, B, 4)).astype(m.dtype)
        c0 = rng.standard_normal((2 * d, B, 4)).astype(m.dtype)
        feeds = {"x": x, "lengths": lengths, "h_0": h0}
        if cell == "lstm":
            feeds["c_0"] = c0
        got = sess.run(None, feeds)
        want = m(x, (h0, c0) if cell == "lstm" else h0, lengths)
        want = [want[0], *(want[1] if cell == "lstm" else [want[1]])]
        # float64: the same operations in another order (ULPs, compounding over 6 steps and
        # 2 layers); float32 likewise, relative to values of order 1.
        tol = 1e-12 if m.dtype == np.float64 else 1e-5
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    if op != "Loop":  # and the standard operators import back as the same module
        layers = list(rc.from_onnx(model).values())
        # ONNX's clip attribute is a float32
        want_opts = (float(np.float32(m.clip)) if m.clip else None, getattr(m, "peephole", 0))
        assert [(la.clip, getattr(la, "peephole", 0)) for la in layers] == [want_opts] * 2


def _onnx_node_model(cell, inits, attrs, d, input_size=3, hidden=4):
    """One ONNX LSTM/GRU/RNN node: weights as initializers, X, sequence_lens, initial_h
    (initial_c) as graph inputs."""
    from onnx import TensorProto, helper, numpy_helper

    op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    if cell == "lstm":
        names += ["initial_c", "P" if "P" in inits else ""]
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    node = helper.make_node(op, names, outs, hidden_size=hidden, **attrs)
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("X", f, ["T", "B", input_size]),
        helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]),
        helper.make_tensor_value_info("initial_h", f, [d, "B", hidden]),
    ]
    if cell == "lstm":
        inputs.append(helper.make_tensor_value_info("initial_c", f, [d, "B", hidden]))
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info(n, f, None) for n in outs],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


IMPORT_CASES = [
    pytest.param("lstm", dict(clip=0.7), True, id="lstm-P-clip"),
    pytest.param("lstm", dict(input_forget=1), True, id="lstm-P-input_forget"),
    pytest.param("lstm", dict(input_forget=1, clip=0.9), False, id="lstm-input_forget-clip"),
    pytest.param("lstm", {}, True, id="lstm-P"),
    pytest.param("gru", dict(clip=0.6, linear_before_reset=1), False, id="gru-lbr1-clip"),
    pytest.param("gru", dict(clip=0.6, linear_before_reset=0), False, id="gru-lbr0-clip"),
    pytest.param("rnn", dict(clip=0.5, activations=["Relu"]), False, id="rnn-relu-clip"),
    pytest.param("rnn", dict(clip=0.5), False, id="rnn-tanh-clip"),
]


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell,attrs,with_p", IMPORT_CASES)
def test_from_onnx_imports_the_operator_options(rc, cell, attrs, with_p, direction):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    d = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(9)
    inits = {"W": rng.uniform(-1, 1, (d, g * 4, 3)), "R": rng.uniform(-1, 1, (d, g * 4, 4)),
             "B": rng.uniform(-0.5, 0.5, (d, 2 * g * 4))}  # fmt: skip
    if with_p:
        inits["P"] = rng.uniform(-1, 1, (d, 12))
    attrs = dict(attrs, direction=direction)
    if "activations" in attrs:
        attrs["activations"] = attrs["activations"] * d
    model = _onnx_node_model(cell, inits, attrs, d)
    x = 2 * rng.standard_normal((6, 3, 3)).astype(np.float32)
    lengths = np.array([6, 2, 5], np.int32)
    h0 = rng.standard_normal((d, 3, 4)).astype(np.float32)
    c0 = rng.standard_normal((d, 3, 4)).astype(np.float32)
    feeds = {"X": x, "sequence_lens": lengths, "initial_h": h0}
    if cell == "lstm":
        feeds["initial_c"] = c0
    got = _session(ort, model).run(None, feeds)
    (m,) = rc.from_onnx(model).values()
    assert m.clip == (np.float32(attrs["clip"]) if "clip" in attrs else None)
    if cell == "lstm":
        assert m.peephole == with_p and m.input_forget == bool(attrs.get("input_forget", 0))
    out, hn = m(x, (h0, c0) if cell == "lstm" else h0, lengths)
    y = got[0].transpose(0, 2, 1, 3).reshape(6, 3, d * 4)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)
    for a, b in zip(hn if cell == "lstm" else [hn], got[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_from_onnx_all_zero_peepholes_are_none(rc):
    pytest.importorskip("onnx")
    rng = np.random.default_rng(10)
    inits = {"W": rng.uniform(-1, 1, (1, 16, 3)), "R": rng.uniform(-1, 1, (1, 16, 4)),
             "B": np.zeros((1, 32)), "P": np.zeros((1, 12))}  # fmt: skip
    (m,) = rc.from_onnx(_onnx_node_model("lstm", inits, {}, 1)).values()
    assert not m.peephole and "weight_ci_l0" not in m.parameters()


def test_from_onnx_refuses_a_bad_clip(rc):
    pytest.importorskip("onnx")
    rng = np.random.default_rng(11)
    inits = {"W": rng.uniform(-1, 1, (1, 4, 3)), "R": rng.uniform(-1, 1, (1, 4, 4))}
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        rc.from_onnx(_onnx_node_model("rnn", inits, {"clip": -1.0}, 1))
    with pytest.raises(ValueError, match="activations"):
        rc.from_onnx(_onnx_node_model("rnn", inits, {"activations": ["Sigmoid"]}, 1))
