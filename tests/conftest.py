"""Pytest configuration shared by the rnncore tests.

Shared helpers live in ``tests/rnn_testing.py`` (configurations, module factory, loss, central
differences) and ``rnncore.reference`` (the NumPy reference); this file makes them importable
under any pytest import mode and provides the fixtures.
"""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


# The wheel test subset, run by ``--wheel-subset``: what cibuildwheel runs against every built
# wheel (pyproject.toml, [tool.cibuildwheel] test-command), from outside the source tree, with
# only numpy and pytest installed and no compiler. Fast files that exercise the compiled core
# through the installed package: the API, forward against the NumPy reference, gradients
# against finite differences, files, copies, streams, errors, the batcher, every ISA, safety.
# Their tests that need PyTorch, ONNX, safetensors ... skip one by one; a file skipped as a
# whole fails the run. Not here: the tests that compile C++ (test_cpp, test_c_api), need the
# source tree (test_structure, test_examples) or other packages throughout (ONNX, Keras,
# dask, torch parity), and the slow ones (the normalized gradient checks, hypothesis fuzzing).
WHEEL_SUBSET = (
    "test_activations.py",
    "test_api.py",
    "test_batcher.py",
    "test_boundary.py",
    "test_cells.py",
    "test_clip.py",
    "test_copies.py",
    "test_errors.py",
    "test_files.py",
    "test_forward.py",
    "test_gradcheck.py",
    "test_half_weights.py",
    "test_isa.py",
    "test_learns.py",
    "test_losses.py",
    "test_optim.py",
    "test_reverse.py",
    "test_safety.py",
    "test_stream.py",
    "test_tbptt.py",
)
# Tests of those files left out of the subset, with the reason.
WHEEL_SUBSET_EXCLUDED = {
    "test_isa.py::test_core_suite_passes_on_each_other_isa": "reruns the whole core suite per ISA",
}


_SKIPPED_MODULES = []  # subset files skipped as a whole (pytest_collectreport)


def pytest_addoption(parser):
    parser.addoption(
        "--wheel-subset",
        action="store_true",
        default=False,
        help="run only the fast wheel test subset (tests/conftest.py, WHEEL_SUBSET): numpy and "
        "pytest suffice, no compiler, no source tree besides tests/",
    )


def _subset(config):
    return config.getoption("wheel_subset", False)


def pytest_configure(config):
    if _subset(config):
        # A renamed or removed file or test must not silently change the subset.
        missing = [f for f in WHEEL_SUBSET if not os.path.isfile(os.path.join(_HERE, f))]
        for test in WHEEL_SUBSET_EXCLUDED:
            file, func = test.split("::")
            path = os.path.join(_HERE, file)
            source = Path(path).read_text(encoding="utf-8") if file in WHEEL_SUBSET else ""
            if f"def {func}(" not in source:
                missing.append(test)
        if missing:
            raise pytest.UsageError(f"--wheel-subset: not in tests/: {', '.join(missing)}")
        _SKIPPED_MODULES.clear()
        return  # the subset needs only numpy and pytest, in CI too
    # In CI every parity test must run: a missing PyTorch is a set-up error, not a skip.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        if importlib.util.find_spec("torch") is None:
            pytest.exit("CI requires PyTorch for the parity tests; install torch==2.13.0", 2)
        # likewise the dask tests (tests/test_dask.py skips without them elsewhere)
        for name in ("dask", "distributed"):
            if importlib.util.find_spec(name) is None:
                pytest.exit(f"CI requires {name} for tests/test_dask.py; install '.[test]'", 2)


def pytest_report_header(config):
    if _subset(config):
        spec = importlib.util.find_spec("rnncore")
        where = spec.origin if spec is not None else "not found"
        return [f"rnncore wheel subset: {len(WHEEL_SUBSET)} files; rnncore from {where}"]
    return None


def pytest_ignore_collect(collection_path, config):
    # Files outside the subset are not even imported (some import torch at module level).
    if _subset(config):
        name = _subset_file(collection_path)
        if name is not None and name not in WHEEL_SUBSET:
            return True
    return None


# A subset file skipped as a whole (say a module-level importorskip of a package the wheel
# tests do not install) would shrink the subset silently: recorded here, and fails the run.
def pytest_collectreport(report):
    if report.skipped and "::" not in report.nodeid:
        if os.path.basename(report.nodeid) in WHEEL_SUBSET:
            _SKIPPED_MODULES.append(report.nodeid)


def _subset_file(path):
    """The file name if ``path`` is a test file of this directory, else None."""
    path = os.path.abspath(str(path))
    name = os.path.basename(path)
    here = os.path.normcase(os.path.dirname(path)) == os.path.normcase(_HERE)
    in_here = here and name.startswith("test_") and name.endswith(".py")
    return name if in_here else None


def pytest_collection_modifyitems(config, items):
    if not _subset(config):
        return
    if _SKIPPED_MODULES:
        pytest.exit(f"--wheel-subset: whole files skipped: {', '.join(_SKIPPED_MODULES)}", 1)
    kept, dropped = [], []
    for item in items:
        name = _subset_file(item.path)
        test = f"{name}::{getattr(item, 'originalname', item.name)}"
        if name is not None and name not in WHEEL_SUBSET:  # a file named on the command line
            dropped.append(item)
        elif test in WHEEL_SUBSET_EXCLUDED:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    if not items:
        pytest.exit("--wheel-subset selected no tests", pytest.ExitCode.NO_TESTS_COLLECTED)


@pytest.fixture
def rc():
    """The rnncore package (the package under test must import: it is never skipped)."""
    return importlib.import_module("rnncore")


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id, so every test is reproducible on its own."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
