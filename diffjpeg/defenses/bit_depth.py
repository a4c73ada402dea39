"""BitDepth: colour-depth reduction (feature squeezing); :func:`bit_depth` is its checked
functional form and :func:`reduce_depth` the unchecked mapping, which the pixel-depth compression of
:mod:`diffjpeg.defenses.reconstruction` reuses.

Two mappings, both applied to every channel of every pixel independently:

* ``bits=b`` (1..8) keeps the ``b`` most significant bits of the 8-bit value, as Liu & Cai do
  when they remove ``8 - b`` bits: ``v = floor(255 x + 1/2)`` (the 8-bit value an image file would
  store), ``v' = v - (v mod 2^(8 - b))``, output ``v' / 255``. Removing 2, 4 or 6 bits is
  ``bits=6, 4, 2``. Values are truncated downwards (``bits=1`` maps to {0, 128/255}).
* ``levels=k`` (k >= 2) rounds to ``k`` evenly spaced levels spanning [0, 1], the "k levels" of
  Zhang et al. and Xu et al.'s feature squeezing: ``floor(x (k - 1) + 1/2) / (k - 1)`` (ties
  round up). ``levels=2 ** b`` is Xu et al.'s ``b``-bit squeezer.

The arithmetic is done in float64, where ``255 x + 1/2`` and ``x (k - 1) + 1/2`` of a float32
input are exact, so the output never depends on float rounding.

The forward pass is piecewise constant: autograd gives a zero gradient almost everywhere, so
``differentiable = False`` and the surrogate for BPDA is the identity (straight-through).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..contract import Defense
from ..jpeg.validate import check_image
from ..arguments import check_int
from .registry import register

__all__ = ["BitDepth", "bit_depth"]


# ---------------------------------------------------------------------------------- BitDepth


def _check_depth(bits: object, levels: object) -> tuple[int | None, int | None]:
    if (bits is None) == (levels is None):
        raise ValueError(f"give exactly one of bits (1..8) and levels (>= 2), got bits={bits!r}, levels={levels!r}")
    if bits is not None:
        return check_int(bits, "bits", 1, 8), None
    return None, check_int(levels, "levels", 2)


def bit_depth(x: Tensor, bits: int | None = None, levels: int | None = None) -> Tensor:
    """Reduce the colour depth of ``x`` (see the module docstring for the two mappings).

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        bits: keep this many of the 8 bits (1..8); or
        levels: number of evenly spaced output levels in [0, 1] (>= 2).

    Returns:
        ``(B, C, H, W)``, same dtype and device; every value is ``v / 255`` (bits) or
        ``j / (levels - 1)`` (levels) for an integer ``v`` or ``j``. No gradient flows (use BPDA).
    """
    check_image(x)
    bits, levels = _check_depth(bits, levels)
    return reduce_depth(x, bits, levels)


def reduce_depth(x: Tensor, bits: int | None, levels: int | None) -> Tensor:
    """:func:`bit_depth` on checked arguments (exactly one of ``bits`` and ``levels`` given)."""
    xd = x.detach().double()
    if bits is not None:
        v = torch.floor(255.0 * xd + 0.5).clamp_(0, 255)  # 8-bit value; the clamp only absorbs check_image's slack
        step = 2.0 ** (8 - bits)
        y = (v - torch.remainder(v, step)) / 255.0
    else:
        n = float(levels - 1)
        y = torch.floor(xd * n + 0.5).clamp_(0, n) / n
    return y.to(x.dtype)


class BitDepth(Defense):
    """Colour-depth reduction, ``bit_depth`` as a module.

    Args:
        bits: bits kept out of 8 (1..8); Liu & Cai's "remove r bits" is ``bits = 8 - r``.
        levels: number of output levels k >= 2 (Zhang et al.; Xu et al. with k = 2^b).
            Give exactly one of ``bits`` and ``levels``.

    ``differentiable = False`` (piecewise constant forward pass); ``surrogate()`` is the
    identity, i.e. ``BPDA(BitDepth(...))`` is the straight-through estimator.

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)``.
    """

    differentiable = False
    randomized = False

    def __init__(self, bits: int | None = None, levels: int | None = None):
        super().__init__()
        self.bits, self.levels = _check_depth(bits, levels)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        return reduce_depth(x, self.bits, self.levels)

    def surrogate(self) -> nn.Module:
        return nn.Identity()

    def extra_repr(self) -> str:
        return f"bits={self.bits}" if self.bits is not None else f"levels={self.levels}"


register("bit_depth", BitDepth)
