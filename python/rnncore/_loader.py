"""Chooses the compiled core for this CPU.

rnncore ships one extension module per instruction set (``_core_baseline`` for any
CPU of the architecture, ``_core_avx2`` for x86-64 with AVX2 and FMA, ...). The best
one the CPU supports is imported once, at package import. The environment variable
``RNNCORE_ISA`` forces one (``baseline``, ``avx2``); asking for one that is not built
or that this CPU cannot run raises ImportError rather than crashing later.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

# Best first.
_ORDER = ("avx512", "avx2", "baseline")


def available_isas() -> list[str]:
    """The instruction-set variants compiled into this installation, best first."""
    return [isa for isa in _ORDER if importlib.util.find_spec(f"rnncore._core_{isa}") is not None]


def supported_isas() -> list[str]:
    """The compiled variants this CPU can run, best first."""
    base = importlib.import_module("rnncore._core_baseline")
    return [isa for isa in available_isas() if base.cpu_supports(isa)]


def load_core() -> ModuleType:
    forced = os.environ.get("RNNCORE_ISA", "").strip().lower()
    if forced:
        if forced not in available_isas():
            raise ImportError(
                f"RNNCORE_ISA={forced!r}: this build of rnncore has {available_isas()}"
            )
        if forced not in supported_isas():
            raise ImportError(f"RNNCORE_ISA={forced!r}: this CPU cannot run it")
        return importlib.import_module(f"rnncore._core_{forced}")
    return importlib.import_module(f"rnncore._core_{supported_isas()[0]}")
