"""Functional forms of the project's operations (kornia style): pure functions of their inputs.

* **The JPEG codec**: :func:`diff_jpeg` (the differentiable codec, what ``DiffJPEG`` runs),
  :func:`real_jpeg` (Pillow / torchvision, what ``JPEG`` runs), and its stages in libjpeg's order:
  :func:`rgb_to_ycbcr`, :func:`chroma_downsample`, :func:`dct_8x8`, :func:`quality_tables`, the
  rounding estimators (:func:`round_ste`, :func:`round_cubic`, :func:`round_soft`,
  :func:`round_fourier`, :func:`round_noise`), :func:`idct_8x8`, :func:`chroma_upsample`,
  :func:`ycbcr_to_rgb`; and :func:`encode_coefficients` / :func:`decode_coefficients` (pixels to
  quantised DCT coefficients and back).
* **The defenses** of :mod:`diffjpeg.defenses`: :func:`bit_depth` (``BitDepth``),
  :func:`median_smoothing` (``MedianSmoothing``), :func:`kmeans_colors` (``KMeansColors``),
  :func:`feature_distillation` and :func:`fd_tables` (``FeatureDistillation``),
  :func:`resize_pad` (``RandomResizePad``), :func:`tv_reconstruct` (``TVM``),
  :func:`gradient_saliency` and :func:`saliency_jpeg_coefficients` (``SaliencyJPEG``).
  A randomised defense's function takes the drawn randomness as arguments: ``RandomJPEG`` is
  :func:`diff_jpeg` with a ``(B,)`` quality, ``RandomResizePad`` is :func:`resize_pad` with the
  drawn sizes and offsets, ``TVM`` is :func:`tv_reconstruct` with the drawn pixel mask.
  ``PixelDepthReconstruction`` is its network applied to :func:`bit_depth` with ``levels=k``,
  clamped to [0, 1].

Every function checks its arguments once, at this boundary, and raises ``TypeError`` (wrong kind
of object) or ``ValueError`` (wrong shape or values) naming the argument; e.g. :func:`dct_8x8` on
a plane whose width is not a multiple of 8 is refused rather than transformed wrongly. The codec's
stage modules under :mod:`diffjpeg.jpeg` hold the unchecked implementations that the codec functions
here call; the defenses' functions are their own modules' public, checked ones.

Example::

    >>> import torch, diffjpeg.functional as F
    >>> x = torch.rand(2, 3, 32, 32)
    >>> y = F.diff_jpeg(x, q=50)                     # (2, 3, 32, 32), Pillow's pixels
    >>> c = F.dct_8x8(torch.rand(1, 1, 16, 24) * 255 - 128)
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from . import arguments
from .defenses.bit_depth import bit_depth
from .defenses.feature_distillation import fd_tables, feature_distillation
from .defenses.kmeans import kmeans_colors
from .defenses.median import median_smoothing
from .defenses.resize_pad import resize_pad
from .defenses.saliency_jpeg import gradient_saliency, saliency_jpeg_coefficients
from .defenses.tvm import tv_reconstruct
from .jpeg import chroma, codec, color, dct, rounding, validate
from .jpeg.blocks import BLOCK, ceil_div
from .jpeg.codec import diff_jpeg
from .jpeg.real import real_jpeg

__all__ = [
    # the codec
    "diff_jpeg", "real_jpeg", "encode_coefficients", "decode_coefficients", "quality_tables",
    "rgb_to_ycbcr", "ycbcr_to_rgb", "chroma_downsample", "chroma_upsample", "dct_8x8", "idct_8x8",
    "round_ste", "round_cubic", "round_soft", "round_fourier", "round_noise",
    # the defenses
    "bit_depth", "median_smoothing", "kmeans_colors", "feature_distillation", "fd_tables", "resize_pad",
    "tv_reconstruct", "gradient_saliency", "saliency_jpeg_coefficients",
]

#: slack allowed outside [0, 255] for sample planes (float rounding of a previous stage)
_SAMPLE_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------- checks


def _check_tensor(x: object, name: str, form: str, ndim: int | None = None, min_ndim: int = 0) -> Tensor:
    """``x`` must be a finite floating tensor with ``ndim`` (or at least ``min_ndim``) dimensions."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {form}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if (ndim is not None and x.ndim != ndim) or x.ndim < min_ndim:
        raise ValueError(f"{name} must have shape {form}, got {tuple(x.shape)}")
    if x.numel() and not torch.isfinite(x.detach()).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return x


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def _check_samples(x: object, name: str, channels: int | None = None) -> Tensor:
    """``(B, n, H, W)`` planes of samples in [0, 255] (``channels`` of them when given)."""
    form = f"(B, {channels if channels is not None else 'n'}, H, W)"
    x = _check_tensor(x, name, form, ndim=4)
    if (channels is not None and x.shape[1] != channels) or min(x.shape) < 1:
        raise ValueError(f"{name} must have shape {form} with B, H, W >= 1, got {tuple(x.shape)}")
    lo, hi = torch.aminmax(x.detach())
    if lo < -_SAMPLE_TOLERANCE or hi > 255 + _SAMPLE_TOLERANCE:
        raise ValueError(f"{name} must hold samples in [0, 255], got values in [{lo.item():.6g}, {hi.item():.6g}]")
    return x


def _check_block_planes(x: object, name: str) -> Tensor:
    """``(..., H, W)`` with H and W positive multiples of 8 (whole 8x8 blocks)."""
    x = _check_tensor(x, name, "(..., H, W) with H and W multiples of 8", min_ndim=2)
    h, w = x.shape[-2:]
    if h < BLOCK or w < BLOCK or h % BLOCK or w % BLOCK:
        raise ValueError(f"{name} must have H and W that are positive multiples of {BLOCK} (whole 8x8 blocks; "
                         f"pad first), got H = {h}, W = {w}")
    return x


def _checked_tables(qtables: object, batch: int, like: Tensor) -> Tensor:
    """Checked tables -> ``(B, 2, 8, 8)`` integer-valued (straight-through rounding), ``like``'s dtype and device."""
    tables = validate.check_qtables(qtables, batch=batch)
    return codec.resolve_qtables(None, tables, batch, like.device, codec.working_dtype(like))


# ---------------------------------------------------------------------------------------------- the codec


def quality_tables(q: float | Tensor) -> Tensor:
    """The quantisation tables the codec (and libjpeg / Pillow) use for quality ``q``.

    Args:
        q: a number or a ``(B,)`` tensor in [1, 100]. Rounded to the nearest integer (halves up),
            as encoders do, with a straight-through gradient: differentiable in a float tensor ``q``.

    Returns:
        ``(B, 2, 8, 8)`` for a ``(B,)`` tensor, ``(2, 8, 8)`` for a number or a 0-d tensor: (luma,
        chroma) in natural order, integer values in [1, 255], in ``q``'s floating dtype and device
        (float32 on the CPU for a number).
    """
    q = validate.check_quality(q)
    if not isinstance(q, Tensor):
        return codec.resolve_qtables(q, None, 1, "cpu", torch.float32)[0]
    dtype = q.dtype if q.is_floating_point() else torch.float32
    tables = codec.resolve_qtables(q.reshape(-1), None, q.numel(), q.device, dtype)
    return tables if q.ndim == 1 else tables[0]


def encode_coefficients(x: Tensor, qtables: Tensor, subsampling: str = "420",
                        quantize: Callable[[Tensor], Tensor] = rounding.round_ste,
                        integer: bool = True) -> list[Tensor]:
    """Pixels -> quantised DCT coefficients, one tensor per component (the codec's encoder).

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        qtables: ``(8, 8)``, ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` tables in natural order, entries in
            [1, 255], rounded to integers (straight-through).
        subsampling: "444", "422" or "420" (ignored for C = 1).
        quantize: the rounding of ``coefficient / table``, e.g. :func:`round_ste` (libjpeg's) or the
            identity for the unrounded ratios.
        integer: model libjpeg's integer arithmetic (8-bit samples, islow DCT), else the real-valued codec.

    Returns:
        Per component (Y, Cb, Cr, or Y alone) ``(B, nby, nbx, 8, 8)``, libjpeg's block grid of that
        component. Example: ``encode_coefficients(torch.rand(1, 3, 16, 16), quality_tables(75))``.
    """
    validate.check_image(x)
    subsampling = validate.check_subsampling(subsampling)
    if not callable(quantize):
        raise TypeError(f"quantize must be a function of one tensor, got {type(quantize).__name__}")
    integer = _check_bool(integer, "integer")
    tables = _checked_tables(qtables, x.shape[0], x)
    coefficients = codec.encode_coefficients(x.to(tables.dtype), tables, subsampling, quantize, integer)
    return [c.to(x.dtype) for c in coefficients]


def decode_coefficients(coefficients: Sequence[Tensor], qtables: Tensor, subsampling: str = "420",
                        size: tuple[int, int] | None = None, integer: bool = True) -> Tensor:
    """Quantised DCT coefficients -> pixels (the codec's decoder), differentiable in both inputs.

    Args:
        coefficients: 1 (grayscale) or 3 (Y, Cb, Cr) float tensors ``(B, nby, nbx, 8, 8)``, each on
            libjpeg's block grid of its component for ``size`` and ``subsampling``.
        qtables: as in :func:`encode_coefficients`.
        subsampling: the chroma subsampling the coefficients were made with.
        size: ``(H, W)`` of the image; default: the luma block grid times 8.
        integer: model libjpeg's integer arithmetic, else the real-valued codec.

    Returns:
        ``(B, C, H, W)`` in [0, 1]. Example: ``decode_coefficients(encode_coefficients(x, t), t, size=x.shape[-2:])``.
    """
    if isinstance(coefficients, Tensor) or not isinstance(coefficients, Sequence):
        raise TypeError("coefficients must be a list of 1 (grayscale) or 3 (Y, Cb, Cr) tensors (B, nby, nbx, 8, 8), "
                        f"got {type(coefficients).__name__}")
    if len(coefficients) not in (1, 3):
        raise ValueError(f"coefficients must hold 1 (grayscale) or 3 (Y, Cb, Cr) components, got {len(coefficients)}")
    form = "(B, nby, nbx, 8, 8)"
    planes = [_check_tensor(c, f"coefficients[{i}]", form, ndim=5) for i, c in enumerate(coefficients)]
    batch = planes[0].shape[0]
    for i, c in enumerate(planes):
        if c.shape[-2:] != (BLOCK, BLOCK) or min(c.shape) < 1 or c.shape[0] != batch:
            raise ValueError(f"coefficients[{i}] must have shape {form} with the batch size {batch} of "
                             f"coefficients[0], got {tuple(c.shape)}")
    subsampling = validate.check_subsampling(subsampling)
    integer = _check_bool(integer, "integer")
    luma = planes[0]
    if size is None:
        size = (luma.shape[1] * BLOCK, luma.shape[2] * BLOCK)
    if (not isinstance(size, Sequence) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be (H, W) with integers H, W >= 1, got {size!r}")
    sizes = codec.component_sizes(size[0], size[1], len(planes), subsampling)
    for i, (c, (h, w)) in enumerate(zip(planes, sizes)):
        grid = (ceil_div(h, BLOCK), ceil_div(w, BLOCK))
        if tuple(c.shape[1:3]) != grid:
            raise ValueError(f"coefficients[{i}] has a {c.shape[1]}x{c.shape[2]} block grid, but an image of size "
                             f"{size[0]}x{size[1]} with subsampling {subsampling!r} needs {grid[0]}x{grid[1]}")
    tables = _checked_tables(qtables, batch, luma)
    pixels = codec.decode_coefficients([c.to(tables.dtype) for c in planes], tables, subsampling, tuple(size), integer)
    return pixels.to(luma.dtype)


def rgb_to_ycbcr(rgb: Tensor, integer: bool = True) -> Tensor:
    """JFIF RGB -> YCbCr with libjpeg's fixed-point constants.

    Args:
        rgb: ``(B, 3, H, W)`` samples in [0, 255].
        integer: libjpeg's integer arithmetic (floors, straight-through), else the real-valued transform.

    Returns:
        ``(B, 3, H, W)`` YCbCr in [0, 255], chroma centred at 128. Example: ``rgb_to_ycbcr(x * 255)``.
    """
    return color.rgb_to_ycbcr(_check_samples(rgb, "rgb", 3), _check_bool(integer, "integer"))


def ycbcr_to_rgb(ycc: Tensor, integer: bool = True) -> Tensor:
    """JFIF YCbCr -> RGB with libjpeg's fixed-point constants and range limit.

    Args:
        ycc: ``(B, 3, H, W)`` samples in [0, 255].
        integer: libjpeg's integer arithmetic (straight-through), else the real-valued transform.

    Returns:
        ``(B, 3, H, W)`` RGB in [0, 255]. Example: ``ycbcr_to_rgb(rgb_to_ycbcr(x * 255)) / 255``.
    """
    return color.ycbcr_to_rgb(_check_samples(ycc, "ycc", 3), _check_bool(integer, "integer"))


def chroma_downsample(planes: Tensor, subsampling: str, integer: bool = True) -> Tensor:
    """libjpeg's box downsampling of chroma planes by the factors of ``subsampling``.

    Args:
        planes: ``(B, n, h, w)`` samples in [0, 255]; ``h`` and ``w`` multiples of the vertical and
            horizontal factors (2 and 2 for "420", 1 and 2 for "422").
        subsampling: "444", "422" or "420".
        integer: libjpeg's alternating rounding bias and floor, else the plain average.

    Returns:
        ``(B, n, h / fv, w / fh)``. Example: ``chroma_downsample(torch.rand(1, 2, 8, 8) * 255, "420")``.
    """
    planes = _check_samples(planes, "planes")
    subsampling = validate.check_subsampling(subsampling)
    fv, fh = chroma.FACTORS[subsampling]
    if planes.shape[-2] % fv or planes.shape[-1] % fh:
        raise ValueError(f"planes must have h a multiple of {fv} and w a multiple of {fh} for subsampling "
                         f"{subsampling!r} (pad first), got h = {planes.shape[-2]}, w = {planes.shape[-1]}")
    return chroma.chroma_downsample(planes, subsampling, _check_bool(integer, "integer"))


def chroma_upsample(planes: Tensor, subsampling: str, integer: bool = True) -> Tensor:
    """libjpeg's "fancy" (triangle-filter) upsampling of chroma planes by the factors of ``subsampling``.

    Args:
        planes: ``(B, n, h, w)`` samples in [0, 255].
        subsampling: "444", "422" or "420".
        integer: libjpeg's rounding biases and shifts, else the real-valued filter.

    Returns:
        ``(B, n, h * fv, w * fh)``. Example: ``chroma_upsample(torch.rand(1, 2, 4, 4) * 255, "420")``.
    """
    planes = _check_samples(planes, "planes")
    subsampling = validate.check_subsampling(subsampling)
    return chroma.chroma_upsample(planes, subsampling, _check_bool(integer, "integer"))


def dct_8x8(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II of every 8x8 block, coefficients left in place ("plane layout").

    Args:
        x: ``(..., H, W)`` float, H and W positive multiples of 8 (level-shifted samples, e.g. ``s - 128``).

    Returns:
        Same shape: coefficient ``(u, v)`` of block ``(i, j)`` at ``[..., 8 i + u, 8 j + v]``.
        Example: ``dct_8x8(torch.zeros(8, 8))``.
    """
    return dct.dct_8x8(_check_block_planes(x, "x"))


def idct_8x8(coefficients: Tensor) -> Tensor:
    """Inverse of :func:`dct_8x8`: ``(..., H, W)`` in plane layout, H and W positive multiples of 8."""
    return dct.idct_8x8(_check_block_planes(coefficients, "coefficients"))


def _check_values(x: object) -> Tensor:
    return _check_tensor(x, "x", "(...)")


def round_ste(x: Tensor) -> Tensor:
    """Rounding to nearest, ties away from zero (libjpeg's quantiser), identity gradient. ``x``: float tensor."""
    return rounding.round_ste(_check_values(x))


def round_cubic(x: Tensor) -> Tensor:
    """Shin & Song (2017): ``round(x) + (x - round(x))^3`` (its own gradient). ``x``: float tensor."""
    return rounding.round_cubic(_check_values(x))


def round_soft(x: Tensor, temperature: float = rounding.TEMPERATURE) -> Tensor:
    """Soft-round (Agustsson & Theis 2020) of a float tensor ``x``; ``temperature > 0`` (-> 0: exact rounding)."""
    validate.check_estimator_options(temperature, rounding.TERMS)
    return rounding.round_soft(_check_values(x), temperature)


def round_fourier(x: Tensor, terms: int = rounding.TERMS) -> Tensor:
    """``x`` minus ``terms`` (a positive int) terms of the Fourier series of ``x - round(x)``. ``x``: float tensor."""
    validate.check_estimator_options(rounding.TEMPERATURE, terms)
    return rounding.round_fourier(_check_values(x), terms)


def round_noise(x: Tensor, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """``x + U(-1/2, 1/2)`` when ``training`` (noise from ``generator``; identity gradient), else :func:`round_ste`."""
    x = _check_values(x)
    return rounding.round_noise(x, _check_bool(training, "training"), arguments.check_generator(generator))
