"""Differentiable decoding of the coefficients of a real JPEG file.

:func:`decode` runs the codec's own decode stages (:func:`~diffjpeg.jpeg.codec.decode_coefficients`:
libjpeg's islow inverse DCT and fancy upsampling, modelled with straight-through 8-bit storage) on
the quantised coefficients and tables that :func:`~diffjpeg.jpeg.io.read_coefficients` read from a
file, so a loss on the decoded pixels has a gradient with respect to the coefficients and tables.
The result is within about one gray level of libjpeg-turbo's own decode;
:func:`~diffjpeg.jpeg.exact.exact_decode` is the bit-exact, non-differentiable one.

Example::

    >>> jc = read_coefficients("photo.jpg")
    >>> pixels = decode(jc)            # (1, C, H, W) float32 in [0, 1]
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .codec import decode_coefficients

if TYPE_CHECKING:
    from .io import JPEGCoefficients
    from .presets import CodecOptions

__all__ = ["decode"]


def decode(jc: "JPEGCoefficients", dtype: torch.dtype = torch.float32, device=None,
           preset: "str | CodecOptions" = "pillow") -> Tensor:
    """Decode a file's coefficients with the differentiable decoder.

    Args:
        jc: a :class:`~diffjpeg.jpeg.io.JPEGCoefficients` with 4:4:4, 4:2:2 or 4:2:0 sampling and
            one chroma table (see :meth:`~diffjpeg.jpeg.io.JPEGCoefficients.to_batch`).
        dtype: floating dtype of the computation and the result; device: where it runs.
        preset: the decoder to reproduce (:mod:`diffjpeg.jpeg.presets`: inverse DCT, upsampling), e.g.
            "libjpeg9" for a file as IJG libjpeg 9 decodes it; default "pillow" (libjpeg-turbo).

    Returns:
        ``(1, C, H, W)`` in [0, 1], ``dtype`` on ``device``.
    """
    coefs, tables = jc.to_batch(dtype, device)
    return decode_coefficients(coefs, tables, jc.subsampling, (jc.height, jc.width), preset=preset)
