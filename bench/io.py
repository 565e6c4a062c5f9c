"""Files the bench writes: atomic writes (a reader, or a crash, never sees half a file), run-folder
creation (a run never overwrites another), and the cache folder where features, peaks and kernels live."""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "BENCH_CACHE_DIR"


def _file_mode() -> int:
    """What ``open(path, "w")`` would give a new file under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def cache_root() -> Path:
    """``$BENCH_CACHE_DIR`` when set, else ``~/.cache/ddpm-bench``: where features, peaks and kernels live."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ddpm-bench"



def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes files only their owner can read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def torch_save_atomic(path: str | Path, obj: Any) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


class UnreadableTensorFile(ValueError):
    """A file that ``torch.load(..., weights_only=True)`` cannot read; the message says why in plain words."""


def load_tensors(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers, never arbitrary objects.

    A file it cannot read raises :class:`UnreadableTensorFile` with a reason of our own. torch's text is not
    relayed: for a file that holds other Python objects it advises loading with ``weights_only=False``,
    which would run whatever code the file carries."""
    try:
        with warnings.catch_warnings():  # torch warns about some damaged files before it raises
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():  # a class or function torch's allow-list does not hold
            reason = "it holds Python objects other than tensors, which are never unpickled here"
        else:
            reason = "it is not a PyTorch file"
    except Exception as exc:  # a damaged file fails deep in torch's readers with many kinds of error
        reason = f"it is truncated or not a PyTorch file ({type(exc).__name__})"
    raise UnreadableTensorFile(f"{str(path)!r} is not a PyTorch weight file: {reason}")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def check_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and check a file can be written there, with an error that names it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PermissionError(
            f"cannot write to the results folder {str(path)!r}: {exc.strerror or exc}"
        ) from None


def create_run_dir(root: Path, run_id: str) -> Path:
    """Create ``root/run_id``; ``os.mkdir`` fails if it exists, so two runs can never share a folder."""
    check_writable_dir(root)
    run_dir = root / run_id
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise FileExistsError(
            f"run folder {str(run_dir)!r} already exists; choose another --run-id, or continue it with "
            f"`bench run --resume {run_dir}`"
        ) from None
    return run_dir
