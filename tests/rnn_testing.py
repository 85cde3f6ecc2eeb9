"""Shared helpers for the rnncore tests: configurations, module factory, inputs, the reference
call, the scalar loss used for gradient checks and central differences.

Kept free of test functions so that later tests (normalized cells, PyTorch parity, ...) can
import it: ``from rnn_testing import ...`` (tests/ is put on ``sys.path`` by conftest.py).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rnncore.reference import (
    BATCH_NORMS,
    GATES,
    StepNorms,
    draw_masks,
    init_buffers,
    make_params,
    reference_forward,
)

# The cell variants every test sweeps: id -> Config overrides.
VARIANTS: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn", "nonlinearity": "tanh"},
    "rnn_relu": {"cell": "rnn", "nonlinearity": "relu"},
    "lstm": {"cell": "lstm"},
    "lstm_proj": {"cell": "lstm", "proj_size": 2},
    "gru": {"cell": "gru"},
    "gru_reset_before": {"cell": "gru", "reset_after": False},
}

# The variants that take a ``norm`` (the original GRU, reset_after=False, is norm=None only) and
# the norms (docs/normalization.md).
NORM_VARIANTS = [v for v in VARIANTS if v != "gru_reset_before"]
NORMS = ["layer", "batch", "batch_input"]


@dataclass(frozen=True)
class Config:
    """Everything that defines a module's architecture (not its parameter values)."""

    cell: str
    input_size: int = 3
    hidden_size: int = 4
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj_size: int = 0
    nonlinearity: str = "tanh"
    reset_after: bool = True
    norm: str | None = None
    # extra constructor options of the normalized cells, e.g. (("ln_eps", 1e-3),): ln_eps,
    # bn_eps, bn_momentum (also passed to the reference) and bn_gamma (constructor only)
    norm_options: tuple[tuple[str, float], ...] = ()
    # dropout / input_dropout / recurrent_dropout / zoneout, e.g. (("zoneout", 0.2),):
    # constructor only; the reference gets them as masks (``reference_masks``)
    regularizers: tuple[tuple[str, float], ...] = ()
    # one direction run backward (ONNX's direction="reverse")
    reverse: bool = False
    # the cell options, e.g. (("clip", 0.5), ("peephole", True)): clip, and the LSTM's
    # peephole, cell_clip, input_forget (constructor and reference alike)
    cell_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_variant(cls, variant: str, **kw) -> Config:
        """Builds a config from a ``VARIANTS`` id plus overrides."""
        return cls(**{**VARIANTS[variant], **kw})

    def replace(self, **kw) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **kw)

    @property
    def is_lstm(self) -> bool:
        """Whether states are ``(h, c)`` pairs."""
        return self.cell == "lstm"

    @property
    def num_directions(self) -> int:
        """``D``: 2 when bidirectional."""
        return 2 if self.bidirectional else 1

    @property
    def h_out(self) -> int:
        """Width of ``h`` (``proj_size`` when set)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def gates(self) -> int:
        """``G``."""
        return GATES[self.cell]

    @property
    def peephole(self) -> bool:
        """Whether the LSTM has peepholes (``weight_ci``, ``weight_cf``, ``weight_co``)."""
        return bool(dict(self.cell_options).get("peephole", False))

    @property
    def is_batch_norm(self) -> bool:
        """Whether the module has running statistics (``norm`` "batch" or "batch_input")."""
        return self.norm in BATCH_NORMS

    def module_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments of the rnncore class (besides ``dtype``)."""
        kw = dict(
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
        )
        if self.cell == "rnn":
            kw["nonlinearity"] = self.nonlinearity
        elif self.cell == "lstm":
            kw["proj_size"] = self.proj_size
        else:
            kw["reset_after"] = self.reset_after
        if self.norm is not None:
            kw["norm"] = self.norm
        if self.reverse:
            kw["reverse"] = True
        kw.update(dict(self.norm_options))
        kw.update(dict(self.regularizers))
        kw.update(dict(self.cell_options))
        return kw

    def reference_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``reference.reference_forward``."""
        return dict(
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            batch_first=self.batch_first,
            proj_size=self.proj_size,
            nonlinearity=self.nonlinearity,
            reset_after=self.reset_after,
            bias=self.bias,
            norm=self.norm,
            reverse=self.reverse,
            **{k: v for k, v in self.norm_options if k != "bn_gamma"},
            **dict(self.cell_options),
        )

    def make_params(self, rng: np.random.Generator, scale: float | None = None):
        """Random float64 parameters with PyTorch names (with random normalization gains and
        shifts when ``norm`` is set; see ``reference.make_params``)."""
        return make_params(
            self.cell,
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bidirectional,
            self.proj_size,
            self.bias,
            rng,
            scale,
            self.norm,
            self.peephole,
        )

    def x_shape(self, t_len: int, batch: int | None) -> tuple[int, ...]:
        """Shape of ``x`` (``batch=None``: unbatched)."""
        if batch is None:
            return (t_len, self.input_size)
        if self.batch_first:
            return (batch, t_len, self.input_size)
        return (t_len, batch, self.input_size)

    def state_shapes(self, batch: int | None) -> list[tuple[int, ...]]:
        """Shapes of ``[h]`` or ``[h, c]`` (``batch=None``: unbatched)."""
        lead = (self.num_layers * self.num_directions,) + (() if batch is None else (batch,))
        shapes = [lead + (self.h_out,)]
        if self.is_lstm:
            shapes.append(lead + (self.hidden_size,))
        return shapes


def make_module(rc, cfg: Config, dtype: str, params=None):
    """Builds the rnncore module for ``cfg`` and loads ``params`` (if given).

    For the batch norms, buffers missing from ``params`` are loaded as the never-trained ones
    (``reference.init_buffers``), so that a strict ``load_state_dict`` gets every entry.
    """
    cls = {"rnn": rc.RNN, "lstm": rc.LSTM, "gru": rc.GRU}[cfg.cell]
    m = cls(cfg.input_size, cfg.hidden_size, dtype=dtype, **cfg.module_kwargs())
    if params is not None:
        if cfg.is_batch_norm:
            init = init_buffers(
                cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.norm
            )
            params = {**{k: v.astype(dtype) for k, v in init.items()}, **params}
        m.load_state_dict(params)
    return m


def lengths_for(kind: str | None, t_len: int, batch: int) -> np.ndarray | None:
    """``None``; ``"mixed"`` (one full-length sequence, one of length 1, others between);
    ``"short"`` (no sequence reaches ``T``, so trailing steps are padding for everyone)."""
    if kind is None:
        return None
    if kind == "mixed":
        base = [t_len, 1, max(1, t_len - 2), max(1, t_len - 1)]
    elif kind == "short":
        base = [t_len - 1, 1, max(1, t_len - 3), t_len - 2]
    else:
        raise ValueError(kind)
    return np.array([base[b % len(base)] for b in range(batch)], dtype=np.int64)


def pack_states(cfg: Config, states: list[np.ndarray] | None):
    """``[h]`` / ``[h, c]`` -> the ``hx`` argument (``h`` or ``(h, c)``)."""
    if states is None:
        return None
    return (states[0], states[1]) if cfg.is_lstm else states[0]


def unpack_states(cfg: Config, hx) -> list[np.ndarray]:
    """The ``h_n`` return value / ``hx`` argument -> ``[h]`` or ``[h, c]``."""
    return [hx[0], hx[1]] if cfg.is_lstm else [hx]


def make_inputs(
    cfg: Config,
    rng: np.random.Generator,
    t_len: int,
    batch: int | None,
    lengths_kind: str | None = None,
    with_hx: bool = True,
    dtype=np.float64,
):
    """Random ``x``, state list (or ``None``) and ``lengths`` of the given dtype."""
    x = rng.standard_normal(cfg.x_shape(t_len, batch)).astype(dtype)
    states = None
    if with_hx:
        states = [(0.5 * rng.standard_normal(s)).astype(dtype) for s in cfg.state_shapes(batch)]
    lengths = None if batch is None else lengths_for(lengths_kind, t_len, batch)
    return x, states, lengths


def reference_with_buffers(cfg: Config, params, x, states, lengths, **kw):
    """Float64 reference: returns ``(out, [h_n] or [h_n, c_n], buffers)``; ``buffers`` is the
    dict of running statistics after the call (``{}`` for norms without them). ``kw`` goes to
    ``reference_forward`` (``training``, ``buffers``, ``step_norms``, ...)."""
    res = reference_forward(
        cfg.cell, params, x, pack_states(cfg, states), lengths, **cfg.reference_kwargs(), **kw
    )
    bufs = res[2] if len(res) == 3 else {}
    return res[0], unpack_states(cfg, res[1]), bufs


def reference(cfg: Config, params, x, states, lengths, **kw):
    """Float64 reference: returns ``(out, [h_n] or [h_n, c_n])``."""
    out, states_out, _ = reference_with_buffers(cfg, params, x, states, lengths, **kw)
    return out, states_out


def random_buffers(
    cfg: Config, rng: np.random.Generator, rows: int | None = None
) -> dict[str, np.ndarray]:
    """Random running statistics for ``cfg`` (mean ``U(-0.5, 0.5)``, variance ``U(0.5, 2)``):
    ``(rows, width)`` for ``norm="batch"``, ``(G*H,)`` for ``"batch_input"``; ``{}`` otherwise."""
    init = init_buffers(cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.norm)
    out = {}
    for name, value in init.items():
        shape = value.shape if cfg.norm == "batch_input" else (rows, value.shape[1])
        if "_mean_" in name:
            out[name] = rng.uniform(-0.5, 0.5, shape)
        else:
            out[name] = rng.uniform(0.5, 2.0, shape)
    return out


def clip_statistics(cfg: Config, params, x, states, lengths, **kw) -> dict[str, tuple]:
    """What the clips of ``cfg.cell_options`` do in a reference forward pass (``kw`` goes to
    the reference: ``training``, ``buffers``, ``masks``).

    Returns:
        ``{"gate": ..., "cell": ...}`` for the clips that are set (``clip``, ``cell_clip``):
        ``(clipped, kept, margin)``, the numbers of active entries beyond the bound and
        within it, and the smallest distance of an active entry to the bound (finite
        differences are meaningless across it).
    """
    opts = dict(cfg.cell_options)
    bounds = {"gate": opts.get("clip"), "cell": opts.get("cell_clip")}
    stats = {what: [0, 0, float("inf")] for what, bound in bounds.items() if bound is not None}

    def step_norms(_layer, _direction, _k, active):
        def observe(what, a):
            if what not in stats:
                return
            dist = np.abs(a[active]) - bounds[what]
            s = stats[what]
            s[0] += int((dist > 0).sum())
            s[1] += int((dist <= 0).sum())
            if dist.size:
                s[2] = min(s[2], float(np.abs(dist).min()))

        return StepNorms(observe=observe)

    reference(cfg, params, x, states, lengths, step_norms=step_norms, **kw)
    return {what: tuple(s) for what, s in stats.items()}


def relu_margin(cfg: Config, params, x, states, lengths, **kw) -> float:
    """Smallest ``|pre-activation|`` of a ReLU RNN over all active steps (inf for other cells).

    Central differences across a ReLU kink are meaningless; gradient checks require this to be
    well above the finite-difference step. Uses the reference's ``pre`` hook to see the sums
    (applied after the reference's normalization, so it sees the normalized sum; ``kw`` such as
    ``training``/``buffers`` goes to the reference).
    """
    if not (cfg.cell == "rnn" and cfg.nonlinearity == "relu"):
        return float("inf")
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    smallest = [float("inf")]

    def step_norms(layer, direction, _k, active):
        sfx = "_reverse" if direction else ""
        b = p[f"bias_ih_l{layer}{sfx}"] + p[f"bias_hh_l{layer}{sfx}"] if cfg.bias else 0.0

        def record(a):
            smallest[0] = min(smallest[0], float(np.abs((a + b)[active]).min()))
            return a

        return StepNorms(pre=record)

    reference(cfg, p, x, states, lengths, step_norms=step_norms, **kw)
    return smallest[0]


# ---------------------------------------------------------------------------------------------
# Gradient checks.


def make_seeds(cfg: Config, rng: np.random.Generator, out_shape, batch: int | None):
    """Fixed random weights ``R`` of the scalar loss: ``[Ro, Rh]`` or ``[Ro, Rh, Rc]``."""
    return [rng.standard_normal(out_shape)] + [
        rng.standard_normal(s) for s in cfg.state_shapes(batch)
    ]


def loss_value(out, final_states: list[np.ndarray], seeds: list[np.ndarray | None]) -> float:
    """``L = sum(out*Ro) + sum(h_n*Rh) (+ sum(c_n*Rc))``; a ``None`` seed drops its term."""
    total = 0.0
    for arr, r in zip([out] + list(final_states), seeds):
        if r is not None:
            total += float(np.sum(np.asarray(arr, dtype=np.float64) * r))
    return total


def reference_masks(cfg: Config, call_seed: int, steps: int, batch: int, training: bool):
    """The regularization masks rnncore draws for a call with seed ``call_seed`` (for
    ``reference_forward(..., masks=...)``): the core's draws, laid out by the reference."""
    from rnncore import _core  # noqa: PLC0415

    def hits(layer, direction, site, p, count):
        return _core.mask_hits(
            seed=call_seed, layer=layer, direction=direction, site=site, p=p, count=count
        )

    return draw_masks(
        hits,
        cfg.cell,
        input_size=cfg.input_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        bidirectional=cfg.bidirectional,
        steps=steps,
        batch=batch,
        proj_size=cfg.proj_size,
        training=training,
        **dict(cfg.regularizers),
    )


def module_loss(m, cfg: Config, x, states, lengths, seeds, call_seed=None) -> float:
    """Runs ``m`` (plain call; with ``call_seed``, that call's masks) and returns the loss."""
    out, hn = m(x, pack_states(cfg, states), lengths, seed=call_seed)
    return loss_value(out, unpack_states(cfg, hn), seeds)


def analytic_gradients(m, cfg: Config, x, states, lengths, seeds, call_seed=None):
    """``zero_grad``, ``forward_train``, ``backward`` with the loss's seeds (``None`` seeds are
    passed as ``None`` gradients); ``call_seed`` fixes the regularization masks.

    Returns:
        ``(grad_x, [grad_h0] or [grad_h0, grad_c0], {name: grad copy})``.
    """
    m.zero_grad()
    _out, _hn, tape = m.forward_train(x, pack_states(cfg, states), lengths, seed=call_seed)
    grad_out = seeds[0]
    if cfg.is_lstm:
        # (gh, gc) with either part None; both None -> grad_h_n=None
        grad_hn = None if seeds[1] is None and seeds[2] is None else (seeds[1], seeds[2])
    else:
        grad_hn = seeds[1]
    grad_x, grad_hx = m.backward(tape, grad_out, grad_hn)
    grads = {k: np.array(v, copy=True) for k, v in m.grads.items()}
    return grad_x, unpack_states(cfg, grad_hx), grads


def central_difference(
    f: Callable[[], float], arr: np.ndarray, idx, step: float, richardson: bool = False
) -> float:
    """``(f(arr[idx] + step) - f(arr[idx] - step)) / (2 step)``, restoring ``arr[idx]`` exactly.

    ``arr`` may be a live parameter view: it is modified in place around each call to ``f``.
    With ``richardson``, the ``O(step^2)`` truncation error is eliminated by Richardson
    extrapolation with the central difference of step ``2 step``: ``(4 D(h) - D(2h)) / 3``
    (error ``O(step^4)``; rounding error ``5/3`` of the plain difference's; twice the calls).
    """
    orig = arr[idx].copy()

    def diff(h):
        try:
            arr[idx] = orig + h
            plus = f()
            arr[idx] = orig - h
            minus = f()
        finally:
            arr[idx] = orig
        return (plus - minus) / (2.0 * h)

    if not richardson:
        return diff(step)
    return (4.0 * diff(step) - diff(2.0 * step)) / 3.0


def sample_indices(shape, rng: np.random.Generator, k: int) -> list[tuple[int, ...]]:
    """Up to ``k`` distinct random multi-indices of an array of ``shape`` (all if fewer)."""
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= k else rng.choice(size, size=k, replace=False)
    return [tuple(int(i) for i in np.unravel_index(j, shape)) for j in flat]


# Central differences with step h = 1e-6 in float64: truncation error ~ h^2 |L'''| / 6 ~ 1e-13;
# rounding error ~ (a few ulp of the loss's partial sums, sum |terms| <= ~50) / (2h)
# ~ 50 * 2.2e-16 * 4 / 2e-6 ~ 2e-8 at worst (measured: <= 2e-9 against an exact autograd
# implementation on these sizes). atol 1e-7 is 5x the bound and 50x the measurement; rtol 1e-6
# covers large entries. A real BPTT bug (a missed step, a wrong gate derivative, a dropped term)
# is >= 1e-3, and a 1e-5 relative error on one tensor is already caught.
GRAD_STEP = 1e-6
GRAD_ATOL = 1e-7
GRAD_RTOL = 1e-6


def check_gradients(
    m,
    cfg: Config,
    x,
    states,
    lengths,
    seeds,
    rng: np.random.Generator,
    entries: int = 10,
    step: float = GRAD_STEP,
    atol: float = GRAD_ATOL,
    rtol: float = GRAD_RTOL,
    richardson: bool = False,
    state_step: float | None = None,
    call_seed: int | None = None,
) -> int:
    """Checks grad_x, the initial-state gradients and every parameter's gradient of ``m``.

    ``states=None`` checks the gradient with respect to the (implicit) zero initial state,
    which ``backward`` must still return. ``entries`` random entries per tensor (at least one
    per tensor; all of a small tensor) are compared with central differences (Richardson-
    extrapolated with ``richardson``, see ``central_difference``). ``state_step`` (default:
    ``step``) is the step for the initial states only. ``call_seed`` fixes the dropout and
    zoneout masks of every call (the loss is then a smooth function of everything checked).

    Returns:
        The number of entries compared (all passed; on failure an AssertionError lists them).
    """
    batch = None if x.ndim == 2 else x.shape[0 if cfg.batch_first else 1]
    grad_x, grad_states, grads = analytic_gradients(m, cfg, x, states, lengths, seeds, call_seed)

    assert grad_x.shape == x.shape
    assert [g.shape for g in grad_states] == cfg.state_shapes(batch)
    assert set(grads) == set(m.parameters())

    xw = np.array(x, dtype=np.float64, copy=True)
    sw = [
        np.array(s, dtype=np.float64, copy=True) if states is not None else np.zeros(shape)
        for s, shape in zip(states or [None] * len(grad_states), cfg.state_shapes(batch))
    ]

    def f():
        return module_loss(m, cfg, xw, sw, lengths, seeds, call_seed)

    hstep = step if state_step is None else state_step
    targets = [("x", xw, grad_x, step)]
    targets += [(f"hx[{i}]", s, g, hstep) for i, (s, g) in enumerate(zip(sw, grad_states))]
    params = m.parameters()
    targets += [(name, params[name], grads[name], step) for name in params]

    failures, checked = [], 0
    for name, arr, grad, h in targets:
        assert grad.shape == arr.shape, name
        for idx in sample_indices(arr.shape, rng, entries):
            num = central_difference(f, arr, idx, h, richardson)
            ana = float(grad[idx])
            checked += 1
            if not abs(ana - num) <= atol + rtol * abs(num):
                failures.append(f"{name}{list(idx)}: backward {ana:.10g} vs numeric {num:.10g}")
    assert not failures, f"{len(failures)}/{checked} gradient entries differ:\n" + "\n".join(
        failures[:30]
    )
    return checked


def draw_well_conditioned(
    cfg: Config,
    rng: np.random.Generator,
    t_len: int,
    batch: int,
    *,
    training: bool,
    max_kappa: float,
    lengths_kind: str | None = "mixed",
    with_hx: bool = True,
    **ref_kw,
):
    """Params (scale 0.7), running buffers (3 rows), inputs and loss seeds for a gradient
    check, redrawn until the batch norms' conditioning (``norm_condition``) is at most
    ``max_kappa`` and, for the ReLU RNN, no pre-activation lies within 1e-4 of the kink.
    ``ref_kw`` goes to the reference (e.g. ``masks``).

    Returns:
        ``(params, buffers, x, states, lengths, seeds)``.
    """
    for _ in range(60):
        params = cfg.make_params(rng, scale=0.7)
        bufs = random_buffers(cfg, rng, 3)
        x, states, lengths = make_inputs(cfg, rng, t_len, batch, lengths_kind, with_hx)
        kw = dict(training=training, buffers=bufs, **ref_kw)
        if norm_condition(cfg, params, x, states, lengths, **kw) > max_kappa:
            continue
        if relu_margin(cfg, params, x, states, lengths, **kw) > 1e-4:
            break
    else:  # pragma: no cover - practically impossible
        raise AssertionError("could not draw well-conditioned inputs")
    out_shape = cfg.x_shape(t_len, batch)[:-1] + (cfg.num_directions * cfg.h_out,)
    seeds = make_seeds(cfg, rng, out_shape, batch)
    return params, bufs, x, states, lengths, seeds


def norm_condition(cfg: Config, params, x, states, lengths, **kw) -> float:
    """Worst amplification of rounding errors by the normalizations of a forward pass:
    ``max |a| / sqrt(var + eps)`` over every normalization input ``a`` (active rows only) and
    the statistics it is normalized with (1 for ``norm=None``).

    An absolute error ``delta`` in a pre-normalization term (``~ eps * |a|`` in floating point)
    becomes ``delta / sqrt(var + eps)`` after normalization, i.e. a relative error of up to
    ``kappa * eps``. Training-mode batch norm over few sequences can make ``var`` tiny (two
    active sequences with nearly equal values), so float32 comparisons draw data with a
    bounded ``kappa``. ``kw`` goes to the reference (``training``, ``buffers``).
    """
    if cfg.norm is None:
        return 1.0
    opts = dict(cfg.norm_options)
    eps = opts.get("ln_eps", 1e-5) if cfg.norm == "layer" else opts.get("bn_eps", 1e-5)
    worst = [1.0]

    def observe(_layer, _direction, _part, _k, a, active, mean, var):
        a, mean, var = a[active], mean[active] if mean.ndim == 2 else mean, var
        var = var[active] if var.ndim == 2 else var
        # a batch norm over ONE active sequence gives exactly beta (a - mean == 0 exactly),
        # whatever the rounding of a: such entries amplify nothing
        kappa = np.where(a - mean == 0.0, 0.0, np.abs(a) / np.sqrt(var + eps))
        worst[0] = max(worst[0], float(kappa.max()))

    reference(cfg, params, x, states, lengths, observe_norms=observe, **kw)
    return worst[0]


# ---------------------------------------------------------------------------------------------
# The worked example of docs/normalization.md section 5.

WORKED_X = np.array(
    [[[1.0, -1.0], [0.5, 2.0], [-0.3, 0.8]], [[0.0, 1.0], [-1.5, 0.5], [2.0, -0.7]]]
)
WORKED_H0 = np.array([[0.1, -0.2, 0.3], [0.3, 0.0, -0.1], [-0.4, 0.2, 0.05]])
WORKED_C0 = np.array([[0.5, -0.5, 0.1], [0.0, 0.25, -0.3], [0.2, 0.1, 0.0]])

# (cell, norm) -> {"h": h_2, "c": c_2}, copied from spec section 5 (8 significant digits)
WORKED_EXPECTED = {
    ("lstm", "layer"): {
        "h": [
            [0.4601252, -0.3163738, -0.54913274],
            [0.04142242, 0.22510478, -0.77659741],
            [-0.42513033, 0.07952258, -0.12808952],
        ],
        "c": [
            [0.36845859, -0.3801696, -0.54748356],
            [0.73514889, 0.56202272, -1.19756613],
            [-0.40898165, 1.26618024, 0.06280961],
        ],
    },
    ("lstm", "batch"): {
        "h": [
            [0.06633475, -0.07297036, 0.00623779],
            [-0.00488356, 0.04732843, -0.07027292],
            [-0.06191957, 0.02004443, 0.05006664],
        ],
        "c": [
            [0.3164026, -0.35200348, -0.02887249],
            [0.11534834, 0.20678381, -0.25461684],
            [-0.03781159, 0.08021847, 0.13831785],
        ],
    },
    ("gru", "layer"): {
        "h": [
            [0.03801339, -0.72188513, 0.14833278],
            [0.02616107, -0.52748126, -0.76465747],
            [-0.6267724, 0.24424284, 0.28068449],
        ]
    },
    ("gru", "batch"): {
        "h": [
            [0.01385027, -0.08633005, 0.1116715],
            [0.12700141, -0.08987771, -0.13584567],
            [-0.15554745, 0.1644357, 0.07068465],
        ]
    },
    ("rnn", "layer"): {
        "h": [
            [0.8667227, -0.08985268, -0.84248014],
            [-0.63267699, 0.86285482, -0.50689734],
            [-0.82530378, 0.00354671, 0.8241695],
        ]
    },
}


def worked_matrix(rows: int, cols: int, mod: int, off: int, scale: float) -> np.ndarray:
    """Spec section 5: ``M(rows, cols, mod, off, s)[k, j] = ((k*cols + j) mod mod - off) * s``."""
    k, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return ((k * cols + j) % mod - off) * scale


def worked_example_params(cell: str, permute_gru: bool = True) -> dict[str, np.ndarray]:
    """The plain parameters of the worked example (D=2, H=3), in rnncore's layout.

    ``W_ih = M(D, G*H, 5, 2, 0.25)^T``, ``W_hh = M(H, G*H, 7, 3, 0.2)^T``; the G*H axis of
    ``M`` is in gate order (i, f, g, o) for the LSTM and (z, r, n) for the GRU, which is
    permuted to rnncore's (r, z, n) unless ``permute_gru`` is False. Biases: LSTM ``b_ih`` = 1
    on the forget block; GRU 0; RNN ``b_ih = [0.1, -0.1, 0]``; ``b_hh = 0``.
    """
    g, hidden = GATES[cell], 3
    w_ih = worked_matrix(2, g * hidden, 5, 2, 0.25).T
    w_hh = worked_matrix(hidden, g * hidden, 7, 3, 0.2).T
    b_ih, b_hh = np.zeros(g * hidden), np.zeros(g * hidden)
    if cell == "lstm":
        b_ih[hidden : 2 * hidden] = 1.0
    elif cell == "gru" and permute_gru:
        perm = np.r_[hidden : 2 * hidden, 0:hidden, 2 * hidden : 3 * hidden]  # (z,r,n)->(r,z,n)
        w_ih, w_hh = w_ih[perm], w_hh[perm]
    elif cell == "rnn":
        b_ih = np.array([0.1, -0.1, 0.0])
    return {
        "weight_ih_l0": np.ascontiguousarray(w_ih),
        "weight_hh_l0": np.ascontiguousarray(w_hh),
        "bias_ih_l0": b_ih,
        "bias_hh_l0": b_hh,
    }


def worked_example_hx(cell: str):
    """``h0`` (and ``c0``) of the worked example as the ``hx`` argument (L*D = 1)."""
    if cell == "lstm":
        return WORKED_H0[None].copy(), WORKED_C0[None].copy()
    return WORKED_H0[None].copy()


def run_concurrently(work: Callable[[int], Any], count: int, timeout: float = 120.0) -> list:
    """Runs ``work(i)`` for ``i < count`` on ``count`` threads released together by a barrier
    and returns the results in that order; fails the test if a thread hangs or raises."""
    results: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results
