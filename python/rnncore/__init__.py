"""rnncore: fast, exact recurrent networks for the CPU.

Elman RNN, LSTM and GRU (and their single-step cells) with forward passes and
backpropagation through time computed by a C++/Eigen core, behind NumPy-facing classes
that follow ``torch.nn``'s layouts.
"""

from __future__ import annotations

from . import _core, _limits, _validation, init, losses, optim
from ._batcher import StreamBatcher
from ._cells import GRUCell, LSTMCell, RNNCell
from ._clip import clip_grad_norm, clip_grad_value
from ._files import load, save
from ._interop.keras import from_keras, lengths_from_mask
from ._interop.onnx_export import to_onnx
from ._interop.onnx_import import from_onnx
from ._linear import Linear, LinearTape
from ._loader import available_isas, supported_isas
from ._modules import GRU, LSTM, RNN
from ._package import cmake_dir, include_dir, library_path
from ._recurrent import Tape
from ._stream import Stream
from ._tbptt import truncated_bptt
from .losses import mse_loss, softmax_cross_entropy

__version__ = _core.__version__
__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "Linear",
    "LinearTape",
    "RNN",
    "RNNCell",
    "Stream",
    "StreamBatcher",
    "Tape",
    "__version__",
    "build_info",
    "clip_grad_norm",
    "clip_grad_value",
    "cmake_dir",
    "from_keras",
    "from_onnx",
    "get_num_threads",
    "include_dir",
    "init",
    "lengths_from_mask",
    "library_path",
    "load",
    "losses",
    "mse_loss",
    "optim",
    "save",
    "set_num_threads",
    "softmax_cross_entropy",
    "to_onnx",
    "truncated_bptt",
]


def __getattr__(name: str):
    """``rnncore.dask`` on first use: ``import rnncore`` does not import dask."""
    if name == "dask":
        import importlib  # noqa: PLC0415

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_num_threads() -> int:
    """The number of threads compute calls use.

    The default is the environment variable ``RNNCORE_NUM_THREADS`` when set, else the
    number of cores this process may run on. Results never depend on it.
    """
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Sets the number of threads compute calls use (for the whole process).

    Raises:
        TypeError: ``n`` is not an int. ValueError: ``n < 1`` or ``n > 4096``.
    """
    _core.set_num_threads(_validation.check_int("n", n, 1, _limits.MAX_THREADS))


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
    info["threads"] = get_num_threads()
    return info
