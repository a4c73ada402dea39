"""libjpeg's two fast 8x8 DCTs, both built on the Arai-Agui-Nakajima (AAN) butterfly.

* ``ifast`` (``jfdctfst.c`` / ``jidctfst.c``): integer arithmetic, constants with 8 fraction bits, every
  product truncated by a right shift (no rounding), 2 extra bits kept between the inverse passes.
* ``float`` (``jfdctflt.c`` / ``jidctflt.c``): IEEE single precision throughout.

Both leave the AAN scale factors in the coefficients, so quantisation divides by (and
dequantisation multiplies by) tables scaled with them (:func:`ifast_divisors`,
:func:`ifast_multipliers`, :func:`float_divisors`, :func:`float_multipliers`).

The functions work on planes ``(..., H, W)`` (H, W multiples of 8, plane layout as in :mod:`.dct`).
Integer variants take integer-valued tensors and return integer-valued float64; the float variants
compute in float32 one IEEE operation at a time, in libjpeg's order, so they reproduce its float code
wherever that code is compiled to plain single-precision operations (x86-64 SSE2 without FMA
contraction, as jpeglib's wheels are; not x87, not FMA-contracting builds, not libjpeg-turbo's SIMD
float kernels). Floors and truncations are straight-through (identity gradient).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .rounding import floor_ste, straight_through

IFAST_BITS = 8  # fraction bits of the ifast constants
IFAST_PASS1_BITS = 2
AAN_BITS = 14  # fraction bits of libjpeg's integer AAN scale table
IFAST_SCALE_BITS = 2  # fraction bits left in ifast's dequantisation multipliers


#: forward butterfly constants c4, c6, c2 - c6, c2 + c6, and inverse ones 2 c4, 2 c2, 2 (c2 - c6),
#: 2 (c2 + c6), with ck = cos(k pi / 16), to the nine decimals libjpeg's source uses (its c6 is
#: rounded up in the last digit); float32 and 8-bit fixed-point values are taken from these
FORWARD_CONSTANTS = (0.707106781, 0.382683433, 0.541196100, 1.306562965)
INVERSE_CONSTANTS = (1.414213562, 1.847759065, 1.082392200, 2.613125930)
#: AAN scale factor of frequency k: sqrt(2) cos(k pi / 16), 1 for k = 0 and 4 (nine decimals)
AAN_FACTORS = (1.0, 1.387039845, 1.306562965, 1.175875602, 1.0, 0.785694958, 0.541196100, 0.275899379)


def _fix(x: float, bits: int) -> int:
    return int(x * (1 << bits) + 0.5)


def _aan_table() -> Tensor:
    """``(8, 8)`` float64: ``f[row] f[col]`` (the 2-D AAN scale factors)."""
    f = torch.tensor(AAN_FACTORS, dtype=torch.float64)
    return f[:, None] * f[None, :]


_AAN = _aan_table()
#: libjpeg's integer AAN table (``aanscales``), ``round(2^14 f[row] f[col])``
_AAN_INT = torch.round(_AAN * (1 << AAN_BITS))


def _descale(x: Tensor, bits: int) -> Tensor:
    """libjpeg's rounding ``DESCALE(x, bits) = (x + 2^(bits-1)) >> bits`` (straight-through)."""
    return floor_ste((x + (1 << (bits - 1))) * (1.0 / (1 << bits)))


def ifast_divisors(tables: Tensor) -> Tensor:
    """Quantisation divisors of the ifast forward DCT: ``DESCALE(Q * aanscale, 11)`` (Q times 8, scaled)."""
    return _descale(tables * _AAN_INT.to(tables.device, tables.dtype), AAN_BITS - 3)


def ifast_multipliers(tables: Tensor) -> Tensor:
    """Dequantisation multipliers of the ifast inverse DCT: ``DESCALE(Q * aanscale, 12)``."""
    return _descale(tables * _AAN_INT.to(tables.device, tables.dtype), AAN_BITS - IFAST_SCALE_BITS)


def _scaled_double(tables: Tensor) -> Tensor:
    """``(Q * f[row]) * f[col]`` in double, in libjpeg's order of multiplication."""
    f = torch.tensor(AAN_FACTORS, dtype=torch.float64, device=tables.device)
    return tables.double() * f[:, None] * f[None, :]


def float_divisors(tables: Tensor) -> Tensor:
    """Reciprocal divisors of the float forward DCT, float32: ``1 / (Q f[row] f[col] 8)`` (computed in double)."""
    return (1.0 / (_scaled_double(tables) * 8.0)).float()


def float_multipliers(tables: Tensor) -> Tensor:
    """Dequantisation multipliers of the float inverse DCT, float32: ``Q f[row] f[col] / 8``.

    libjpeg stores ``Q f f`` as float and multiplies it by 0.125 (exact) when it dequantises.
    """
    return _scaled_double(tables).float() * 0.125


# ---------------------------------------------------------------------------------------------
# the butterflies, on 8 tensors (one per position along the transformed axis)

Multiply = Callable[[Tensor, int], Tensor]


def _forward(d: list[Tensor], mul: Multiply) -> list[Tensor]:
    """One forward AAN pass (libjpeg's order of operations); ``mul(v, i)`` multiplies by constant ``i``."""
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    out = [None] * 8
    out[0], out[4] = tmp10 + tmp11, tmp10 - tmp11
    z1 = mul(tmp12 + tmp13, 0)
    out[2], out[6] = tmp13 + z1, tmp13 - z1
    tmp10, tmp11, tmp12 = tmp4 + tmp5, tmp5 + tmp6, tmp6 + tmp7
    z5 = mul(tmp10 - tmp12, 1)
    z2 = mul(tmp10, 2) + z5
    z4 = mul(tmp12, 3) + z5
    z3 = mul(tmp11, 0)
    z11, z13 = tmp7 + z3, tmp7 - z3
    out[5], out[3] = z13 + z2, z13 - z2
    out[1], out[7] = z11 + z4, z11 - z4
    return out


def _inverse(w: list[Tensor], mul: Multiply, integer: bool) -> list[Tensor]:
    """One inverse AAN pass; ``integer`` selects the original (IJG 6b) form of the two sign-carrying
    products, ``MULTIPLY(z12, c) - z5`` and ``MULTIPLY(z10, -c) + z5``, which libjpeg-turbo's ifast
    keeps; IJG 9b+ and every float IDCT write ``z5 - z12 c`` and ``z5 - z10 c`` (identical in floating
    point, not with ifast's truncating products)."""
    tmp10, tmp11 = w[0] + w[4], w[0] - w[4]
    tmp13 = w[2] + w[6]
    tmp12 = mul(w[2] - w[6], 0) - tmp13
    tmp0, tmp3 = tmp10 + tmp13, tmp10 - tmp13
    tmp1, tmp2 = tmp11 + tmp12, tmp11 - tmp12
    z13, z10 = w[5] + w[3], w[5] - w[3]
    z11, z12 = w[1] + w[7], w[1] - w[7]
    tmp7 = z11 + z13
    tmp11 = mul(z11 - z13, 0)
    z5 = mul(z10 + z12, 1)
    if integer:  # ifast: MULTIPLY(z12, c) - z5 and MULTIPLY(z10, -c) + z5, then tmp10 + tmp5
        tmp10 = mul(z12, 2) - z5
        tmp12 = mul(z10, 4) + z5
    else:  # float: z5 - z12 c and z5 - z10 c, then tmp10 - tmp5
        tmp10 = z5 - mul(z12, 2)
        tmp12 = z5 - mul(z10, 3)
    tmp6 = tmp12 - tmp7
    tmp5 = tmp11 - tmp6
    tmp4 = tmp10 + tmp5 if integer else tmp10 - tmp5
    return [tmp0 + tmp7, tmp1 + tmp6, tmp2 + tmp5, tmp3 - tmp4 if integer else tmp3 + tmp4,
            tmp3 + tmp4 if integer else tmp3 - tmp4, tmp2 - tmp5, tmp1 - tmp6, tmp0 - tmp7]


def _integer_mul(constants: tuple[float, ...]) -> Multiply:
    fixed = [_fix(c, IFAST_BITS) for c in constants]
    fixed.append(-fixed[3])  # index 4: the negated constant ifast's inverse multiplies by

    def mul(v: Tensor, i: int) -> Tensor:  # MULTIPLY: (v * K) >> 8, truncating
        return floor_ste(v * (fixed[i] / (1 << IFAST_BITS)))

    return mul


def _float_mul(constants: tuple[float, ...]) -> Multiply:
    values = [torch.tensor(c, dtype=torch.float32) for c in constants]

    def mul(v: Tensor, i: int) -> Tensor:
        return v * values[i].to(v.device)

    return mul


def _blocks(x: Tensor) -> Tensor:
    *lead, h, w = x.shape
    return x.reshape(*lead, h // 8, 8, w // 8, 8)


def _apply(x: Tensor, dim: int, butterfly: Callable[[list[Tensor]], list[Tensor]]) -> Tensor:
    """Run ``butterfly`` along block axis ``dim`` (-1: within rows, -3: within columns) of blocked ``x``."""
    return torch.stack(butterfly(list(x.unbind(dim))), dim)


# ---------------------------------------------------------------------------------------------
# the four transforms


def ifast_fdct(samples: Tensor) -> Tensor:
    """libjpeg's ifast forward DCT of integer samples ``(..., H, W)`` in [0, 255] (level shift included).

    Returns the raw coefficients (AAN-scaled, times 8), float64, to be divided by :func:`ifast_divisors`.
    """
    mul = _integer_mul(FORWARD_CONSTANTS)
    x = _blocks(samples.double() - 128.0)
    x = _apply(x, -1, lambda d: _forward(d, mul))  # rows
    x = _apply(x, -3, lambda d: _forward(d, mul))  # columns
    return x.reshape(samples.shape)


def float_fdct(samples: Tensor) -> Tensor:
    """libjpeg's float forward DCT of integer samples ``(..., H, W)`` (level shift included), float32.

    Returns raw coefficients, to be multiplied by :func:`float_divisors` and rounded with
    :func:`float_quantize_value`.
    """
    mul = _float_mul(FORWARD_CONSTANTS)
    x = _blocks(samples.float() - 128.0)
    x = _apply(x, -1, lambda d: _forward(d, mul))
    x = _apply(x, -3, lambda d: _forward(d, mul))
    return x.reshape(samples.shape)


def float_quantize_value(scaled: Tensor) -> Tensor:
    """The value libjpeg's float quantiser rounds: ``(int)(x + 16384.5) - 16384`` in float32.

    The float32 addition itself rounds, so this returns ``fl(x + 16384.5) - 16384.5`` (exact),
    nudged by 1/4 where it is a negative half, so that rounding half away from zero (the codec's
    rounding) gives libjpeg's ``floor(. + 1/2)``. Straight-through: the gradient is the identity.
    """
    with torch.no_grad():
        v = (scaled.float() + 16384.5) - 16384.5
        negative_half = (v < 0) & (v - torch.floor(v) == 0.5)
        v = torch.where(negative_half, v + 0.25, v)
    return straight_through(scaled, v.to(scaled.dtype))


def _range_limit(x: Tensor, low: int) -> Tensor:
    """libjpeg's ``range_limit[x & 1023]``: wrap to ``[low, low + 1024)``, then clamp to [0, 255]."""
    with torch.no_grad():
        wrapped = torch.remainder(x - low, 1024.0) + low
    return straight_through(x, wrapped.clamp(0.0, 255.0)) if x.requires_grad else wrapped.clamp(0.0, 255.0)


def ifast_idct(dequantized: Tensor, ijg9b: bool = False) -> Tensor:
    """libjpeg's ifast inverse DCT of ``coefficient * ifast_multipliers`` (integer-valued), ``(..., H, W)``.

    ``ijg9b``: IJG libjpeg 9b and later's version (products subtracted, not added negated, and the
    final shift rounded instead of truncated). Returns 8-bit samples 0..255 (level shift and range
    limit included), float64.
    """
    mul = _integer_mul(INVERSE_CONSTANTS)
    x = _blocks(dequantized.double())
    x = _apply(x, -3, lambda w: _inverse(w, mul, not ijg9b))  # columns
    if ijg9b:  # rounding "fudge factor" folded into the DC of each row
        rows = list(x.unbind(-1))
        rows[0] = rows[0] + float(1 << (IFAST_PASS1_BITS + 2))
        x = torch.stack(rows, -1)
    x = _apply(x, -1, lambda w: _inverse(w, mul, not ijg9b))  # rows
    x = floor_ste(x * (1.0 / (1 << (IFAST_PASS1_BITS + 3)))) + 128.0
    return _range_limit(x, -384).reshape(dequantized.shape)


#: the float IDCT's final stage in each libjpeg generation: value added to the DC before the
#: row pass (``None``: none, the result is truncated at 8x scale and descaled by 3 bits instead)
FLOAT_CENTERS = {"float-6b": None, "float": 128.5, "float-9b": 512.5}


def _trunc(x: Tensor) -> Tensor:
    with torch.no_grad():
        truncated = torch.trunc(x)
    return straight_through(x, truncated) if x.requires_grad else truncated


def float_idct(dequantized: Tensor, variant: str = "float") -> Tensor:
    """libjpeg's float inverse DCT of ``coefficient * float_multipliers`` (float32), ``(..., H, W)``.

    ``variant`` (:data:`FLOAT_CENTERS`): "float" (IJG 8a-9a, libjpeg-turbo 1.4+, mozjpeg 2+) adds
    128.5 to the DC before the row pass and truncates; "float-9b" (IJG 9b+) adds 512.5 (its larger
    range-limit centre) and truncates; "float-6b" (IJG 6b-8, libjpeg-turbo < 1.4, mozjpeg 1) works at 8x scale (the same
    float values times 8, exactly), truncates, then rounds off 3 bits and adds 128. Returns 8-bit
    samples 0..255 as float32, range limit included.
    """
    mul = _float_mul(INVERSE_CONSTANTS)
    center = FLOAT_CENTERS[variant]
    x = _blocks(dequantized.float())
    x = _apply(x, -3, lambda w: _inverse(w, mul, False))
    rows = list(x.unbind(-1))
    if center is not None:
        rows[0] = rows[0] + torch.tensor(center, dtype=torch.float32, device=x.device)
    x = torch.stack(_inverse(rows, mul, False), -1)
    if center is None:
        x = floor_ste((_trunc(x * 8.0) + 4.0) * 0.125) + 128.0
    else:
        x = _trunc(x) - (center - 128.5)
    return _range_limit(x, -384).reshape(dequantized.shape)
