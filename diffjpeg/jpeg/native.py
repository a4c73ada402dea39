"""The integer round trip as one compiled C pass per image, for the CPU (``native.c``).

In integer mode the codec's forward pass is some thirty tensor operations, each a pass over memory;
on the CPU that made the exact JPEG slower than Pillow's encode and decode. :func:`integer_round_trip`
runs the same arithmetic image by image in one C function (so the same values, bit for bit:
``tests/test_native.py``), with the constants taken from :mod:`.dct` and :mod:`.color`. The tensor
stages stay the reference, and what every other device, every recorded graph and ``meta`` tensors use.

The C file is compiled once per machine with the C compiler on ``PATH`` (``cc``; ``$CC`` overrides it)
into ``$DIFFJPEG_CACHE`` (default ``~/.cache/diffjpeg``; a temporary folder when that is not writable),
about a second, and loaded with ``ctypes``. It runs on ``torch.get_num_threads()`` threads of its own
(images shared among them) with the GIL released. It is registered as the operator
``diffjpeg::integer_round_trip``, so ``torch.compile(fullgraph=True)`` keeps it in the graph. Without
a compiler (a warning says so), or with ``DIFFJPEG_NATIVE=0``, the codec runs the tensor code;
:func:`available` says which, :func:`disabled` switches it off for a block.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .chroma import FACTORS
from .color import _CHROMA_TO_RGB, _CHROMA_TO_RGB_9, _RGB_TO_YCBCR, _RGB_TO_YCBCR_9, SCALE, _fixed
from .dct import islow_matrices
from .presets import CodecOptions

__all__ = ["available", "disabled", "serves", "integer_round_trip"]

_SOURCE = Path(__file__).with_name("native.c")
# no -ffast-math, no contraction into fused multiply-adds beyond the ones written out; floating-point
# exception flags are not needed (which lets floor vectorise)
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-shared", "-fPIC", "-pthread")
_lock = threading.Lock()
_library: ctypes.CDLL | None | bool = None  # None: not tried yet; False: no library on this machine
_switched_off = 0


def _cache_folder() -> Path:
    folder = Path(os.environ.get("DIFFJPEG_CACHE") or Path.home() / ".cache" / "diffjpeg")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder if os.access(folder, os.W_OK) else Path(tempfile.gettempdir())
    except OSError:
        return Path(tempfile.gettempdir())


def _build() -> ctypes.CDLL | bool:
    """The compiled library (built on first use, then cached per source, flags and machine), or False."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        warnings.warn("diffjpeg: no C compiler (cc) found, the CPU codec runs the slower tensor code",
                      RuntimeWarning, stacklevel=4)
        return False
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + repr((_FLAGS, compiler, platform.machine(), platform.node())).encode()).hexdigest()
    target = _cache_folder() / f"native-{key[:16]}.so"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(partial), "-lm"], capture_output=True,
                              text=True)
        if done.returncode != 0:
            warnings.warn(f"diffjpeg: compiling {_SOURCE.name} failed, the CPU codec runs the slower tensor code "
                          f"({done.stderr.strip()[:300]})", RuntimeWarning, stacklevel=4)
            partial.unlink(missing_ok=True)
            return False
        os.replace(partial, target)  # atomic: concurrent processes each build, the last one wins
    library = ctypes.CDLL(str(target))
    pointer, size, flag = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    library.integer_round_trip.argtypes = [pointer] * 5 + [size] * 4 + [flag] * 5
    library.integer_round_trip.restype = ctypes.c_int
    return library


def available() -> bool:
    """Whether the compiled round trip is loaded (building it on first call) and not switched off."""
    global _library
    if _switched_off or os.environ.get("DIFFJPEG_NATIVE", "1") == "0":
        return False
    if _library is None:
        with _lock:
            if _library is None:
                _library = _build()
    return _library is not False


@contextlib.contextmanager
def disabled():
    """Run the tensor code inside this block (tests compare the two; not thread-safe)."""
    global _switched_off
    _switched_off += 1
    try:
        yield
    finally:
        _switched_off -= 1


def serves(x: Tensor, tables: Tensor, options: CodecOptions) -> bool:
    """Whether :func:`integer_round_trip` computes this round trip: float32/64 on the CPU, libjpeg's
    islow DCT pair, box downsampling, fancy or simple upsampling, and no graph to record."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or tables.requires_grad):
        return False
    if not (options.fdct == options.idct == "islow" and options.downsampling == "box"
            and options.upsampling in ("fancy", "simple")):
        return False
    return available()


def _integers(matrix) -> list[int]:
    return [round(v * SCALE) for row in _fixed(matrix) for v in row]


def _constants(color: str) -> ctypes.Array:
    """The C ``constants`` struct: the islow pass matrices and the fixed-point colour matrices."""
    forward, inverse = islow_matrices(torch.device("cpu"))
    to_ycc, to_rgb = (_RGB_TO_YCBCR_9, _CHROMA_TO_RGB_9) if color == "jfif9" else (_RGB_TO_YCBCR, _CHROMA_TO_RGB)
    values = [int(v) for v in forward.flatten().tolist()] + [int(v) for v in inverse.flatten().tolist()]
    return (ctypes.c_int32 * (64 + 64 + 9 + 6))(*values, *_integers(to_ycc), *_integers(to_rgb))


_CONSTANTS = {}


@torch.library.custom_op("diffjpeg::integer_round_trip", mutates_args=(), device_types="cpu")
def _round_trip_op(x: Tensor, tables: Tensor, subsampling: str, upsampling: str, color: str) -> Tensor:
    b, c, h, w = x.shape
    strides = (ctypes.c_long * 4)(*x.stride())
    ints = tables.to(torch.int32).expand(b, 2, 8, 8).contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    if color not in _CONSTANTS:
        _CONSTANTS[color] = _constants(color)
    fv, fh = FACTORS[subsampling]
    failed = _library.integer_round_trip(x.data_ptr(), strides, out.data_ptr(), ints.data_ptr(), _CONSTANTS[color],
                                         b, c, h, w, fv, fh, int(x.dtype == torch.float64),
                                         int(upsampling == "fancy"), torch.get_num_threads())
    if failed:
        raise MemoryError(f"diffjpeg: out of memory in the compiled JPEG round trip of a {tuple(x.shape)} batch")
    return out


@_round_trip_op.register_fake
def _(x, tables, subsampling, upsampling, color):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def integer_round_trip(x: Tensor, tables: Tensor, subsampling: str, options: CodecOptions) -> Tensor:
    """``codec_round_trip(x, tables, subsampling, round_ste, True, options)``, computed in C.

    Args:
        x: ``(B, C, H, W)`` float32 or float64 on the CPU, values in [0, 1] (checked by the caller).
        tables: ``(B, 2, 8, 8)`` integer-valued tables, natural order.
        subsampling: "444", "422" or "420"; options: a preset :func:`serves` accepts.

    Returns:
        ``(B, C, H, W)`` in ``x``'s dtype: the 8-bit result divided by 255, as the tensor code gives it.
    """
    return _round_trip_op(x, tables, subsampling, options.upsampling, options.color)
