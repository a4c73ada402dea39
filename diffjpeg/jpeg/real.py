"""The real JPEG codec as a defense: libjpeg-turbo through Pillow, or torchvision (nvJPEG on CUDA).

``real_jpeg(x)`` / ``JPEG()`` compress and decompress every image of a batch with an actual JPEG
library, so the forward pass *is* the deployed defense. It is not differentiable
(``differentiable = False``); attack it through BPDA with :meth:`JPEG.surrogate`, a ``DiffJPEG``
with the same settings.

Pipeline, per image:

1. ``x`` (float in [0, 1]) becomes ``uint8`` by ``floor(x * 255 + 0.5)`` clipped to [0, 255]
   (round half up, what ``torchvision.transforms.functional.to_pil_image`` does *not* do: it
   truncates; rounding maps ``x = k / 255`` back to ``k`` exactly). float16 / bfloat16 inputs are
   converted in float32, as ``DiffJPEG`` does, so both codecs see the same 8-bit image.
2. The image is encoded (C = 3: YCbCr with the chosen chroma subsampling; C = 1: a grayscale JPEG,
   which has no chroma and uses only the luma table) and decoded again.
3. The decoded ``uint8`` pixels are divided by 255 (in float32 for half inputs) and returned in
   ``x``'s dtype and on its device.

The Pillow side (8-bit conversion, quality and tables, subsampling codes, encode, decode) is the
adapter :mod:`diffjpeg.jpeg.pillow`.

Backends:

``"pillow"``
    Pillow (libjpeg-turbo): ``quality=``, ``subsampling=0/1/2`` for "444"/"422"/"420",
    ``qtables=[luma, chroma]`` in natural order when tables are given. Images of a batch are coded
    on a thread pool (Pillow releases the GIL while coding). CUDA inputs make a CPU round trip.
``"torchvision"``
    ``torchvision.io.encode_jpeg`` / ``decode_jpeg``. On CPU it is libjpeg-turbo with libjpeg's
    defaults: it only does "420" for colour images and has no custom tables -- the files it writes
    are byte-identical to Pillow's for those settings (tested). On CUDA it is nvJPEG, which always
    encodes 4:4:4 (``NVJPEG_CSS_444``), only 3-channel images, one integer quality per call and no
    custom tables (torchvision's ``encode_jpegs_cuda``); its DCT, quantisation and colour
    conversion are nvJPEG's own, so it is not guaranteed bit-identical to libjpeg-turbo (the CUDA
    test measures the gap; the CUDA decode is nvJPEG too). Settings a path cannot express fall back
    to Pillow (with a warning, since this backend was asked for explicitly). torchvision 0.29
    deprecates these codecs in favour of TorchCodec; its deprecation warning is silenced here.
``"auto"`` (default)
    nvJPEG for CUDA inputs whose settings it supports (C = 3, subsampling "444", no custom tables);
    Pillow for everything else. On CPU this is always Pillow (libjpeg-turbo), i.e. the exact codec.

Quality and tables: ``q`` is an int, float or ``(B,)`` tensor in [1, 100]; real encoders take
integer qualities, so ``q`` is rounded to the nearest integer (halves up; ``DiffJPEG`` follows the
same rule, so ``JPEG(q=50.5)`` and ``DiffJPEG(q=50.5)`` are both Pillow's quality 51). ``qtables`` (``(8, 8)``,
``(2, 8, 8)`` or ``(B, 2, 8, 8)``, natural order, entries in [1, 255]) take precedence over ``q``
when given; they are rounded to integers and handed to Pillow as they are (Pillow would scale
custom tables by ``quality`` if one were passed with them, so none is).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from ..arguments import check_choice
from ..contract import Defense
from . import jpeglib_codec, pillow
from .codec import DEFAULT_QUALITY, DiffJPEG, integer_quality, working_dtype
from .pillow import integer_tables, round_quality, to_uint8
from .presets import PILLOW, CodecOptions, preset_name, resolve_preset
from .validate import check_image, check_qtables, check_quality, check_subsampling

__all__ = ["BACKENDS", "JPEG", "real_jpeg", "to_uint8"]

BACKENDS = ("auto", "pillow", "torchvision", "jpeglib")
#: images smaller than this (H * W) are coded serially: the thread pool costs more than it saves
_THREAD_MIN_PIXELS = 128 * 128


# ----------------------------------------------------------------------------------------------
# a batch through Pillow


def _pillow_batch(
    u8: Tensor, qualities: list[int], subsampling: str, tables: np.ndarray | None, threads: int | None
) -> Tensor:
    """``(B, C, H, W)`` uint8 (any device) -> decoded ``(B, C, H, W)`` uint8 on the CPU."""
    arr = u8.cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    batch = arr.shape[0]

    def one(i: int) -> np.ndarray:
        return pillow.decode(pillow.encode(np.ascontiguousarray(arr[i]), qualities[i],
                                           None if tables is None else tables[i], subsampling))

    if threads is None:
        threads = min(batch, os.cpu_count() or 1) if arr.shape[1] * arr.shape[2] >= _THREAD_MIN_PIXELS else 1
    if threads > 1 and batch > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            out = list(pool.map(one, range(batch)))
    else:
        out = [one(i) for i in range(batch)]
    out = torch.from_numpy(np.stack(out))
    if out.ndim == 3:
        out = out[..., None]
    return out.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------
# torchvision


def torchvision_supports(device: torch.device, channels: int, subsampling: str, has_tables: bool) -> bool:
    """Whether ``torchvision.io`` can code these settings on ``device`` exactly as asked.

    CPU (libjpeg-turbo, libjpeg defaults): no custom tables; colour images only in "420".
    CUDA (nvJPEG): no custom tables; 3-channel images only; always "444".
    """
    if has_tables:
        return False
    if device.type == "cuda":
        return channels == 3 and subsampling == "444"
    return channels == 1 or subsampling == "420"


def _torchvision_batch(u8: Tensor, qualities: list[int]) -> Tensor:
    """``(B, C, H, W)`` uint8 -> decoded ``(B, C, H, W)`` uint8 on ``u8``'s device, via torchvision.io."""
    from torchvision.io import decode_jpeg, encode_jpeg

    out = torch.empty_like(u8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its image codecs
        if u8.device.type == "cuda":
            # nvJPEG: one quality per call; group the images by quality and code each group batched
            for quality in sorted(set(qualities)):
                idx = [i for i, qi in enumerate(qualities) if qi == quality]
                encoded = encode_jpeg([u8[i].contiguous() for i in idx], quality=quality)
                decoded = decode_jpeg([e.cpu() for e in encoded], device=u8.device)
                for i, d in zip(idx, decoded):
                    out[i] = d
        else:
            for i, quality in enumerate(qualities):
                out[i] = decode_jpeg(encode_jpeg(u8[i].contiguous(), quality=quality))
    return out


# ----------------------------------------------------------------------------------------------
# the functional form


def real_jpeg(
    x: Tensor,
    q: float | Tensor = DEFAULT_QUALITY,
    subsampling: str = "420",
    qtables: Tensor | None = None,
    backend: str = "auto",
    *,
    threads: int | None = None,
    version: str | None = None,
    preset: str | CodecOptions = "pillow",
) -> Tensor:
    """Compress and decompress ``x`` with a real JPEG codec (not differentiable).

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3} (C = 1 gives a grayscale JPEG), any
            H, W >= 1, any device.
        q: quality in [1, 100]: a number or a ``(B,)`` tensor (one per image); rounded to the
            nearest integer (halves up). Ignored (not even checked) when ``qtables`` is given.
        subsampling: chroma subsampling of colour images, "444", "422" or "420".
        qtables: optional ``(8, 8)``, ``(2|3, 8, 8)`` or ``(B, 2|3, 8, 8)`` tables in natural order
            (luma, chroma), entries in [1, 255]; rounded to integers and written as they are.
        backend: "auto", "pillow" or "torchvision" (see the module docstring).
        threads: worker threads for the Pillow backend; ``None`` picks ``min(B, cpu_count)`` for
            batches big enough to gain from it.
        version: for ``backend="jpeglib"``: the library (jpeglib's name, e.g. "9f", "turbo210",
            "mozjpeg403"; default: the preset's reference library). See :mod:`.jpeglib_codec`.
        preset: the DCT methods and sampling switches (:mod:`diffjpeg.jpeg.presets`); anything but
            "pillow" (or a ``version``) needs the jpeglib backend, which "auto" then picks.

    Returns:
        ``(B, C, H, W)`` with ``x``'s dtype and device, values ``k / 255`` for integers ``k``.
    """
    x = check_image(x)
    subsampling = check_subsampling(subsampling)
    backend = check_choice(backend, BACKENDS, "backend")
    library = _library(backend, version, resolve_preset(preset))
    batch = x.shape[0]
    if qtables is not None:  # as in DiffJPEG: tables replace q, which is then not looked at
        qtables = check_qtables(qtables, batch=batch)
        return _run(x, [0] * batch, subsampling, integer_tables(qtables, batch), backend, threads, library)
    q = check_quality(q, batch=batch)
    return _run(x, round_quality(q, batch), subsampling, None, backend, threads, library)


def _library(backend: str, version: str | None, options: CodecOptions) -> tuple[str, CodecOptions] | None:
    """``(version, options)`` when the call goes to jpeglib, else ``None`` (checked)."""
    if backend == "jpeglib" or (backend == "auto" and (version is not None or options != PILLOW)):
        return jpeglib_codec.check_version(version or jpeglib_codec.default_version(options)), options
    if version is not None or options != PILLOW:
        raise ValueError(f"version and preset need backend='jpeglib' (or 'auto'); backend={backend!r} runs "
                         f"libjpeg-turbo's defaults")
    return None


def _run(x: Tensor, qualities: list[int], subsampling: str, tables: np.ndarray | None,
         backend: str, threads: int | None, library: tuple[str, CodecOptions] | None = None) -> Tensor:
    """Checked arguments in, coded batch out (``x``'s dtype and device)."""
    u8 = to_uint8(x)
    use_tv = False
    if library is None and backend != "pillow":
        wanted = backend == "torchvision" or x.device.type == "cuda"
        supported = torchvision_supports(x.device, x.shape[1], subsampling, tables is not None)
        use_tv = wanted and supported
        if backend == "torchvision" and not supported:
            warnings.warn(
                f"backend='torchvision' on {x.device.type} cannot code C={x.shape[1]}, "
                f"subsampling={subsampling!r}{', custom qtables' if tables is not None else ''}; "
                f"using Pillow (libjpeg-turbo) for this call", stacklevel=3)
    with torch.no_grad():
        if library is not None:
            decoded = jpeglib_codec.jpeglib_batch(u8, qualities, subsampling, tables, *library)
        elif use_tv:
            decoded = _torchvision_batch(u8, qualities)
        else:
            decoded = _pillow_batch(u8, qualities, subsampling, tables, threads)
        # k / 255 in float32 for half inputs, then cast: the same values DiffJPEG returns
        return decoded.to(device=x.device, dtype=working_dtype(x)).div_(255.0).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# the module


class JPEG(Defense):
    """The real JPEG codec as a defense (forward exact, not differentiable).

    Args:
        q: quality in [1, 100], a number or a ``(B,)`` tensor; rounded to an integer.
        subsampling: "444", "422" or "420".
        qtables: optional tables (``(8, 8)``, ``(2|3, 8, 8)`` or ``(B, 2|3, 8, 8)``, natural order);
            they take precedence over ``q``.
        backend: "auto", "pillow", "torchvision" or "jpeglib" (see :mod:`diffjpeg.jpeg.real`).
        version, preset: the jpeglib library and codec switches (see :func:`real_jpeg`); the
            surrogate is a ``DiffJPEG`` with the same preset and the library's own tables.

    ``forward(x)``: ``(B, C, H, W)`` float in [0, 1] -> same shape, dtype and device.
    ``surrogate()``: a ``DiffJPEG`` with the same quality (as rounded), subsampling and tables.
    """

    differentiable = False
    randomized = False

    def __init__(self, q: float | Tensor = DEFAULT_QUALITY, subsampling: str = "420", qtables: Tensor | None = None,
                 backend: str = "auto", *, version: str | None = None, preset: str | CodecOptions = "pillow"):
        super().__init__()
        self.options = resolve_preset(preset)
        self.library = _library(check_choice(backend, BACKENDS, "backend"), version, self.options)
        if qtables is None:
            q = check_quality(q)
        self.subsampling = check_subsampling(subsampling)
        self.backend = check_choice(backend, BACKENDS, "backend")
        if isinstance(q, Tensor):
            self.register_buffer("q", q.detach().clone(), persistent=False)
        else:
            self.q = q
        if qtables is not None:
            self.register_buffer("qtables", check_qtables(qtables).detach().clone(), persistent=False)
        else:
            self.qtables = None

    def forward(self, x: Tensor) -> Tensor:
        version = None if self.library is None else self.library[0]
        return real_jpeg(x, self.q, self.subsampling, self.qtables, self.backend, version=version, preset=self.options)

    def surrogate(self):
        """A ``DiffJPEG`` with identical settings, for BPDA's backward pass."""
        q = self.q  # rounded as the forward pass rounds it
        if isinstance(q, Tensor):
            q = integer_quality(q.double()).to(torch.get_default_dtype())
        else:
            q = round_quality(q, 1)[0]
        tables = None if self.qtables is None else torch.floor(self.qtables.double() + 0.5).float()
        if tables is None and self.library is not None:
            tables = jpeglib_codec.surrogate_tables(self.library[0], q, self.options)
        return DiffJPEG(q=q, subsampling=self.subsampling, qtables=tables, preset=self.options)

    def extra_repr(self) -> str:
        q = f"tensor{tuple(self.q.shape)}" if isinstance(self.q, Tensor) else self.q
        tables = "None" if self.qtables is None else f"tensor{tuple(self.qtables.shape)}"
        library = "" if self.library is None else f", version={self.library[0]!r}, preset={preset_name(self.options)}"
        return f"q={q}, subsampling={self.subsampling!r}, qtables={tables}, backend={self.backend!r}{library}"
