"""The demo's tasks: the adding problem and pixel-by-pixel 8x8 digits.

Each task holds its held-out set and yields the training stream; it defines the loss, the
held-out evaluation, the target and the text that describes it (see the ``rnncore.demo``
docstring for both tasks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

import rnncore as rc

from .errors import DemoError
from .models import Model

# Target of the adding problem: the held-out MSE must fall below 0.01, i.e. an RMS error
# of 0.1 on sums that range over [0, 2). That is 6% of the trivial baseline (1/6, always
# predicting the mean 1.0) and 12% of what a model scores that remembers only one of the
# two marked values and guesses the other's mean (1/12), so a model below it really
# stores and adds both values across the whole sequence.
ADDING_TARGET_MSE = 0.01
# Target of the digits task: 90% held-out accuracy, far from chance (10%) and from what
# the mean pixel intensity alone allows (a linear read-out of a few global features).
DIGITS_TARGET_ACCURACY = 0.90
# One fixed pixel order for --permute, independent of --seed, so that runs with different
# seeds solve the same permuted task (as permuted MNIST uses one permutation).
PERMUTATION_SEED = 2016


class AddingTask:
    """The adding problem; see the ``rnncore.demo`` docstring."""

    name = "adding"
    input_size = 2
    outputs = 1
    metric = "loss"
    metric_label = "test MSE"

    def __init__(self, length: int, seed: int, test_size: int = 1000):
        self.length = length
        self.x_test, self.y_test = self._sample(np.random.default_rng([seed, 1]), test_size)
        self.baseline = rc.mse_loss(np.ones_like(self.y_test), self.y_test)[0]
        self.target = ADDING_TARGET_MSE
        self.target_label = f"MSE<{ADDING_TARGET_MSE:g}"
        self.calibration_size = 1000

    def title(self) -> str:
        return f"the adding problem (Hochreiter & Schmidhuber 1997), T={self.length}"

    def describe(self) -> list[str]:
        return [
            "inputs: (value, marker) pairs, values uniform in [0, 1), two markers (one per half);",
            "target: the sum of the two marked values; loss: mean squared error",
            f"baseline (always predict 1.0): test MSE {self.baseline:.3f}; "
            f"target: test MSE < {self.target:g}",
        ]

    def _sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        T = self.length
        x = np.zeros((T, batch, 2), dtype=np.float32)
        x[:, :, 0] = rng.random((T, batch), dtype=np.float32)
        cols = np.arange(batch)
        first = rng.integers(0, T // 2, size=batch)
        second = rng.integers(T // 2, T, size=batch)
        x[first, cols, 1] = 1.0
        x[second, cols, 1] = 1.0
        y = (x[first, cols, 0] + x[second, cols, 0])[:, None]
        return x, y

    def batches(self, batch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, 2])
        while True:
            yield self._sample(rng, batch)

    def loss(self, pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return rc.mse_loss(pred, y)

    def evaluate(self, model: Model) -> dict[str, float]:
        return {"loss": rc.mse_loss(model.predict(self.x_test), self.y_test)[0]}

    def calibration_inputs(self, seed: int) -> np.ndarray:
        """Fresh training-distribution sequences (not the test set) for batch statistics."""
        return self._sample(np.random.default_rng([seed, 4]), self.calibration_size)[0]

    def reached(self, metrics: dict[str, float]) -> bool:
        return metrics["loss"] < self.target


class DigitsTask:
    """Pixel-by-pixel 8x8 digits; see the ``rnncore.demo`` docstring."""

    name = "digits"
    input_size = 1
    outputs = 10
    length = 64
    metric = "accuracy"
    metric_label = "test acc"

    def __init__(self, seed: int, permute: bool, test_fraction: float = 0.2):
        try:
            from sklearn.datasets import load_digits  # noqa: PLC0415 - optional dependency
        except ImportError as e:
            raise DemoError(
                "--task digits needs scikit-learn (for its bundled 8x8 digits): "
                "pip install scikit-learn"
            ) from e
        digits = load_digits()
        pixels = np.asarray(digits.data, dtype=np.float32) / 16.0  # (N, 64), in [0, 1]
        self.permute = permute
        if permute:
            pixels = pixels[:, np.random.default_rng(PERMUTATION_SEED).permutation(64)]
        labels = np.asarray(digits.target, dtype=np.int64)
        order = np.random.default_rng([seed, 3]).permutation(len(labels))
        n_test = int(round(test_fraction * len(labels)))
        test, train = order[:n_test], order[n_test:]
        self.x_train = np.ascontiguousarray(pixels[train].T[:, :, None])  # (64, N, 1)
        self.y_train = labels[train]
        self.x_test = np.ascontiguousarray(pixels[test].T[:, :, None])
        self.y_test = labels[test]
        counts = np.bincount(self.y_train, minlength=10)
        self.baseline = counts.max() / counts.sum()
        self.target = DIGITS_TARGET_ACCURACY
        self.target_label = f"acc>={DIGITS_TARGET_ACCURACY:.0%}"
        self.calibration_size = self.y_train.size

    def title(self) -> str:
        order = "permuted" if self.permute else "row-major"
        return f"pixel-by-pixel 8x8 digits (scikit-learn), T=64, {order} pixel order"

    def describe(self) -> list[str]:
        return [
            f"{self.y_train.size} training and {self.y_test.size} test images, one pixel "
            "(scaled to [0, 1]) per step;",
            "loss: softmax cross-entropy over the 10 classes, from the final hidden state",
            f"baseline (most frequent class): {self.baseline:.1%} accuracy; "
            f"target: test accuracy >= {self.target:.0%}",
        ]

    def batches(self, batch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, 2])
        n = self.y_train.size
        batch = min(batch, n)
        while True:  # epochs of shuffled mini-batches; a short tail batch is dropped
            order = rng.permutation(n)
            for start in range(0, n - batch + 1, batch):
                idx = order[start : start + batch]
                yield self.x_train[:, idx], self.y_train[idx]

    def loss(self, logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        return rc.softmax_cross_entropy(logits, y)

    def evaluate(self, model: Model) -> dict[str, float]:
        logits = model.predict(self.x_test)
        loss = rc.softmax_cross_entropy(logits, self.y_test)[0]
        return {"loss": loss, "accuracy": float(np.mean(logits.argmax(-1) == self.y_test))}

    def reached(self, metrics: dict[str, float]) -> bool:
        return metrics["accuracy"] >= self.target

    def calibration_inputs(self, seed: int) -> np.ndarray:
        """The training images, for batch statistics."""
        return self.x_train


def format_metric(task: Any, metrics: dict[str, float]) -> str:
    """The task's headline metric from ``metrics``, as the table and progress bar show it.

    Args:
        task: the task (its ``metric``: ``"loss"`` or ``"accuracy"``).
        metrics: held-out metrics, as ``task.evaluate`` returns them; may be empty.

    Returns:
        e.g. ``"0.0123"`` or ``"91.2%"``; ``"-"`` when ``metrics`` is empty.
    """
    if not metrics:
        return "-"
    value = metrics[task.metric]
    return f"{value:.1%}" if task.metric == "accuracy" else f"{value:.4f}"
