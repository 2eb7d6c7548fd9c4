"""Where the C/C++ embedding package of this pyengine is installed.

A pyengine wheel carries the C++ library (``libpyengine.so``), its public
headers (``pyengine/engine.h``, ``pyengine/pyengine_c.h``) and its CMake package
under ``pyengine/cpp``, so that a C or C++ program can link the same runtime::

    cmake -S app -B build -DCMAKE_PREFIX_PATH="$(python3 -m pyengine.embed)"

``python3 -m pyengine.embed`` prints that prefix (exit status 1, with the
reason, when this pyengine has none: a source checkout, where
``cmake --install`` builds it; README, "Embedding in C and C++").
"""

from __future__ import annotations

import os
import sys


def cmake_prefix_path() -> str | None:
    """The prefix to put in CMAKE_PREFIX_PATH for ``find_package(pyengine)``,
    or None when this pyengine was not installed with its C++ library."""
    prefix = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp")
    config = os.path.join(prefix, "lib", "cmake", "pyengine", "pyengineConfig.cmake")
    return prefix if os.path.isfile(config) else None


def main() -> int:
    prefix = cmake_prefix_path()
    if prefix is None:
        print(f"pyengine at {os.path.dirname(os.path.abspath(__file__))} has no C++ library (not installed from "
              "a wheel); build and install it with cmake: README, 'Embedding in C and C++'", file=sys.stderr)
        return 1
    print(prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
