"""MedianSmoothing: a ``kh x kw`` median filter applied to each channel (Xu et al.'s spatial
smoothing squeezer; Liu & Cai use windows 1x3, 3x1, 3x3 and 5x5).

Every output pixel is the median of the ``kh * kw`` values of its channel in the window centred
on it (``kh``, ``kw`` odd, so the window has a centre and the median is one of the values).
Borders are extended by ``mode``, with scipy.ndimage's names and meaning, so the result equals
``scipy.ndimage.median_filter(x, size=(1, 1, kh, kw), mode=mode)`` exactly (tested):

* ``"reflect"`` (default, scipy's default and what feature squeezing used): half-sample
  symmetric, ``d c b a | a b c d | d c b a``;
* ``"mirror"``: whole-sample symmetric, ``d c b | a b c d | c b a``;
* ``"nearest"``: edge replication, ``a a a | a b c d | d d d``.

Implementation: the padded image is unfolded into ``(B, C, H, W, kh * kw)`` windows and
``torch.median`` is taken over the last axis -- one batched op on CPU or CUDA.

Gradient: the median filter is continuous and piecewise linear in its input; autograd routes each
output pixel's gradient to the input value that is the median of its window, which is the exact
gradient wherever the window's values are distinct (almost everywhere). So
``differentiable = True`` and the defense is its own surrogate. The gradient is sparse (each input
pixel receives gradient only from the windows whose median it is); an attacker who prefers a dense
estimate can use ``BPDA(median, backward=nn.Identity())``.
"""
from __future__ import annotations

import re
from numbers import Integral

import torch
from torch import Tensor

from ..contract import Defense
from ..jpeg.validate import check_image
from ..arguments import check_choice
from .registry import register

__all__ = ["MedianSmoothing", "median_smoothing", "pad_index", "PAD_MODES"]

PAD_MODES = ("reflect", "mirror", "nearest")


def _check_kernel(kernel: object) -> tuple[int, int]:
    """``3``, ``"3x3"``, ``"1x3"``, ``(3, 3)`` -> ``(kh, kw)``, both odd and >= 1."""
    form = "an odd int, a string 'KHxKW' such as '3x3' or '1x3', or a pair (kh, kw) of odd ints"
    if isinstance(kernel, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", kernel)
        if m is None:
            raise ValueError(f"kernel must be {form}, got {kernel!r}")
        size = (int(m.group(1)), int(m.group(2) or m.group(1)))
    elif isinstance(kernel, Integral) and not isinstance(kernel, bool):
        size = (int(kernel), int(kernel))
    elif (isinstance(kernel, (tuple, list)) and len(kernel) == 2
          and all(isinstance(k, Integral) and not isinstance(k, bool) for k in kernel)):
        size = (int(kernel[0]), int(kernel[1]))
    else:
        raise TypeError(f"kernel must be {form}, got {type(kernel).__name__} {kernel!r}")
    if any(k < 1 or k % 2 == 0 for k in size):
        raise ValueError(f"kernel sizes must be odd and >= 1 (the window is centred on the pixel), got {size}")
    return size


def pad_index(n: int, before: int, after: int, mode: str, device=None) -> Tensor:
    """Source indices ``(before + n + after,)`` int64 of an axis of length ``n`` extended by ``mode``.

    ``mode`` as in scipy.ndimage: "reflect" (half-sample symmetric), "mirror" (whole-sample
    symmetric; an axis of length 1 repeats its one sample) or "nearest" (edge replication).
    Works for any padding, also wider than the axis.
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "nearest" or (mode == "mirror" and n == 1):
        return i.clamp(0, n - 1)
    period = 2 * n if mode == "reflect" else 2 * (n - 1)
    j = torch.remainder(i, period)
    return torch.where(j < n, j, period - j - (1 if mode == "reflect" else 0))


def _median(x: Tensor, kh: int, kw: int, mode: str) -> Tensor:
    if kh == kw == 1:
        return x.clone()
    h, w = x.shape[-2:]
    ph, pw = kh // 2, kw // 2
    xp = x.index_select(-2, pad_index(h, ph, ph, mode, x.device))
    xp = xp.index_select(-1, pad_index(w, pw, pw, mode, x.device))
    windows = xp.unfold(-2, kh, 1).unfold(-2, kw, 1)  # (B, C, H, W, kh, kw)
    return windows.reshape(*x.shape, kh * kw).median(dim=-1).values


def median_smoothing(x: Tensor, kernel=3, mode: str = "reflect") -> Tensor:
    """Median filter of each channel over a ``kh x kw`` window (see the module docstring).

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        kernel: odd int ``k`` (``k x k``), ``"KHxKW"`` (e.g. ``"1x3"``: 1 row, 3 columns) or ``(kh, kw)``.
        mode: border extension, "reflect", "mirror" or "nearest" (scipy.ndimage's meanings).

    Returns:
        ``(B, C, H, W)``, same dtype and device; every value is one of the input's values.
    """
    check_image(x)
    kh, kw = _check_kernel(kernel)
    return _median(x, kh, kw, check_choice(mode, PAD_MODES, "mode"))


class MedianSmoothing(Defense):
    """Median smoothing, ``median_smoothing`` as a module.

    Args:
        kernel: window, ``3``, ``"3x3"``, ``"1x3"``, ``(3, 1)``, ... (odd sizes; rows x columns).
        mode: border extension, "reflect" (default), "mirror" or "nearest", as in scipy.ndimage.

    ``differentiable = True`` (exact gradient almost everywhere, see the module docstring);
    ``surrogate()`` is the module itself.

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)``.
    """

    differentiable = True
    randomized = False

    def __init__(self, kernel=3, mode: str = "reflect"):
        super().__init__()
        self.kernel = _check_kernel(kernel)
        self.mode = check_choice(mode, PAD_MODES, "mode")

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        return _median(x, *self.kernel, self.mode)

    def surrogate(self) -> "MedianSmoothing":
        return self

    def extra_repr(self) -> str:
        return f"kernel={self.kernel[0]}x{self.kernel[1]}, mode={self.mode!r}"


register("median", MedianSmoothing)
