"""Quantisation tables: the IJG base tables and libjpeg's quality scaling.

All tables are in natural (row-major) order, never zigzag. A batch of tables has shape
``(B, 2, 8, 8)``: index 0 is luma, index 1 is chroma (also used for Cr, as libjpeg does).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rounding import floor_ste

#: Table K.1 of the JPEG standard (ITU-T T.81), luminance, natural order.
IJG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
#: Table K.2 of the JPEG standard, chrominance, natural order.
IJG_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4


#: base tables that quality scales: "annex-k" (every libjpeg up to IJG 9d, libjpeg-turbo, Pillow) or
#: "libjpeg9e" (IJG libjpeg 9e and 9f, whose chroma table starts with 16 instead of 17)
BASE_TABLES = ("annex-k", "libjpeg9e")


def base_tables(device=None, dtype=torch.float32, base: str = "annex-k") -> Tensor:
    """The two base tables as a ``(2, 8, 8)`` tensor (luma, chroma); ``base`` one of :data:`BASE_TABLES`."""
    tables = torch.tensor((IJG_LUMA, IJG_CHROMA), device=device, dtype=dtype)
    if base == "libjpeg9e":
        tables[1, 0, 0] = 16
    return tables


def quality_scale(q: Tensor) -> Tensor:
    """libjpeg's ``jpeg_quality_scaling``: ``5000 // q`` below 50, ``200 - 2 q`` from 50 on.

    ``q`` is a float tensor in [1, 100]. The integer division is a floor with a straight-through
    gradient, so the scale is differentiable in ``q`` (derivative of ``5000 / q`` resp. ``-2``) and
    equals libjpeg's integer result for integer ``q``.
    """
    return torch.where(q < 50, floor_ste(5000.0 / q), 200.0 - 2.0 * q)


def quality_tables(q: Tensor, base: str = "annex-k") -> Tensor:
    """Tables libjpeg (and Pillow) use for quality ``q``.

    Args:
        q: float tensor ``(B,)`` of qualities in [1, 100].
        base: the base tables scaled (:data:`BASE_TABLES`).

    Returns:
        ``(B, 2, 8, 8)`` tables, ``floor((base * scale + 50) / 100)`` clipped to [1, 255]
        (``force_baseline``, as Pillow sets it). The floor is straight-through, so the tables are
        differentiable in ``q``; the clip passes no gradient where it is active.
    """
    scale = quality_scale(q)[:, None, None, None]
    tables = base_tables(q.device, q.dtype, base)
    return floor_ste((tables * scale + 50.0) / 100.0).clamp(1.0, 255.0)
