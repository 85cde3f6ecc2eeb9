"""Size limits, and the memory a model or a call needs, checked before allocating.

The hard limits are the compiled core's (it checks them too); they are read from it so
that there is one definition. A model or a call whose memory cannot exist on this
machine is refused at once, with the estimate in the message, instead of failing (or
thrashing) after minutes of work.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

from . import _core

MAX_DIM: int = _core.MAX_DIM
MAX_PARAMETER_BYTES: int = _core.MAX_PARAMETER_BYTES
MAX_LAYERS: int = _core.MAX_LAYERS
MAX_THREADS: int = _core.MAX_THREADS


@functools.cache
def physical_memory() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return None


# What require_memory compares with (a number for fast checks: infinity when unknown).
PHYSICAL_MEMORY: float = physical_memory() or float("inf")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def require_memory(nbytes: int, what: Callable[[], str]) -> None:
    """Raises MemoryError if ``nbytes`` (a lower bound of what the thing ``what()`` describes
    allocates) is more than this machine's physical memory. ``what`` is called only then:
    this runs on every call of a module."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise MemoryError(
            f"{what()} needs at least {_gib(nbytes)} of memory; this machine has {_gib(total)}"
        )
