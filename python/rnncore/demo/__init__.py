"""``python -m rnncore demo``: train small recurrent models on the CPU, compare normalizations.

Every model is one recurrent layer (``rnncore.RNN``/``LSTM``/``GRU``, plain, layer-normalized
or batch-normalized) followed by an ``rnncore.Linear`` read-out of its final hidden state,
trained with ``rnncore.optim.Adam``. All models start from the same seed and see the same
stream of training batches, so the only difference between two rows of the table is the
cell (and, for the ``-clip`` variants, gradient-norm clipping).

Tasks:
    adding   The adding problem (Hochreiter & Schmidhuber 1997): each step carries a
             (value, marker) pair, values uniform in [0, 1), exactly two markers set to 1,
             one in each half of the sequence; the target is the sum of the two marked
             values. Always predicting 1.0 scores a mean squared error of 1/6 (the
             variance of the sum); remembering only one of the two values scores 1/12.
             Needs no download.
    digits   Pixel-by-pixel classification of scikit-learn's bundled 8x8 digits: 64 steps
             of one pixel each (scaled to [0, 1]), optionally in a fixed permuted order;
             the small cousin of sequential MNIST (Cooijmans et al. 2016). Needs
             scikit-learn.

The table reports, per model: the training loss at the end, the held-out loss (eval mode,
so batch normalization uses its running statistics), the number of updates until the
held-out metric first reached the target, the wall time of the training updates, and
inference throughput (sequences per second, eval mode, model and head).

Modules, each with one job:
    cli        the command line: options, per-task defaults, ``main``
    tasks      the data, loss, held-out evaluation and target of each task
    models     the model names and the models (a recurrent layer and a linear read-out)
    training   one model's training loop, held-out evaluations and throughput
    progress   the progress bar on stderr
    report     the header, the results table and its notes, the learning-curve plot
    errors     ``DemoError``, for bad options and missing optional dependencies
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
