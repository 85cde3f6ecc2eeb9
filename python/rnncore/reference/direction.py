"""One direction of one layer: its time loop and its normalization hooks.

``run_direction`` is the time loop with packed-sequence semantics; ``_DirectionNorms`` builds the
``StepNorms`` of ``norm`` for every step of it and records the batch statistics a training-mode
call takes, for the running statistics.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._types import Array
from .cells import StepNorms
from .norms import BATCH_NORMS, batch_norm, batch_statistics, layer_norm, update_running_stats


def run_direction(
    step: Callable[[Array, tuple[Array, ...], StepNorms | None], tuple[Array, ...]],
    x: Array,
    state0: tuple[Array, ...],
    lengths: Array,
    reverse: bool,
    step_norms: Callable[[int, Array], StepNorms | None] | None = None,
    zone: Callable[[Array], tuple[Array, ...]] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """Runs one direction of one layer with packed-sequence semantics.

    At step ``k`` (``k = 0 .. T-1``) sequence ``b`` is active iff ``k < lengths[b]``; it reads
    time index ``k`` (forward) or ``lengths[b] - 1 - k`` (reverse, so the reverse direction
    starts at each sequence's own last element). Inactive sequences keep their state; their
    outputs stay zero.

    Args:
        step: ``step(x_t, state, norms) -> new_state``; ``new_state[0]`` is the output ``h_t``.
        x: Time-major input ``(T, B, in)``.
        state0: Initial state tuple, each ``(B, width)``.
        lengths: ``(B,)`` integers in ``1..T``.
        reverse: Whether this is the reverse direction.
        step_norms: Optional ``step_norms(k, active_mask) -> StepNorms``.
        zone: Optional zoneout: ``zone(positions) -> (d_h, d_c ...)``, one ``(B, width)``
            coefficient array per state component for the time positions the step reads;
            the new state is ``d * old + (1 - d) * new``.

    Returns:
        ``(out, final_state)``: ``out`` is ``(T, B, H_out)`` (zero past each length) and
        ``final_state`` the state tuple at each sequence's own last valid step.
    """
    t_len, batch = x.shape[:2]
    state = tuple(s.copy() for s in state0)
    out = np.zeros((t_len, batch, state[0].shape[1]))
    rows = np.arange(batch)
    for k in range(t_len):
        active = k < lengths
        if not active.any():
            break
        pos = (lengths - 1 - k) if reverse else np.full(batch, k)
        pos = np.clip(pos, 0, t_len - 1)  # inactive rows read something valid, then discarded
        norms = None if step_norms is None else step_norms(k, active)
        new = step(x[pos, rows], state, norms)
        if zone is not None:
            new = tuple(d * old + (1.0 - d) * n for d, old, n in zip(zone(pos), state, new))
        state = tuple(np.where(active[:, None], n, s) for n, s in zip(new, state))
        out[pos[active], rows[active]] = new[0][active]
    return out, state


def _compose(builtin: StepNorms | None, user: StepNorms | None) -> StepNorms | None:
    """``StepNorms`` applying ``builtin``'s hook first, then ``user``'s, field by field."""
    if builtin is None or user is None:
        return user if builtin is None else builtin
    fields = {}
    for name in ("x", "h", "c", "pre"):
        first, second = getattr(builtin, name), getattr(user, name)
        if first is None or second is None:
            fields[name] = second if first is None else first
        else:
            fields[name] = lambda a, f=first, s=second: s(f(a))
    fields["observe"] = user.observe  # the built-in norms observe nothing
    return StepNorms(**fields)


class _DirectionNorms:
    """Builds the ``StepNorms`` of one layer-direction for ``norm`` and records the batch
    statistics a training-mode call takes, to update the running statistics afterwards.

    Hook names: ``ih`` -> ``N_x``, ``hh`` -> ``N_h``, ``cell`` -> ``N_c``, ``pre`` -> the
    layer-norm RNN's normalization of the sum (spec section 3).
    """

    _HOOK = {"ih": "x", "hh": "h", "cell": "c", "pre": "pre"}

    def __init__(self, cell, norm, p, bufs, tag, training, ln_eps, bn_eps, seq_input, observe=None):
        self.cell, self.norm, self.p, self.bufs, self.tag = cell, norm, p, bufs, tag
        self.training, self.ln_eps, self.bn_eps = training, ln_eps, bn_eps
        self.observe = observe
        self.stats: dict[str, dict[int, tuple[Array, Array, int]]] = {}
        self.seq_stats = None
        if norm == "batch_input":
            self._prepare_sequence_wise(*seq_input)

    def _prepare_sequence_wise(self, layer_in, lengths, w_ih):
        """``batch_input``: one set of statistics over all active ``(t, b)`` positions of the
        layer's input term ``A^x`` (the same positions for both directions)."""
        if self.training:
            a_x = layer_in @ w_ih.T  # (T, B, G*H)
            mask = np.arange(layer_in.shape[0])[:, None] < lengths[None, :]
            mean, var, n = batch_statistics(a_x, mask)
            self.stats["ih"] = {0: (mean, var, n)}
        else:
            mean = self.bufs[f"bn_ih_running_mean{self.tag}"]
            var = self.bufs[f"bn_ih_running_var{self.tag}"]
        self.seq_stats = (mean, var)

    def _ln_hook(self, part, step_k, active, gamma, beta):
        def fn(a):
            if self.observe is not None:
                mu = a.mean(axis=-1, keepdims=True)
                self.observe(part, step_k, a, active, mu, ((a - mu) ** 2).mean(-1, keepdims=True))
            return layer_norm(a, gamma, beta, self.ln_eps)

        return fn

    def _bn_hook(self, part, step_k, active, gamma, beta):
        def fn(a):
            if self.norm == "batch_input":
                mean, var = self.seq_stats
            elif self.training:
                mean, var, n = batch_statistics(a, active)
                self.stats.setdefault(part, {})[step_k] = (mean, var, n)
            else:
                run_mean = self.bufs[f"bn_{part}_running_mean{self.tag}"]
                run_var = self.bufs[f"bn_{part}_running_var{self.tag}"]
                if run_mean.shape[0] == 0:  # never trained: mean 0, variance 1
                    mean, var = np.zeros(run_mean.shape[1]), np.ones(run_mean.shape[1])
                else:  # steps beyond the longest training sequence reuse the last row
                    row = min(step_k, run_mean.shape[0] - 1)
                    mean, var = run_mean[row], run_var[row]
            if self.observe is not None:
                self.observe(part, step_k, a, active, mean, var)
            return batch_norm(a, gamma, beta, mean, var, self.bn_eps)

        return fn

    def __call__(self, step_k: int, active: Array) -> StepNorms | None:
        p, tag = self.p, self.tag
        if self.norm is None:
            return None
        if self.norm == "batch_input":
            gamma = p[f"bn_ih_weight{tag}"]
            return StepNorms(x=self._bn_hook("ih", step_k, active, gamma, None))
        if self.norm == "layer":
            if self.cell == "rnn":
                parts = [("pre", p[f"ln_weight{tag}"], None)]
            else:
                parts = [
                    ("ih", p[f"ln_ih_weight{tag}"], None),
                    ("hh", p[f"ln_hh_weight{tag}"], None),
                ]
            if self.cell == "lstm":
                parts.append(("cell", p[f"ln_cell_weight{tag}"], p[f"ln_cell_bias{tag}"]))
            make = self._ln_hook
        else:  # "batch": per-time-step statistics, gains shared over time
            parts = [("ih", p[f"bn_ih_weight{tag}"], None), ("hh", p[f"bn_hh_weight{tag}"], None)]
            if self.cell == "lstm":
                parts.append(("cell", p[f"bn_cell_weight{tag}"], p[f"bn_cell_bias{tag}"]))
            make = self._bn_hook
        hooks = {
            self._HOOK[part]: make(part, step_k, active, gamma, beta) for part, gamma, beta in parts
        }
        return StepNorms(**hooks)

    def update_buffers(self, bufs: dict[str, Array], steps: int, momentum: float) -> None:
        """Applies the recorded statistics to ``bufs`` (training mode only).

        ``norm="batch"``: every buffer of this direction first grows to at least ``steps`` rows
        (the longest sequence of the call; new rows mean 0, variance 1); then row ``k`` is
        updated with the statistics of step ``k`` when ``n >= 2`` sequences were active.
        """
        if not self.training or self.norm not in BATCH_NORMS:
            return
        for part, per_step in self.stats.items():
            mean_key = f"bn_{part}_running_mean{self.tag}"
            var_key = f"bn_{part}_running_var{self.tag}"
            run_mean, run_var = bufs[mean_key], bufs[var_key]
            if self.norm == "batch":
                rows, width = run_mean.shape
                if steps > rows:
                    run_mean = np.concatenate([run_mean, np.zeros((steps - rows, width))])
                    run_var = np.concatenate([run_var, np.ones((steps - rows, width))])
                for k, (mean, var, n) in per_step.items():
                    run_mean[k], run_var[k] = update_running_stats(
                        run_mean[k], run_var[k], mean, var, n, momentum
                    )
            else:
                mean, var, n = per_step[0]
                run_mean, run_var = update_running_stats(run_mean, run_var, mean, var, n, momentum)
            bufs[mean_key], bufs[var_key] = run_mean, run_var
