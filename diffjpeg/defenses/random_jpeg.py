"""RandomJPEG: JPEG with a quality drawn at random per image and per call."""
from __future__ import annotations


import torch
from torch import Tensor

from ..contract import Defense, draw_device
from ..jpeg.codec import ROUNDINGS, diff_jpeg_unchecked
from ..jpeg.validate import check_image, check_subsampling
from ..arguments import check_bool, check_choice, check_generator, check_range

__all__ = ["RandomJPEG"]


class RandomJPEG(Defense):
    """JPEG compression at a quality drawn uniformly from the integers ``[lo, hi]``, per image.

    Every forward call draws fresh qualities, in train and eval mode alike, from ``generator``
    (torch's global RNG when ``None``), then runs the differentiable codec ``diff_jpeg`` with one
    quality per image. All randomness comes from ``self.generator``, so
    :class:`diffjpeg.wrappers.RNGSnapshot` (used by ``EOT(fixed=True)`` and ``BPDA``) can replay
    the draws. The qualities of the last call are kept in ``last_q``.

    Args:
        q: ``(lo, hi)`` integer qualities in [1, 100], both included (an int means ``(q, q)``).
        subsampling: "444", "422" or "420".
        rounding: gradient estimator of the codec's rounding ("ste", "cubic", "soft",
            "fourier", "noise"); the forward pass is the codec's either way ("noise" draws its
            noise from ``generator`` too, in training mode).
        generator: ``torch.Generator`` to draw from (its device is where qualities are drawn).
        exact: use the codec's libjpeg-turbo integer emulation in the forward pass.

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)``; ``last_q`` ``(B,)`` int64.
    """

    differentiable = True
    randomized = True

    def __init__(self, q=(50, 90), subsampling: str = "420", rounding: str = "ste",
                 generator: torch.Generator | None = None, exact: bool = False):
        super().__init__()
        self.lo, self.hi = check_range(q, "q", 1, 100, integer=True)
        self.subsampling = check_subsampling(subsampling)
        self.rounding = check_choice(rounding, ROUNDINGS, "rounding")
        self.generator = check_generator(generator)
        self.exact = check_bool(exact, "exact")
        self.last_q: Tensor | None = None

    def sample(self, batch: int) -> Tensor:
        """Draw ``batch`` qualities, ``(batch,)`` int64 on the generator's device (CPU by default)."""
        return torch.randint(self.lo, self.hi + 1, (batch,), generator=self.generator,
                             device=draw_device(self.generator))

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        q = self.sample(x.shape[0])
        self.last_q = q
        # x is checked above and the other arguments at construction: skip diff_jpeg's second pass over x
        return diff_jpeg_unchecked(x, q.to(x.device), self.subsampling, self.rounding, None, exact=self.exact,
                                   training=self.training, generator=self.generator)

    def surrogate(self) -> "RandomJPEG":
        return self

    def extra_repr(self) -> str:
        return (f"q=({self.lo}, {self.hi}), subsampling={self.subsampling!r}, rounding={self.rounding!r}, "
                f"exact={self.exact}")
