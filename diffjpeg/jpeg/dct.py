"""The orthonormal 8x8 type-II DCT of JPEG, applied block-wise in place.

JPEG's DCT (ITU-T T.81, A.3.3) is the orthonormal 2-D DCT-II, so coefficients here equal libjpeg's
islow output divided by its built-in factor 8, up to its fixed-point error.

The transforms work on planes ``(..., H, W)`` with H, W multiples of 8 and leave every coefficient
where its sample was ("plane layout": coefficient (u, v) of block (i, j) sits at
``[8 i + u, 8 j + v]``). Two small matrix products (rows, then columns) need no transposed copies,
which makes them faster than gathering blocks; a single ``(..., 8, 8)`` block is the special case
H = W = 8.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

#: orthonormal DC coefficient of a block of constant 1: the level shift by 128 is 1024 on the DC
DC_GAIN = 8.0


@lru_cache(maxsize=None)
def dct_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The orthonormal 8-point DCT-II matrix (rows are frequencies)."""
    k = torch.arange(8, dtype=torch.float64)
    basis = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    basis[0] /= math.sqrt(2)
    return basis.to(device=device, dtype=dtype)


def _separable(x: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``left @ block @ right`` for every 8x8 block of ``x`` (..., H, W)."""
    *lead, h, w = x.shape
    rows = left @ x.reshape(-1, h // 8, 8, w)
    return (rows.reshape(-1, h // 8, 8, w // 8, 8) @ right).reshape(*lead, h, w)


def dct_8x8(x: Tensor) -> Tensor:
    """Forward DCT of every 8x8 block of ``x`` ``(..., H, W)`` (samples level-shifted by -128)."""
    d = dct_matrix(x.device, x.dtype)
    return _separable(x, d, d.T)


def idct_8x8(coefficients: Tensor) -> Tensor:
    """Inverse DCT of every 8x8 block of ``coefficients`` ``(..., H, W)`` in plane layout."""
    d = dct_matrix(coefficients.device, coefficients.dtype)
    return _separable(coefficients, d.T, d)
