"""The 8x8 DCT of JPEG, in two forms, applied block-wise in place.

* :func:`dct_8x8` / :func:`idct_8x8`: the orthonormal 2-D DCT-II (ITU-T T.81, A.3.3), real-valued.
* :func:`islow_dct_8x8` / :func:`islow_idct_8x8`: libjpeg's "islow" integer DCT pair
  (``jfdctint.c`` / ``jidctint.c``: 13 fraction bits in the constants, 2 extra bits between the
  passes). Each 1-D pass of its butterfly is linear in the 8 inputs until one rounding right shift
  per output, so a pass is an exact integer matrix product (in float64: every value is an integer
  far below 2^53) followed by ``floor((v + half) / 2^bits)``. The floor is passed in, straight-through
  for a differentiable layer; the gradient is then that of the integer matrices, i.e. of the DCT to
  13-bit precision.

All four work on planes ``(..., H, W)`` with H, W multiples of 8 and leave every coefficient where
its sample was ("plane layout": coefficient (u, v) of block (i, j) at ``[8 i + u, 8 j + v]``), in
orthonormal units (libjpeg's islow output carries an extra factor 8, removed here). Each pass is one
small matrix product, with no transposed copies of the data; a single ``(..., 8, 8)`` block is the
case H = W = 8.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .rounding import floor_ste_

#: orthonormal DC coefficient of a block of constant 1: the level shift by 128 is 1024 on the DC
DC_GAIN = 8.0

CONST_BITS = 13  # fraction bits of libjpeg's DCT constants
PASS1_BITS = 2  # extra precision libjpeg keeps between the two DCT passes


def _fix(x: float, bits: int) -> int:
    """``x`` as a fixed-point integer with ``bits`` fraction bits, rounded half up (libjpeg's FIX)."""
    return int(x * (1 << bits) + 0.5)


# The islow butterflies run once on unit vectors give the integer matrix of each 1-D pass.
# Outputs that libjpeg computes without a multiplier (forward terms 0 and 4) get the weight 2^13,
# which with the common shift reproduces libjpeg's left shift (pass 1) and DESCALE by 2 (pass 2).
_K = {name: _fix(val, CONST_BITS) for name, val in {
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


def forward_matrix() -> list:
    """Integer 8x8 matrix (rows = frequencies) of one forward islow pass before its shift."""
    d = _units(8)
    s = [d[i] + d[7 - i] for i in range(4)]  # sums of mirrored samples
    t = [d[i] - d[7 - i] for i in range(4)]  # differences of mirrored samples
    hi, lo = s[0] + s[3], s[1] + s[2]
    sin_side, cos_side = s[1] - s[2], s[0] - s[3]
    one = 1 << CONST_BITS
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
IDCT_FEATURES = ("0+4", "0-4", "2", "6", "7", "5", "3", "1", "7+3", "5+1")


def inverse_feature_matrix() -> list:
    """Integer 8x10 matrix (rows = samples) of one inverse islow pass, on ``IDCT_FEATURES``."""
    f = dict(zip(IDCT_FEATURES, _units(len(IDCT_FEATURES))))
    one = 1 << CONST_BITS
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


def feature_map() -> list:
    """Integer 10x8 matrix taking the 8 inputs of a pass to ``IDCT_FEATURES`` (no wrapping)."""
    rows = []
    for name in IDCT_FEATURES:
        v = [0] * 8
        for part, sign in zip(name.replace("-", "+").split("+"), (1, -1 if "-" in name else 1)):
            v[int(part)] += sign
        rows.append(v)
    return rows




def _orthonormal_dct() -> Tensor:
    k = torch.arange(8, dtype=torch.float64)
    basis = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    basis[0] /= math.sqrt(2)
    return basis


# float64 on the CPU, built once; ``.to(device)`` per call is an 8x8 copy (and keeps torch.compile
# free of cache wrappers it cannot trace)
_DCT = _orthonormal_dct()
_ISLOW_FORWARD = torch.tensor(forward_matrix(), dtype=torch.float64)
_ISLOW_INVERSE = torch.tensor(inverse_feature_matrix(), dtype=torch.float64) @ torch.tensor(feature_map(),
                                                                                            dtype=torch.float64)


def dct_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The orthonormal 8-point DCT-II matrix (rows are frequencies)."""
    return _DCT.to(device=device, dtype=dtype)


def islow_matrices(device: torch.device) -> tuple[Tensor, Tensor]:
    """float64 integer matrices of one forward pass (8 freq x 8 samples) and one inverse pass
    (8 samples x 8 freq), before their shifts."""
    return _ISLOW_FORWARD.to(device), _ISLOW_INVERSE.to(device)


def along_rows(x: Tensor, m: Tensor, bias: float = 0.0) -> Tensor:
    """``m @ run + bias`` for the 8 samples of each block row (horizontal 1-D transform) of ``(..., H, W)``."""
    *lead, h, w = x.shape
    # (N, 8) @ (8, 8) is so thin that float32 products on the CPU run far below the speed of memory; two
    # runs side by side against the block-diagonal (16, 16) matrix are about 3x faster (measured), with
    # the same terms plus exact zeros
    pair = x.dtype == torch.float32 and x.device.type == "cpu" and w % 16 == 0
    mt = torch.block_diag(m.T, m.T) if pair else m.T
    runs = x.reshape(-1, mt.shape[0])
    out = torch.addmm(runs.new_tensor(bias).expand(mt.shape[0]), runs, mt) if bias else runs @ mt
    return out.reshape(*lead, h, w)


def along_columns(x: Tensor, m: Tensor, bias: float = 0.0) -> Tensor:
    """``m @ run + bias`` for the 8 samples of each block column (vertical 1-D transform) of ``(..., H, W)``."""
    *lead, h, w = x.shape
    runs = x.reshape(-1, 8, w)
    if bias:
        out = torch.baddbmm(runs.new_tensor(bias).expand(1, 1, 1), m.expand(runs.shape[0], 8, 8), runs)
    else:
        out = m @ runs
    return out.reshape(*lead, h, w)


def _descaled_pass(apply, x: Tensor, m: Tensor, bits: int, floor: Callable[[Tensor], Tensor]) -> Tensor:
    """One islow pass with libjpeg's DESCALE ``(m @ run + 2^(bits-1)) >> bits``.

    The shift is folded into the matrix (a power of two: exact in float64) and the rounding half
    into the product's bias, so a pass is one matrix product and one floor.
    """
    return floor(apply(x, m * (1.0 / (1 << bits)), 0.5))


def tf32_matmul(x: Tensor) -> bool:
    """Whether float32 matrix products on ``x``'s device drop mantissa bits (TF32 enabled on CUDA).

    Integer-exact float32 products (colour conversion, islow pass 1) need full float32; with TF32
    on they are computed in float64 instead.
    """
    return x.is_cuda and torch.backends.cuda.matmul.allow_tf32


def dct_8x8(x: Tensor) -> Tensor:
    """Forward DCT of every 8x8 block of ``x`` ``(..., H, W)`` (samples level-shifted by -128)."""
    d = dct_matrix(x.device, x.dtype)
    return along_rows(along_columns(x, d), d)


def idct_8x8(coefficients: Tensor) -> Tensor:
    """Inverse DCT of every 8x8 block of ``coefficients`` ``(..., H, W)`` in plane layout."""
    d = dct_matrix(coefficients.device, coefficients.dtype).T
    return along_rows(along_columns(coefficients, d), d)


def islow_dct_8x8(x: Tensor, floor: Callable[[Tensor], Tensor] = floor_ste_) -> Tensor:
    """libjpeg's islow forward DCT of integer-valued samples ``(..., H, W)``: rows, then columns.

    Returns coefficients in orthonormal units (islow output / 8, exact), in ``x``'s dtype.
    """
    forward, _ = islow_matrices(x.device)
    # pass 1 stays below 2^24 (|row| sums of the matrix are <= 2^16, samples <= 255): exact in float32
    first = x.double() if x.dtype != torch.float32 or tf32_matmul(x) else x
    y = _descaled_pass(along_rows, first, forward.to(first.dtype), CONST_BITS - PASS1_BITS, floor).double()
    y = _descaled_pass(along_columns, y, forward, CONST_BITS + PASS1_BITS, floor)
    return y.to(x.dtype).mul_(1.0 / DC_GAIN)


def islow_idct_8x8(coefficients: Tensor, floor: Callable[[Tensor], Tensor] = floor_ste_) -> Tensor:
    """libjpeg's islow inverse DCT of integer-valued dequantised coefficients: columns, then rows.

    Returns integer-valued samples (before the +128 level shift and the range limit).
    """
    _, inverse = islow_matrices(coefficients.device)
    y = _descaled_pass(along_columns, coefficients.double(), inverse, CONST_BITS - PASS1_BITS, floor)
    y = _descaled_pass(along_rows, y, inverse, CONST_BITS + PASS1_BITS + 3, floor)
    return y.to(coefficients.dtype)


def _islow_round_trip_matrices() -> tuple[Tensor, Tensor]:
    """With straight-through floors, ``islow_idct_8x8(islow_dct_8x8(X))`` is ``A X B^T`` per block
    (``A``: the two column passes, ``B``: the two row passes, the 1/8 included); returns ``(A^T, B^T)``."""
    forward, inverse = _ISLOW_FORWARD, _ISLOW_INVERSE
    columns = inverse / (1 << (CONST_BITS - PASS1_BITS)) @ (forward / (1 << (CONST_BITS + PASS1_BITS)))
    rows = inverse / (1 << (CONST_BITS + PASS1_BITS + 3)) @ (forward / (1 << (CONST_BITS - PASS1_BITS))) / DC_GAIN
    return columns.T.contiguous(), rows.T.contiguous()


_ISLOW_ROUND_TRIP_ADJOINT = _islow_round_trip_matrices()


def islow_round_trip_adjoint(grad: Tensor) -> Tensor:
    """Adjoint of the islow DCT, quantisation and islow inverse DCT with straight-through roundings
    (``G -> A^T G B`` per 8x8 block of ``(..., H, W)``): the table's division and multiplication cancel."""
    columns, rows = (m.to(device=grad.device, dtype=grad.dtype) for m in _ISLOW_ROUND_TRIP_ADJOINT)
    return along_rows(along_columns(grad, columns), rows)
