"""rnncore: fast, exact recurrent networks for the CPU.

Elman RNN, LSTM and GRU with forward passes and backpropagation through time computed
by a C++/Eigen core, behind NumPy-facing classes that follow ``torch.nn``'s layouts.
"""

from __future__ import annotations

from ._loader import available_isas, supported_isas
from ._modules import GRU, LSTM, RNN, Tape, _core

__version__ = _core.__version__
__all__ = ["GRU", "LSTM", "RNN", "Tape", "__version__", "build_info"]


def build_info() -> dict:
    """How this installation was built and what it runs on.

    Returns:
        dict with the version, the compiler, the Eigen version, the instruction-set
        variant in use (``isa``) and the SIMD instruction sets it was compiled for,
        the variants compiled in and the ones this CPU supports.
    """
    info = dict(_core.build_info())
    info["version"] = __version__
    info["isa"] = _core.ISA
    info["isas_built"] = available_isas()
    info["isas_supported"] = supported_isas()
    return info
