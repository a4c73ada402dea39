"""The JPEG codec as differentiable tensor stages, ``diff_jpeg`` and the ``DiffJPEG`` module.

Encode (libjpeg's order): pixels to 8 bits, RGB -> YCbCr, edge replication as libjpeg pads, chroma
box downsampling, 8x8 DCT, level shift, quantisation with the chosen rounding estimator. Decode:
dequantisation, inverse DCT, 8-bit storage and range limit, fancy chroma upsampling, YCbCr -> RGB,
crop. Samples and coefficients stay in planes ``(B, n, h, w)`` throughout (see :mod:`.dct`).

Two modes share every stage. *Integer* mode ("ste", and "noise" in eval mode) is libjpeg-turbo's
arithmetic (fixed-point colour, islow DCT, biased shifts, range limits) with floors whose gradient
is the identity: its forward pass equals Pillow's output bit for bit (``tests/test_exact.py``).
*Smooth* mode ("cubic", "soft", "fourier") keeps pixels continuous and uses the real-valued DCT, so
the whole layer is a smooth function, as in the papers that introduced those estimators.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..contract import Defense
from .. import arguments
from . import validate
from .blocks import BLOCK, ceil_div, crop, crop_adjoint, from_blocks, pad_replicate, pad_replicate_adjoint, to_blocks
from .chroma import (FACTORS, chroma_downsample, chroma_downsample_adjoint, chroma_upsample, chroma_upsample_adjoint,
                     plane_sizes, sampling_factors)
from .color import CENTER, rgb_to_ycbcr, rgb_to_ycbcr_adjoint, ycbcr_to_rgb, ycbcr_to_rgb_adjoint
from .dct import DC_GAIN, dct_8x8, idct_8x8, islow_dct_8x8, islow_idct_8x8, islow_round_trip_adjoint
from . import native, presets
from .presets import PILLOW, CodecOptions, resolve_preset
from .rounding import (ROUNDINGS, TEMPERATURE, TERMS, floor_ste, round_ste, rounding_function,
                       sample_ste_, store_ste_, straight_through)
from .tables import quality_tables

#: estimators whose forward pass stores pixels as 8-bit integers, as libjpeg does
INTEGER_ROUNDINGS = ("ste", "noise")
#: the default quality of ``DiffJPEG`` and ``JPEG``: libjpeg's and Pillow's default
DEFAULT_QUALITY = 75
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def working_dtype(x: Tensor) -> torch.dtype:
    """The dtype the codec computes ``x`` in: float32 for float16 / bfloat16, else ``x``'s own."""
    return torch.float32 if x.dtype in _HALF_DTYPES else x.dtype


def integer_quality(q: Tensor) -> Tensor:
    """The quality an encoder uses: ``floor(q + 1/2)`` (nearest integer, halves up), identity gradient.

    Encoders take integer qualities; the real codec rounds ``q`` the same way, so ``DiffJPEG(q=50.5)``
    and ``JPEG(q=50.5)`` are both quality 51, while the gradient with respect to ``q`` is that of the
    real-valued table formula.
    """
    return floor_ste(q + 0.5)


def _clip(x: Tensor) -> Tensor:
    return x.clamp(0.0, 255.0)


def _pixel_store(integer: bool) -> Callable[[Tensor], Tensor]:
    """libjpeg's 8-bit sample storage (straight-through rounding and range limit), or a plain clip."""
    return store_ste_ if integer else _clip


def _to_8bit(x: Tensor, integer: bool) -> Tensor:
    """[0, 1] -> [0, 255]: ``floor(255 x + 1/2)`` as Pillow receives it (integer mode), else ``255 x``."""
    if integer:  # one fused multiply-add before the straight-through floor
        return sample_ste_(torch.add(x.new_tensor(0.5), x, alpha=255.0))
    return x * 255.0


def component_sizes(height: int, width: int, channels: int, subsampling: str) -> list[tuple[int, int]]:
    """``(h, w)`` of each component plane as libjpeg sizes them (chroma rounded up)."""
    return plane_sizes(height, width, sampling_factors(subsampling, channels))


def _groups(channels: int, subsampling: str) -> list[list[int]]:
    """Components processed together (same plane size): all at 4:4:4, else luma and chroma apart."""
    if channels == 1:
        return [[0]]
    return [[0, 1, 2]] if subsampling == "444" else [[0], [1, 2]]


def _grid(size: tuple[int, int]) -> tuple[int, int]:
    """Samples covered by libjpeg's block grid of a plane of ``size``."""
    return ceil_div(size[0], BLOCK) * BLOCK, ceil_div(size[1], BLOCK) * BLOCK


def _blockwise(plane: Tensor, tables: Tensor) -> tuple[Tensor, Tensor]:
    """``plane`` ``(B, n, h, w)`` viewed as ``(B, n, h/8, 8, w/8, 8)`` and ``tables`` ``(B, n, 8, 8)`` to match."""
    b, n, h, w = plane.shape
    return plane.reshape(b, n, h // BLOCK, BLOCK, w // BLOCK, BLOCK), tables[:, :, None, :, None, :]


def _quantize_planes(samples: Tensor, tables: Tensor, quantize: Callable[[Tensor], Tensor], integer: bool,
                     options: CodecOptions = PILLOW) -> Tensor:
    """Samples ``(B, n, h, w)`` in [0, 255] -> quantised coefficients in plane layout.

    Integer mode uses libjpeg's islow DCT; libjpeg's quantiser is exactly round-half-away of
    ``islow / (8 Q)``, i.e. of ``coefficient / Q`` here. Other DCTs: :func:`presets.quantizer_input`.
    """
    if integer and options.fdct != "islow":
        return quantize(presets.quantizer_input(samples, tables, options.fdct))
    coef = islow_dct_8x8(samples) if integer else dct_8x8(samples)
    coef[..., ::BLOCK, ::BLOCK] -= CENTER * DC_GAIN  # level shift by -128 touches only the DC
    blocks, t = _blockwise(coef, tables)
    return quantize(blocks / t).reshape(coef.shape)


def dequantize_planes(coefficients: Tensor, tables: Tensor, integer: bool, options: CodecOptions = PILLOW) -> Tensor:
    """Quantised coefficients ``(B, n, h, w)`` in plane layout -> 8-bit samples in [0, 255]."""
    if integer and options.idct != "islow":
        return _pixel_store(True)(presets.inverse_dct(coefficients, tables, options.idct))
    blocks, t = _blockwise(coefficients, tables)
    coef = (blocks * t).reshape(coefficients.shape)
    coef[..., ::BLOCK, ::BLOCK] += CENTER * DC_GAIN
    if not integer:
        return _clip(idct_8x8(coef))
    # the islow output is integer-valued: storing it as a sample is the range limit alone
    return sample_ste_(islow_idct_8x8(coef))


def _encode_planes(x: Tensor, qtables: Tensor, subsampling: str, quantize, integer: bool,
                   options: CodecOptions = PILLOW) -> list[Tensor]:
    """Pixels -> quantised coefficient planes, one per component group (see :func:`_groups`).

    Edges are replicated as libjpeg does: each plane to its own block grid; for subsampled chroma
    the full-resolution columns to twice the chroma grid and the rows to a multiple of the
    vertical factor, then, after downsampling, the last chroma row down to the grid.
    """
    b, c, h, w = x.shape
    pixels = _to_8bit(x, integer)
    if c == 3:
        pixels = rgb_to_ycbcr(pixels, integer, options.color)
    sizes = component_sizes(h, w, c, subsampling)
    if c == 3 and subsampling != "444":
        fv, fh = FACTORS[subsampling]
        gh, gw = _grid(sizes[1])
        luma, chroma = pixels.split((1, 2), dim=1)  # split's backward is a cat, not zero-filled copies
        if options.downsampling == "dct":  # IJG libjpeg 7+: full-resolution chroma into a scaled DCT
            scaled = presets.scaled_quantizer_input(pad_replicate(chroma, gh * fv, gw * fh), qtables[:, [1, 1]],
                                                    subsampling, integer)
            return [_quantize_planes(pad_replicate(luma, *_grid(sizes[0])), qtables[:, [0]], quantize, integer,
                                     options), quantize(scaled)]
        chroma = pad_replicate(chroma, ceil_div(h, fv) * fv, gw * fh)
        planes = [pad_replicate(luma, *_grid(sizes[0])),
                  pad_replicate(chroma_downsample(chroma, subsampling, integer), gh, gw)]
    else:
        planes = [pad_replicate(pixels, *_grid(sizes[0]))]
    return [_quantize_planes(plane, qtables[:, [min(i, 1) for i in group]], quantize, integer, options)
            for plane, group in zip(planes, _groups(c, subsampling))]


def _decode_planes(groups: Sequence[Tensor], qtables: Tensor, subsampling: str, size: tuple[int, int],
                   integer: bool, dequantize: Callable[..., Tensor] = dequantize_planes,
                   options: CodecOptions = PILLOW) -> Tensor:
    """Quantised coefficient planes (one per component group) -> ``(B, C, H, W)`` in [0, 1].

    ``dequantize`` maps a group's coefficients and tables to samples (default
    :func:`dequantize_planes`; exact decoding of arbitrary files swaps in libjpeg-turbo's SIMD variant).
    """
    h, w = size
    channels = sum(g.shape[1] for g in groups)
    sizes = component_sizes(h, w, channels, subsampling)
    planes = []
    for coef, group in zip(groups, _groups(channels, subsampling)):
        ph, pw = sizes[group[0]]
        if group[0] == 1 and subsampling != "444" and options.upsampling == "dct":  # IJG libjpeg 7+
            planes.append(crop(_pixel_store(integer)(presets.scaled_chroma(coef, qtables[:, [1, 1]], subsampling,
                                                                           integer)), h, w))
            continue
        planes.append(crop(dequantize(coef, qtables[:, [min(i, 1) for i in group]], integer, options), ph, pw))
    centred = False
    if channels == 3 and subsampling != "444" and options.upsampling != "dct":
        # in integer mode the chroma is centred on the small plane, before upsampling: the filter's
        # integer weights sum to its divisor, so its floors give what centring after it would
        centred = integer
        chroma = planes.pop() - CENTER if centred else planes.pop()
        planes.append(crop(chroma_upsample(chroma, subsampling, integer, options.upsampling), h, w))
        del chroma
    pixels = planes[0] if len(planes) == 1 else planes  # luma and chroma go to colour conversion apart
    if channels == 3:
        pixels = ycbcr_to_rgb(pixels, integer, options.color, centred)
    return pixels.div_(255.0)  # a fresh result: divided in place


def encode_coefficients(x: Tensor, qtables: Tensor, subsampling: str = "420",
                        quantize: Callable[[Tensor], Tensor] = round_ste, integer: bool = True,
                        preset: str | CodecOptions = "pillow") -> list[Tensor]:
    """Pixels -> quantised DCT coefficients, one tensor per component.

    Args:
        x: ``(B, C, H, W)`` in [0, 1], C in {1, 3}.
        qtables: ``(B, 2, 8, 8)`` integer-valued tables (luma, chroma), natural order.
        subsampling: "444", "422" or "420" (ignored for C = 1).
        quantize: the rounding of ``coefficient / table`` (see :mod:`diffjpeg.jpeg.rounding`).
        integer: model libjpeg's 8-bit pixel storage (straight-through rounding).
        preset: the library whose arithmetic is reproduced (:mod:`diffjpeg.jpeg.presets`).

    Returns:
        Per component (Y, Cb, Cr, or Y alone) a ``(B, nby, nbx, 8, 8)`` tensor of quantised
        coefficients on libjpeg's block grid of that component (``ceil(h / 8)`` x ``ceil(w / 8)``).
    """
    groups = _encode_planes(x, qtables, subsampling, quantize, integer, resolve_preset(preset))
    return [to_blocks(plane) for group in groups for plane in group.unbind(1)]


def decode_coefficients(coefficients: Sequence[Tensor], qtables: Tensor, subsampling: str = "420",
                        size: tuple[int, int] | None = None, integer: bool = True,
                        dequantize: Callable[..., Tensor] = dequantize_planes,
                        preset: str | CodecOptions = "pillow") -> Tensor:
    """Quantised DCT coefficients -> pixels; the inverse stages of :func:`encode_coefficients`.

    Args:
        coefficients: per component ``(B, nby, nbx, 8, 8)`` (1 or 3 components), real-valued.
        qtables: ``(B, 2, 8, 8)`` tables to dequantise with.
        subsampling: the chroma subsampling the coefficients were made with.
        size: ``(H, W)`` of the image; default: the luma block grid times 8.
        integer: model libjpeg's 8-bit pixel storage (straight-through rounding).
        dequantize: coefficients and tables of a component group -> samples (see :func:`_decode_planes`).
        preset: the library whose arithmetic is reproduced (:mod:`diffjpeg.jpeg.presets`).

    Returns:
        ``(B, C, H, W)`` in [0, 1]. Differentiable in ``coefficients`` and ``qtables``.
    """
    luma = coefficients[0]
    size = size if size is not None else (luma.shape[1] * BLOCK, luma.shape[2] * BLOCK)
    planes = [from_blocks(c) for c in coefficients]
    groups = [torch.stack([planes[i] for i in group], 1) for group in _groups(len(planes), subsampling)]
    return _decode_planes(groups, qtables, subsampling, size, integer, dequantize, resolve_preset(preset))


@functools.lru_cache(maxsize=64)
def _quality_tables_once(q: float, base: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    return quality_tables(integer_quality(torch.tensor([q], device=device, dtype=dtype)), base)


@torch.compiler.assume_constant_result  # a constant of a compiled graph, not a kernel run on every call
def _fixed_quality_tables(q: float, base: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(1, 2, 8, 8)`` tables of a quality given as a number (no gradient), kept: they cost a dozen small
    operations, a tenth of a CIFAR-sized call. Callers expand them and never write to them. (torch.compile
    traces through an ``lru_cache``, hence the cached function inside.)"""
    return _quality_tables_once(q, base, device, dtype)


def resolve_qtables(q: float | Tensor, qtables: Tensor | None, batch: int, device, dtype,
                    options: CodecOptions = PILLOW) -> Tensor:
    """The ``(B, 2, 8, 8)`` integer-valued tables for quality ``q`` or explicit ``qtables``.

    ``q`` is rounded by :func:`integer_quality` and explicit tables to integers (both
    straight-through), as an encoder takes them and a JPEG file stores them.
    """
    if qtables is None:
        if not isinstance(q, Tensor):  # a fixed quality: tables made once
            return _fixed_quality_tables(float(q), options.tables, torch.device(device), dtype).expand(batch, 2, 8, 8)
        q = torch.as_tensor(q, device=device, dtype=dtype).expand(batch) if not isinstance(q, Tensor) or q.ndim == 0 \
            else q.to(device=device, dtype=dtype)
        return quality_tables(integer_quality(q), options.tables)
    qtables = qtables.to(device=device, dtype=dtype)
    if qtables.ndim == 3:
        qtables = qtables.expand(batch, -1, -1, -1)
    return round_ste(qtables)


def check_arguments(x: Tensor, q, subsampling: str, rounding: str, qtables) -> Tensor | None:
    """The checks of ``x``, ``rounding`` and ``q`` / ``qtables`` that :func:`diff_jpeg` and every
    ``DiffJPEG.forward`` run; returns the normalised tables (or ``None``).

    ``x``'s values are not checked here: the caller asks :func:`diff_jpeg_unchecked` to check them in
    its first pass over them (``check_values=True``). ``subsampling`` and the estimator options are
    checked separately (by :func:`diff_jpeg` on every call, by ``DiffJPEG`` once at construction);
    ``subsampling`` is unused here.
    """
    validate.check_image(x, values=False)
    arguments.check_choice(rounding, ROUNDINGS, "rounding")
    if qtables is not None:
        return validate.check_qtables(qtables, batch=x.shape[0])
    validate.check_quality(q, batch=x.shape[0])
    return None


def diff_jpeg(x: Tensor, q: float | Tensor = DEFAULT_QUALITY, subsampling: str = "420", rounding: str = "ste",
              qtables: Tensor | None = None, *, temperature: float = TEMPERATURE, terms: int = TERMS,
              exact: bool = False, training: bool = False, generator: torch.Generator | None = None,
              preset: str | CodecOptions = "pillow") -> Tensor:
    """JPEG-compress and decompress ``x`` differentiably.

    Args:
        x: ``(B, C, H, W)`` float image in [0, 1], C in {1, 3} (C = 1 is grayscale JPEG), any H, W >= 1.
        q: quality in [1, 100], a number or a ``(B,)`` tensor (one per image); default 75. The
            forward pass uses the nearest integer quality (halves up), as encoders do
            (:func:`integer_quality`). Differentiable: the rounding and the quality-to-table step
            are floors with a straight-through gradient.
        subsampling: chroma subsampling "444", "422" or "420".
        rounding: gradient estimator of the coefficient rounding: "ste", "cubic", "soft", "fourier", "noise".
        qtables: ``(8, 8)``, ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` tables in natural order, entries in
            [1, 255]; replace the quality-derived tables when given (then ``q`` is ignored).
        temperature: of the "soft" estimator; terms: of the "fourier" estimator.
        exact: forward pass bit-identical to libjpeg-turbo (see :mod:`diffjpeg.jpeg.exact`), backward
            pass through this float pipeline with the chosen estimator.
        training: "noise" adds uniform noise only when True.
        generator: random source of "noise".
        preset: the JPEG library reproduced: a name from :data:`diffjpeg.jpeg.presets.PRESETS`
            ("pillow", "libjpeg9", "turbo-fast", ...) or a :class:`~diffjpeg.jpeg.presets.CodecOptions`.

    Returns:
        ``(B, C, H, W)`` tensor with the input's dtype and device.
    """
    subsampling = validate.check_subsampling(subsampling)
    options = resolve_preset(preset)
    qtables = check_arguments(x, q, subsampling, rounding, qtables)
    validate.check_estimator_options(temperature, terms)
    exact, training = arguments.check_bool(exact, "exact"), arguments.check_bool(training, "training")
    generator = arguments.check_generator(generator)
    return diff_jpeg_unchecked(x, q, subsampling, rounding, qtables, temperature=temperature, terms=terms, exact=exact,
                               training=training, generator=generator, options=options, check_values=True)


def codec_round_trip(x: Tensor, tables: Tensor, subsampling: str, quantize: Callable[[Tensor], Tensor],
                     integer: bool, options: CodecOptions = PILLOW, check_values: bool = False) -> Tensor:
    """Encode and decode ``x`` ``(B, C, H, W)`` in [0, 1] with ``(B, 2, 8, 8)`` tables.

    The integer round trip without a graph to record runs in C on the CPU (:mod:`.native`, the same
    values); everything else runs the tensor stages. ``check_values``: check that ``x`` is finite and in
    [0, 1] first (:func:`.validate.check_image_values`; the C pass checks as it reads).
    """
    if integer and quantize is round_ste and native.serves(x, tables, options):
        return native.integer_round_trip(x, tables, subsampling, options, check_values)
    if check_values:
        validate.check_image_values(x)
    coefficients = _encode_planes(x, tables, subsampling, quantize, integer, options)
    return _decode_planes(coefficients, tables, subsampling, (x.shape[2], x.shape[3]), integer, options=options)


def straight_through_supported(options: CodecOptions) -> bool:
    """Whether :func:`straight_through_round_trip` knows the adjoint of every stage of ``options``."""
    return (options.fdct == options.idct == "islow" and options.downsampling == "box"
            and options.upsampling != "dct")


def _round_trip_adjoint(grad: Tensor, subsampling: str, options: CodecOptions) -> Tensor:
    """The straight-through gradient of the integer round trip: the adjoint of its linear part.

    With every floor, rounding and range limit passing the gradient unchanged, the round trip is a
    linear map (colour matrices, box average, islow DCT, division and multiplication by the table,
    islow inverse, fancy upsampling); this applies its transpose stage by stage, in reverse. The
    scalings by 255 at both ends and by the table cancel and are left out.
    """
    b, c, h, w = grad.shape
    sizes = component_sizes(h, w, c, subsampling)
    if c == 3:
        luma, chroma = ycbcr_to_rgb_adjoint(grad, options.color)
    else:
        luma, chroma = grad, None
    if chroma is not None and subsampling != "444":
        fv, fh = FACTORS[subsampling]
        (ph, pw), (gh, gw) = sizes[1], _grid(sizes[1])
        chroma = chroma_upsample_adjoint(crop_adjoint(chroma, fv * ph, fh * pw), subsampling, options.upsampling)
        chroma = islow_round_trip_adjoint(crop_adjoint(chroma, gh, gw))
        chroma = pad_replicate_adjoint(chroma, ceil_div(h, fv), gw)
        chroma = pad_replicate_adjoint(chroma_downsample_adjoint(chroma, subsampling), h, w)
        luma = pad_replicate_adjoint(islow_round_trip_adjoint(crop_adjoint(luma, *_grid(sizes[0]))), h, w)
        ycc = (luma, chroma)
    else:
        ycc = grad if chroma is None else torch.cat((luma, chroma), 1)
        ycc = pad_replicate_adjoint(islow_round_trip_adjoint(crop_adjoint(ycc, *_grid(sizes[0]))), h, w)
    return rgb_to_ycbcr_adjoint(ycc, options.color) if c == 3 else ycc


class _StraightThroughRoundTrip(torch.autograd.Function):
    """The integer round trip as one autograd node: forward without a graph, backward the adjoint."""

    @staticmethod
    def forward(ctx, x, tables, subsampling, options, check_values):
        out = codec_round_trip(x, tables, subsampling, round_ste, True, options, check_values)
        # the gradient in the output's layout, which is x's (a channels-last leaf's gradient needs no copy)
        ctx.subsampling, ctx.options, ctx.strides = subsampling, options, out.stride()
        return out

    @staticmethod
    def backward(ctx, grad):
        if native.serves_gradient(grad, ctx.options):
            return native.integer_round_trip_adjoint(grad, ctx.subsampling, ctx.options, ctx.strides), *[None] * 4
        return _round_trip_adjoint(grad, ctx.subsampling, ctx.options), *[None] * 4


def straight_through_round_trip(x: Tensor, tables: Tensor, subsampling: str, options: CodecOptions = PILLOW,
                                check_values: bool = False) -> Tensor:
    """:func:`codec_round_trip` in integer mode with "ste" rounding, for ``tables`` without gradient.

    The same values and the same gradient with respect to ``x`` (up to float rounding: the adjoint
    runs in ``x``'s dtype), but no graph of some sixty operations and no tensors kept for the
    backward pass, which is a handful of passes over the gradient (:func:`_round_trip_adjoint`).
    """
    return _StraightThroughRoundTrip.apply(x, tables, subsampling, options, check_values)


def diff_jpeg_unchecked(x, q, subsampling, rounding, qtables, *, temperature=TEMPERATURE, terms=TERMS, exact=False,
                        training=False, generator=None, options: CodecOptions = PILLOW,
                        check_values: bool = False) -> Tensor:
    """:func:`diff_jpeg` on arguments already validated (by the caller, once, at its boundary);
    ``check_values``: but for ``x``'s values, which the first pass over them checks."""
    work = working_dtype(x)
    y = x.to(work)
    tables = resolve_qtables(q, qtables, x.shape[0], x.device, work, options)
    rounds_exactly = rounding == "ste" or (rounding == "noise" and not training)
    if rounds_exactly and not tables.requires_grad and straight_through_supported(options):
        out = straight_through_round_trip(y, tables, subsampling, options, check_values)
    elif exact and not rounds_exactly:  # forward: libjpeg's integer pipeline; backward: the estimator's
        with torch.no_grad():
            out = codec_round_trip(y, tables, subsampling, round_ste, True, options, check_values)
        if torch.is_grad_enabled() and (y.requires_grad or tables.requires_grad):
            out = straight_through(_estimated(y, tables, subsampling, rounding, temperature, terms, training,
                                              generator, options), out)
    else:
        out = _estimated(y, tables, subsampling, rounding, temperature, terms, training, generator, options,
                         check_values)
    return out.to(x.dtype)


def _estimated(y, tables, subsampling, rounding, temperature, terms, training, generator, options=PILLOW,
               check_values=False) -> Tensor:
    """The round trip with ``rounding``'s estimator (forward and backward)."""
    quantize = rounding_function(rounding, temperature=temperature, terms=terms, training=training,
                                 generator=generator)
    return codec_round_trip(y, tables, subsampling, quantize, rounding in INTEGER_ROUNDINGS, options, check_values)


class _ClampedTables(nn.Module):
    """Parametrisation of learnable tables: ``clamp(raw, 1, 255)`` forward, identity gradient.

    Reading ``layer.qtables`` therefore always gives tables in range, whatever the optimiser did
    to the raw parameter, and a gradient pushing a clamped entry back into range still flows.
    """

    def forward(self, raw: Tensor) -> Tensor:
        return straight_through(raw, raw.clamp(1.0, 255.0))

    def right_inverse(self, tables: Tensor) -> Tensor:
        return tables


class DiffJPEG(Defense):
    """JPEG compression as a layer: real JPEG forward, a chosen gradient estimator backward.

    Args: as :func:`diff_jpeg`, plus ``learnable``: make the two tables an ``nn.Parameter``
    (initialised from ``qtables`` or from ``q``). Learnable tables are used as
    ``round(clamp(t, 1, 255))`` with straight-through gradients, so the forward pass is always a JPEG
    with the integer tables that :meth:`export_qtables` returns.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H, W)``, values in [0, 1].
    """

    differentiable = True

    def __init__(self, q: float | Tensor = DEFAULT_QUALITY, subsampling: str = "420", rounding: str = "ste",
                 qtables: Tensor | None = None, learnable: bool = False, *, temperature: float = TEMPERATURE,
                 terms: int = TERMS, exact: bool = False, generator: torch.Generator | None = None,
                 preset: str | CodecOptions = "pillow"):
        super().__init__()
        self.options = resolve_preset(preset)
        subsampling = validate.check_subsampling(subsampling)
        arguments.check_choice(rounding, ROUNDINGS, "rounding")
        validate.check_estimator_options(temperature, terms)
        exact, learnable = arguments.check_bool(exact, "exact"), arguments.check_bool(learnable, "learnable")
        if qtables is not None:
            qtables = validate.check_qtables(qtables).to(torch.float32)
        else:
            validate.check_quality(q)
        self.subsampling, self.rounding, self.temperature, self.terms = subsampling, rounding, temperature, terms
        self.exact, self.generator, self.learnable = exact, arguments.check_generator(generator), learnable
        if isinstance(q, Tensor):
            self.register_buffer("q", q.detach().clone())
        else:
            self.q = q
        if learnable:
            if qtables is None:
                if isinstance(q, Tensor) and q.ndim == 1:
                    raise ValueError("q must be a single quality when learnable=True (one pair of tables is learnt), "
                                     f"got a tensor of shape {tuple(q.shape)}")
                qtables = resolve_qtables(q, None, 1, "cpu", torch.float32, self.options)[0]
            if qtables.ndim != 3:
                raise ValueError(f"qtables must be (2, 8, 8) when learnable=True, got shape {tuple(qtables.shape)}")
            self.qtables = nn.Parameter(qtables.clone())
            parametrize.register_parametrization(self, "qtables", _ClampedTables())
        elif qtables is not None:
            self.register_buffer("qtables", qtables)
        else:
            self.qtables = None

    @property
    def randomized(self) -> bool:
        return self.rounding == "noise" and self.training

    def forward(self, x: Tensor) -> Tensor:
        tables = self.qtables
        check_arguments(x, self.q, self.subsampling, self.rounding, tables)
        return diff_jpeg_unchecked(x, self.q, self.subsampling, self.rounding, tables, temperature=self.temperature,
                                   terms=self.terms, exact=self.exact, training=self.training,
                                   generator=self.generator, options=self.options, check_values=True)

    def surrogate(self) -> nn.Module:
        return self

    def export_qtables(self) -> list[list[int]]:
        """The integer tables in use, as Pillow's ``save(..., qtables=...)`` takes them.

        Two lists (luma, chroma) of 64 ints in natural (row-major) order, each in [1, 255].
        """
        tables = self.qtables
        if tables is None:
            tables = resolve_qtables(self.q, None, 1, "cpu", torch.float32, self.options)[0]
        if tables.ndim == 4:
            raise ValueError("export_qtables needs one pair of tables; this layer has per-image tables")
        ints = tables.detach().clamp(1, 255).round().to(torch.int64).cpu()
        return [t.flatten().tolist() for t in ints]

    def extra_repr(self) -> str:
        q = "custom tables" if self.qtables is not None else f"q={self.q}"
        return (f"{q}, subsampling={self.subsampling!r}, rounding={self.rounding!r}, "
                f"learnable={self.learnable}, exact={self.exact}"
                + ("" if self.options == PILLOW else f", preset={presets.preset_name(self.options)}"))
