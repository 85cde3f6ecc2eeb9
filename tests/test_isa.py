"""Every compiled instruction-set variant is correct, and RNNCORE_ISA selects it.

The main suite runs on the variant chosen at import (the best this CPU supports). Here
every other variant this CPU can run gets the same treatment in a fresh process: the
package self-check, and every test file that exercises the compiled core (forward against
the reference, gradients against finite differences, PyTorch parity, the normalized and
regularized cells, threads, errors). All variants must also agree with each other.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore as rc

_PROBE = """
import sys, numpy as np, rnncore as rc
rng = np.random.default_rng(0)
m = rc.LSTM(5, 7, num_layers=2, bidirectional=True, dtype="float64", seed=3)
x = rng.standard_normal((9, 4, 5))
out, (h, c) = m(x, lengths=[9, 3, 5, 1])
print(rc.build_info()["isa"])
np.save(sys.argv[1], out)
"""


def _run(isa, *args):
    env = dict(os.environ, RNNCORE_ISA=isa)
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.parametrize("isa", rc.supported_isas())
def test_selfcheck_passes_on_each_isa(isa):
    proc = _run(isa, "-m", "rnncore", "selfcheck")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All checks passed" in proc.stdout


# The test files that run the compiled core. Left out: this file, the C++ build test (its
# own compilation), the demo, and the pure-Python training-kit tests.
_HERE = os.path.dirname(os.path.abspath(__file__))
_NOT_CORE = {"test_isa.py", "test_cpp.py", "test_demo.py", "test_kit_init.py",
             "test_linear.py", "test_losses.py", "test_optim.py", "test_clip.py"}  # fmt: skip
CORE_SUITE = sorted(
    f for f in os.listdir(_HERE) if f.startswith("test_") and f.endswith(".py")
    and f not in _NOT_CORE
)  # fmt: skip


@pytest.mark.parametrize("isa", [i for i in rc.supported_isas() if i != rc.build_info()["isa"]])
def test_core_suite_passes_on_each_other_isa(isa):
    files = [os.path.join(_HERE, f) for f in CORE_SUITE]
    proc = _run(isa, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "failed" not in proc.stdout, tail


def test_isas_agree(tmp_path):
    outs = {}
    for isa in rc.supported_isas():
        path = tmp_path / f"{isa}.npy"
        proc = _run(isa, "-c", _PROBE, str(path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == isa
        outs[isa] = np.load(path)
    base = outs["baseline"]
    for isa, out in outs.items():
        # float64: only the order of operations (FMA contraction, vector widths)
        # differs between variants; a few ulps of the O(1) outputs, accumulated
        # over 9 steps and 2 layers, stay far below 1e-12.
        np.testing.assert_allclose(out, base, rtol=0, atol=1e-12, err_msg=isa)


def test_forcing_an_unknown_isa_fails_cleanly():
    proc = _run("not-an-isa", "-c", "import rnncore")
    assert proc.returncode != 0
    assert "RNNCORE_ISA" in proc.stderr and "ImportError" in proc.stderr
