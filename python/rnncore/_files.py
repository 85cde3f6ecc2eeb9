"""Model files: ``save`` and ``load`` in the safetensors format (see docs/file_format.md).

The bytes are parsed, checked and written by the core (``rnncore/model_file.h``, bound as
``_core.SafetensorsFile`` / ``_core.write_safetensors``); this module is the rnncore
layer above it: which tensors a module has (from its class and options, recorded in the
header's ``__metadata__["rnncore"]``), and the modules built from them.

``load`` reads the header first (the core validates it against the file), checks the
metadata, builds each module and checks every tensor's dtype and shape against it, and
only then has the core read the tensors: a parameter stored in the module's dtype straight
into its place in the module's flat parameter buffer (one copy of each byte, from the
file to its final place, none zero-filled first), float16 weights of a half copy and
running statistics into arrays of their own, which are then loaded as ``load_state_dict``
does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _core
from ._cells import GRUCell, LSTMCell, RNNCell
from ._linear import Linear
from ._module import Module
from ._modules import GRU, LSTM, RNN
from ._options import LinearOptions
from ._recurrent import RecurrentModule

#: The format version of the ``rnncore`` metadata this rnncore writes; it reads this
#: version and older ones.
FORMAT_VERSION = 1

_CLASSES: dict[str, type] = {
    "LSTM": LSTM,
    "GRU": GRU,
    "RNN": RNN,
    "Linear": Linear,
    "LSTMCell": LSTMCell,
    "GRUCell": GRUCell,
    "RNNCell": RNNCell,
}
#: The parameters a half_weights() copy stores in float16.
_HALF_PREFIXES = ("weight_ih", "weight_hh", "weight_hr")
_FILE_DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2"}
#: The core reader's bound on the header (``kMaxHeaderBytes`` in ``model_file.h``).
_MAX_HEADER_BYTES = 100_000_000


def _path(path: Any) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _class_name(module: Any) -> str:
    for name, cls in _CLASSES.items():
        if type(module) is cls:
            return name
    raise TypeError(
        f"rnncore.save saves rnncore modules ({', '.join(_CLASSES)}), got {type(module).__name__}"
    )


def _is_half(module: Module) -> bool:
    return isinstance(module, RecurrentModule) and module._half


def _half_name(key: str) -> bool:
    return key.startswith(_HALF_PREFIXES)


def save(obj: Any, path: Any, *, metadata: Mapping[str, str] | None = None) -> None:
    """Saves a module, or a mapping of names to modules, to a safetensors file.

    Each tensor of the module's ``state_dict()`` is stored under its key (a mapping's
    under ``"{name}.{key}"``); the header's ``__metadata__["rnncore"]`` records each
    module's class, options, mode and weight storage, so that ``load`` rebuilds it. A
    ``half_weights()`` copy stores its weight matrices as float16. The file is written
    to ``path + ".tmp"`` and renamed, so ``path`` never holds half a file.

    Args:
        obj: an ``LSTM``, ``GRU``, ``RNN``, ``Linear``, ``LSTMCell``, ``GRUCell`` or
            ``RNNCell``, or a mapping of names (non-empty strings without ``"."``) to them.
        path: the file to write (``str`` or ``os.PathLike``); an existing file is replaced.
        metadata: extra ``str -> str`` entries for the header's ``__metadata__`` (any
            safetensors reader lists them); the key ``"rnncore"`` is reserved.

    Raises:
        TypeError: ``obj`` is not a module or mapping of modules, ``path`` is not a path,
            or ``metadata`` has entries that are not strings.
        ValueError: invalid module names, or the reserved metadata key ``"rnncore"``.
        OSError: the file cannot be written.
    """
    path = _path(path)
    if isinstance(obj, Mapping):
        if not obj:
            raise ValueError("rnncore.save: the mapping of modules is empty")
        entries = []
        for name, module in obj.items():
            if not isinstance(name, str):
                raise TypeError(f"rnncore.save: module names must be str, got {name!r}")
            if not name or "." in name:
                raise ValueError(
                    f"rnncore.save: module names must be non-empty and without '.', got {name!r}"
                )
            entries.append((name, module))
    else:
        entries = [(None, obj)]
    extra: dict[str, str] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        for k, val in metadata.items():
            if not isinstance(k, str) or not isinstance(val, str):
                raise TypeError(f"metadata entries must be str -> str, got {k!r}: {val!r}")
            if k == "rnncore":
                raise ValueError("metadata key 'rnncore' is reserved for rnncore's own entry")
            extra[k] = val
    modules, tensors = [], []
    for name, module in entries:
        cls = _class_name(module)
        half = _is_half(module)
        modules.append(
            {
                "name": name,
                "class": cls,
                "options": module.options.to_dict(),
                "training": bool(module.training),
                "weights": "float16" if half else str(module.dtype),
            }
        )
        prefix = f"{name}." if name else ""
        for key, arr in module.state_dict().items():
            dtype = "<f2" if half and _half_name(key) else _FILE_DTYPES[str(arr.dtype)]
            tensors.append((prefix + key, np.ascontiguousarray(arr, dtype=dtype)))
    info = {"format_version": FORMAT_VERSION, "modules": modules}
    extra["rnncore"] = json.dumps(info, allow_nan=False)
    _core.write_safetensors(path, extra, tensors)


def load(path: Any) -> Any:
    """Loads what ``save`` wrote: a module, or a dict of names to modules.

    Every module comes back with its class, options, parameters, running statistics and
    mode (a ``half_weights()`` copy as such a copy, its float16 weights exact). Files from
    other safetensors writers load when their tensors and ``__metadata__["rnncore"]``
    entry are as docs/file_format.md describes.

    Args:
        path: the file (``str`` or ``os.PathLike``).

    Returns:
        The module (a file of one unnamed module), or a dict name -> module in the
        file's order.

    Raises:
        FileNotFoundError: no file at ``path``. IsADirectoryError: ``path`` is a
            directory. OSError: other errors reading it.
        ValueError: a bad file (not safetensors, truncated, invalid header, offsets,
            dtypes or shapes, no or invalid ``rnncore`` metadata, missing or unexpected
            tensors, a newer format version); the message names the path and the first
            problem.
        TypeError: ``path`` is not a path.
    """
    path = _path(path)
    with _core.SafetensorsFile(path) as file:
        modules, plans = _plan(path, file.metadata, file.tensors)
        # Every check has passed: the core reads each tensor into its place.
        file.read_into([target for plan in plans for target in plan.targets])
    for plan in plans:
        plan.finish()
    return modules


def _plan(path: str, metadata: dict, tensors: dict) -> tuple[Any, list[_ModulePlan]]:
    """The modules a file's header and metadata describe (built, checked against the
    header's dtypes and shapes, not yet filled), and their plans."""

    def fail(what: str):
        raise ValueError(f"{path}: {what}")

    raw = metadata.get("rnncore")
    if raw is None:
        fail("not an rnncore model file: the header's __metadata__ has no 'rnncore' entry")
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError):
        fail("the 'rnncore' metadata is not valid JSON")
    if not isinstance(info, dict):
        fail("the 'rnncore' metadata is not a JSON object")
    version = info.get("format_version")
    if type(version) is not int or version < 1:
        fail("the 'rnncore' metadata has no valid format_version")
    if version > FORMAT_VERSION:
        fail(
            f"the file has format version {version}, newer than this rnncore reads (format "
            f"version {FORMAT_VERSION} and older): load it with a newer rnncore"
        )
    entries = info.get("modules")
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        fail("the 'rnncore' metadata has no list of modules")
    names = [e.get("name") for e in entries]
    single = len(entries) == 1 and names[0] in (None, "")
    if not single:
        for name in names:
            if not isinstance(name, str) or not name or "." in name:
                fail(f"invalid module name {name!r} in the 'rnncore' metadata")
        if len(set(names)) != len(names):
            fail("duplicate module names in the 'rnncore' metadata")
    claimed: set[str] = set()
    out = {}
    plans = []
    for entry, name in zip(entries, names):
        prefix = "" if single else f"{name}."
        plan = _plan_module(entry, "the module" if single else f"module {name!r}",
                            prefix, tensors, claimed, fail)  # fmt: skip
        out[name] = plan.module
        plans.append(plan)
    unexpected = [k for k in tensors if k not in claimed]
    if unexpected:
        fail(f"unexpected tensor {unexpected[0]!r} (no module of the file has it)")
    return (next(iter(out.values())) if single else out), plans


def module_entries(path: Any) -> list[tuple[Any, str, Any]]:
    """The modules a file holds, from its header alone: no tensor is read.

    For callers that need a file's classes and options before (or instead of) loading it.
    A header that is not as ``save`` writes it is handed to ``load``, whose error is
    raised; the tensors themselves are checked only when the file is loaded.

    Returns:
        ``[(name, class name, options), ...]`` in the file's order (``name`` is ``None``
        for a file of one module saved on its own).

    Raises:
        what ``load`` raises for a bad file; TypeError: ``path`` is not a path.
    """
    path = _path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        text = f.read(size) if 2 <= size <= _MAX_HEADER_BYTES else b""
    try:
        info = json.loads(json.loads(text)["__metadata__"]["rnncore"])
        entries = info["modules"]
        if info["format_version"] > FORMAT_VERSION or not entries:
            raise ValueError
        out = []
        for e in entries:
            cls = _CLASSES[e["class"]]
            name = e["name"] if len(entries) > 1 else (e["name"] or None)
            out.append((name, e["class"], cls._options_class.from_dict(e["options"])))
        return out
    except Exception:  # noqa: BLE001 - the loader names the problem
        loaded = load(path)
    items = loaded.items() if isinstance(loaded, dict) else [(None, loaded)]
    return [(name, type(m).__name__, m.options) for name, m in items]


def _parameter_lower_bound(options: Any) -> int:
    """The parameters of a module of ``options`` but its normalization's (from the sizes
    alone, so that nothing is allocated before a file is known to hold them)."""
    if isinstance(options, LinearOptions):
        return options.out_features * (options.in_features + int(options.bias))
    g, h, proj = options.gates, options.hidden_size, options.proj_size
    p = proj or h
    d = options.num_directions
    count = 0
    for k in range(options.num_layers):
        inp = options.input_size if k == 0 else d * p
        count += d * (g * h * (inp + p) + proj * h)
    return count


class _ModulePlan:
    """One module of a file, built and checked: where each of its tensors is read to
    (``targets``, for ``SafetensorsFile.read_into``), and ``finish``, which completes the
    module once they have been read."""

    def __init__(self, module: Module, what: str, training: bool, half: bool, fail):
        self.module = module
        self.targets: list[tuple[str, np.ndarray]] = []
        self.widen: list[tuple[np.ndarray, np.ndarray]] = []  # (parameter, float16 values)
        self.buffers: dict[str, np.ndarray] = {}
        self._what, self._training, self._half, self._fail = what, training, half, fail

    def finish(self) -> None:
        module = self.module
        for param, values in self.widen:
            param[...] = values  # float16 -> float32: exact
        if self.buffers:
            try:
                module.load_state_dict(self.buffers, strict=False)
            except (TypeError, ValueError, KeyError) as e:
                self._fail(f"{self._what}: {e}")
        module.train(self._training)
        if self._half:
            module._make_half()


def _plan_module(entry: dict, what: str, prefix: str, tensors: dict, claimed: set, fail):
    """Checks a module's entry and its tensors (``tensors``: name -> (dtype, shape) from
    the header), builds the module and returns its plan."""
    cls = _CLASSES.get(entry.get("class"))  # type: ignore[arg-type]
    if cls is None:
        fail(f"{what}: unknown class {entry.get('class')!r} (expected one of {list(_CLASSES)})")
    options = entry.get("options")
    if not isinstance(options, dict):
        fail(f"{what}: no options")
    try:
        options = cls._options_class.from_dict(options)
    except (TypeError, ValueError, KeyError, MemoryError) as e:
        fail(f"{what}: invalid options: {e}")
    if cls is not Linear and options.cell != cls._cell:
        fail(f"{what}: class {entry['class']} does not match its options' cell {options.cell!r}")
    try:  # e.g. a cell's options must be those of one layer
        cls._check_options(options)
    except ValueError as e:
        fail(f"{what}: {e}")
    # Nothing is allocated for more parameters than the file holds values.
    values = sum(math.prod(shape) for k, (_, shape) in tensors.items() if k.startswith(prefix))
    needed = _parameter_lower_bound(options)
    if needed > values:
        fail(
            f"{what}: its options describe at least {needed} parameters, but the file holds "
            f"{values} values for it"
        )
    training = entry.get("training")
    if not isinstance(training, bool):
        fail(f"{what}: 'training' must be true or false")
    weights = entry.get("weights")
    half = weights == "float16"
    if half:
        if cls is Linear or options.dtype != "float32":
            fail(f"{what}: float16 weights need a float32 recurrent module or cell")
        if training:
            fail(f"{what}: a half_weights() copy cannot be in training mode")
    elif weights != options.dtype:
        fail(f"{what}: weights {weights!r} do not match its dtype {options.dtype!r}")
    module = cls.__new__(cls)
    try:
        module._build(options, zero=False)  # every parameter is read from the file
    except (ValueError, MemoryError) as e:
        fail(f"{what}: {e}")
    if isinstance(module, RecurrentModule):
        module._mask_rng = np.random.default_rng()
    plan = _ModulePlan(module, what, training, half, fail)
    params = module._params
    for key in [*params, *module._buffer_names()]:
        full = prefix + key
        spec = tensors.get(full)
        if spec is None:
            fail(f"{what}: tensor {full!r} is missing")
        dtype, shape = spec
        want = "float16" if half and _half_name(key) else options.dtype
        if dtype != np.dtype(want):
            fail(f"tensor {full!r} has dtype {dtype}, expected {want}")
        if key in params:
            param = params[key]
            if shape != param.shape:
                fail(f"tensor {full!r} has shape {shape}, expected {param.shape}")
            if dtype == param.dtype:
                target = param  # its place in the module's flat parameter buffer
            else:
                target = np.empty(shape, dtype)
                plan.widen.append((param, target))
        else:
            target = plan.buffers[key] = np.empty(shape, dtype)
        plan.targets.append((full, target))
        claimed.add(full)
    wrong: list[str] = []
    module._check_buffers(plan.buffers, wrong)  # shapes only: nothing is read yet
    if wrong:
        fail(f"{what}: load_state_dict: wrong shapes: " + "; ".join(wrong))
    return plan
