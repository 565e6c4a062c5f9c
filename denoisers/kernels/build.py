"""Compiles the C kernels in ``csrc/`` into shared libraries on first use, loads them, and types their
entry points.

No build step at install time, and no torch headers: the kernels are plain C on raw float buffers, called
through ctypes, so a build takes about a second with the system C compiler. The library is cached under
``$BENCH_CACHE_DIR/kernels`` (default ``~/.cache/ddpm-bench/kernels``), named by a hash of the source, the
flags, the compiler's version and the CPU (``-march=native`` code must not run on another CPU model). A
machine without a compiler, or a failed build, gets ``None`` and a warning, and callers fall back to
PyTorch's own operators.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.io import cache_root

SOURCES = Path(__file__).resolve().parent / "csrc"
DISABLE_ENV = "BENCH_NATIVE_KERNELS"
# -ffast-math lets GCC and Clang vectorise expf (glibc's libmvec) and the per-channel sums; it is given to
# the compile step only, because linking a shared library with it can set flush-to-zero for the whole process.
COMPILE_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c11")
LINK_FLAGS = ("-shared", "-fopenmp")


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


class BuildError(RuntimeError):
    pass


def build(name: str, compiler: str, out_dir: Path) -> Path:
    """Compile ``csrc/<name>.c`` into ``out_dir``; the library appears atomically (parallel builds race
    harmlessly: each writes its own temporary file and renames it into place)."""
    source = SOURCES / f"{name}.c"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        "\0".join([source.read_text(), *COMPILE_FLAGS, *LINK_FLAGS, version, _cpu_signature()]).encode()
    ).hexdigest()[:16]
    library = out_dir / f"{name}-{key}.so"
    if library.is_file():
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        obj, tmp_library = Path(tmp) / f"{name}.o", Path(tmp) / library.name
        for command in (
            [compiler, *COMPILE_FLAGS, "-c", str(source), "-o", str(obj)],
            [compiler, *LINK_FLAGS, str(obj), "-o", str(tmp_library), "-lm"],
        ):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BuildError(f"`{' '.join(command)}` failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(tmp_library, library)
    return library


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name``, or None (with one warning saying why) when it cannot be had."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        warnings.warn(
            f"no C compiler ({os.environ.get('CC', 'cc')}) found: the {name} kernel falls back to PyTorch's "
            "operators (slower on CPU; results differ only by rounding)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    try:
        return ctypes.CDLL(str(build(name, compiler, cache_root() / "kernels")))
    except (BuildError, OSError) as exc:
        warnings.warn(
            f"the {name} kernel could not be built ({exc}); falling back to PyTorch's operators",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def bind(library: ctypes.CDLL, signatures: Mapping[str, Sequence[type]]) -> ctypes.CDLL:
    """Give each entry point of ``library`` its argument types (every kernel returns void), once per library:
    ctypes would otherwise pass Python ints as C ints and floats not at all."""
    if not getattr(library, "_bound", False):
        for function, argtypes in signatures.items():
            getattr(library, function).argtypes = list(argtypes)
            getattr(library, function).restype = None
        library._bound = True
    return library
