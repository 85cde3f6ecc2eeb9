"""The normalized LSTM written with PyTorch operations (PyTorch has no such layer)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Normalizations the PyTorch-operations LSTM implements.
TORCH_OPS_NORMS = ("layer", "batch")

_TORCH_OPS_CLASS: dict[int, type] = {}


def torch_ops_lstm(
    torch,
    input_size: int,
    hidden_size: int,
    norm: str = "layer",
    *,
    ln_eps: float = 1e-5,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    bn_gamma: float = 0.1,
):
    """Creates the normalized LSTM of docs/normalization.md §3 written with PyTorch operations.

    This is what a CPU user without rnncore would write: an ``nn.Module`` with a Python loop
    over time, the input projection (and its normalization, which does not depend on the
    state) hoisted out of the loop as one matrix product over all steps, ``F.layer_norm`` /
    ``F.batch_norm`` inside, autograd for the backward pass. Parameter and buffer names are
    rnncore's (``weight_ih_l0``, ``ln_ih_weight_l0``, ``bn_hh_running_mean_l0``, ...), one
    layer, one direction, time-major input ``(T, B, D)``; states are ``(1, B, H)`` as for
    ``torch.nn.LSTM``.

    - ``norm="layer"``: ``Z = LN0(x W_ih^T; ln_ih_weight) + b_ih + LN0(h W_hh^T;
      ln_hh_weight) + b_hh`` (LN0 over 4H), ``c`` carried un-normalized,
      ``h = o * tanh(LN(c; ln_cell_weight, ln_cell_bias))`` (over H).
    - ``norm="batch"``: the same with per-time-step batch normalization (Cooijmans et al.):
      training mode uses step ``t``'s batch statistics and updates running row ``t`` (the
      buffers grow to the longest sequence seen, new rows start at mean 0, variance 1); eval
      mode uses row ``min(t, S - 1)`` (mean 0, variance 1 while ``S == 0``).

    Args:
        torch: The ``torch`` module (imported by the caller, so this file needs no torch).
        input_size: ``D``.
        hidden_size: ``H``.
        norm: ``"layer"`` or ``"batch"``.
        ln_eps: Layer-norm epsilon.
        bn_eps: Batch-norm epsilon.
        bn_momentum: Running-statistics momentum.
        bn_gamma: Initial batch-norm gain.

    Returns:
        The module (float32, PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))`` weights; load others with
        ``load_arrays``).
    """
    cls = _TORCH_OPS_CLASS.get(id(torch))
    if cls is None:
        cls = _TORCH_OPS_CLASS[id(torch)] = _define_torch_ops_lstm(torch)
    return cls(input_size, hidden_size, norm, ln_eps, bn_eps, bn_momentum, bn_gamma)


def _define_torch_ops_lstm(torch) -> type:
    nn, F = torch.nn, torch.nn.functional

    class TorchOpsLSTM(nn.Module):
        """Layer- or batch-normalized LSTM in PyTorch operations; see ``torch_ops_lstm``."""

        def __init__(self, input_size, hidden_size, norm, ln_eps, bn_eps, bn_momentum, bn_gamma):
            super().__init__()
            if norm not in TORCH_OPS_NORMS:
                raise ValueError(f"norm must be one of {TORCH_OPS_NORMS}, got {norm!r}")
            self.input_size, self.hidden_size, self.norm = input_size, hidden_size, norm
            self.ln_eps, self.bn_eps, self.bn_momentum = ln_eps, bn_eps, bn_momentum
            g, h = 4 * hidden_size, hidden_size
            self.weight_ih_l0 = nn.Parameter(torch.empty(g, input_size))
            self.weight_hh_l0 = nn.Parameter(torch.empty(g, h))
            self.bias_ih_l0 = nn.Parameter(torch.empty(g))
            self.bias_hh_l0 = nn.Parameter(torch.empty(g))
            k = 1.0 / math.sqrt(h)
            for p in self.parameters():
                nn.init.uniform_(p, -k, k)
            if norm == "layer":
                self.ln_ih_weight_l0 = nn.Parameter(torch.ones(g))
                self.ln_hh_weight_l0 = nn.Parameter(torch.ones(g))
                self.ln_cell_weight_l0 = nn.Parameter(torch.ones(h))
                self.ln_cell_bias_l0 = nn.Parameter(torch.zeros(h))
            else:
                self.bn_ih_weight_l0 = nn.Parameter(torch.full((g,), bn_gamma))
                self.bn_hh_weight_l0 = nn.Parameter(torch.full((g,), bn_gamma))
                self.bn_cell_weight_l0 = nn.Parameter(torch.full((h,), bn_gamma))
                self.bn_cell_bias_l0 = nn.Parameter(torch.zeros(h))
                for part, width in (("ih", g), ("hh", g), ("cell", h)):
                    self.register_buffer(f"bn_{part}_running_mean_l0", torch.zeros(0, width))
                    self.register_buffer(f"bn_{part}_running_var_l0", torch.ones(0, width))

        def load_arrays(self, arrays: Mapping[str, Any]) -> TorchOpsLSTM:
            """Copies parameters and buffers given by rnncore name (NumPy arrays or tensors).

            Every parameter must be given; running-statistics buffers may have any number of
            rows. Unknown names raise ``KeyError``, wrong shapes ``ValueError``.
            """
            params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
            dtype = self.weight_ih_l0.dtype
            unknown = set(arrays) - set(params) - set(buffers)
            missing = set(params) - set(arrays)
            if unknown or missing:
                raise KeyError(f"unknown {sorted(unknown)}, missing {sorted(missing)}")
            with torch.no_grad():
                for name, value in arrays.items():
                    t = torch.as_tensor(np.asarray(value)).to(dtype)
                    ref = params.get(name, buffers.get(name))
                    if t.shape[1:] != ref.shape[1:] or (name in params and t.shape != ref.shape):
                        raise ValueError(f"{name}: shape {tuple(t.shape)} vs {tuple(ref.shape)}")
                    if name in params:
                        params[name].copy_(t)
                    else:
                        setattr(self, name, t.clone())
            return self

        # -- batch normalization helpers ----------------------------------------------------

        def _running(self, part):
            return (
                getattr(self, f"bn_{part}_running_mean_l0"),
                getattr(self, f"bn_{part}_running_var_l0"),
            )

        def _grow(self, steps):
            """Appends running rows (mean 0, variance 1) up to ``steps`` rows."""
            for part in ("ih", "hh", "cell"):
                rm, rv = self._running(part)
                extra = (steps - rm.shape[0], rm.shape[1])
                if extra[0] > 0:
                    rm = torch.cat([rm, rm.new_zeros(extra)])
                    rv = torch.cat([rv, rv.new_ones(extra)])
                    setattr(self, f"bn_{part}_running_mean_l0", rm)
                    setattr(self, f"bn_{part}_running_var_l0", rv)

        def _eval_stats(self, part, rows):
            """Running mean and variance for the given step indices (``(len(rows), W)``)."""
            rm, rv = self._running(part)
            if rm.shape[0] == 0:
                return rm.new_zeros(len(rows), rm.shape[1]), rv.new_ones(len(rows), rv.shape[1])
            idx = torch.clamp(torch.as_tensor(rows), max=rm.shape[0] - 1)
            return rm[idx], rv[idx]

        def _bn_step(self, a, part, t, weight, bias=None):
            """Batch norm of step ``t`` (``a`` is ``(B, W)``) with its own statistics."""
            if self.training:
                mean, var = self._running(part)  # rows updated in place, PyTorch semantics
                mean, var, m = mean[t], var[t], self.bn_momentum
            else:
                mean, var = self._eval_stats(part, [t])
                mean, var, m = mean[0], var[0], 0.0
            return F.batch_norm(a, mean, var, weight, bias, self.training, m, self.bn_eps)

        def _bn_input(self, ax):
            """Per-step batch norm of the whole input projection ``(T, B, 4H)`` at once."""
            steps, batch = ax.shape[0], ax.shape[1]
            if self.training:
                var, mean = torch.var_mean(ax, dim=1, unbiased=False, keepdim=True)
                with torch.no_grad():
                    rm, rv = self._running("ih")
                    m = self.bn_momentum
                    rm[:steps].mul_(1 - m).add_(mean[:, 0], alpha=m)
                    rv[:steps].mul_(1 - m).add_(var[:, 0], alpha=m * batch / (batch - 1))
            else:
                mean, var = (s[:, None] for s in self._eval_stats("ih", list(range(steps))))
            return (ax - mean) * torch.rsqrt(var + self.bn_eps) * self.bn_ih_weight_l0

        # -- forward ------------------------------------------------------------------------

        def forward(self, x, hx=None):
            """Runs the sequence ``x`` ``(T, B, D)``; returns ``out, (h_n, c_n)``."""
            steps, batch, _ = x.shape
            hid, g = self.hidden_size, 4 * self.hidden_size
            if hx is None:
                h = x.new_zeros(batch, hid)
                c = x.new_zeros(batch, hid)
            else:
                h, c = hx[0].reshape(batch, hid), hx[1].reshape(batch, hid)
            w_hh_t = self.weight_hh_l0.t()
            bias = self.bias_ih_l0 + self.bias_hh_l0
            ax = torch.matmul(x, self.weight_ih_l0.t())  # all steps' input projections at once
            outs = []
            if self.norm == "layer":
                eps, w_hh_ln = self.ln_eps, self.ln_hh_weight_l0
                xz = F.layer_norm(ax, (g,), self.ln_ih_weight_l0, None, eps) + bias
                for t in range(steps):
                    z = xz[t] + F.layer_norm(torch.mm(h, w_hh_t), (g,), w_hh_ln, None, eps)
                    i, f, gg, o = z.chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                    cn = F.layer_norm(c, (hid,), self.ln_cell_weight_l0, self.ln_cell_bias_l0, eps)
                    h = torch.sigmoid(o) * torch.tanh(cn)
                    outs.append(h)
            else:
                if self.training:
                    if batch < 2:
                        raise ValueError("batch norm in training mode needs a batch of 2 or more")
                    self._grow(steps)
                xz = self._bn_input(ax) + bias
                for t in range(steps):
                    z = xz[t] + self._bn_step(torch.mm(h, w_hh_t), "hh", t, self.bn_hh_weight_l0)
                    i, f, gg, o = z.chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                    cn = self._bn_step(c, "cell", t, self.bn_cell_weight_l0, self.bn_cell_bias_l0)
                    h = torch.sigmoid(o) * torch.tanh(cn)
                    outs.append(h)
            return torch.stack(outs), (h.unsqueeze(0), c.unsqueeze(0))

    return TorchOpsLSTM
