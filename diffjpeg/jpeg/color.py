"""JFIF full-range RGB <-> YCbCr, as libjpeg computes it.

Values are in [0, 255], tensors ``(B, 3, H, W)``. With ``integer=True`` the conversion is libjpeg's
16-bit fixed-point arithmetic on 8-bit samples (``jccolor.c`` / ``jdcolor.c``): constants rounded to
multiples of 2^-16, the result rounded down after adding one half (one half minus one unit for Cb and
Cr on encode), using floors with straight-through gradients. The products stay below 2^24, so float32
computes them exactly. With ``integer=False`` it is the same matrix on real numbers. The ``*_adjoint``
functions apply the transposed fixed-point matrices: the straight-through gradient of integer mode.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .dct import tf32_matmul
from .rounding import floor_ste_, sample_ste_

SCALE = 65536.0  # 2^16: libjpeg's SCALEBITS
CENTER = 128.0

#: constant sets: "jfif5" (five decimals: IJG libjpeg 6b-9, libjpeg-turbo, mozjpeg) and "jfif9" (nine
#: decimals, IJG libjpeg 9a and later); at 16 fraction bits they differ in Cb's R and G weights
#: (encode) and in Cb's G weight (decode)
COLOR_CONSTANTS = ("jfif5", "jfif9")

_RGB_TO_YCBCR = ((0.29900, 0.58700, 0.11400),
                 (-0.16874, -0.33126, 0.50000),
                 (0.50000, -0.41869, -0.08131))
# chroma (Cb - 128, Cr - 128) contributions to R, G, B; luma enters with weight 1
_CHROMA_TO_RGB = ((0.0, 1.40200),
                  (-0.34414, -0.71414),
                  (1.77200, 0.0))
_RGB_TO_YCBCR_9 = ((0.299, 0.587, 0.114),
                   (-0.168735892, -0.331264108, 0.5),
                   (0.5, -0.418687589, -0.081312411))
_CHROMA_TO_RGB_9 = ((0.0, 1.402),
                    (-0.344136286, -0.714136286),
                    (1.772, 0.0))


def _fixed(matrix) -> tuple[tuple[float, ...], ...]:
    """libjpeg's ``FIX(x) / 2^16``: the constant rounded to a multiple of 2^-16 (sign kept).

    Products with 8-bit samples and their sums have numerators below 2^24 over 2^16, so float32
    holds them exactly and ``floor`` of the result is libjpeg's right shift.
    """
    return tuple(tuple(int(abs(v) * SCALE + 0.5) / SCALE * (1 if v >= 0 else -1) for v in row) for row in matrix)


def _mix(matrix, x: Tensor, offset) -> Tensor:
    """``matrix @ pixel + offset`` at every pixel of ``(B, n, H, W)``."""
    work = torch.float64 if tf32_matmul(x) else x.dtype
    m = torch.tensor(matrix, dtype=work, device=x.device)
    b = torch.tensor(offset, dtype=work, device=x.device)[:, None]
    rows, cols = m.shape
    out = torch.baddbmm(b.expand(x.shape[0], rows, 1), m.expand(x.shape[0], rows, cols), x.flatten(2).to(work))
    return out.view(x.shape[0], rows, *x.shape[2:]).to(x.dtype)


def rgb_to_ycbcr(rgb: Tensor, integer: bool, constants: str = "jfif5") -> Tensor:
    """RGB in [0, 255] -> YCbCr in [0, 255] (chroma centred at 128); ``constants`` from :data:`COLOR_CONSTANTS`."""
    if not integer:
        return _mix(_RGB_TO_YCBCR, rgb, (0.0, CENTER, CENTER))
    offset = (0.5, CENTER + 0.5 - 1 / SCALE, CENTER + 0.5 - 1 / SCALE)
    return floor_ste_(_mix(_fixed(_RGB_TO_YCBCR_9 if constants == "jfif9" else _RGB_TO_YCBCR), rgb, offset))


def ycbcr_to_rgb(ycc: Tensor | tuple[Tensor, Tensor], integer: bool, constants: str = "jfif5",
                 centred: bool = False) -> Tensor:
    """YCbCr in [0, 255] -> RGB, clipped to [0, 255] (straight-through in integer mode).

    ``ycc`` is ``(B, 3, H, W)`` or the pair ``(luma (B, 1, H, W), chroma (B, 2, H, W))``; ``centred``:
    the chroma already has 128 subtracted.
    """
    luma, chroma = ycc.split((1, 2), dim=1) if isinstance(ycc, Tensor) else ycc
    chroma = chroma if centred else chroma - CENTER
    if integer:  # luma is an integer, so it can join the floor of the fixed-point chroma term
        table = _CHROMA_TO_RGB_9 if constants == "jfif9" else _CHROMA_TO_RGB
        return sample_ste_(_mix(_fixed(table), chroma, (0.5,) * 3).add_(luma))
    return (luma + _mix(_CHROMA_TO_RGB, chroma, (0.0,) * 3)).clamp(0.0, 255.0)


def _transposed(matrix) -> tuple[tuple[float, ...], ...]:
    return tuple(zip(*matrix))


def rgb_to_ycbcr_adjoint(grad: Tensor | tuple[Tensor, Tensor], constants: str = "jfif5") -> Tensor:
    """Adjoint of integer-mode :func:`rgb_to_ycbcr` (floors straight through): YCbCr gradient -> RGB gradient.

    ``grad`` is ``(B, 3, H, W)`` or the pair (luma, chroma); the result is built in one buffer, the
    chroma's share added in place.
    """
    table = _RGB_TO_YCBCR_9 if constants == "jfif9" else _RGB_TO_YCBCR
    luma, chroma = grad.split((1, 2), dim=1) if isinstance(grad, Tensor) else grad
    m = torch.tensor(_transposed(_fixed(table)), dtype=luma.dtype, device=luma.device)  # rows R, G, B
    out = m[:, 0].view(1, 3, 1, 1) * luma  # luma's share of R, G, B
    out.flatten(2).baddbmm_(m[:, 1:].expand(luma.shape[0], 3, 2), chroma.flatten(2))
    return out


def ycbcr_to_rgb_adjoint(grad: Tensor, constants: str = "jfif5") -> tuple[Tensor, Tensor]:
    """Adjoint of integer-mode :func:`ycbcr_to_rgb`: RGB gradient -> (luma, chroma) gradients."""
    table = _fixed(_CHROMA_TO_RGB_9 if constants == "jfif9" else _CHROMA_TO_RGB)
    luma_and_chroma = tuple((1.0,) + row for row in table)  # luma enters each of R, G, B with weight 1
    return _mix(_transposed(luma_and_chroma), grad, (0.0,) * 3).split((1, 2), dim=1)
