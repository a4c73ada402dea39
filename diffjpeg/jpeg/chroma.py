"""Chroma subsampling as libjpeg does it: box averaging on encode, "fancy" upsampling on decode.

Planes are ``(B, N, h, w)`` tensors in [0, 255]. ``integer=True`` reproduces libjpeg's integer
arithmetic (rounding biases, right shifts) with straight-through floors; ``integer=False`` is the
same filter on real numbers (no bias, no floor), for a smooth layer. The ``*_adjoint`` functions are
the transposed linear filters: the straight-through gradient of the integer stages.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .rounding import floor_ste_

#: (vertical, horizontal) subsampling factor of the chroma planes (= the luma's sampling factors
#: in the file; the chroma components' are (1, 1))
FACTORS = {"444": (1, 1), "422": (1, 2), "420": (2, 2)}


def sampling_factors(subsampling: str, channels: int) -> list[tuple[int, int]]:
    """The ``(v, h)`` sampling factors libjpeg writes for each component (Y[, Cb, Cr])."""
    return [(1, 1)] if channels == 1 else [FACTORS[subsampling], (1, 1), (1, 1)]


def plane_sizes(height: int, width: int, factors) -> list[tuple[int, int]]:
    """``(h, w)`` of each component plane of a ``height x width`` image, as libjpeg sizes them:
    ``ceil(H v / v_max) x ceil(W h / h_max)`` for sampling factors ``(v, h)``."""
    vmax, hmax = max(v for v, _ in factors), max(h for _, h in factors)
    return [(-(-height * v // vmax), -(-width * h // hmax)) for v, h in factors]


def chroma_downsample(planes: Tensor, subsampling: str, integer: bool) -> Tensor:
    """Average ``fv x fh`` boxes; ``h, w`` must be multiples of the factors (pad first).

    libjpeg adds a bias that alternates along each output row (1, 2, 1, 2, ... for 2x2 boxes and
    0, 1, 0, 1, ... for 2x1) before its right shift, so that rounding errors do not accumulate.
    """
    fv, fh = FACTORS[subsampling]
    if fv == fh == 1:
        return planes
    count = fv * fh
    total = planes[..., 0::fv, 0::fh]  # box sums as strided adds, in row-major order (faster than avg_pool2d)
    for i, j in [(i, j) for i in range(fv) for j in range(fh)][1:]:
        total = total + planes[..., i::fv, j::fh]
    if not integer:
        return total * (1.0 / count)
    first = 1.0 if count == 4 else 0.0
    bias = first + (torch.arange(total.shape[-1], device=planes.device) % 2).to(planes.dtype)
    return floor_ste_((total + bias) * (1.0 / count))  # powers of two: exact


def chroma_downsample_adjoint(grad: Tensor, subsampling: str) -> Tensor:
    """Adjoint of :func:`chroma_downsample`'s box average: each output's gradient shared by its box."""
    fv, fh = FACTORS[subsampling]
    if fv == fh == 1:
        return grad
    b, n, h, w = grad.shape
    shared = (grad * (1.0 / (fv * fh)))[:, :, :, None, :, None]
    return shared.expand(b, n, h, fv, w, fh).reshape(b, n, h * fv, w * fh)


def _interleave(even: Tensor, odd: Tensor, dim: int) -> Tensor:
    """Merge two tensors alternately along ``dim`` (even, odd, even, ...)."""
    dim %= even.ndim
    return torch.stack((even, odd), dim=dim + 1).flatten(dim, dim + 1)


def _triangle(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``3 x[i] + x[i-1]`` and ``3 x[i] + x[i+1]`` along ``dim``, edges replicated."""
    n = x.shape[dim]
    padded = torch.cat((x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)), dim)
    return torch.add(padded.narrow(dim, 0, n), x, alpha=3), torch.add(padded.narrow(dim, 2, n), x, alpha=3)


def _triangle_adjoint(left: Tensor, right: Tensor, dim: int) -> Tensor:
    """Adjoint of :func:`_triangle`: the gradients of its two outputs -> the gradient of ``x``."""
    n = left.shape[dim]
    grad = torch.add(left, right).mul_(3.0)
    grad.narrow(dim, 0, n - 1).add_(left.narrow(dim, 1, n - 1))  # left[i] reads x[i - 1]
    grad.narrow(dim, 1, n - 1).add_(right.narrow(dim, 0, n - 1))  # right[i] reads x[i + 1]
    grad.narrow(dim, 0, 1).add_(left.narrow(dim, 0, 1))  # the replicated edges
    grad.narrow(dim, n - 1, 1).add_(right.narrow(dim, n - 1, 1))
    return grad


def chroma_upsample(planes: Tensor, subsampling: str, integer: bool, method: str = "fancy") -> Tensor:
    """libjpeg's default ("fancy") upsampling by the subsampling factors, or ``method="simple"`` replication.

    "simple" is libjpeg's ``do_fancy_upsampling = FALSE`` (each sample repeated ``fv x fh`` times,
    exact in both modes).

    Each output sample is a triangle-filtered (3/4, 1/4) mix of its nearest input samples, edges
    replicated. In integer mode the biases are libjpeg's: (+1, +2) >> 2 for 2x1, and a vertical
    ``3 a + b`` column sum followed by (+8, +7) >> 4 for 2x2. Where the subsampled plane is at most
    two samples wide, libjpeg falls back to plain replication, and so does this function.
    """
    fv, fh = FACTORS[subsampling]
    if fv == fh == 1:
        return planes
    if method == "simple" or planes.shape[-1] <= 2:
        return planes.repeat_interleave(fv, dim=-2).repeat_interleave(fh, dim=-1)
    if fv == 2:
        planes = _interleave(*_triangle(planes, dim=-2), dim=-2)
    left, right = _triangle(planes, dim=-1)
    del planes  # the rows' interleave is not needed any more: free it before the output is made
    scale = 16.0 if fv == 2 else 4.0
    if not integer:
        return _interleave(left, right, dim=-1) * (1.0 / scale)
    bias_left, bias_right = (8.0, 7.0) if fv == 2 else (1.0, 2.0)
    k = 1.0 / scale  # a power of two: exact
    # left and right are fresh sums whose gradient needs no saved values: the bias and scale go in place
    return _interleave(floor_ste_(left.add_(bias_left).mul_(k)), floor_ste_(right.add_(bias_right).mul_(k)), dim=-1)


def chroma_upsample_adjoint(grad: Tensor, subsampling: str, method: str = "fancy") -> Tensor:
    """Adjoint of :func:`chroma_upsample` (the same filter in both modes): ``(B, N, fv h, fh w)`` ->
    ``(B, N, h, w)``."""
    fv, fh = FACTORS[subsampling]
    if fv == fh == 1:
        return grad
    if method == "simple" or grad.shape[-1] <= 2 * fh:  # replication: each sample's box summed
        return F.avg_pool2d(grad, (fv, fh), divisor_override=1)
    grad = _triangle_adjoint(grad[..., 0::2], grad[..., 1::2], dim=-1)
    if fv == 2:
        grad = _triangle_adjoint(grad[..., 0::2, :], grad[..., 1::2, :], dim=-2)
    return grad.mul_(1.0 / (16.0 if fv == 2 else 4.0))
