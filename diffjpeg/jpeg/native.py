"""The integer round trip and its adjoint as compiled C passes per image, for the CPU (``native.c``).

In integer mode the codec's forward pass is some thirty tensor operations, each a pass over memory;
on the CPU that made the exact JPEG slower than Pillow's encode and decode. :func:`integer_round_trip`
runs the same arithmetic image by image in one C function (so the same values, bit for bit:
``tests/test_native.py``), with the constants taken from :mod:`.dct` and :mod:`.color`. The tensor
stages stay the reference, and what every other device, every recorded graph and ``meta`` tensors use.

The C file is compiled once per machine with the C compiler on ``PATH`` (``cc``; ``$CC`` overrides it)
into ``$DIFFJPEG_CACHE`` (default ``~/.cache/diffjpeg``; a temporary folder when that is not writable),
about a second, and loaded with ``ctypes`` (which releases the GIL during the call). Images are shared
among ``torch.get_num_threads()`` OpenMP threads: torch's own pool, since the library links to the
libgomp torch has loaded (a second pool of threads would compete with torch's spinning workers).
Scratch memory is a torch tensor, so torch's memory profiler counts it.

:func:`integer_round_trip_adjoint` is the backward pass of the straight-through round trip
(``codec._round_trip_adjoint``) in the same way, computed in double precision: within a few units in
the last place of the tensor adjoint, not bit-identical to it.

The forward pass also checks the values it reads (finite, in [0, 1], as :func:`.validate.check_image`
does), so the layer makes no separate pass for its value check, compiled or not.

Both are registered operators (``diffjpeg::integer_round_trip`` and ``..._adjoint``), so
``torch.compile(fullgraph=True)`` keeps them in its graph. Without a compiler (a warning says so), or
with ``DIFFJPEG_NATIVE=0``, the codec runs the tensor code; :func:`available` says which,
:func:`disabled` switches it off for a block.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
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

from . import validate
from .chroma import FACTORS
from .color import _CHROMA_TO_RGB, _CHROMA_TO_RGB_9, _RGB_TO_YCBCR, _RGB_TO_YCBCR_9, SCALE, _fixed
from .dct import _ISLOW_ROUND_TRIP_ADJOINT, islow_matrices
from .presets import CodecOptions

__all__ = ["available", "disabled", "serves", "serves_gradient", "integer_round_trip", "integer_round_trip_adjoint"]

_SOURCE = Path(__file__).with_name("native.c")
# no -ffast-math and no contraction into fused multiply-adds beyond the ones written out (the adjoint's
# block products, not bit-exact anyway, ask for them); floating-point exception flags are not needed
# (which lets floor vectorise); 256-bit vectors, since 512-bit ones leave short rows (CIFAR's chroma) to scalar loops
_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=256", "-ffp-contract=off", "-fno-trapping-math", "-shared",
          "-fPIC")
# OpenMP: torch's thread pool where torch runs on libgomp; without it (no libgomp to link) one thread
_PARALLEL = ("-fopenmp",)
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
    machine = repr((_FLAGS, _PARALLEL, compiler, platform.machine(), platform.node())).encode()
    key = hashlib.sha256(source + machine).hexdigest()
    target = _cache_folder() / f"native-{key[:16]}.so"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        for parallel in (_PARALLEL, ()):
            done = subprocess.run([compiler, *_FLAGS, *parallel, str(_SOURCE), "-o", str(partial), "-lm"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                break
        else:
            warnings.warn(f"diffjpeg: compiling {_SOURCE.name} failed, the CPU codec runs the slower tensor code "
                          f"({done.stderr.strip()[:300]})", RuntimeWarning, stacklevel=4)
            partial.unlink(missing_ok=True)
            return False
        os.replace(partial, target)  # atomic: concurrent processes each build, the last one wins
    library = ctypes.CDLL(str(target))
    pointer, size, flag = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    library.scratch_bytes.argtypes = [size] * 3 + [flag] * 3
    library.scratch_bytes.restype = size
    library.integer_round_trip.argtypes = [pointer] * 7 + [size] * 5 + [flag] * 5
    library.integer_round_trip.restype = size
    library.integer_round_trip_adjoint.argtypes = [pointer] * 6 + [size] * 5 + [flag] * 5
    library.integer_round_trip_adjoint.restype = None
    return library


def _loaded() -> ctypes.CDLL | bool:
    """The library, built on the first call; False where it cannot be built."""
    global _library
    if _library is None:
        with _lock:
            if _library is None:
                _library = _build()
    return _library


@torch.compiler.assume_constant_result  # under torch.compile: decided once, eagerly, when the graph is traced
def available() -> bool:
    """Whether the compiled round trip is loaded (building it on first call) and not switched off."""
    if _switched_off or os.environ.get("DIFFJPEG_NATIVE", "1") == "0":
        return False
    return _loaded() is not False


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
    return _served(x, options) and not (torch.is_grad_enabled() and (x.requires_grad or tables.requires_grad))


def serves_gradient(grad: Tensor, options: CodecOptions) -> bool:
    """Whether :func:`integer_round_trip_adjoint` computes this backward pass (as :func:`serves`; a
    backward pass that records a graph, for second derivatives, keeps the tensor code)."""
    return _served(grad, options) and not (torch.is_grad_enabled() and grad.requires_grad)


def _served(x: Tensor, options: CodecOptions) -> bool:
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    if not (options.fdct == options.idct == "islow" and options.downsampling == "box"
            and options.upsampling in ("fancy", "simple")):
        return False
    return available()


def _integers(matrix) -> list[int]:
    return [round(v * SCALE) for row in _fixed(matrix) for v in row]


@functools.cache
def _constants(color: str) -> ctypes.Array:
    """The C ``constants`` struct: the islow pass matrices and the fixed-point colour matrices."""
    forward, inverse = islow_matrices(torch.device("cpu"))
    to_ycc, to_rgb = (_RGB_TO_YCBCR_9, _CHROMA_TO_RGB_9) if color == "jfif9" else (_RGB_TO_YCBCR, _CHROMA_TO_RGB)
    values = [int(v) for v in forward.flatten().tolist()] + [int(v) for v in inverse.flatten().tolist()]
    return (ctypes.c_int32 * (64 + 64 + 9 + 6))(*values, *_integers(to_ycc), *_integers(to_rgb))


@functools.cache
def _adjoint_matrices() -> ctypes.Array:
    """The islow round trip's adjoint per block (:func:`.dct.islow_round_trip_adjoint`'s two matrices)."""
    columns, rows = _ISLOW_ROUND_TRIP_ADJOINT
    return (ctypes.c_double * 128)(*columns.flatten().tolist(), *rows.flatten().tolist())


def _call(name: str, x: Tensor, out: Tensor, operands: list, subsampling: str, upsampling: str,
          table_stride: int = 0) -> int | None:
    """Run C function ``name`` on ``x`` ``(B, C, H, W)`` into ``out`` (both with any strides), with scratch memory
    from torch (so that torch's memory profiler counts it), on at most ``torch.get_num_threads()`` threads;
    returns what the function returns."""
    library = _loaded()
    if library is False:
        raise RuntimeError("diffjpeg: the compiled round trip could not be built on this machine (see the warning)")
    b, c, h, w = x.shape
    fv, fh = FACTORS[subsampling]
    threads = max(1, min(torch.get_num_threads(), b))
    per_thread = library.scratch_bytes(c, h, w, fv, fh, int(name.endswith("adjoint")))
    scratch = torch.empty(threads * per_thread, dtype=torch.uint8)
    strides = (ctypes.c_long * 9)(*x.stride(), *out.stride(), table_stride)
    return getattr(library, name)(x.data_ptr(), strides, out.data_ptr(), *operands, scratch.data_ptr(), per_thread,
                                   b, c, h, w, fv, fh, int(x.dtype == torch.float64), int(upsampling == "fancy"),
                                   threads)


@functools.cache
def _value_range(dtype: torch.dtype) -> ctypes.Array:
    """The input values :func:`.validate.check_image` allows, [-tolerance, 1 + tolerance], as the nearest
    values of ``dtype`` inside it: C compares in ``dtype`` and decides as the check does in double."""
    bounds = torch.tensor([-validate.RANGE_TOLERANCE, 1 + validate.RANGE_TOLERANCE], dtype=dtype)
    outside = torch.tensor([bounds[0].item() < -validate.RANGE_TOLERANCE,  # compared in double
                            bounds[1].item() > 1 + validate.RANGE_TOLERANCE])
    bounds = torch.where(outside, torch.nextafter(bounds, torch.zeros_like(bounds)), bounds)
    return (ctypes.c_double * 2)(*bounds.tolist())


# The two operators, declared with torch.library's low-level API: a call goes straight from the dispatcher
# to the kernel (``torch.library.custom_op`` adds some 40 us of Python per call, a tenth of a CIFAR batch).
# The C functions read any strides: a compiled graph must hand them its tensors as they are (inductor would
# otherwise copy a channels-last batch into a fresh layout first).
_ANY_STRIDES = (torch.Tag.needs_exact_strides,) if hasattr(torch.Tag, "needs_exact_strides") else ()
_operators = torch.library.Library("diffjpeg", "DEF")
_operators.define("integer_round_trip(Tensor x, Tensor tables, str subsampling, str upsampling, str color, "
                  "bool check_values=False) -> Tensor", tags=_ANY_STRIDES)
_operators.define("integer_round_trip_adjoint(Tensor grad, int[] strides, str subsampling, str upsampling, str color)"
                  " -> Tensor", tags=_ANY_STRIDES)


def _round_trip_kernel(x: Tensor, tables: Tensor, subsampling: str, upsampling: str, color: str,
                       check_values: bool = False) -> Tensor:
    if tables.ndim != 4 or tables.shape[0] not in (1, x.shape[0]) or tables.shape[1:] != (2, 8, 8):
        raise ValueError(f"tables must be (1 or B, 2, 8, 8) for B = {x.shape[0]}, got {tuple(tables.shape)}")
    # read in place: one pair per image, or one pair for the batch (an expanded batch dimension)
    if tables.dtype != x.dtype or tables.stride()[1:] != (64, 8, 1):
        tables = tables.to(x.dtype).contiguous()
    out = torch.empty_like(x)  # x's layout when dense (a channels-last batch stays channels-last)
    flagged = _call("integer_round_trip", x, out, [tables.data_ptr(), _constants(color), _value_range(x.dtype)],
                    subsampling, upsampling, tables.stride(0) if tables.shape[0] > 1 else 0)
    if check_values:
        if flagged:  # the check's own error, with the values, read again only now
            validate.check_image_values(x)
            raise RuntimeError("diffjpeg: the C round trip found values outside [0, 1] that check_image_values did not")
        checked = getattr(_watched, "inputs", None)
        if checked is not None:
            checked.add(footprint(x))
    return out


_watched = threading.local()


def footprint(x: Tensor) -> tuple:
    """What identifies a tensor's values during one call: its memory, shape, strides and dtype."""
    return x.data_ptr(), tuple(x.shape), x.stride(), x.dtype


@contextlib.contextmanager
def watching_value_checks():
    """Inside the block, collect the :func:`footprint` of every input whose values a C round trip checked
    (also inside compiled graphs, which run the C kernel as it is): ``diffjpeg.compile``'s boundary
    leaves the values of an input to a graph that checks them itself."""
    previous = getattr(_watched, "inputs", None)
    _watched.inputs = checked = set()
    try:
        yield checked
    finally:
        _watched.inputs = previous


def _adjoint_kernel(grad: Tensor, strides: list[int], subsampling: str, upsampling: str, color: str) -> Tensor:
    out = torch.empty_strided(grad.shape, strides, dtype=grad.dtype)
    _call("integer_round_trip_adjoint", grad, out, [_constants(color), _adjoint_matrices()], subsampling, upsampling)
    return out


def _round_trip_fake(x, tables, subsampling, upsampling, color, check_values=False):
    return torch.empty_like(x)


def _adjoint_fake(grad, strides, subsampling, upsampling, color):
    return torch.empty_strided(grad.shape, strides, dtype=grad.dtype, device=grad.device)


_operators.impl("integer_round_trip", _round_trip_kernel, "CPU")
_operators.impl("integer_round_trip_adjoint", _adjoint_kernel, "CPU")
torch.library.register_fake("diffjpeg::integer_round_trip", _round_trip_fake, lib=_operators)
torch.library.register_fake("diffjpeg::integer_round_trip_adjoint", _adjoint_fake, lib=_operators)


def integer_round_trip(x: Tensor, tables: Tensor, subsampling: str, options: CodecOptions,
                       check_values: bool = False) -> Tensor:
    """``codec_round_trip(x, tables, subsampling, round_ste, True, options)``, computed in C.

    Args:
        x: ``(B, C, H, W)`` float32 or float64 on the CPU, values in [0, 1].
        tables: ``(B, 2, 8, 8)`` integer-valued tables, natural order.
        subsampling: "444", "422" or "420"; options: a preset :func:`serves` accepts.
        check_values: raise :func:`.validate.check_image_values`'s ``ValueError`` for a value outside
            [0, 1] or not finite, unless value checks are off (:func:`.validate.value_checks_on`). The C
            pass compares each value as it reads it, at run time, so this costs no pass of its own and
            also holds inside compiled graphs (where :func:`.validate.value_check_mode` skips other checks).

    Returns:
        ``(B, C, H, W)`` in ``x``'s dtype: the 8-bit result divided by 255, as the tensor code gives it; in
        ``x``'s memory layout where ``x`` is dense (``torch.empty_like``), else contiguous.
    """
    check_values = check_values and validate.value_checks_on()
    return torch.ops.diffjpeg.integer_round_trip(x, tables, subsampling, options.upsampling, options.color,
                                                 check_values)


def integer_round_trip_adjoint(grad: Tensor, subsampling: str, options: CodecOptions,
                               strides: tuple[int, ...] | None = None) -> Tensor:
    """``codec._round_trip_adjoint(grad, subsampling, options)`` (the straight-through gradient), computed
    in C in double precision and returned in ``grad``'s dtype; ``grad`` ``(B, C, H, W)`` float32/64 on the CPU.

    ``strides``: the result's layout (default contiguous). The layer passes its input's, so that autograd
    accumulates the gradient of a channels-last leaf without copying it into that layout.
    """
    if strides is None:
        strides = torch.empty(grad.shape, device="meta").stride()
    return torch.ops.diffjpeg.integer_round_trip_adjoint(grad, list(strides), subsampling, options.upsampling,
                                                         options.color)
