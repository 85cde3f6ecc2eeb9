"""Numeric cross-checks: every backend's outputs against a reference backend's, the
PyTorch-operations LSTM against rnncore, and the tolerances of each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .data import perturb_norm_params
from .torch_ops import torch_ops_lstm

#: float32 tolerance of the cross-check, relative to max(1, largest |reference| of the array):
#: outputs and states are bounded by 1 in magnitude, so 1e-3 is a plain absolute tolerance
#: there (float32 differences between correct implementations are ~1e-6); gradients are sums
#: over T*B terms whose rounding error grows with their magnitude, hence the scaling.
CHECK_TOL = 1e-3

#: Normalized cells (rnncore against ``torch_ops_lstm``) are checked relative to the largest
#: |reference| of each array itself. The two implementations compute the same float64 results
#: to ~1e-13 at the benchmark sizes, but over T=100 steps the layer-norm LSTM amplifies float32
#: rounding: each float32 implementation lies up to ~1e-3 (relative) from the float64 result
#: (outputs ~4e-4 at B=64; gradients ~1e-3 at B=1, where they grow to ~100), in different
#: directions, so two correct float32 implementations differ by up to ~2e-3. A wrong equation
#: (a gain on the wrong term, a missing shift, the cell norm on the carried state) shows up
#: as 1e-1 or more. The strict checks are ``verify_torch_ops``'s.
NORM_CHECK_TOL = 5e-3
#: float64 agreement of ``torch_ops_lstm`` and rnncore (measured ~4e-15 relative).
TORCH_OPS_F64_TOL = 1e-10
#: float32 agreement of the two implementations at T=20 (measured ~3e-6 relative).
TORCH_OPS_F32_TOL = 1e-4


#: float16 rounding moves each weight by at most 2**-11 of itself; over the cases below the
#: outputs moved by 3e-4 to 6e-4 of their largest value (LSTM, GRU) and 1.3e-3 (the tanh RNN
#: at hidden 256, whose 100-step recurrence amplifies most). A half-weights copy computing
#: some other model (wrong rows, a lost tail) moves them by 1e-1 or more.
HALF_CHECK_TOL = 5e-3


def scaled_error(got: np.ndarray, ref: np.ndarray, relative: bool = False) -> float:
    """``max|got - ref|`` over ``max(1, max|ref|)``, or over ``max|ref|`` when ``relative``."""
    a, b = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if not a.size:
        return 0.0
    scale = float(np.max(np.abs(b)))
    scale = (scale or 1.0) if relative else max(1.0, scale)
    return float(np.max(np.abs(a - b))) / scale


def compare(
    ref: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    tol: float = CHECK_TOL,
    relative: bool = False,
) -> tuple[bool, str]:
    """Compares the arrays two backends produced, on the names both have.

    Args:
        ref: Reference backend's arrays.
        got: Other backend's arrays.
        tol: Largest allowed scaled error.
        relative: Scale by the largest |reference| of each array instead of by
            ``max(1, largest |reference|)``.

    Returns:
        ``(ok, worst)``: whether every common array is within ``tol`` and a description of the
        worst array (name and scaled error).
    """
    worst_name, worst = "", 0.0
    for k in ref.keys() & got.keys():
        a, b = np.asarray(got[k], np.float64), np.asarray(ref[k], np.float64)
        if a.shape != b.shape:
            return False, f"{k}: shape {a.shape} vs {b.shape}"
        err = scaled_error(a, b, relative)
        if not np.isfinite(err):
            return False, f"{k}: non-finite"
        if err >= worst:
            worst_name, worst = k, err
    if not (ref.keys() & got.keys()):
        return False, "nothing to compare"
    return worst <= tol, f"{worst_name} {worst:.1e}"


def cross_check(
    outputs: Mapping[str, Mapping[str, np.ndarray]], errors: Sequence[str], normalized: bool
) -> tuple[bool, str]:
    """Compares every backend's first-call arrays with the reference backend's.

    The reference is torch when it ran, otherwise the first backend that ran. Plain cells are
    compared with ``CHECK_TOL`` (scaled by ``max(1, max|ref|)``), normalized cells with
    ``NORM_CHECK_TOL`` relative to each array's largest |reference|.

    Args:
        outputs: The arrays of each backend that ran (``Runner.collect``), in run order.
        errors: ``ERROR ...`` entries of backends that raised; they fail the check.
        normalized: Whether the case's cell is normalized.

    Returns:
        ``(ok, check)``: ``check`` is the table's check column: ``ok (...)`` with the worst
        scaled difference per backend, ``MISMATCH ...`` and ``ERROR ...`` entries, or ``-``
        when nothing was compared.
    """
    ref_name = "torch" if "torch" in outputs else next(iter(outputs), None)
    agree, mismatches = [], []
    for name, got in outputs.items():
        if name == ref_name:
            continue
        if not normalized:
            good, worst = compare(outputs[ref_name], got)
        else:
            good, worst = compare(outputs[ref_name], got, NORM_CHECK_TOL, relative=True)
        if good:
            agree.append(f"{name}~{ref_name} {worst.split()[-1]}")
        else:
            mismatches.append(f"MISMATCH {name} vs {ref_name}: {worst}")
    if mismatches or errors:
        return False, "; ".join(mismatches + list(errors))
    if agree:
        return True, "ok (" + ", ".join(agree) + ")"
    return True, "-"


def verify_torch_ops(rnncore, torch, norm: str, dtype: str, seed: int = 0) -> tuple[bool, str]:
    """Checks ``torch_ops_lstm`` against rnncore: outputs, states and every gradient.

    Both get the same weights (rnncore's initialization with ``perturb_norm_params`` and random
    biases), a random initial state, and a loss ``sum(out*g_out) + sum(h_n*g_h) + sum(c_n*g_c)``
    with random ``g``; compared are ``out``, ``h_n``, ``c_n``, the gradients with respect to
    ``x``, ``h_0``, ``c_0`` and every parameter, and for batch norm the running statistics. A
    batch-norm LSTM is checked in training mode, then in eval mode on a sequence 3 steps
    longer than the one it was trained on (steps past the running rows reuse the last row).

    ``dtype="float64"``: T=7, B=4, D=3, H=5, tolerance ``TORCH_OPS_F64_TOL`` (the two must
    agree to rounding). ``dtype="float32"``: T=20, B=16, D=H=64, tolerance
    ``TORCH_OPS_F32_TOL``. Errors are relative to each array's largest |reference|.

    Args:
        rnncore: The rnncore module.
        torch: The torch module.
        norm: ``"layer"`` or ``"batch"``.
        dtype: ``"float64"`` or ``"float32"``.
        seed: Random seed.

    Returns:
        ``(ok, description)``, the description naming the worst array and its error.
    """
    t, b, d, h = (7, 4, 3, 5) if dtype == "float64" else (20, 16, 64, 64)
    tol = TORCH_OPS_F64_TOL if dtype == "float64" else TORCH_OPS_F32_TOL
    rng = np.random.default_rng(seed + 3)
    m = rnncore.LSTM(d, h, norm=norm, dtype=dtype, seed=seed)
    params = perturb_norm_params(m.state_dict(), seed)
    for k in ("bias_ih_l0", "bias_hh_l0"):
        params[k] = params[k] + rng.uniform(-0.3, 0.3, params[k].shape).astype(dtype)
    m.load_state_dict(params)
    tm = torch_ops_lstm(torch, d, h, norm).to(getattr(torch, dtype)).load_arrays(params)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    worst_name, worst_err = "", -1.0
    for mode, steps in (("train", t), ("eval", t + 3)) if norm == "batch" else (("train", t),):
        m.train(mode == "train")
        tm.train(mode == "train")
        x, h0, c0 = rand(steps, b, d), rand(1, b, h), rand(1, b, h)
        g_out, g_h, g_c = rand(steps, b, h), rand(1, b, h), rand(1, b, h)
        m.zero_grad()
        out, (hn, cn), tape = m.forward_train(x, (h0, c0))
        gx, (gh0, gc0) = m.backward(tape, g_out, (g_h, g_c))
        ref = {"out": out, "h_n": hn, "c_n": cn, "grad_x": gx, "grad_h0": gh0, "grad_c0": gc0}
        ref.update({f"grad.{k}": v for k, v in m.grads.items()})
        if norm == "batch":
            ref.update({f"buf.{k}": v for k, v in m.buffers().items()})

        xt, h0t, c0t = (torch.from_numpy(a).requires_grad_(True) for a in (x, h0, c0))
        tm.zero_grad()
        tout, (thn, tcn) = tm(xt, (h0t, c0t))
        pairs = ((tout, g_out), (thn, g_h), (tcn, g_c))
        loss = sum((a * torch.from_numpy(g)).sum() for a, g in pairs)
        loss.backward()
        got = {"out": tout, "h_n": thn, "c_n": tcn, "grad_x": xt.grad, "grad_h0": h0t.grad}
        got["grad_c0"] = c0t.grad
        got.update({f"grad.{k}": p.grad for k, p in tm.named_parameters()})
        got.update({f"buf.{k}": v for k, v in tm.named_buffers()})
        got = {k: v.detach().numpy() for k, v in got.items()}
        if set(got) != set(ref):
            return False, f"{mode}: arrays differ: {sorted(set(got) ^ set(ref))}"
        for k in ref:
            if got[k].shape != np.shape(ref[k]):
                return False, f"{mode} {k}: shape {got[k].shape} vs {np.shape(ref[k])}"
            err = scaled_error(got[k], ref[k], relative=True)
            if not np.isfinite(err):
                return False, f"{mode} {k}: non-finite"
            if err > worst_err:
                worst_name, worst_err = f"{mode} {k}", err
    ok = bool(worst_err <= tol)
    return ok, f"{len(ref)} arrays, worst {worst_name} {worst_err:.1e} (tol {tol:.0e})"
