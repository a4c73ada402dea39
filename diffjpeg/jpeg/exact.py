"""Bit-exact libjpeg-turbo: integer pixels in, the pixels (or coefficients) Pillow produces out.

The codec of :mod:`diffjpeg.jpeg.codec` in its integer mode *is* libjpeg-turbo's arithmetic
(fixed-point colour conversion, box downsampling with its alternating bias, edge replication as
libjpeg pads, islow DCT pair with its descaling, round-half-away quantisation, fancy upsampling with
its biases, range limits), each step written as float tensor operations that are exact on the
integers involved. This module runs that pipeline without autograd on 8-bit data:

* :func:`exact_jpeg` -- ``decode(encode(pixels))``, equal to Pillow's JPEG round trip;
* :func:`exact_encode` -- the quantised coefficients, equal to ``jpeglib.read_dct`` of Pillow's file;
* :func:`exact_decode` -- pixels from any baseline coefficients, equal to Pillow's decoding of a file
  holding them. Pillow's libjpeg-turbo decodes with its x86-64 AVX2 inverse DCT, whose 16-bit
  intermediates wrap and saturate on coefficients no encoder of 8-bit images produces; that
  behaviour is emulated here (for encoder output it equals the plain islow IDCT).

Checked against libjpeg-turbo 3.2.0 as Pillow ships it (``tests/test_exact.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .blocks import to_blocks
from .codec import codec_round_trip, decode_coefficients, dequantize_planes, encode_coefficients
from .presets import CodecOptions, resolve_preset
from .dct import inverse_feature_matrix
from .rounding import round_ste

__all__ = ["exact_encode", "exact_decode", "exact_jpeg"]

# Inputs of one inverse pass as libjpeg-turbo's AVX2 code forms them (16-bit sums, then the rest).
_INV10 = torch.tensor(inverse_feature_matrix(), dtype=torch.float64)  # (8 samples, 10 features)


def _unit(pixels: Tensor) -> Tensor:
    """Integer pixels 0..255 -> float32 in [0, 1] (the codec's input convention)."""
    return pixels.to(torch.float32) / 255.0


def exact_encode(pixels: Tensor, qtables: Tensor, subsampling: str,
                 preset: str | CodecOptions = "pillow") -> list[Tensor]:
    """Quantised DCT coefficients exactly as libjpeg-turbo computes them for these pixels.

    Args:
        pixels: integer tensor ``(B, C, H, W)``, C in {1, 3}, values 0..255.
        qtables: integer-valued ``(B, 2, 8, 8)``, natural order, [luma, chroma], entries 1..255.
        subsampling: "444", "422" or "420" (ignored for grayscale).
        preset: the library emulated (:mod:`diffjpeg.jpeg.presets`); its ``fdct`` and ``downsampling``
            matter here.

    Returns:
        One int32 tensor per component (Y, Cb, Cr, or Y alone), ``(B, nby, nbx, 8, 8)`` on libjpeg's
        ``height_in_blocks x width_in_blocks`` grid (not padded to whole MCUs), blocks in natural
        order -- what ``jpeglib.read_dct`` returns for the file Pillow writes.
    """
    with torch.no_grad():
        coefficients = encode_coefficients(_unit(pixels), qtables.to(pixels.device, torch.float32), subsampling,
                                           preset=resolve_preset(preset))
    return [c.to(torch.int32) for c in coefficients]


def exact_jpeg(pixels: Tensor, qtables: Tensor, subsampling: str, preset: str | CodecOptions = "pillow") -> Tensor:
    """Encode then decode exactly like Pillow / libjpeg-turbo (or ``preset``'s library): uint8 ``(B, C, H, W)``.

    Arguments as :func:`exact_encode`.
    """
    with torch.no_grad():
        out = codec_round_trip(_unit(pixels), qtables.to(pixels.device, torch.float32), subsampling, round_ste, True,
                               resolve_preset(preset))
    return (out * 255.0).round_().to(torch.uint8)


def exact_decode(coefficients: list[Tensor], qtables: Tensor, subsampling: str, height: int, width: int,
                 preset: str | CodecOptions = "pillow") -> Tensor:
    """The pixels libjpeg-turbo's decoder (as Pillow runs it) produces from these coefficients.

    Args:
        coefficients: per component (Y, Cb, Cr, or Y alone) an integer tensor ``(B, nby, nbx, 8, 8)``
            in natural order on libjpeg's block grid, values within int16 (any baseline file's range).
        qtables: integer-valued ``(B, 2, 8, 8)`` natural-order tables [luma, chroma], 1..255.
        subsampling: "444", "422" or "420" (ignored for one component).
        height, width: image size in pixels.
        preset: the library emulated; its ``idct`` and ``upsampling`` matter here. With the islow
            IDCT this is libjpeg-turbo's AVX2 kernel (Pillow's), overflow behaviour included; the
            other IDCTs are libjpeg's C code (their range-limit wrap included).

    Returns:
        uint8 ``(B, C, height, width)`` on the coefficients' device.
    """
    options = resolve_preset(preset)
    coefficients = [c.to(torch.float64) for c in coefficients]
    with torch.no_grad():
        out = decode_coefficients(coefficients, qtables.to(coefficients[0].device, torch.float64), subsampling,
                                  (height, width), True, preset=options,
                                  dequantize=_dequantize_avx2 if options.idct == "islow" else dequantize_planes)
    return (out * 255.0).round_().to(torch.uint8)


def _dequantize_avx2(coefficients: Tensor, tables: Tensor, integer: bool, options=None) -> Tensor:
    """Plane-layout adapter of :func:`_idct_simd` for :func:`codec.decode_coefficients` (islow only)."""
    b, n, h, w = coefficients.shape
    blocks = to_blocks(coefficients).reshape(b * n, h // 8, w // 8, 8, 8)
    samples = _idct_simd(blocks, tables.reshape(b * n, 8, 8))
    return samples.reshape(b, n, h, w).to(coefficients.dtype)


def _wrap_(x: Tensor, bits: int) -> Tensor:
    """In place: two's-complement wrap of integer-valued floats to ``bits`` bits."""
    m = float(1 << bits)
    return x.add_(m / 2).remainder_(m).sub_(m / 2)



def _features(x: Tensor, dim: int) -> Tensor:
    """The 10 inputs of one AVX2 inverse pass (see :data:`dct.IDCT_FEATURES`) from the 8 entries
    along ``dim``, with the 16-bit wrap of the sums libjpeg-turbo forms before widening."""
    p = x.unbind(dim)
    sums = [p[0] + p[4], p[0] - p[4], p[7] + p[3], p[5] + p[1]]
    for s in sums:
        _wrap_(s, 16)
    return torch.stack(sums[:2] + [p[2], p[6], p[7], p[5], p[3], p[1]] + sums[2:], dim=dim)


def _idct_simd(coef: Tensor, qtable: Tensor) -> Tensor:
    """libjpeg-turbo's x86-64 AVX2 islow inverse DCT, overflow behaviour included.

    ``coef``: float64 integer coefficients ``(B, nby, nbx, 8, 8)`` (natural order), ``qtable``:
    ``(B, 8, 8)``. Emulates the 16-bit products and sums, the 32-bit wrap, the saturating packs
    between and after the passes and the whole-block shortcut taken when rows 1..7 are all zero.
    Returns float32 samples 0..255, ``(B, 8 * nby, 8 * nbx)``.
    """
    B, nby, nbx = coef.shape[:3]
    inv10 = _INV10.to(coef.device)
    dq = _wrap_(coef * qtable.to(torch.float64).view(B, 1, 1, 8, 8), 16)
    dq = dq.permute(0, 1, 3, 2, 4).reshape(B, nby, 8, nbx * 8)
    # pass 1, down each block column
    x = torch.matmul(inv10, _features(dq, 2))
    x = _wrap_(x.add_(float(1 << 10)), 32).mul_(1.0 / (1 << 11)).floor_().clamp_(-32768.0, 32767.0)
    flat = (coef[..., 1:, :] == 0).flatten(-2).all(-1)  # (B, nby, nbx): rows 1..7 all zero
    shortcut = _wrap_(dq[:, :, :1] * 4.0, 16)
    x = torch.where(flat.repeat_interleave(8, dim=-1)[:, :, None], shortcut, x)
    # pass 2, along each block row
    x = torch.matmul(_features(x.view(B, nby * 8, nbx, 8), -1), inv10.T)
    x = _wrap_(x.add_(float(1 << 17)), 32).mul_(1.0 / (1 << 18)).floor_()
    return x.clamp_(-128.0, 127.0).add_(128.0).view(B, nby * 8, nbx * 8).to(torch.float32)


