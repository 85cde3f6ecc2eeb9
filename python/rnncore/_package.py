"""Where the C and C++ package lies inside an installed rnncore (``rnncore.cmake_dir()``).

``pip install rnncore`` installs, inside the Python package, the same C/C++ package that
``cmake --install`` installs: the headers (``include/rnncore/c_api.h``, ``rnncore.hpp``),
the library (``lib/librnncore.so.<soversion>`` with its instruction-set backends in
``lib/rnncore/``) and the CMake package (``lib/cmake/rnncore``). A CMake project finds it
with ``-DCMAKE_PREFIX_PATH=$(python -c "import rnncore; print(rnncore.cmake_dir())")``.
"""

from __future__ import annotations

import glob
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def _missing(what: str, path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"this rnncore installation has no C/C++ package ({what} {path} does not exist): "
        "it is installed by `pip install` of a wheel or of the source tree; a copy of the "
        "Python sources run from a source checkout does not have one, and "
        "`cmake --install` of the repository installs it elsewhere"
    )


def cmake_dir() -> str:
    """The directory of rnncore's CMake package inside this installation.

    Put it on ``CMAKE_PREFIX_PATH`` (or pass it as ``rnncore_DIR``) and
    ``find_package(rnncore CONFIG REQUIRED)`` defines ``rnncore::rnncore``, the C/C++
    library with its headers ``rnncore/c_api.h`` and ``rnncore/rnncore.hpp``.

    Raises:
        FileNotFoundError: this installation has no C/C++ package (a source checkout's
            Python files run in place).
    """
    path = os.path.join(_HERE, "lib", "cmake", "rnncore")
    if not os.path.isfile(os.path.join(path, "rnncoreConfig.cmake")):
        raise _missing("the CMake package", path)
    return path


def include_dir() -> str:
    """The directory holding ``rnncore/c_api.h`` and ``rnncore/rnncore.hpp`` (for ``-I``).

    Raises:
        FileNotFoundError: this installation has no C/C++ package.
    """
    path = os.path.join(_HERE, "include")
    if not os.path.isfile(os.path.join(path, "rnncore", "c_api.h")):
        raise _missing("the header", os.path.join(path, "rnncore", "c_api.h"))
    return path


def library_path() -> str:
    """The path of the C library (``librnncore.so.<soversion>`` on Linux), for programs
    that load it without CMake (``dlopen``, Go's cgo, Rust, Java's FFM, C#'s P/Invoke).

    Its instruction-set backends lie in ``rnncore/`` beside it, and are found from there.

    Raises:
        FileNotFoundError: this installation has no C/C++ package.
    """
    lib = os.path.join(_HERE, "lib")
    found = sorted(
        p
        for pattern in ("librnncore.so*", "librnncore*.dylib", "rnncore.dll")
        for p in glob.glob(os.path.join(lib, pattern))
        if os.path.isfile(p)
    )
    if not found:
        raise _missing("the library in", lib)
    return found[0]
