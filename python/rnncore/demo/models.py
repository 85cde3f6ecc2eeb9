"""The models the demo compares: their names, and a recurrent layer with a linear read-out.

A model name is ``[ln-|bn-|bnx-]{rnn,lstm,gru}[-clip]``; ``parse_models`` turns a list of
them into ``ModelSpec`` rows, and ``Model`` builds one (``rnncore.RNN``/``LSTM``/``GRU`` and
an ``rnncore.Linear`` head) and runs its training step and eval-mode predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import rnncore as rc

# Gradient-norm bound of the "-clip" variants (Pascanu et al. 2013 use values near 1).
DEFAULT_CLIP = 1.0

_CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_NORM_PREFIXES = {"": None, "ln-": "layer", "bn-": "batch", "bnx-": "batch_input"}
_NORM_WORDS = {
    None: "",
    "layer": "layer norm",
    "batch": "recurrent batch norm",
    "batch_input": "input batch norm",
}
DEFAULT_MODELS = ("lstm", "ln-lstm", "bn-lstm", "rnn", "rnn-clip")


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: a recurrent cell, its normalization, optional clipping.

    Args:
        name: the name used on the command line and in the table (e.g. ``ln-lstm``).
        cell: ``"RNN"``, ``"LSTM"`` or ``"GRU"`` (the rnncore class name).
        norm: the ``norm`` argument of the cell.
        clip: the gradient-norm bound, or None for no clipping.
    """

    name: str
    cell: str
    norm: str | None
    clip: float | None

    def describe(self) -> str:
        """A few words for the legend: cell, normalization, clipping.

        Returns:
            e.g. ``"LSTM, layer norm"`` or ``"RNN (tanh), clip 1"``.
        """
        cell = "RNN (tanh)" if self.cell == "RNN" else self.cell
        parts = [cell] + ([_NORM_WORDS[self.norm]] if self.norm else [])
        if self.clip is not None:
            parts.append(f"clip {self.clip:g}")
        return ", ".join(parts)


def model_names() -> list[str]:
    """Every model name ``--models`` accepts (each also with a ``-clip`` suffix).

    Returns:
        Names such as ``lstm``, ``ln-lstm``, ``bn-lstm``, ``bnx-lstm``, ``rnn``, ``gru``.
    """
    return [prefix + cell for cell in _CELLS for prefix in _NORM_PREFIXES]


def parse_models(text: str, clip: float = DEFAULT_CLIP) -> list[ModelSpec]:
    """Parses a comma-separated list of model names.

    A name is ``[ln-|bn-|bnx-]{rnn,lstm,gru}[-clip]``: ``ln-`` layer normalization,
    ``bn-`` recurrent batch normalization, ``bnx-`` batch normalization of the input term
    only, ``-clip`` gradient-norm clipping at ``clip``.

    Args:
        text: e.g. ``"lstm,ln-lstm,rnn-clip"``.
        clip: the norm bound of the ``-clip`` variants.

    Returns:
        The models in the given order.

    Raises:
        ValueError: an unknown or repeated name, or an empty list.
    """
    names = [part.strip().lower() for part in text.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"expected a comma-separated list of model names, got {text!r}")
    specs = []
    for name in names:
        base, clipped = (name[: -len("-clip")], True) if name.endswith("-clip") else (name, False)
        for prefix, norm in _NORM_PREFIXES.items():
            cell = base[len(prefix) :]
            if prefix and not base.startswith(prefix):
                continue
            if cell in _CELLS:
                specs.append(ModelSpec(name, _CELLS[cell], norm, clip if clipped else None))
                break
        else:
            raise ValueError(
                f"unknown model {name!r}; choose from {', '.join(model_names())} "
                "(each also with a -clip suffix)"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"model(s) listed twice: {', '.join(repeated)}")
    return specs


class Model:
    """A recurrent layer and a linear read-out of its last hidden state.

    Args:
        spec: the cell, its normalization (and clipping, applied by the training loop).
        input_size: features per step.
        hidden: the hidden size of the cell.
        outputs: the read-out's outputs.
        seed: seeds the cell; the head uses ``seed + 1``.
        dtype: ``"float32"`` or ``"float64"``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        input_size: int,
        hidden: int,
        outputs: int,
        seed: int,
        dtype: str = "float32",
    ):
        cls = getattr(rc, spec.cell)
        self.spec = spec
        self.lstm = spec.cell == "LSTM"
        self.rec = cls(input_size, hidden, norm=spec.norm, dtype=dtype, seed=seed)
        self.head = rc.Linear(hidden, outputs, dtype=dtype, seed=seed + 1)
        self.modules = [self.rec, self.head]

    def num_parameters(self) -> int:
        """The number of trainable scalars, cell and head."""
        return self.rec.num_parameters() + self.head.num_parameters()

    def _last_hidden(self, h_n: Any) -> np.ndarray:
        return (h_n[0] if self.lstm else h_n)[-1]  # (B, H): the last layer's final state

    def train_step(self, x: np.ndarray, y: np.ndarray, loss_fn: Callable) -> float:
        """Forward, loss, backward (gradients added into the modules' grads)."""
        _, h_n, tape = self.rec.forward_train(x)
        pred, head_tape = self.head.forward_train(self._last_hidden(h_n))
        loss, grad = loss_fn(pred, y)
        grad_h = self.head.backward(head_tape, grad)[None]  # (1, B, H)
        self.rec.backward(tape, None, (grad_h, None) if self.lstm else grad_h)
        return loss

    def predict(self, x: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Eval-mode outputs for ``x`` ``(T, N, D)``, in chunks of sequences."""
        for m in self.modules:
            m.eval()
        try:
            parts = []
            for start in range(0, x.shape[1], chunk):
                _, h_n = self.rec(x[:, start : start + chunk])
                parts.append(self.head(self._last_hidden(h_n)))
            return np.concatenate(parts)
        finally:
            for m in self.modules:
                m.train()

    def recalibrated(self, x: np.ndarray) -> Model:
        """A copy whose batch-norm running statistics are re-estimated on ``x``.

        Training keeps exponential running averages (momentum 0.1) of statistics that
        drift as the weights change. The copy takes the final weights and sets its
        running statistics to the batch statistics of ``x`` (one training-mode pass with
        momentum 1), the population statistics of the final model. The head is shared.
        """
        rec = self.rec
        options = {k: rec.norm_options[k] for k in ("ln_eps", "bn_eps")}
        probe = type(rec)(
            rec.input_size, rec.hidden_size, norm=rec.norm, dtype=rec.dtype,
            bn_momentum=1.0, **options,
        )  # fmt: skip
        probe.load_state_dict(rec.state_dict())
        probe(x)  # training mode: sets the running statistics to those of x
        copy = object.__new__(Model)
        copy.spec, copy.lstm, copy.rec, copy.head = self.spec, self.lstm, probe, self.head
        copy.modules = [probe, self.head]
        return copy
