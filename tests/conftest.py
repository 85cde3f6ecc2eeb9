"""Pytest configuration shared by the rnncore tests.

Shared helpers live in ``tests/rnn_testing.py`` (configurations, module factory, loss, central
differences) and ``rnncore.reference`` (the NumPy reference); this file makes them importable
under any pytest import mode and provides the fixtures.
"""

import importlib
import importlib.util
import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_configure(config):
    # In CI every parity test must run: a missing PyTorch is a set-up error, not a skip.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        if importlib.util.find_spec("torch") is None:
            pytest.exit("CI requires PyTorch for the parity tests; install torch==2.13.0", 2)
        # likewise the dask tests (tests/test_dask.py skips without them elsewhere)
        for name in ("dask", "distributed"):
            if importlib.util.find_spec(name) is None:
                pytest.exit(f"CI requires {name} for tests/test_dask.py; install '.[test]'", 2)


@pytest.fixture
def rc():
    """The rnncore package (the package under test must import: it is never skipped)."""
    return importlib.import_module("rnncore")


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id, so every test is reproducible on its own."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
