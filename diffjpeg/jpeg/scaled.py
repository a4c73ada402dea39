"""DCT-domain chroma scaling of IJG libjpeg 7 and later (its default for subsampled chroma).

libjpeg 7+ does not average chroma before its DCT, nor interpolate it after the inverse DCT, when
the sampling ratio is 2: the encoder (``do_fancy_downsampling``) runs a 16x16 (4:2:0) or 16x8 (4:2:2,
16 wide, 8 high) forward DCT on full-resolution chroma and keeps its 8x8 lowest frequencies; the
decoder (``do_fancy_upsampling``) runs a 16x16 / 16x8 inverse DCT on the 8x8 coefficients and gets
full-resolution chroma directly (``jfdctint.c`` ``jpeg_fdct_16x16`` / ``16x8``, ``jidctint.c``
``jpeg_idct_16x16`` / ``16x8``).

Like the 8-point islow DCT (:mod:`.dct`), each 1-D pass of these transforms is an integer matrix
product followed by one rounding right shift per output, so a pass is one matrix product and one
floor here. The 16-point matrices are built by running libjpeg's butterflies once on unit vectors
(13-bit constants); the 8-point passes of the 16x8 transforms are the islow ones.

Planes are ``(B, n, H, W)``: full-resolution chroma on the encode side (H, W multiples of the
block), coefficients in plane layout (``(H / fv, W / fh)``) on the decode side.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .chroma import FACTORS
from .dct import CONST_BITS, DC_GAIN, PASS1_BITS, _fix, _units, islow_matrices
from .rounding import floor_ste


def _k(x: float) -> int:
    return _fix(x, CONST_BITS)


def forward16_matrix() -> list:
    """Integer 8x16 matrix of one 16-point forward pass (rows: the 8 lowest frequencies), before its shift."""
    e = _units(16)
    s = [e[i] + e[15 - i] for i in range(8)]
    t = [e[i] - e[15 - i] for i in range(8)]
    s10, s14 = s[0] + s[7], s[0] - s[7]
    s11, s15 = s[1] + s[6], s[1] - s[6]
    s12, s16 = s[2] + s[5], s[2] - s[5]
    s13, s17 = s[3] + s[4], s[3] - s[4]
    rows = [None] * 8
    rows[0] = (s10 + s11 + s12 + s13) * (1 << CONST_BITS)
    rows[4] = (s10 - s13) * _k(1.306562965) + (s11 - s12) * _k(0.541196100)
    a = (s17 - s15) * _k(0.275899379) + (s14 - s16) * _k(1.387039845)
    rows[2] = a + s15 * _k(1.451774982) + s16 * _k(2.172734804)
    rows[6] = a - s14 * _k(0.211164243) - s17 * _k(1.061594338)
    u11 = (t[0] + t[1]) * _k(1.353318001) + (t[6] - t[7]) * _k(0.410524528)
    u12 = (t[0] + t[2]) * _k(1.247225013) + (t[5] + t[7]) * _k(0.666655658)
    u13 = (t[0] + t[3]) * _k(1.093201867) + (t[4] - t[7]) * _k(0.897167586)
    u14 = (t[1] + t[2]) * _k(0.138617169) + (t[6] - t[5]) * _k(1.407403738)
    u15 = (t[1] + t[3]) * -_k(0.666655658) + (t[4] + t[6]) * -_k(1.247225013)
    u16 = (t[2] + t[3]) * -_k(1.353318001) + (t[5] - t[4]) * _k(0.410524528)
    rows[1] = u11 + u12 + u13 - t[0] * _k(2.286341144) + t[7] * _k(0.779653625)
    rows[3] = u11 + u14 + u15 + t[1] * _k(0.071888074) - t[6] * _k(1.663905119)
    rows[5] = u12 + u14 + u16 - t[2] * _k(1.125726048) + t[5] * _k(1.227391138)
    rows[7] = u13 + u15 + u16 + t[3] * _k(1.065388962) + t[4] * _k(2.167985692)
    return [r.v for r in rows]


def inverse16_matrix() -> list:
    """Integer 16x8 matrix of one 16-point inverse pass (rows: the 16 outputs), before its shift."""
    c = _units(8)
    dc = c[0] * (1 << CONST_BITS)
    e1, e2 = c[4] * _k(1.306562965), c[4] * _k(0.541196100)
    t10, t11, t12, t13 = dc + e1, dc - e1, dc + e2, dc - e2
    d = c[2] - c[6]
    d4, d3 = d * _k(0.275899379), d * _k(1.387039845)
    t0 = d3 + c[6] * _k(2.562915447)
    t1 = d4 + c[2] * _k(0.899976223)
    t2 = d3 - c[2] * _k(0.601344887)
    t3 = d4 - c[6] * _k(0.509795579)
    even = [t10 + t0, t12 + t1, t13 + t2, t11 + t3, t11 - t3, t13 - t2, t12 - t1, t10 - t0]
    z1, z2, z3, z4 = c[1], c[3], c[5], c[7]
    s = z1 + z3
    o1 = (z1 + z2) * _k(1.353318001)
    o2 = s * _k(1.247225013)
    o3 = (z1 + z4) * _k(1.093201867)
    o10 = (z1 - z4) * _k(0.897167586)
    o11 = s * _k(0.666655658)
    o12 = (z1 - z2) * _k(0.410524528)
    o0 = o1 + o2 + o3 - z1 * _k(2.286341144)
    o13 = o10 + o11 + o12 - z1 * _k(1.835730603)
    w = (z2 + z3) * _k(0.138617169)
    o1 = o1 + w + z2 * _k(0.071888074)
    o2 = o2 + w - z3 * _k(1.125726048)
    w = (z3 - z2) * _k(1.407403738)
    o11 = o11 + w - z3 * _k(0.766367282)
    o12 = o12 + w + z2 * _k(1.971951411)
    z24 = z2 + z4
    w = z24 * -_k(0.666655658)
    o1 = o1 + w
    o3 = o3 + w + z4 * _k(1.065388962)
    w = z24 * -_k(1.247225013)
    o10 = o10 + w + z4 * _k(3.141271809)
    o12 = o12 + w
    w = (z3 + z4) * -_k(1.353318001)
    o2, o3 = o2 + w, o3 + w
    w = (z4 - z3) * _k(0.410524528)
    o10, o11 = o10 + w, o11 + w
    odd = [o0, o1, o2, o3, o10, o11, o12, o13]
    rows = [None] * 16
    for i in range(8):
        rows[i] = (even[i] + odd[i]).v
        rows[15 - i] = (even[i] - odd[i]).v
    return rows


_FORWARD16 = torch.tensor(forward16_matrix(), dtype=torch.float64)
_INVERSE16 = torch.tensor(inverse16_matrix(), dtype=torch.float64)


def _pass(x: Tensor, m: Tensor, dim: int, shift: int, floor: Callable[[Tensor], Tensor]) -> Tensor:
    """``floor((m @ run + 2^(shift-1)) / 2^shift)`` for every run of ``m.shape[1]`` samples along ``dim``
    (-1: rows, -2: columns) of ``(..., H, W)``; ``floor`` is the identity in smooth mode."""
    n_out, n_in = m.shape
    m = m.to(x.device) * (1.0 / (1 << shift))
    bias = 0.5 if floor is not _identity else 0.0
    if dim == -1:
        *lead, h, w = x.shape
        out = x.reshape(*lead, h, w // n_in, n_in) @ m.T
        return floor(out + bias).reshape(*lead, h, w // n_in * n_out)
    *lead, h, w = x.shape
    out = m @ x.reshape(*lead, h // n_in, n_in, w)
    return floor(out + bias).reshape(*lead, h // n_in * n_out, w)


def _identity(x: Tensor) -> Tensor:
    return x


def scaled_fdct(chroma: Tensor, subsampling: str, integer: bool) -> Tensor:
    """Full-resolution chroma ``(B, n, H, W)`` in [0, 255] -> coefficients ``(B, n, H / fv, W / fh)``.

    ``H``, ``W`` multiples of ``8 fv`` / ``8 fh``. Orthonormal units of the 8x8 grid (libjpeg's
    output over 8), level shift included, as :func:`~.dct.islow_dct_8x8` returns them.
    """
    fv, _ = FACTORS[subsampling]
    floor = floor_ste if integer else _identity
    forward8, _ = islow_matrices(chroma.device)
    x = chroma.double() - 128.0
    x = _pass(x, _FORWARD16, -1, CONST_BITS - PASS1_BITS, floor)  # rows: 16 -> 8
    if fv == 2:
        x = _pass(x, _FORWARD16, -2, CONST_BITS + PASS1_BITS + 2, floor)  # columns: 16 -> 8
    else:
        x = _pass(x, forward8, -2, CONST_BITS + PASS1_BITS + 1, floor)  # columns: 8 -> 8
    return (x * (1.0 / DC_GAIN)).to(chroma.dtype)


def scaled_idct(coefficients: Tensor, subsampling: str, integer: bool) -> Tensor:
    """Dequantised chroma coefficients ``(B, n, h, w)`` (plane layout) -> samples ``(B, n, fv h, fh w)``.

    Level shift included; integer mode returns libjpeg's samples before its range limit.
    """
    fv, _ = FACTORS[subsampling]
    floor = floor_ste if integer else _identity
    _, inverse8 = islow_matrices(coefficients.device)
    x = coefficients.double()
    x = _pass(x, _INVERSE16 if fv == 2 else inverse8, -2, CONST_BITS - PASS1_BITS, floor)  # columns
    x = _pass(x, _INVERSE16, -1, CONST_BITS + PASS1_BITS + 3, floor)  # rows: 8 -> 16
    return (x + 128.0).to(coefficients.dtype)
