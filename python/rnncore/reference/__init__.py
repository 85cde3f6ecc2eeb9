"""Independent pure-NumPy float64 reference of the rnncore forward pass, normalized cells included.

Slow and simple on purpose: the self-check (``python -m rnncore``) and the test suite compare
the compiled core against it. Use it to read the equations in code, or to check a model.

Written from docs/api.md and docs/normalization.md (sections 1-3), not from the C++ code, so
that tests can compare the fast path against it. Everything is computed in float64 with plain
NumPy (no fused kernels, no hoisted GEMMs) and favours clarity over speed.

Structure (each module imports only from the ones above it):

* ``norms``: ``layer_norm``, ``batch_statistics``, ``batch_norm`` (and their ``*_backward``, the
  formulas of spec section 1, for tests of the invariants) and ``update_running_stats`` are the
  two normalizations.
* ``cells``: ``rnn_cell``, ``lstm_cell``, ``gru_cell`` compute ONE time step from the step input
  and the previous state. They take an optional :class:`StepNorms` whose callables are applied
  exactly where docs/normalization.md places ``N_x``, ``N_h``, ``N_c`` (and the RNN's layer norm
  of the sum); with ``None`` they are identities and the cells are the plain ``norm=None`` cells.
* ``params``: the names, shapes and initial values of the parameters and buffers
  (``param_names``, ``buffer_names``, ``init_norm_params``, ``init_buffers``, ``make_params``).
* ``masks``: :class:`Masks`, the dropout and zoneout of one call, and ``draw_masks``, which
  builds them from the draws of the core's generator.
* ``direction``: ``run_direction`` runs one direction of one layer over a (time-major) sequence
  with packed-sequence semantics for ``lengths``; it can ask a ``step_norms`` callback for the
  ``StepNorms`` of every step (the callback sees the step counter and the mask of active
  sequences, which is what per-time-step batch statistics need).
* ``forward``: ``reference_forward`` handles layouts, stacking and directions, builds the
  ``StepNorms`` of ``norm="layer"|"batch"|"batch_input"`` (training or eval mode, running
  statistics) and returns what the public modules return (plus the updated buffers for the
  batch norms).

Everything public is importable from ``rnncore.reference`` itself.
"""

from __future__ import annotations

from ._types import Array
from .cells import GATES, NormFn, StepNorms, clamp, gru_cell, lstm_cell, rnn_cell, sigmoid
from .direction import run_direction
from .forward import reference_forward
from .masks import MASK_SITES, Masks, draw_masks
from .norms import (
    BATCH_NORMS,
    NORMS,
    batch_norm,
    batch_norm_backward,
    batch_statistics,
    layer_norm,
    layer_norm_backward,
    update_running_stats,
)
from .params import (
    PEEPHOLES,
    buffer_names,
    init_buffers,
    init_norm_params,
    make_params,
    param_names,
)

__all__ = [
    "Array",
    "BATCH_NORMS",
    "GATES",
    "MASK_SITES",
    "NORMS",
    "PEEPHOLES",
    "Masks",
    "NormFn",
    "StepNorms",
    "batch_norm",
    "batch_norm_backward",
    "batch_statistics",
    "buffer_names",
    "clamp",
    "draw_masks",
    "gru_cell",
    "init_buffers",
    "init_norm_params",
    "layer_norm",
    "layer_norm_backward",
    "lstm_cell",
    "make_params",
    "param_names",
    "reference_forward",
    "rnn_cell",
    "run_direction",
    "sigmoid",
    "update_running_stats",
]
