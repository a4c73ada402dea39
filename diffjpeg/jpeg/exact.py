"""Bit-exact emulation of libjpeg-turbo's baseline JPEG round trip, as tensor operations.

This module reproduces, integer for integer, what Pillow does when it saves an 8-bit image as a
baseline JPEG and reads it back (libjpeg-turbo 3.2.0, ``islow`` integer DCT in both directions,
default "fancy" chroma upsampling, no smoothing). It is written as batched torch operations (no
loops over pixels or blocks), so it runs on CPU and CUDA alike and on a whole batch at once.

Stages and the libjpeg-turbo behaviour each one follows:

* colour conversion: RGB -> YCbCr with 16-bit fixed-point weights, ``+1/2`` rounding for Y and
  ``+1/2 - 1`` rounding (plus the 128 offset) for Cb/Cr; grayscale input is used as Y directly;
* padding: the right edge is extended by repeating the last column and the bottom edge by repeating
  the last row, as far as the component's block grid needs (for subsampled chroma the full-resolution
  rows are first evened out, then the *downsampled* last row is repeated);
* downsampling: 2x2 (4:2:0) or 2x1 (4:2:2) box averages whose rounding offset alternates along a
  row (1, 2, 1, 2, ... resp. 0, 1, 0, 1, ...);
* forward DCT: the two passes of ``jfdctint`` (13 fraction bits, 2 extra bits between passes), each
  written as an exact integer 8x8 matrix product followed by a rounding right shift;
* quantisation: division by ``8 * Q`` through libjpeg-turbo's reciprocal multiply
  (``(|x| + correction) * reciprocal >> shift``, sign restored afterwards);
* inverse DCT: dequantisation and the two passes of ``jidctint`` with their rounding shifts, then
  the 128 level shift and the limit to 0..255;
* upsampling: libjpeg's triangle ("fancy") filter with its alternating rounding offsets, rows above
  the top / below the bottom taken as copies of the edge row; plain pixel replication instead when
  the downsampled width is at most 2 (as libjpeg does);
* colour conversion back: YCbCr -> RGB with 16-bit fixed-point weights, limited to 0..255.

The matrix products run in float64, which is exact here: every value involved is an integer far
below 2**53, and division by a power of two is exact in binary floating point, so ``floor`` after
it is the integer right shift. Elementwise pixel work runs in float32, exact for integers below
2**24 (every intermediate here stays below that).

Everything is a pure function of its inputs. Shapes: ``B`` images, ``C`` in {1, 3} channels,
``H x W`` pixels, any ``H, W >= 1``. Q-tables are ``(B, 2, 8, 8)`` (luma, chroma), natural
(row-major) order, integer entries 1..255. Coefficient blocks are natural order too: block
``[u, v]`` holds vertical frequency ``u`` and horizontal frequency ``v``, like ``jpeglib``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["exact_encode", "exact_decode", "exact_jpeg", "sampling_factors"]

_CONST_BITS = 13  # fraction bits of the DCT constants
_PASS1_BITS = 2  # extra precision kept between the two DCT passes
_SCALEBITS = 16  # fraction bits of the colour-conversion constants


def _fix(x: float, bits: int) -> int:
    """``x`` as a fixed-point integer with ``bits`` fraction bits, rounded half up."""
    return int(x * (1 << bits) + 0.5)


# --------------------------------------------------------------------------------------------
# The islow DCT pair as integer matrices.
#
# Each 1-D pass of libjpeg's LL&M butterfly is linear in its 8 inputs until the final rounding
# shift. Running the butterfly once on unit vectors gives the integer matrix of that linear map;
# a pass is then "matrix product, add half, shift right". Outputs that libjpeg computes without a
# multiplier (the 0 and 4 terms of the forward DCT) get the weight 2**13, which with the common
# shift reproduces libjpeg's left shift (pass 1) and its DESCALE by 2 (pass 2) exactly.
# --------------------------------------------------------------------------------------------
_K = {name: _fix(val, _CONST_BITS) for name, val in {
    "c0298": 0.298631336, "c0390": 0.390180644, "c0541": 0.541196100, "c0765": 0.765366865,
    "c0899": 0.899976223, "c1175": 1.175875602, "c1501": 1.501321110, "c1847": 1.847759065,
    "c1961": 1.961570560, "c2053": 2.053119869, "c2562": 2.562915447, "c3072": 3.072711026,
}.items()}


class _Vec:
    """Tiny integer vector with + - and scalar * (used only to build the DCT matrices)."""

    def __init__(self, v):
        self.v = list(v)

    def __add__(self, o):
        return _Vec(a + b for a, b in zip(self.v, o.v))

    def __sub__(self, o):
        return _Vec(a - b for a, b in zip(self.v, o.v))

    def __mul__(self, k):
        return _Vec(a * k for a in self.v)


def _units(n: int) -> list:
    return [_Vec([int(i == j) for j in range(n)]) for i in range(n)]


def _odd_rotation(a, b, c, d, ac=None, bd=None) -> list:
    """Odd-part network shared by the forward and inverse islow DCT: four linear forms.

    ``a..d`` are the odd inputs in the order the network pairs them; the outputs come in the same
    order. ``ac``/``bd`` (the sums ``a + c``, ``b + d``) may be given separately, which the SIMD
    inverse needs because it forms those two sums in 16-bit arithmetic.
    """
    ac = a + c if ac is None else ac
    bd = b + d if bd is None else bd
    ad, bc = a + d, b + c
    common = (ac + bd) * _K["c1175"]
    return [
        a * _K["c0298"] - ad * _K["c0899"] - ac * _K["c1961"] + common,
        b * _K["c2053"] - bc * _K["c2562"] - bd * _K["c0390"] + common,
        c * _K["c3072"] - bc * _K["c2562"] - ac * _K["c1961"] + common,
        d * _K["c1501"] - ad * _K["c0899"] - bd * _K["c0390"] + common,
    ]


def _forward_matrix() -> list:
    """Integer 8x8 matrix (rows = frequencies) of one forward islow pass before its shift."""
    d = _units(8)
    s = [d[i] + d[7 - i] for i in range(4)]  # sums of mirrored samples
    t = [d[i] - d[7 - i] for i in range(4)]  # differences of mirrored samples
    hi, lo = s[0] + s[3], s[1] + s[2]
    sin_side, cos_side = s[1] - s[2], s[0] - s[3]
    one = 1 << _CONST_BITS
    rows = [None] * 8
    rows[0] = ((hi + lo) * one).v
    rows[4] = ((hi - lo) * one).v
    rot = (sin_side + cos_side) * _K["c0541"]
    rows[2] = (rot + cos_side * _K["c0765"]).v
    rows[6] = (rot - sin_side * _K["c1847"]).v
    odd = _odd_rotation(t[3], t[2], t[1], t[0])
    rows[7], rows[5], rows[3], rows[1] = (o.v for o in odd)
    return rows


# Inputs of one inverse pass as libjpeg-turbo's AVX2 code sees them: 16-bit sums and
# differences it forms before widening, followed by the plain inputs.
_IDCT_FEATURES = ("0+4", "0-4", "2", "6", "7", "5", "3", "1", "7+3", "5+1")


def _inverse_feature_matrix() -> list:
    """Integer 8x10 matrix (rows = samples) of one inverse islow pass, on ``_IDCT_FEATURES``."""
    f = dict(zip(_IDCT_FEATURES, _units(len(_IDCT_FEATURES))))
    one = 1 << _CONST_BITS
    rot = (f["2"] + f["6"]) * _K["c0541"]
    cos_side = rot + f["2"] * _K["c0765"]
    sin_side = rot - f["6"] * _K["c1847"]
    dc_sum, dc_dif = f["0+4"] * one, f["0-4"] * one
    even = [dc_sum + cos_side, dc_dif + sin_side, dc_dif - sin_side, dc_sum - cos_side]
    odd = _odd_rotation(f["7"], f["5"], f["3"], f["1"], ac=f["7+3"], bd=f["5+1"])
    rows = [None] * 8
    for i in range(4):  # sample i pairs with odd output 3 - i
        rows[i] = (even[i] + odd[3 - i]).v
        rows[7 - i] = (even[i] - odd[3 - i]).v
    return rows


def _feature_map() -> list:
    """Integer 10x8 matrix taking the 8 inputs of a pass to ``_IDCT_FEATURES`` (no wrapping)."""
    rows = []
    for name in _IDCT_FEATURES:
        v = [0] * 8
        for part, sign in zip(name.replace("-", "+").split("+"), (1, -1 if "-" in name else 1)):
            v[int(part)] += sign
        rows.append(v)
    return rows


_FDCT = torch.tensor(_forward_matrix(), dtype=torch.float64)  # (8 freq, 8 samples)
_IDCT10 = torch.tensor(_inverse_feature_matrix(), dtype=torch.float64)  # (8 samples, 10)
_IDCT = _IDCT10 @ torch.tensor(_feature_map(), dtype=torch.float64)  # (8 samples, 8 freq)
_MATS: dict = {}


def _mats(device) -> dict:
    """The DCT matrices (float64) on ``device``, cached.

    ``fwd1``/``fwd2``/``inv1``/``inv2`` are the pass matrices pre-multiplied by their pass's
    ``2**-shift`` (exact: a power of two), so a pass is ``floor(matrix product + 1/2)``;
    ``fwd1_bias`` also folds in the -128 level shift of the samples; ``inv10`` is the inverse on
    ``_IDCT_FEATURES``, unscaled.
    """
    key = str(device)
    if key not in _MATS:
        s1 = 2.0 ** -(_CONST_BITS - _PASS1_BITS)
        fwd1 = _FDCT * s1
        _MATS[key] = {k: v.to(device) for k, v in {
            "fwd1": fwd1, "fwd1_bias": 0.5 - 128.0 * fwd1.sum(1),
            "fwd2": _FDCT * 2.0 ** -(_CONST_BITS + _PASS1_BITS),
            "inv1": _IDCT * s1, "inv2": _IDCT * 2.0 ** -(_CONST_BITS + _PASS1_BITS + 3),
            "inv10": _IDCT10}.items()}
    return _MATS[key]


def _left(m: Tensor, x: Tensor) -> Tensor:
    """``m @ x`` for a small matrix ``m`` and a 4-D ``x`` (one batched matmul, no broadcasting)."""
    B, n, k, w = x.shape
    return torch.bmm(m.expand(B * n, m.shape[0], k), x.reshape(B * n, k, w)).view(B, n, -1, w)


def _wrap_(x: Tensor, bits: int) -> Tensor:
    """In place: two's-complement wrap of integer-valued floats to ``bits`` bits."""
    m = float(1 << bits)
    return x.add_(m / 2).remainder_(m).sub_(m / 2)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def sampling_factors(subsampling: str, channels: int) -> list[tuple[int, int]]:
    """``(h, v)`` sampling factors per component, as Pillow asks libjpeg for them.

    ``"444"``: all (1, 1); ``"422"``: luma (2, 1); ``"420"``: luma (2, 2); chroma is always (1, 1).
    A single (grayscale) component is always (1, 1).
    """
    if channels == 1:
        return [(1, 1)]
    luma = {"444": (1, 1), "422": (2, 1), "420": (2, 2)}[subsampling]
    return [luma, (1, 1), (1, 1)]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _component_geometry(height: int, width: int, factors: list[tuple[int, int]]) -> list[tuple]:
    """Per component ``(comp_h, comp_w, blocks_h, blocks_w, h_factor, v_factor)``.

    ``comp_h x comp_w`` is libjpeg's downsampled size, ``blocks_h x blocks_w`` its
    ``height_in_blocks x width_in_blocks``; the factors are max/own sampling ratios.
    """
    hmax = max(f[0] for f in factors)
    vmax = max(f[1] for f in factors)
    out = []
    for h, v in factors:
        ch = _ceil_div(height * v, vmax)
        cw = _ceil_div(width * h, hmax)
        out.append((ch, cw, _ceil_div(ch, 8), _ceil_div(cw, 8), hmax // h, vmax // v))
    return out


def _pad_replicate(x: Tensor, rows: int, cols: int) -> Tensor:
    """Extend ``(B, h, w)`` to ``(B, rows, cols)`` by repeating the last row / column."""
    h, w = x.shape[-2:]
    if rows == h and cols == w:
        return x
    return F.pad(x.unsqueeze(1), (0, cols - w, 0, rows - h), mode="replicate").squeeze(1)


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------
def _rgb_to_ycc(x: Tensor) -> list[Tensor]:
    """libjpeg's RGB -> YCbCr of ``(B, 3, H, W)`` integers 0..255 into float32 planes (exact)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    f = lambda v: float(_fix(v, _SCALEBITS))  # noqa: E731
    half = float(1 << (_SCALEBITS - 1))
    scale = 1.0 / (1 << _SCALEBITS)
    offset = float(128 << _SCALEBITS) + half - 1.0  # Cb/Cr: +128, rounded with a bias of 1/2 - 1
    y = torch.mul(r, f(0.29900)).add_(g, alpha=f(0.58700)).add_(b, alpha=f(0.11400))
    cb = torch.mul(b, f(0.50000)).add_(offset).sub_(r, alpha=f(0.16874)).sub_(g, alpha=f(0.33126))
    cr = torch.mul(r, f(0.50000)).add_(offset).sub_(g, alpha=f(0.41869)).sub_(b, alpha=f(0.08131))
    y.add_(half)
    return [t.mul_(scale).floor_() for t in (y, cb, cr)]


def _downsample(x: Tensor, geo: tuple) -> Tensor:
    """Pad and box-downsample one full-resolution float32 plane ``(B, H, W)``.

    Returns the component's whole block grid, ``(B, 8 * blocks_h, 8 * blocks_w)``.
    """
    _, _, bh, bw, fh, fv = geo
    height = x.shape[-2]
    if fh == 1 and fv == 1:
        return _pad_replicate(x, 8 * bh, 8 * bw)
    # full-resolution padding: rows to a multiple of the vertical factor, columns to twice the grid
    x = _pad_replicate(x, _ceil_div(height, fv) * fv, 16 * bw)
    bias = torch.arange(8 * bw, device=x.device, dtype=x.dtype).remainder_(2)
    if fv == 2:  # offsets 1, 2, 1, 2, ... along each output row
        s = torch.add(x[:, 0::2, 0::2], x[:, 0::2, 1::2]).add_(x[:, 1::2, 0::2]).add_(x[:, 1::2, 1::2])
        s.add_(bias.add_(1.0)).mul_(0.25).floor_()
    else:  # offsets 0, 1, 0, 1, ...
        s = torch.add(x[:, :, 0::2], x[:, :, 1::2]).add_(bias).mul_(0.5).floor_()
    return _pad_replicate(s, 8 * bh, 8 * bw)


def _fdct_quantize(plane: Tensor, qtable: Tensor) -> Tensor:
    """islow forward DCT and quantisation of a padded float32 plane ``(B, 8*nby, 8*nbx)``.

    ``qtable`` is ``(B, 8, 8)``. Returns float64 ``(B, nby, 8, nbx, 8)``: quantised coefficient
    ``[u, v]`` of block ``(i, j)`` at ``[:, i, u, j, v]``.
    """
    B, rows, cols = plane.shape
    nby, nbx = rows // 8, cols // 8
    m = _mats(plane.device)
    x = plane.to(torch.float64).view(B, rows, nbx, 8)
    x = torch.matmul(x, m["fwd1"].T).add_(m["fwd1_bias"]).floor_()  # along block rows
    x = _left(m["fwd2"], x.view(B, nby, 8, nbx * 8)).add_(0.5).floor_()  # along columns
    # Division by 8Q rounded half away from zero: libjpeg-turbo's reciprocal multiplication gives
    # exactly this for every |x| < 2**15. x / 8Q is a tie (k + 1/2) or at least 1/(8Q) from one;
    # scaling by 1 + 2**-30 moves ties away from zero and nothing else across a tie, so a
    # round-to-nearest is exact (float64's relative error ~1e-16 is far smaller still).
    inv = (qtable.to(torch.float64) * 8.0).reciprocal_().mul_(1.0 + 2.0 ** -30)
    return x.view(B, nby, 8, nbx, 8).mul_(inv.view(B, 1, 8, 1, 8)).round_()


def _encode(pixels: Tensor, qtables: Tensor, subsampling: str) -> tuple[list[Tensor], list]:
    B, C, H, W = pixels.shape
    x = pixels.to(torch.float32)
    planes = _rgb_to_ycc(x) if C == 3 else [x[:, 0]]
    geos = _component_geometry(H, W, sampling_factors(subsampling, C))
    qt = qtables.to(pixels.device)
    coefs = [_fdct_quantize(_downsample(p, g), qt[:, min(ci, 1)])
             for ci, (p, g) in enumerate(zip(planes, geos))]
    return coefs, geos


def exact_encode(pixels: Tensor, qtables: Tensor, subsampling: str) -> list[Tensor]:
    """Quantised DCT coefficients exactly as libjpeg-turbo computes them for these pixels.

    Args:
        pixels: integer tensor ``(B, C, H, W)``, ``C`` in {1, 3} (RGB or grayscale), values
            0..255 (uint8 or any integer dtype; integer-valued floats work too).
        qtables: integer-valued tensor ``(B, 2, 8, 8)``, natural order, ``[luma, chroma]``,
            entries 1..255 (the chroma table is unused for grayscale).
        subsampling: ``"444"``, ``"422"`` or ``"420"`` (ignored for grayscale).

    Returns:
        One int32 tensor per component (Y, Cb, Cr, or Y alone), shaped
        ``(B, blocks_h, blocks_w, 8, 8)`` with libjpeg's ``height_in_blocks x width_in_blocks``
        for that component (not padded to whole MCUs), each block in natural order (``[u, v]``,
        vertical frequency first). Equal to ``jpeglib.read_dct`` of the file Pillow writes.
    """
    coefs, _ = _encode(pixels, qtables, subsampling)
    return [c.permute(0, 1, 3, 2, 4).to(torch.int32) for c in coefs]


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------
def _idct_plain(dq: Tensor) -> Tensor:
    """islow inverse DCT of dequantised float64 ``(B, nby, 8, nbx, 8)`` (modified in place).

    Exact integer arithmetic; equals libjpeg-turbo (C or SIMD) whenever no 16-bit intermediate
    overflows, which holds for every coefficient set an encoder derives from 8-bit samples.
    Returns float32 samples 0..255, ``(B, 8 * nby, 8 * nbx)``.
    """
    B, nby, _, nbx, _ = dq.shape
    m = _mats(dq.device)
    x = _left(m["inv1"], dq.view(B, nby, 8, nbx * 8)).add_(0.5).floor_()  # columns
    x = torch.matmul(x.view(B, nby * 8, nbx, 8), m["inv2"].T).add_(128.5).floor_()  # rows
    return x.clamp_(0.0, 255.0).view(B, nby * 8, nbx * 8).to(torch.float32)


def _features(x: Tensor, dim: int) -> Tensor:
    """``_IDCT_FEATURES`` of the 8 entries along ``dim``, with the 16-bit wrap of the sums."""
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
    inv10 = _mats(coef.device)["inv10"]
    dq = _wrap_(coef * qtable.to(torch.float64).view(B, 1, 1, 8, 8), 16)
    dq = dq.permute(0, 1, 3, 2, 4).reshape(B, nby, 8, nbx * 8)
    # pass 1, down each block column
    x = _left(inv10, _features(dq, 2))
    x = _wrap_(x.add_(float(1 << 10)), 32).mul_(1.0 / (1 << 11)).floor_().clamp_(-32768.0, 32767.0)
    flat = (coef[..., 1:, :] == 0).flatten(-2).all(-1)  # (B, nby, nbx): rows 1..7 all zero
    shortcut = _wrap_(dq[:, :, :1] * 4.0, 16)
    x = torch.where(flat.repeat_interleave(8, dim=-1)[:, :, None], shortcut, x)
    # pass 2, along each block row
    x = torch.matmul(_features(x.view(B, nby * 8, nbx, 8), -1), inv10.T)
    x = _wrap_(x.add_(float(1 << 17)), 32).mul_(1.0 / (1 << 18)).floor_()
    return x.clamp_(-128.0, 127.0).add_(128.0).view(B, nby * 8, nbx * 8).to(torch.float32)


def _upsample(x: Tensor, height: int, width: int, fh: int, fv: int) -> Tensor:
    """libjpeg's upsampling of a cropped float32 component ``(B, h, w)`` to ``(B, height, width)``.

    Fancy (triangle) filtering with libjpeg's rounding offsets; edge rows/columns act as their own
    neighbours. Components at most 2 samples wide are replicated instead, as libjpeg does.
    """
    if fh == 1 and fv == 1:
        return x
    B, h, w = x.shape
    if w <= 2:
        x = x[:, :, None, :, None].expand(B, h, fv, w, fh).reshape(B, h * fv, w * fh)
        return x[:, :height, :width]
    if fv == 2:  # vertical step: 3 * nearer row + farther row
        x3 = x * 3.0
        top = torch.cat([x[:, :1], x[:, :-1]], dim=1).add_(x3)
        bot = torch.cat([x[:, 1:], x[:, -1:]], dim=1).add_(x3)
        s = torch.stack([top, bot], dim=2).view(B, 2 * h, w)
        bias_l, bias_r, k = 8.0, 7.0, 1.0 / 16
    else:
        s, bias_l, bias_r, k = x, 1.0, 2.0, 0.25
    s3 = s * 3.0
    left = torch.cat([s[..., :1], s[..., :-1]], dim=-1).add_(s3).add_(bias_l).mul_(k).floor_()
    right = torch.cat([s[..., 1:], s[..., -1:]], dim=-1).add_(s3).add_(bias_r).mul_(k).floor_()
    out = torch.stack([left, right], dim=-1).view(B, s.shape[1], 2 * w)
    return out[:, :height, :width]


def _ycc_to_rgb(y: Tensor, cb: Tensor, cr: Tensor) -> Tensor:
    """libjpeg's YCbCr -> RGB of float32 planes (integers 0..255) into uint8 ``(B, 3, H, W)``."""
    f = lambda v: float(_fix(v, _SCALEBITS))  # noqa: E731
    half = float(1 << (_SCALEBITS - 1))
    scale = 1.0 / (1 << _SCALEBITS)
    cb = cb - 128.0  # centred chroma keeps every product below 2**24 (exact in float32)
    cr = cr - 128.0
    out = torch.empty((y.shape[0], 3) + tuple(y.shape[1:]), dtype=torch.uint8, device=y.device)
    chans = (
        torch.mul(cr, f(1.40200)).add_(half),
        torch.mul(cb, -f(0.34414)).sub_(cr, alpha=f(0.71414)).add_(half),
        torch.mul(cb, f(1.77200)).add_(half),
    )
    for i, c in enumerate(chans):
        out[:, i].copy_(c.mul_(scale).floor_().add_(y).clamp_(0.0, 255.0))
    return out


def _decode(planes_fn, geos: list, height: int, width: int) -> Tensor:
    planes = []
    for ci, (ch, cw, _, _, fh, fv) in enumerate(geos):
        plane = planes_fn(ci)[:, :ch, :cw]
        planes.append(_upsample(plane, height, width, fh, fv))
    if len(planes) == 1:
        return planes[0][:, None, :height, :width].to(torch.uint8)
    return _ycc_to_rgb(planes[0][:, :height, :width], planes[1], planes[2])


def exact_decode(coefficients: list[Tensor], qtables: Tensor, subsampling: str, height: int,
                 width: int) -> Tensor:
    """Pixels libjpeg-turbo's decoder, as Pillow runs it, produces from these coefficients.

    Args:
        coefficients: per component (Y, Cb, Cr, or Y alone) an integer tensor
            ``(B, blocks_h, blocks_w, 8, 8)`` in natural order with libjpeg's block grid, as
            :func:`exact_encode` returns; values within int16 (any baseline file's range).
        qtables: integer-valued ``(B, 2, 8, 8)`` natural-order tables ``[luma, chroma]``, 1..255.
        subsampling: ``"444"``, ``"422"`` or ``"420"`` (ignored for one component).
        height, width: image size in pixels.

    Returns:
        uint8 ``(B, C, height, width)`` with ``C = len(coefficients)``, on the coefficients'
        device. The inverse DCT follows libjpeg-turbo's x86-64 SIMD code including its 16-bit
        overflow and saturation, so even coefficients no encoder would produce decode the same.
    """
    geos = _component_geometry(height, width, sampling_factors(subsampling, len(coefficients)))
    qt = qtables.to(coefficients[0].device)

    def plane(ci):
        return _idct_simd(coefficients[ci].to(torch.float64), qt[:, min(ci, 1)])

    return _decode(plane, geos, height, width)


def exact_jpeg(pixels: Tensor, qtables: Tensor, subsampling: str) -> Tensor:
    """Encode then decode exactly like Pillow/libjpeg-turbo: uint8 ``(B, C, H, W)``.

    Args and ranges as in :func:`exact_encode`. The result equals, pixel for pixel,
    ``Image.open(BytesIO(data))`` where ``data`` is Pillow's JPEG save of each image with these
    tables and subsampling.
    """
    H, W = pixels.shape[-2:]
    coefs, geos = _encode(pixels, qtables, subsampling)
    qt = qtables.to(pixels.device).to(torch.float64)

    def plane(ci):
        dq = coefs[ci].mul_(qt[:, min(ci, 1)].view(-1, 1, 8, 1, 8))
        return _idct_plain(dq)

    return _decode(plane, geos, H, W)
