"""The shape of the code base: one-way imports, files of one job, no outside citations,
and the module protocol (frozen options, one base) the other features extend."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncore as rc
from rnncore._module import Module, TapeBase
from rnncore._options import LinearOptions, RecurrentOptions

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "rnncore"


# --------------------------------------------------------------------------- imports
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_imports(path: Path) -> set[str]:
    """The rnncore modules a file imports, anywhere in it (inside functions too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rnncore"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("rnncore"):
                continue
            # "from . import x" imports the submodule x when there is one.
            subs = [f"{target}.{a.name}" for a in node.names]
            known = [s for s in subs if s in _MODULES]
            found.update(known or [target])
    found.discard(name)
    return found


_MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in _MODULES.items():
        deps = set()
        for target in _package_imports(path):
            # a module imports its package's __init__ first: only count real modules
            while target not in _MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in _MODULES and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_import_graph_finds_a_planted_cycle():
    # the checker itself: a cycle through three modules is reported
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = _graph()
    # the package's __init__ imports its submodules; a submodule that imports the
    # package (``import rnncore``) closes a cycle only if the package imports it, so
    # check the graph with the package's own edges in place
    assert "rnncore._modules" in graph["rnncore"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_core_modules_do_not_import_tooling():
    graph = _graph()
    library = [n for n in graph if not n.startswith(("rnncore.reference", "rnncore.demo"))]
    library = [n for n in library if n not in ("rnncore.__main__", "rnncore._selfcheck")]
    for name in library:
        bad = {d for d in graph[name] if d.startswith(("rnncore.reference", "rnncore.demo"))}
        assert not bad, f"{name} imports {bad}"


# --------------------------------------------------------------------------- files
_MAX_LINES = 600


@pytest.mark.parametrize("folder", ["python/rnncore", "benchmarks"])
def test_no_python_file_is_over_600_lines(folder):
    counts = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in (ROOT / folder).rglob("*.py")
    }
    long = {f: n for f, n in counts.items() if n > _MAX_LINES}
    assert not long, long


_OUTSIDE = re.compile(r"shared/spec|\.\./shared|(?<![\w/])spec/(api|normalization|deploy)\.md")


def test_no_file_cites_a_path_outside_the_repository():
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    bad = []
    for f in files:
        path = ROOT / f
        if f == "CHANGELOG.md" or path.suffix not in (".py", ".md", ".h", ".cc", ".txt", ".toml"):
            continue  # the changelog records history, which may name old paths
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line) and "test_structure.py" not in f:
                bad.append(f"{f}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------- protocol
_MODULES_UNDER_TEST = [
    lambda: rc.RNN(3, 4, num_layers=2, nonlinearity="relu", seed=0),
    lambda: rc.LSTM(3, 5, proj_size=2, bidirectional=True, norm="layer", seed=0),
    lambda: rc.GRU(3, 4, reset_after=False, dropout=0.0, zoneout=0.1, seed=0),
    lambda: rc.GRU(3, 4, norm="batch", bn_gamma=0.3, bn_momentum=0.2, dtype="float64", seed=0),
    lambda: rc.Linear(3, 2, bias=False, seed=0),
]


@pytest.mark.parametrize("make", _MODULES_UNDER_TEST)
def test_every_module_is_a_module_with_frozen_options(make):
    m = make()
    assert isinstance(m, Module)
    options = m.options
    assert dataclasses.is_dataclass(options)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.dtype = "float64"
    # the options round-trip through plain values, checked again on the way in
    again = type(options).from_dict(options.to_dict())
    assert again == options
    # the options read as attributes, read-only (the compiled model was built from them)
    for field in dataclasses.fields(options):
        if hasattr(m, field.name) and field.name not in ("dtype",):
            assert getattr(m, field.name) == getattr(options, field.name)
            with pytest.raises(AttributeError):
                setattr(m, field.name, getattr(options, field.name))
    assert m.dtype == np.dtype(options.dtype)


def test_options_from_a_dict_are_checked_like_constructor_arguments():
    good = rc.LSTM(3, 4).options.to_dict()
    with pytest.raises(ValueError, match="proj_size"):
        RecurrentOptions.from_dict({**good, "proj_size": 4})
    with pytest.raises(TypeError, match="hidden_size"):
        RecurrentOptions.from_dict({**good, "hidden_size": 4.5})
    with pytest.raises(ValueError, match="unknown module options"):
        RecurrentOptions.from_dict({**good, "colour": "red"})
    with pytest.raises(ValueError, match="cell"):
        RecurrentOptions.from_dict({**good, "cell": "transformer"})
    with pytest.raises(ValueError, match="in_features"):
        LinearOptions.from_dict({"in_features": 0, "out_features": 2})


@pytest.mark.parametrize("make", _MODULES_UNDER_TEST)
def test_tapes_share_one_base_and_refuse_other_modules(make):
    m, other = make(), make()
    x = np.ones((2, 2, 3), np.float32)
    result = m.forward_train(x)
    tape = result[-1]
    assert isinstance(tape, TapeBase)
    grad = np.ones_like(result[0])
    with pytest.raises(ValueError, match="another module"):
        other.backward(tape, grad)
    with pytest.raises(TypeError, match="tape must be"):
        m.backward(object(), grad)
    m.backward(tape, grad)
    with pytest.raises(ValueError, match="already been used"):
        m.backward(tape, grad)


def test_importing_the_package_imports_no_optional_library():
    # torch, onnx and keras are imported inside the functions that need them only
    code = (
        "import sys, rnncore; "
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'keras') if m in sys.modules))"
    )
    # the rnncore this process imported (the source tree or an installation)
    env = {**os.environ, "PYTHONPATH": str(Path(rc.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
