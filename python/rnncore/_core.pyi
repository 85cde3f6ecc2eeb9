"""Type stub of rnncore's compiled core (the same for every ISA variant)."""

from typing import Any

import numpy as np
import numpy.typing as npt

ISA: str
__version__: str
MAX_DIM: int
MAX_PARAMETER_BYTES: int
MAX_LAYERS: int
MAX_THREADS: int

def build_info() -> dict[str, Any]: ...
def cpu_supports(isa: str) -> bool: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def same_bytes(a: Any, b: Any) -> bool: ...
def mask_hits(
    *, seed: int, layer: int, direction: int, site: int, p: float, start: int = 0, count: int
) -> npt.NDArray[np.bool_]: ...
def dense_forward(
    x: npt.NDArray[Any], w: npt.NDArray[Any], b: npt.NDArray[Any] | None
) -> npt.NDArray[Any]: ...
def dense_backward(
    x: npt.NDArray[Any],
    gy: npt.NDArray[Any],
    w: npt.NDArray[Any],
    dw: npt.NDArray[Any],
    db: npt.NDArray[Any] | None,
    need_dx: bool,
) -> npt.NDArray[Any] | None: ...

class _Tape:
    @property
    def consumed(self) -> bool: ...
    @property
    def steps(self) -> int: ...
    @property
    def batch(self) -> int: ...

class TapeF32(_Tape): ...
class TapeF64(_Tape): ...

class _Model:
    def __init__(
        self,
        *,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        bias: bool = True,
        proj_size: int = 0,
        nonlinearity: str = "tanh",
        reset_after: bool = True,
        norm: str = "none",
        ln_eps: float = 1e-5,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None: ...
    @property
    def layout(self) -> list[tuple[str, tuple[int, ...], int]]: ...
    def parameter_buffer(self) -> npt.NDArray[np.floating]: ...
    def gradient_buffer(self) -> npt.NDArray[np.floating]: ...
    def copy(self) -> _Model: ...
    def use_half_weights(self) -> None: ...
    @property
    def has_half_weights(self) -> bool: ...
    def forward(
        self,
        x: npt.NDArray[Any],
        *,
        h0: npt.NDArray[Any] | None = None,
        c0: npt.NDArray[Any] | None = None,
        lengths: npt.NDArray[np.int64] | None = None,
        record: bool = False,
        training: bool = False,
        seed: int = 0,
    ) -> tuple[
        npt.NDArray[np.floating],
        npt.NDArray[np.floating],
        npt.NDArray[np.floating] | None,
        _Tape | None,
    ]: ...
    def backward(
        self,
        tape: _Tape,
        grad_out: npt.NDArray[Any] | None = None,
        grad_h_n: npt.NDArray[Any] | None = None,
        grad_c_n: npt.NDArray[Any] | None = None,
        step_norms: bool = False,
    ) -> tuple[
        npt.NDArray[np.floating],
        npt.NDArray[np.floating],
        npt.NDArray[np.floating] | None,
        npt.NDArray[np.floating] | None,
    ]: ...
    @property
    def buffer_layout(self) -> list[tuple[str, int, bool, bool, int]]: ...
    def get_running(
        self, stats: int
    ) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]: ...
    def set_running(
        self, stats: int, mean: npt.NDArray[np.floating], var: npt.NDArray[np.floating]
    ) -> None: ...

class ModelF32(_Model): ...
class ModelF64(_Model): ...

def read_safetensors(path: str) -> tuple[dict[str, str], dict[str, npt.NDArray[Any]]]: ...

class SafetensorsFile:
    def __init__(self, path: str) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    @property
    def tensors(self) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]: ...
    def read_into(self, targets: list[tuple[str, npt.NDArray[Any]]]) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> SafetensorsFile: ...
    def __exit__(self, *args: object) -> None: ...

def read_safetensors_bytes(data: bytes) -> tuple[dict[str, str], dict[str, npt.NDArray[Any]]]: ...
def write_safetensors(
    path: str, metadata: dict[str, str], tensors: list[tuple[str, npt.NDArray[Any]]]
) -> None: ...
def write_safetensors_bytes(
    metadata: dict[str, str], tensors: list[tuple[str, npt.NDArray[Any]]]
) -> bytes: ...
