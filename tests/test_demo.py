"""Tests of ``python -m rnncore demo`` (rnncore.demo).

The demo's pieces are checked against independent computations: the adding-problem data
against its definition, the parameter counts against the formulas of the spec, the
training step's gradients (head and cell chained together) against float64 central
differences, the reported held-out numbers against a NumPy recomputation, and the
digits data against scikit-learn's arrays, the re-estimated batch-norm statistics
against training mode on the same batch. The command line is run end to end on tiny
settings, and ``--quick`` (two of its models) in a subprocess, as CI runs it.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import rnncore
from rnncore.demo import main, models, progress, report, tasks, training

TINY = ["--steps", "40", "--length", "12", "--hidden", "8", "--batch", "8"]
TINY += ["--eval-every", "20", "--no-progress", "--threads", "1"]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _table(out: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and rows (by model name) of the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert set(lines[start + 1]) == {"-"}
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(header), line
        rows[cells[0]] = cells
    # Aligned: every line of the table has the same width (numbers right-justified).
    widths = {len(line) for line in lines[start : start + 2 + len(rows)]}
    assert len(widths) == 1, lines[start : start + 2 + len(rows)]
    return header, rows


# ------------------------------------------------------------------------- the data
def test_adding_data_follows_the_definition():
    task = tasks.AddingTask(length=10, seed=3, test_size=500)
    x, y = next(task.batches(batch=64, seed=3))
    for xs, ys in ((x, y), (task.x_test, task.y_test)):
        values, markers = xs[..., 0], xs[..., 1]
        assert xs.dtype == np.float32 and ys.shape == (xs.shape[1], 1)
        assert np.all((values >= 0) & (values < 1))
        # Exactly one marker in each half (T // 2 = 5 steps each).
        assert np.all(markers[:5].sum(0) == 1) and np.all(markers[5:].sum(0) == 1)
        assert set(np.unique(markers)) == {0.0, 1.0}
        np.testing.assert_allclose(ys[:, 0], (values * markers).sum(0), rtol=1e-6)
    # The sum of two U(0,1) has variance 1/6: predicting 1.0 scores MSE 1/6. Over 500
    # test sequences the estimate's standard deviation is sqrt((1/15 - 1/36) / 500)
    # = 0.0088; 4 standard deviations = 0.035.
    assert abs(task.baseline - 1 / 6) < 0.035
    assert task.baseline == pytest.approx(float(np.mean((task.y_test - 1.0) ** 2)), rel=1e-6)


def test_every_model_sees_the_same_stream_and_the_seed_changes_it():
    task = tasks.AddingTask(length=8, seed=0, test_size=10)
    a, b, c = task.batches(4, seed=5), task.batches(4, seed=5), task.batches(4, seed=6)
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert not np.array_equal(xa, xc)


# ----------------------------------------------------------------------- the models
def test_parse_models():
    specs = models.parse_models("lstm, ln-lstm,bn-lstm,bnx-gru,rnn-clip,ln-lstm-clip", clip=2.5)
    got = [(s.name, s.cell, s.norm, s.clip) for s in specs]
    assert got == [
        ("lstm", "LSTM", None, None),
        ("ln-lstm", "LSTM", "layer", None),
        ("bn-lstm", "LSTM", "batch", None),
        ("bnx-gru", "GRU", "batch_input", None),
        ("rnn-clip", "RNN", None, 2.5),
        ("ln-lstm-clip", "LSTM", "layer", 2.5),
    ]
    for name in models.model_names():  # every advertised name parses and builds
        (spec,) = models.parse_models(name)
        models.Model(spec, 2, 4, 1, seed=0)
    with pytest.raises(ValueError, match="unknown model 'transformer'"):
        models.parse_models("lstm,transformer")
    with pytest.raises(ValueError, match="listed twice: lstm"):
        models.parse_models("lstm,rnn,lstm")
    with pytest.raises(ValueError, match="comma-separated"):
        models.parse_models("lstm,,rnn")


@pytest.mark.parametrize("name", ["lstm", "ln-lstm", "bn-lstm", "rnn", "gru", "bnx-gru"])
def test_training_step_gradients_match_finite_differences(name):
    """The demo chains head.backward into the cell's backward through h_n: check the chain.

    float64, a central difference along one random unit direction over every parameter
    of cell and head, Richardson-extrapolated (batch statistics over 5 sequences have a
    large third derivative). Truncation error ~1e-20 |f^(5)|, rounding ~1e-16 / 1e-5 =
    1e-11 relative to the loss: 1e-6 relative is a safe bound that a wrong chain (a missing
    term is O(1) of the gradient) cannot meet.
    """
    (spec,) = models.parse_models(name)
    task = tasks.AddingTask(length=6, seed=1, test_size=4)
    model = models.Model(spec, 2, 5, 1, seed=2, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = next(task.batches(5, seed=4))
    x = x.astype(np.float64)
    y = y.astype(np.float64)

    def loss() -> float:  # the forward pass written out independently of train_step
        _, h_n = model.rec(x)
        h = (h_n[0] if name.endswith("lstm") else h_n)[-1]
        return float(np.mean((model.head(h) - y) ** 2))

    for m in model.modules:
        m.zero_grad()
    value = model.train_step(x, y, task.loss)
    assert value == pytest.approx(loss(), rel=1e-12)
    params = [p for m in model.modules for p in m.parameters().values()]
    grads = [g for m in model.modules for g in m.grads.values()]
    directions = [rng.standard_normal(p.shape) for p in params]
    scale = np.sqrt(sum(float(np.sum(d * d)) for d in directions))
    directions = [d / scale for d in directions]
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, directions))

    def derivative(h: float) -> float:
        for p, d in zip(params, directions):
            p += h * d
        up = loss()
        for p, d in zip(params, directions):
            p -= 2 * h * d
        down = loss()
        for p, d in zip(params, directions):
            p += h * d
        return (up - down) / (2 * h)

    numeric = (4 * derivative(1e-5) - derivative(2e-5)) / 3
    assert abs(analytic) > 1e-6  # the direction is not accidentally orthogonal
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


def test_training_learns_and_reported_numbers_are_recomputable():
    """A tiny LN-LSTM on a short adding problem must beat the baseline clearly.

    T=10, H=16, 300 updates: a working model gets far below the predict-1.0 baseline (1/6);
    0.05 is under a third of it and below the 1/12 of remembering one value, which a
    broken gradient (or an untrained model) cannot reach. The reported held-out loss must
    equal a NumPy recomputation from the returned model.
    """
    (spec,) = models.parse_models("ln-lstm")
    task = tasks.AddingTask(length=10, seed=0, test_size=300)
    result = training.train_model(
        spec,
        task,
        steps=300,
        hidden=16,
        batch=32,
        lr=1e-2,
        seed=0,
        eval_every=100,
        throughput_seconds=0.01,
        progress=False,
    )
    assert result.steps_done == 300 and len(result.train_losses) == 300
    assert result.eval_steps == [100, 200, 300]
    pred = result.model.predict(task.x_test)
    # float32 forward; the mean is accumulated in float64 on both sides: same to ~1e-6.
    expected = float(np.mean((pred.astype(np.float64) - task.y_test) ** 2))
    assert result.final["loss"] == pytest.approx(expected, rel=1e-6)
    assert result.final["loss"] < 0.05 < task.baseline
    reached = [s for s, m in zip(result.eval_steps, result.eval_metrics) if m["loss"] < 0.01]
    assert result.steps_to_target == (reached[0] if reached else None)
    assert result.throughput > 0
    assert result.model.rec.training  # predict() restores training mode


# --------------------------------------------------------------------- progress bar
class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_on_a_tty_and_writes_occasional_lines_elsewhere():
    log = io.StringIO()
    bar = progress.Progress(1000, "lstm", stream=log, log_interval=3600)
    for step in range(1, 1001):
        bar.update(step, "loss 0.1")
    bar.close(1000, "loss 0.05")
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue()  # only the final line
    assert "1000/1000" in lines[0] and "loss 0.05" in lines[0] and "100%" in lines[0]

    log = io.StringIO()
    bar = progress.Progress(10, "lstm", stream=log, log_interval=0.0)
    for step in range(1, 11):
        bar.update(step)
    assert len(log.getvalue().splitlines()) == 10  # interval 0: a line per update

    tty = _FakeTTY()
    bar = progress.Progress(4, "ln-lstm", stream=tty, tty_interval=0.0)
    bar.update(2, "loss 0.5")
    bar.close(4)
    text = tty.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[############............]" in text and "[########################]" in text
    assert "eta" in text.split("\r")[1]

    quiet = io.StringIO()
    bar = progress.Progress(3, "x", stream=quiet, enabled=False)
    bar.update(1)
    bar.close(3)
    assert quiet.getvalue() == "" and not bar.due()


# ------------------------------------------------------------------ command line
def test_cli_adding_table(capsys):
    threads = rnncore.get_num_threads()
    code, out, err = _run(capsys, TINY)
    assert code == 0, err
    assert "adding problem" in out and "T=12" in out
    header, rows = _table(out)
    assert header == [
        "model",
        "params",
        "train loss@40",
        "test loss",
        "steps to MSE<0.01",
        "train s",
        "infer seq/s",
    ]
    assert list(rows) == ["lstm", "ln-lstm", "bn-lstm", "rnn", "rnn-clip"]
    # Parameter counts from the spec's layouts, H=8, input 2, head H+1:
    # RNN H(2+H+2); LSTM 4H(2+H+2); layer/batch norm add 4H+4H (gates) + 2H (cell).
    H = 8
    expected = {"rnn": H * (H + 4), "lstm": 4 * H * (H + 4)}
    expected["ln-lstm"] = expected["bn-lstm"] = expected["lstm"] + 10 * H
    expected["rnn-clip"] = expected["rnn"]
    for name, cells in rows.items():
        assert int(cells[1].replace(",", "")) == expected[name] + H + 1
        assert np.isfinite(float(cells[2])) and np.isfinite(float(cells[3]))
        assert cells[4] == ">40" or 20 <= int(cells[4]) <= 40
        assert float(cells[5]) > 0 and float(cells[6].replace(",", "")) > 0
    assert re.search(r"rnn-clip: gradient norm clipped to 1 in \d+% of updates", out)
    assert err == ""  # --no-progress
    assert rnncore.get_num_threads() == threads  # --threads is undone on return


def test_cli_quick_in_a_subprocess_like_ci():
    """``--quick`` (two of its five models, to keep this file fast) in a subprocess, as CI
    runs it: return code, table, and that it shows something: the layer-norm LSTM gets
    below the target while the plain tanh RNN stays near the baseline of 1/6. The numbers
    are deterministic (seeded, and rnncore's results do not depend on the thread count);
    the margins (ln-lstm 0.0010 against 0.01, rnn 0.16 against 0.1) leave room for the
    rounding changes of other builds."""
    code = "import sys; from rnncore.demo import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--quick", "--models", "ln-lstm,rnn"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "hidden 32, batch 32, 1500 updates" in proc.stdout and "T=50" in proc.stdout
    _, rows = _table(proc.stdout)
    assert list(rows) == ["ln-lstm", "rnn"]
    assert float(rows["ln-lstm"][3]) < tasks.ADDING_TARGET_MSE
    assert int(rows["ln-lstm"][4]) <= 1500
    assert float(rows["rnn"][3]) > 0.1 and rows["rnn"][4] == ">1500"
    # stderr is not a TTY here: a few plain lines per model, no carriage returns.
    assert "\r" not in proc.stderr
    assert 2 <= len(proc.stderr.splitlines()) <= 2 * 4
    assert elapsed < 30  # the whole --quick (5 models) takes 13 s on 2 cores under load


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["--hidden", "many"], "argument --hidden: expected an integer, got 'many'"),
        (["--lr", "-1"], "argument --lr: must be a finite number > 0"),
        (["--task", "mnist"], "argument --task: invalid choice: 'mnist'"),
        (["--models", "lstm,foo"], "--models: unknown model 'foo'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--task", "digits", "--length", "10"], "--length applies to the adding task only"),
        (["--permute"], "--permute applies to --task digits only"),
    ],
)
def test_cli_bad_options_fail_cleanly(capsys, argv, message):
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert out == ""


def test_cli_help_describes_every_option(capsys):
    code, out, _ = _run(capsys, ["--help"])
    assert code == 0
    for option in [
        "--task",
        "--models",
        "--steps",
        "--length",
        "--hidden",
        "--batch",
        "--lr",
        "--clip",
        "--eval-every",
        "--seed",
        "--threads",
        "--permute",
        "--plot",
        "--quick",
        "--no-progress",
    ]:
        assert option in out
    assert "adding problem" in out and "scikit-learn" in out


def test_missing_optional_dependencies_give_a_clear_message(capsys, monkeypatch, tmp_path):
    # A None entry in sys.modules makes the import raise ImportError, as if not installed.
    for module in ("sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, module, None)
    code, _, err = _run(capsys, ["--task", "digits", *TINY[:2], "--no-progress"])
    assert code == 2 and "pip install scikit-learn" in err and "Traceback" not in err
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, module, None)
    code, out, err = _run(capsys, [*TINY, "--plot", str(tmp_path / "c.png")])
    assert code == 2 and "pip install matplotlib" in err and "Traceback" not in err
    assert out == ""  # refused before training, not after minutes of it


def test_plot_is_saved(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    code, out, err = _run(capsys, [*TINY, "--models", "lstm,rnn", "--plot", str(path)])
    assert code == 0, err
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"learning curves saved to {path}" in out
    code, _, err = _run(capsys, [*TINY, "--plot", str(tmp_path / "curves.nope")])
    assert code == 2 and "cannot tell the image format" in err
    code, _, err = _run(capsys, [*TINY, "--plot", str(tmp_path / "missing" / "c.png")])
    assert code == 2 and "does not exist" in err
    (tmp_path / "taken.png").mkdir()  # passes the early checks, fails when written
    code, out, err = _run(capsys, [*TINY, "--models", "rnn", "--plot", str(tmp_path / "taken.png")])
    assert code == 1 and "could not save the plot" in err and "Traceback" not in err
    assert "model " in out  # the table came first


def test_digits_data_and_cli():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    digits = load_digits()
    task = tasks.DigitsTask(seed=0, permute=False)
    n = len(digits.target)
    assert task.x_train.shape == (64, task.y_train.size, 1)
    assert task.y_train.size + task.y_test.size == n and task.y_test.size == round(0.2 * n)
    # Time-major (64, N, 1): step t of sequence b is pixel t (row-major) of image b, /16.
    # Every image lands in exactly one of the two sets, with its own label.
    images = np.concatenate([task.x_train[:, :, 0].T, task.x_test[:, :, 0].T])
    labels = np.concatenate([task.y_train, task.y_test])
    original = (digits.data / 16.0).astype(np.float32)
    order = np.lexsort(original.T[::-1])  # sort both sets of rows the same way
    mine = np.lexsort(images.T[::-1])
    np.testing.assert_array_equal(images[mine], original[order])
    assert sorted(labels.tolist()) == sorted(digits.target.tolist())
    key = {row.tobytes(): label for row, label in zip(original, digits.target)}
    assert all(key[row.tobytes()] == label for row, label in zip(images, labels))
    assert task.x_train.min() >= 0 and task.x_train.max() == 1.0
    permuted = tasks.DigitsTask(seed=0, permute=True)
    perm = np.random.default_rng(tasks.PERMUTATION_SEED).permutation(64)
    np.testing.assert_array_equal(permuted.x_test, task.x_test[perm])  # same split, reordered
    np.testing.assert_array_equal(permuted.y_test, task.y_test)


def test_cli_digits(capsys):
    pytest.importorskip("sklearn")
    argv = ["--task", "digits", "--steps", "20", "--hidden", "8", "--eval-every", "10"]
    code, out, err = _run(capsys, [*argv, "--models", "lstm,bn-lstm", "--no-progress"])
    assert code == 0, err
    assert "8x8 digits" in out and "row-major" in out
    header, rows = _table(out)
    assert "test acc" in header and "steps to acc>=90%" in header
    assert list(rows) == ["lstm", "bn-lstm"]
    for cells in rows.values():
        acc = float(cells[header.index("test acc")].rstrip("%")) / 100
        assert 0 <= acc <= 1
        # Cross-entropy of 10 classes; 20 updates leave it near log(10) = 2.30.
        assert 1.0 < float(cells[header.index("test loss")]) < 3.5


@pytest.mark.parametrize("name", ["bn-lstm", "bnx-lstm", "bn-gru"])
def test_recalibrated_statistics_are_those_of_the_calibration_batch(name):
    """Eval mode with re-estimated statistics = training mode (batch statistics) on that batch.

    The running variance is the unbiased one (docs/normalization.md), n/(n-1) times the
    batch variance that training mode divides by: with n = 1000 calibration sequences each
    normalized value shrinks by about 1/(2n) = 5e-4 relative; through the normalization
    sites and 12 recurrent steps that measured 1e-3 on outputs of size ~1, so 5e-3 bounds
    it. The running averages kept during training must be much further off (the reason
    for re-estimating), and the original model must be left untouched.
    """
    (spec,) = models.parse_models(name)
    task = tasks.AddingTask(length=12, seed=0, test_size=10)
    model = models.Model(spec, 2, 8, 1, seed=0, dtype="float64")
    optimizer = rnncore.optim.Adam(model.modules, lr=1e-2)
    stream = task.batches(16, seed=0)
    for _ in range(20):
        x, y = next(stream)
        optimizer.zero_grad()
        model.train_step(x.astype(np.float64), y.astype(np.float64), task.loss)
        optimizer.step()
    x_cal = task.calibration_inputs(seed=0)
    before = model.rec.state_dict()
    copy = model.recalibrated(x_cal)
    after = model.rec.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    recalibrated = copy.predict(x_cal)
    stale = model.predict(x_cal)
    _, h_n = model.rec(x_cal)  # training mode: the batch statistics of x_cal
    batch_stats = model.head((h_n[0] if model.lstm else h_n)[-1])
    model.rec.load_state_dict(before)  # that call moved the running averages: restore
    assert np.abs(recalibrated - batch_stats).max() < 5e-3
    # After 20 updates at lr 1e-2 the stale averages are off by 0.2-0.5 (measured).
    assert np.abs(stale - batch_stats).max() > 0.05


def test_a_diverging_model_is_stopped_and_reported():
    """A non-finite loss stops that model's training (no update with NaN gradients)."""
    (spec,) = models.parse_models("lstm")
    task = tasks.AddingTask(length=6, seed=0, test_size=8)
    calls = []

    def loss(pred, y):
        calls.append(1)
        value, grad = rnncore.mse_loss(pred, y)
        return (float("nan") if len(calls) == 3 else value), grad

    task.loss = loss
    result = training.train_model(
        spec,
        task,
        steps=10,
        hidden=4,
        batch=4,
        lr=1e-3,
        seed=0,
        eval_every=2,
        throughput_seconds=0.0,
        progress=False,
    )
    assert result.diverged and result.steps_done == 2 and len(calls) == 3
    assert result.eval_steps == [2] and np.isnan(result.throughput)
    assert all(np.isfinite(p).all() for p in result.model.rec.parameters().values())
    _, rows = _table(report.format_table([result], task, steps=10))
    assert rows["lstm"][2:4] == ["diverged@3", "-"] and rows["lstm"][4] == ">10"
