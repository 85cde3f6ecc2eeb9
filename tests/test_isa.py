"""Every compiled instruction-set variant is correct, and RNNCORE_ISA selects it.

The main suite runs on the variant chosen at import (the best this CPU supports).
Here each other variant runs the package self-check (forward vs the NumPy reference,
BPTT vs finite differences, every cell) in a fresh process, and all variants must
agree with each other.
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
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("isa", rc.supported_isas())
def test_selfcheck_passes_on_each_isa(isa):
    proc = _run(isa, "-m", "rnncore", "selfcheck")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All checks passed" in proc.stdout


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
