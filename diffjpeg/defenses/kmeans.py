"""KMeansColors: per-image k-means colour quantisation (one of Liu & Cai's defenses).

The ``H * W`` pixels of each image are clustered as points in colour space (C = 3, or C = 1 for
grayscale) into ``k`` clusters by Lloyd's algorithm, and every pixel is replaced by the mean colour
of its cluster. All images of a batch run their Lloyd iterations together as tensor operations.

* **Initialisation** (``init``):

  - ``"maxmin"`` (default, deterministic): the first centre is the pixel closest to the image's
    mean colour; each further centre is the pixel farthest (Euclidean) from the centres chosen so
    far (Gonzalez's farthest-point rule; ties go to the lowest pixel index). Once every distinct
    colour is a centre, the farthest distance is 0 and the remaining centres repeat colours; so an
    image with at most ``k`` distinct colours is reproduced.
  - ``"kmeans++"`` (Arthur & Vassilvitskii 2007; random): the first centre is a uniformly drawn
    pixel, each further one is drawn with probability proportional to its squared distance to the
    nearest chosen centre (uniformly when all distances are 0); draws come from ``self.generator``
    on every call, so the defense is then ``randomized``.

* **Lloyd iterations**: assign every pixel to its nearest centre (squared Euclidean distance, ties
  to the lowest centre index), move every centre to the mean of its pixels (a centre with no
  pixels stays where it is); at most ``iters`` times, stopping early when no assignment in the
  batch changes (a fixed point: further iterations would change nothing). The output replaces each
  pixel by the centre of its last assignment, i.e. the mean of its cluster.

Gradient: the assignments are piecewise constant in the input and each output pixel is the mean
of its cluster's input pixels, so autograd through the final mean is the exact gradient almost
everywhere (``d out_i / d x_j = 1 / |cluster|`` for ``j`` in ``i``'s cluster; it does not see the
jumps when a pixel changes cluster). ``differentiable = True`` and the defense is its own
surrogate; ``BPDA(kmeans, backward=nn.Identity())`` is the straight-through alternative.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..contract import Defense, draw_device
from ..jpeg.validate import check_image
from ..arguments import check_choice, check_generator, check_int
from .registry import register

__all__ = ["KMeansColors", "kmeans_colors", "kmeans_init", "INITS"]

INITS = ("maxmin", "kmeans++")


def _sqdist(points: Tensor, centres: Tensor) -> Tensor:
    """``(B, N, C)``, ``(B, K, C)`` -> squared distances ``(B, N, K)`` (differences, no cancellation)."""
    return torch.cdist(points, centres, compute_mode="donot_use_mm_for_euclid_dist").square()


def kmeans_init(points: Tensor, k: int, init: str = "maxmin", generator: torch.Generator | None = None) -> Tensor:
    """Initial centres ``(B, k, C)`` for pixels ``points`` ``(B, N, C)`` (see the module docstring)."""
    b, n, _ = points.shape
    rows = torch.arange(b, device=points.device)
    if init == "maxmin":
        mean = points.mean(1, keepdim=True)
        first = _sqdist(points, mean)[..., 0].argmin(1)
    else:
        u = torch.rand(b, k, generator=generator, device=draw_device(generator), dtype=torch.float64)
        u = u.to(points.device)
        first = (u[:, 0] * n).long().clamp_max(n - 1)  # u < 1; the clamp only guards float rounding
    centres = [points[rows, first]]
    nearest = _sqdist(points, centres[0][:, None])[..., 0]  # (B, N) squared distance to the nearest centre
    for j in range(1, k):
        if init == "maxmin":
            pick = nearest.argmax(1)
        else:
            weights = nearest.double()
            total = weights.sum(1, keepdim=True)
            weights = torch.where(total > 0, weights, torch.ones_like(weights))
            cdf = weights.cumsum(1)
            target = u[:, j:j + 1] * cdf[:, -1:]
            pick = torch.searchsorted(cdf, target, right=True)[:, 0].clamp_max(n - 1)
        centres.append(points[rows, pick])
        nearest = torch.minimum(nearest, _sqdist(points, centres[-1][:, None])[..., 0])
    return torch.stack(centres, 1)


def _lloyd(points: Tensor, centres: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Lloyd iterations on detached data; returns the last assignments ``(B, N)`` and centres."""
    b, n, c = points.shape
    k = centres.shape[1]
    assign = None
    for _ in range(iters):
        new = _sqdist(points, centres).argmin(2)
        if assign is not None and new.device.type != "meta" and torch.equal(new, assign):  # meta: no values
            break
        assign = new
        sums = torch.zeros(b, k, c, dtype=points.dtype, device=points.device)
        sums.scatter_add_(1, assign[..., None].expand(b, n, c), points)
        counts = torch.zeros(b, k, dtype=points.dtype, device=points.device)
        counts.scatter_add_(1, assign, torch.ones_like(assign, dtype=points.dtype))
        centres = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centres)
    return assign, centres


def _quantise(x: Tensor, k: int, iters: int, init: str, generator: torch.Generator | None) -> Tensor:
    b, c, h, w = x.shape
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):  # float16 / bfloat16 are clustered in float32
        x = x.float()
    points = x.flatten(2).transpose(1, 2)  # (B, N, C)
    with torch.no_grad():
        data = points.detach()
        assign, _ = _lloyd(data, kmeans_init(data, k, init, generator), iters)
    # each pixel <- mean of its cluster, recomputed with autograd (the exact gradient, see module docstring)
    index = assign[..., None].expand(b, h * w, c)
    sums = torch.zeros(b, k, c, dtype=x.dtype, device=x.device).scatter_add(1, index, points)
    ones = torch.ones_like(assign, dtype=x.dtype)
    counts = torch.zeros(b, k, dtype=x.dtype, device=x.device).scatter_add_(1, assign, ones)
    centres = sums / counts.clamp_min(1)[..., None]  # every centre that is used has count >= 1
    out = centres.gather(1, index)
    return out.transpose(1, 2).reshape(b, c, h, w).to(dtype)


def kmeans_colors(x: Tensor, k: int = 8, iters: int = 10, init: str = "maxmin",
                  generator: torch.Generator | None = None) -> Tensor:
    """Replace every pixel by the mean colour of its k-means cluster, per image.

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        k: number of colours (clusters) per image, 1 <= k <= H * W.
        iters: most Lloyd iterations (>= 1).
        init: "maxmin" (deterministic) or "kmeans++" (draws from ``generator``).
        generator: ``torch.Generator`` for "kmeans++" (torch's global RNG when ``None``).

    Returns:
        ``(B, C, H, W)``, same dtype and device; each image has at most ``k`` distinct colours
        (float16 / bfloat16 inputs are clustered in float32).
    """
    check_image(x)
    k, iters, init = _check_args(k, iters, init, x)
    return _quantise(x, k, iters, init, check_generator(generator))


def _check_args(k: object, iters: object, init: object, x: Tensor | None = None) -> tuple[int, int, str]:
    k = check_int(k, "k", 1)
    if x is not None and k > x.shape[-2] * x.shape[-1]:
        raise ValueError(f"k must be at most the number of pixels H * W = {x.shape[-2] * x.shape[-1]}, got k = {k}")
    return k, check_int(iters, "iters", 1), check_choice(init, INITS, "init")


class KMeansColors(Defense):
    """Per-image k-means colour quantisation, ``kmeans_colors`` as a module.

    Args:
        k: colours per image (>= 1; at most ``H * W``, checked per call).
        iters: most Lloyd iterations (>= 1; stops earlier at a fixed point).
        init: "maxmin" (deterministic, default) or "kmeans++" (random, from ``generator``).
        generator: ``torch.Generator`` for "kmeans++" (torch's global RNG when ``None``).

    ``randomized`` is True only for ``init="kmeans++"``; ``differentiable = True`` (exact
    gradient almost everywhere, see the module docstring); ``surrogate()`` is the module itself.

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)``.
    """

    differentiable = True

    def __init__(self, k: int = 8, iters: int = 10, init: str = "maxmin", generator: torch.Generator | None = None):
        super().__init__()
        self.k, self.iters, self.init = _check_args(k, iters, init)
        self.generator = check_generator(generator)
        self.randomized = self.init == "kmeans++"

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        _check_args(self.k, self.iters, self.init, x)
        return _quantise(x, self.k, self.iters, self.init, self.generator)

    def surrogate(self) -> "KMeansColors":
        return self

    def extra_repr(self) -> str:
        return f"k={self.k}, iters={self.iters}, init={self.init!r}"


register("kmeans", KMeansColors)
