"""The report of ``python -m rnncore``: how this installation was built, and a self-check.

The self-check runs every cell in float64 (two layers, bidirectional, sequences of
different lengths; every norm, the regularizers and the cell options) and compares:
  * the forward pass with ``rnncore.reference``, a slow NumPy transcription of the
    equations that shares no code with the compiled core;
  * the backward pass (BPTT) with central finite differences: the gradient's dot
    product with a random direction over every input, initial state and parameter
    must equal the derivative of the loss along that direction.
Then each cell's ``half_weights()`` copy (float32, weight matrices in float16) at batch
1, streamed one step per call, against the reference fed the rounded weights.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import rnncore

from . import _core, reference

# float64 throughout: the forward pass agrees with the reference to rounding (1e-12
# leaves room for the summation orders of a 2-layer stack and for normalization's
# amplification of rounding), and a Richardson-extrapolated central difference with step
# 1e-5 has truncation error ~1e-20 |f^(5)| and rounding error ~1e-16 / 1e-5 = 1e-11
# relative to the loss, so 1e-6 relative is a comfortable bound.
FORWARD_TOL = 1e-12
GRADIENT_TOL = 1e-6

CASES = [
    ("RNN tanh", rnncore.RNN, {"nonlinearity": "tanh"}),
    ("RNN relu", rnncore.RNN, {"nonlinearity": "relu"}),
    ("LSTM", rnncore.LSTM, {}),
    ("LSTM proj_size=3", rnncore.LSTM, {"proj_size": 3}),
    ("GRU", rnncore.GRU, {}),
    ("GRU reset_after=False", rnncore.GRU, {"reset_after": False}),
]
# Normalized cells, in training mode (batch statistics) and, for the batch norms, in
# eval mode (running statistics, after one training call has set them).
for _cls in (rnncore.RNN, rnncore.LSTM, rnncore.GRU):
    for _norm in ("layer", "batch", "batch_input"):
        for _mode in ("train",) if _norm == "layer" else ("train", "eval"):
            CASES.append((f"{_cls.__name__} norm={_norm} {_mode}", _cls,
                          {"norm": _norm, "_eval": _mode == "eval"}))  # fmt: skip
# Every regularizer at once (training mode, masks replayed from the call's seed), plain and
# layer-normalized, and zoneout's eval-mode expectation.
_REG = {"dropout": 0.3, "input_dropout": 0.2, "recurrent_dropout": 0.3, "zoneout": 0.3}
for _cls in (rnncore.RNN, rnncore.LSTM, rnncore.GRU):
    CASES.append((f"{_cls.__name__} dropout+zoneout train", _cls, {"_reg": _REG}))
    CASES.append((f"{_cls.__name__} LN dropout+zoneout train", _cls,
                  {"_reg": _REG, "norm": "layer"}))  # fmt: skip
    CASES.append((f"{_cls.__name__} zoneout eval", _cls, {"_reg": _REG, "_eval": True}))
# The cell options: clip on every cell; the LSTM's peepholes, cell clip and coupled gates.
_LSTM_OPTS = {"peephole": True, "clip": 0.5, "cell_clip": 0.8, "input_forget": True}
CASES += [
    ("RNN relu clip=0.5", rnncore.RNN, {"nonlinearity": "relu", "clip": 0.5}),
    ("GRU clip=0.5", rnncore.GRU, {"clip": 0.5}),
    ("LSTM peephole, clips, coupled", rnncore.LSTM, _LSTM_OPTS),
    ("LSTM peephole LN", rnncore.LSTM, {"peephole": True, "clip": 0.5, "norm": "layer"}),
]


def print_info() -> None:
    """Prints the version, compiler, kernels in use, threads, Python and NumPy versions."""
    info = rnncore.build_info()
    print(f"rnncore {info['version']}")
    print(
        f"  compiler      {info['compiler']}, Eigen {info['eigen']}, "
        f"{'optimized' if info['optimized'] else 'NOT optimized'}"
    )
    print(f"  kernels       {info['isa']} (SIMD: {info['simd']})")
    print(
        f"  built for     {', '.join(info['isas_built'])}; "
        f"this CPU runs {', '.join(info['isas_supported'])}"
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"  threads       {info['threads']} (cores available: {cores}; "
        f"set with RNNCORE_NUM_THREADS or rnncore.set_num_threads)"
    )
    print(f"  python        {sys.version.split()[0]}, numpy {np.__version__}")


def _states(m, hx):
    return hx if isinstance(hx, tuple) else (hx,)


def _check_case(name, cls, kwargs, rng) -> tuple[float, float]:
    """Forward error against the reference and relative gradient error of one case."""
    T, B, D, H = 5, 3, 4, 4
    kwargs = dict(kwargs)
    eval_mode = kwargs.pop("_eval", False)
    reg = kwargs.pop("_reg", {})
    m = cls(D, H, num_layers=2, bidirectional=True, dtype="float64", seed=1, **kwargs, **reg)
    for k, p in m.parameters().items():  # not the default init: exercise every entry
        gain = k.startswith(("ln_", "bn_")) and "_weight" in k
        p[...] = rng.uniform(0.5, 1.5, size=p.shape) if gain else rng.uniform(-0.6, 0.6, p.shape)
    if eval_mode:
        m(rng.standard_normal((T + 1, B, D)))  # running statistics to use
        m.eval()
    P = kwargs.get("proj_size", 0) or H
    x = rng.standard_normal((T, B, D))
    lengths = np.array([5, 2, 4])
    h0 = rng.standard_normal((4, B, P))
    hx = (h0, rng.standard_normal((4, B, H))) if cls is rnncore.LSTM else h0

    out, st, tape = m.forward_train(x, hx, lengths)
    masks = None
    if reg:  # the call's masks, from the core's draws for its seed

        def hits(layer, direction, site, p, count):
            return _core.mask_hits(
                seed=tape.seed, layer=layer, direction=direction, site=site, p=p, count=count
            )

        masks = reference.draw_masks(
            hits, cls.__name__.lower(), input_size=D, hidden_size=H, num_layers=2,
            bidirectional=True, steps=T, batch=B, training=m.training, **reg,
        )  # fmt: skip
    ref = reference.reference_forward(
        cls.__name__.lower(), m.state_dict(), x, hx, lengths,
        num_layers=2, bidirectional=True, training=m.training, masks=masks, **kwargs,
    )  # fmt: skip
    out_ref, st_ref = ref[0], ref[1]
    fwd_err = max(
        np.abs(out - out_ref).max(),
        *(np.abs(a - b).max() for a, b in zip(_states(m, st), _states(m, st_ref))),
    )

    # Loss L = <R_out, out> + <R_h, h_n> (+ <R_c, c_n>) with fixed random R.
    r_out = rng.standard_normal(out.shape)
    r_st = tuple(rng.standard_normal(s.shape) for s in _states(m, st))

    def loss() -> float:
        o, s = m(x, hx, lengths, seed=tape.seed)
        return float(np.sum(r_out * o) + sum(np.sum(r * a) for r, a in zip(r_st, _states(m, s))))

    m.zero_grad()
    gx, ghx = m.backward(tape, r_out, r_st if cls is rnncore.LSTM else r_st[0])
    # Everything we differentiate: x, the initial states, the parameters.
    tensors = [x, *_states(m, hx), *m.parameters().values()]
    grads = [gx, *_states(m, ghx), *m.grads.values()]
    directions = [rng.standard_normal(t.shape) for t in tensors]
    # A unit direction: the step moves the whole point by eps, no more (batch statistics
    # over 2 sequences bend on the scale of sqrt(bn_eps) ~ 3e-3).
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in directions))
    directions = [d / norm for d in directions]
    analytic = sum(float(np.sum(g * v)) for g, v in zip(grads, directions))

    def derivative(h: float) -> float:  # central difference along the direction
        for t, v in zip(tensors, directions):
            t += h * v
        up = loss()
        for t, v in zip(tensors, directions):
            t -= 2 * h * v
        down = loss()
        for t, v in zip(tensors, directions):
            t += h * v
        return (up - down) / (2 * h)

    # Richardson extrapolation cancels the h^2 term of the central difference: batch
    # statistics over 2 sequences (a step where only 2 are active) have a large third
    # derivative, and plain differences would be off by ~1e-5 there.
    eps = 1e-5
    numeric = (4 * derivative(eps) - derivative(2 * eps)) / 3
    grad_err = abs(analytic - numeric) / max(1.0, abs(numeric))
    return fwd_err, grad_err


# float32 arithmetic against the reference fed the same (float16-rounded) weights: a few
# ulp per operation over 6 steps of 2 layers, ~1e-6; a wrong kernel is off by 1e-2 or more.
HALF_TOL = 1e-5


def _check_half(cls, rng) -> float:
    """Largest scaled error of a streamed half_weights() copy (D = 37: partial vectors)."""
    T, D, H = 6, 37, 19
    m = cls(D, H, num_layers=2, seed=2)
    half = m.half_weights()
    x = rng.standard_normal((T, 1, D)).astype(np.float32)
    state, outs = None, []
    for t in range(T):
        out, state = half(x[t : t + 1], state)
        outs.append(out)
    params = {k: p.astype(np.float64) for k, p in half.parameters().items()}
    ref = reference.reference_forward(cls.__name__.lower(), params, x.astype(np.float64),
                                      None, None, num_layers=2, bidirectional=False)  # fmt: skip
    got = [np.concatenate(outs), *_states(half, state)]
    want = [ref[0], *_states(half, ref[1])]
    return max(float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))
               for a, b in zip(got, want))  # fmt: skip


def selfcheck() -> bool:
    """Runs every check of ``CASES`` and of ``half_weights()``, printing a line per check.

    Returns:
        True when every check passed.
    """
    print(
        "\nSelf-check: float64, 2 layers, bidirectional, lengths [5, 2, 4], every cell, norm and"
        " regularizer"
    )
    print(f"  forward vs NumPy reference (max abs error, must be < {FORWARD_TOL:.0e})")
    print(f"  backward vs finite differences (relative error, must be < {GRADIENT_TOL:.0e})\n")
    print(f"  {'cell':<32}{'forward':>12}{'backward':>12}   result")
    rng = np.random.default_rng(0)
    ok = True
    start = time.perf_counter()
    for name, cls, kwargs in CASES:
        fwd, grad = _check_case(name, cls, kwargs, rng)
        good = fwd < FORWARD_TOL and grad < GRADIENT_TOL
        ok &= good
        print(f"  {name:<32}{fwd:>12.1e}{grad:>12.1e}   {'ok' if good else 'FAILED'}")
    print(f"\n  half_weights(), float32, streamed at batch 1 (error must be < {HALF_TOL:.0e})")
    for cls in (rnncore.RNN, rnncore.LSTM, rnncore.GRU):
        err = _check_half(cls, rng)
        good = err < HALF_TOL
        ok &= good
        name = f"{cls.__name__} float16 weights"
        print(f"  {name:<32}{err:>12.1e}{'':>12}   {'ok' if good else 'FAILED'}")
    print(
        f"\n{'All checks passed' if ok else 'SOME CHECKS FAILED'} "
        f"({time.perf_counter() - start:.2f} s)."
    )
    return ok
