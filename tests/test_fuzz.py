"""Property-based fuzzing of the public API (hypothesis), crash-isolated in subprocesses.

What is generated and checked is described in tests/fuzz_driver.py: random valid and invalid
usage of the constructors, calls, ``forward_train``/``backward``, ``load_state_dict``,
``half_weights`` and ``train``/``eval``; every operation must either raise a documented
exception (TypeError, ValueError, KeyError, RuntimeError, MemoryError) with a message, or
succeed with results of the documented structure, shapes and dtypes that match the float64
reference ``rnncore.reference`` (tolerances of tests/test_forward.py); no input is ever
modified.

Each batch of examples runs in its own Python process (``tests/fuzz_driver.py``), so that a
segfault or abort fails this test instead of killing pytest; the failure shows the batch's
seed, the command that replays it, the driver's output (hypothesis' minimal example and
``@reproduce_failure`` blob) and, after a crash, the trace of the example that was running.

Budget: by default 3 batches of 150 examples with fixed seeds (reproducible; about 10 s on
2 cores). More: ``RNNCORE_FUZZ_EXAMPLES=5000`` (examples per batch) and
``RNNCORE_FUZZ_BATCHES=8`` (batches; seeds 0, 1, ...). ``RNNCORE_FUZZ_SEED=S`` offsets the
seeds, to explore beyond the fixed ones. ``RNNCORE_FUZZ_ABSURD=1`` adds the absurd-size
constructor cases too slow for the default run (``ABSURD_SLOW``, empty at present).

The subprocesses run with a 4 GiB address-space limit (Linux), so that an absurd allocation
fails with MemoryError instead of exhausting a shared machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "fuzz_driver.py")
EXAMPLES = int(os.environ.get("RNNCORE_FUZZ_EXAMPLES", "150"))
BATCHES = int(os.environ.get("RNNCORE_FUZZ_BATCHES", "3"))
SEED_BASE = int(os.environ.get("RNNCORE_FUZZ_SEED", "0"))
# ~60 examples/s on one core; generous, since a shared CI machine can be slow
TIMEOUT = 120 + EXAMPLES
MEMORY_LIMIT = 4 << 30


def _limit_memory():  # pragma: no cover - runs in the child
    try:
        import resource  # noqa: PLC0415 - POSIX only

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def _env() -> dict:
    """The environment of this process (PYTHONPATH included: the same rnncore)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [HERE, *sys.path] if p)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=os.path.dirname(HERE),
        preexec_fn=_limit_memory if os.name == "posix" else None,
    )


def _tail(text: str, n: int = 8000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


@pytest.mark.parametrize("batch", range(BATCHES))
def test_fuzz_batch(batch, tmp_path):
    seed = SEED_BASE + batch
    trace = tmp_path / "trace.txt"
    cmd = [DRIVER, "--seed", str(seed), "--examples", str(EXAMPLES), "--trace", str(trace)]
    replay = f"PYTHONPATH=python python tests/fuzz_driver.py --seed {seed} --examples {EXAMPLES}"
    try:
        proc = _run(cmd, TIMEOUT)
    except subprocess.TimeoutExpired as e:
        running = trace.read_text() if trace.exists() else "(no trace)"
        pytest.fail(
            f"fuzz batch seed={seed} timed out after {TIMEOUT}s (a hang?); replay: {replay}\n"
            f"--- example running at the time ---\n{running}\n"
            f"--- stderr ---\n{_tail((e.stderr or b'').decode(errors='replace'))}",
            pytrace=False,
        )
    if proc.returncode == 0:
        assert f"{EXAMPLES} examples passed" in proc.stdout, proc.stdout
        return
    running = trace.read_text() if trace.exists() else "(no trace)"
    if proc.returncode < 0:  # killed by a signal: a crash inside the process
        pytest.fail(
            f"fuzz batch seed={seed} CRASHED (signal {-proc.returncode}); replay: {replay}\n"
            f"--- example running at the time (the reproducer) ---\n{running}\n"
            f"--- stderr ---\n{_tail(proc.stderr)}\n--- stdout ---\n{_tail(proc.stdout, 3000)}",
            pytrace=False,
        )
    pytest.fail(
        f"fuzz batch seed={seed} failed (exit {proc.returncode}); replay: {replay}\n"
        f"--- driver output ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}",
        pytrace=False,
    )


# ---------------------------------------------------------------------------------------------
# Absurd sizes: a clean exception (or success) within a few seconds, no crash.

ABSURD = [
    "rc.LSTM(4, 2**20)",  # 4.4e12 parameters: refused before allocating
    "rc.RNN(2**31 - 1, 4)",
    "rc.RNN(2**31, 4)",
    "rc.GRU(4, 2**31)",
    "rc.RNN(4, 2**16)",  # ~17 GB of parameters: MemoryError under the 4 GiB limit
    "rc.LSTM(2**30, 4, dtype='float64')",
    "rc.GRU(4, 4, num_layers=10**3)",
    "rc.GRU(4, 4, num_layers=2**31)",
    "rc.LSTM(4, 8, proj_size=2**40)",
    "rc.RNN(4, 1024)(np.zeros((2**20, 4), np.float32))",  # outputs of 4 GiB: MemoryError
    "rc.Linear(2**31, 2**31)",
    # layer counts no one means: refused at once (they used to run for minutes)
    "rc.GRU(4, 4, num_layers=10**5, bidirectional=True)",
    "rc.LSTM(4, 4, num_layers=10**6)",
    "rc.GRU(4, 4, num_layers=2**31 - 1)",
]
# Cases too slow for the default run (none at present); only with RNNCORE_FUZZ_ABSURD=1.
ABSURD_SLOW: list[str] = []
ABSURD_TIMEOUT = 20.0

_PROBE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import rnncore as rc
    try:
        {expr}
    except (TypeError, ValueError, KeyError, RuntimeError, MemoryError) as e:
        msg = str(e).strip(" '\\"")
        print(("RAISED " if msg else "EMPTY-MESSAGE ") + type(e).__name__ + ": " + msg[:200])
    else:
        print("OK")
    """
)


def _absurd_cases():
    yield from ABSURD
    if os.environ.get("RNNCORE_FUZZ_ABSURD"):
        yield from ABSURD_SLOW


@pytest.mark.parametrize("expr", list(_absurd_cases()))
def test_absurd_sizes(expr):
    try:
        proc = _run(["-c", _PROBE.format(expr=expr)], ABSURD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{expr}: no result within {ABSURD_TIMEOUT}s", pytrace=False)
    assert proc.returncode == 0, (
        f"{expr}: the process died (exit {proc.returncode})\n{_tail(proc.stderr)}"
    )
    out = proc.stdout.strip().splitlines()
    assert out and (out[-1] == "OK" or out[-1].startswith("RAISED ")), (
        f"{expr}: {proc.stdout}\n{_tail(proc.stderr)}"
    )
