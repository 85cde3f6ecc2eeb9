"""The compiled core chosen for this CPU (private).

Re-exports the extension module that ``_loader`` picked (``_core_avx512``,
``_core_avx2`` or ``_core_baseline``), so the rest of the package, and type
checkers through ``_core.pyi``, see one module.
"""

from ._loader import load_core as _load_core

_impl = _load_core()

ModelF32 = _impl.ModelF32
ModelF64 = _impl.ModelF64
TapeF32 = _impl.TapeF32
TapeF64 = _impl.TapeF64
StreamF32 = _impl.StreamF32
StreamF64 = _impl.StreamF64
BatcherF32 = _impl.BatcherF32
BatcherF64 = _impl.BatcherF64
pool_dispatches = _impl.pool_dispatches
ISA: str = _impl.ISA
__version__: str = _impl.__version__
MAX_DIM: int = _impl.MAX_DIM
MAX_PARAMETER_BYTES: int = _impl.MAX_PARAMETER_BYTES
MAX_LAYERS: int = _impl.MAX_LAYERS
MAX_THREADS: int = _impl.MAX_THREADS
build_info = _impl.build_info
cpu_supports = _impl.cpu_supports
get_num_threads = _impl.get_num_threads
set_num_threads = _impl.set_num_threads
mask_hits = _impl.mask_hits
same_bytes = _impl.same_bytes
dense_forward = _impl.dense_forward
dense_backward = _impl.dense_backward
read_safetensors = _impl.read_safetensors
SafetensorsFile = _impl.SafetensorsFile
read_safetensors_bytes = _impl.read_safetensors_bytes
write_safetensors = _impl.write_safetensors
write_safetensors_bytes = _impl.write_safetensors_bytes
