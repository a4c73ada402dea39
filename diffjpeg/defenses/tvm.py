"""TVM: total-variation minimisation of a randomly subsampled image (Guo et al., ICLR 2018; one of
Liu & Cai's defenses, with 10 %, 25 % and 100 % of the pixels kept).

Each call keeps every pixel independently with probability ``p`` (a Bernoulli mask per image and
pixel, shared by the pixel's channels, drawn from ``self.generator``) and reconstructs the image
from the kept pixels by solving, per image and channel,

    minimise over z in [0, 1]^(H x W):  E(z) = 1/2 * || m * (z - x) ||_2^2 + lam * TV(z)

where ``m`` is the mask and ``TV(z) = sum_ij sqrt(dh_ij^2 + dv_ij^2)`` ("isotropic") or
``sum_ij |dh_ij| + |dv_ij|`` ("anisotropic"), with forward differences ``dh_ij = z[i, j+1] - z[i, j]``,
``dv_ij = z[i+1, j] - z[i, j]``, taken as 0 past the last column/row. (Guo et al. write the data
term without the square and 1/2; this is the usual quadratic form, so ``lam`` is on a different
scale.) Dropped pixels enter only through TV: they are inpainted. The box [0, 1] does not change
the minimum (clipping any z to [0, 1] lowers both terms); it keeps every iterate a valid image.

Solver: Chambolle & Pock's primal-dual algorithm (2011, Algorithm 1, theta = 1) on the exact,
non-smoothed TV, batched over images and channels as tensor ops on the input's device: dual
ascent on ``grad z`` with projection onto the ball of radius ``lam`` (per pixel and channel
for "isotropic", per difference for "anisotropic"), then the closed-form proximal step of the
masked data term and the box, ``z = clip((v + tau m x) / (1 + tau m), 0, 1)``; step sizes
``tau = sigma = 0.99 / sqrt(8)`` (``||grad||^2 <= 8``). Start: ``z`` = ``x`` on kept pixels and the
image's mean kept colour on dropped ones (so the output depends on the kept pixels only), dual 0.
(An image with no kept pixel -- possible for tiny images and small ``p`` -- comes out black.)
Stopping rule, per image: stop updating an image once ``||z_t - z_(t-1)|| <= tol * ||z_t||``
(Frobenius norms over its channels and pixels), or after ``max_iter`` iterations; the loop ends when
every image has stopped. Images stop independently, so each image's output does not depend on the
rest of the batch.

Gradient: the output is computed without autograd, ``differentiable = False``; ``surrogate()``
is the identity, i.e. ``BPDA(TVM(...))`` is Athalye et al.'s attack on TVM. (Unrolling hundreds of
iterations would be exact but costs memory linear in the iteration count.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..contract import Defense, draw_device
from ..jpeg.validate import check_image
from ..arguments import check_choice, check_generator, check_int, check_real
from .registry import register

__all__ = ["TVM", "tv_reconstruct", "tv_objective", "TV_NORMS"]

TV_NORMS = ("isotropic", "anisotropic")
_STEP = 0.99 / math.sqrt(8.0)


def _grad(z: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences (horizontal, vertical), zero past the last column / row."""
    dh = torch.zeros_like(z)
    dv = torch.zeros_like(z)
    dh[..., :, :-1] = z[..., :, 1:] - z[..., :, :-1]
    dv[..., :-1, :] = z[..., 1:, :] - z[..., :-1, :]
    return dh, dv


def _div(ph: Tensor, pv: Tensor) -> Tensor:
    """Discrete divergence, the negative adjoint of ``_grad``."""
    d = torch.zeros_like(ph)
    d[..., :, :-1] += ph[..., :, :-1]
    d[..., :, 1:] -= ph[..., :, :-1]
    d[..., :-1, :] += pv[..., :-1, :]
    d[..., 1:, :] -= pv[..., :-1, :]
    return d


def tv_objective(z: Tensor, x: Tensor, mask: Tensor, lam: float, tv: str = "isotropic") -> Tensor:
    """``E(z)`` of the module docstring for each image, ``(B,)``.

    Args:
        z, x: ``(B, C, H, W)``; mask: ``(B, 1, H, W)`` or ``(B, C, H, W)``, 1 = kept, 0 = dropped.
    """
    dh, dv = _grad(z)
    tvz = (dh.square() + dv.square()).sqrt() if tv == "isotropic" else dh.abs() + dv.abs()
    data = 0.5 * (mask * (z - x)).square()
    return (data + lam * tvz).flatten(1).sum(1)


def _solve(x: Tensor, mask: Tensor, lam: float, tv: str, max_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    """Chambolle-Pock iterations; returns ``z`` and the iterations each image ran, ``(B,)``."""
    m = mask.to(x.dtype).expand_as(x)
    kept = m.sum((2, 3), keepdim=True)
    fill = (m * x).sum((2, 3), keepdim=True) / kept.clamp_min(1)  # mean kept colour (0 if none kept)
    z = m * x + (1 - m) * fill
    z_bar = z.clone()
    ph, pv = torch.zeros_like(x), torch.zeros_like(x)
    tau_m = _STEP * m
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    iters = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        gh, gv = _grad(z_bar)
        ph, pv = ph + _STEP * gh, pv + _STEP * gv
        if tv == "isotropic":
            scale = ((ph.square() + pv.square()).sqrt() / lam).clamp_min(1)
            ph, pv = ph / scale, pv / scale
        else:
            ph, pv = ph.clamp(-lam, lam), pv.clamp(-lam, lam)
        z_new = ((z + _STEP * _div(ph, pv) + tau_m * x) / (1 + tau_m)).clamp(0, 1)
        change = (z_new - z).flatten(1).norm(dim=1)
        size = z_new.flatten(1).norm(dim=1)
        keep = active.view(-1, 1, 1, 1)
        z_bar = torch.where(keep, 2 * z_new - z, z_bar)
        z = torch.where(keep, z_new, z)
        iters += active.long()
        active = active & (change > tol * size)
        if not bool(active.any()):
            break
    return z, iters


def tv_reconstruct(x: Tensor, mask: Tensor, lam: float = 0.03, tv: str = "isotropic", max_iter: int = 500,
                   tol: float = 1e-4) -> Tensor:
    """Reconstruct ``x`` from the pixels where ``mask`` is 1 by TV minimisation (module docstring).

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        mask: ``(B, 1, H, W)`` or ``(B, C, H, W)`` bool or 0/1 tensor, 1 = kept.
        lam: weight of TV, > 0.
        tv: "isotropic" or "anisotropic".
        max_iter: most primal-dual iterations (>= 1); tol: relative-change tolerance (>= 0).

    Returns:
        ``(B, C, H, W)`` in [0, 1], same dtype and device, no gradient.
    """
    check_image(x)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor of shape (B, 1, H, W) or (B, C, H, W), got {type(mask).__name__}")
    b, c, h, w = x.shape
    if mask.shape not in ((b, 1, h, w), (b, c, h, w)):
        raise ValueError(f"mask must have shape {(b, 1, h, w)} or {(b, c, h, w)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 and 1 (or be a bool tensor)")
    lam = check_real(lam, "lam", 0.0, math.inf, lo_open=True, hi_open=True)
    tv = check_choice(tv, TV_NORMS, "tv")
    max_iter = check_int(max_iter, "max_iter", 1)
    tol = check_real(tol, "tol", 0.0, math.inf, hi_open=True)
    return _run(x, mask.to(x.device), lam, tv, max_iter, tol)[0]


def _run(x: Tensor, mask: Tensor, lam: float, tv: str, max_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.no_grad():
        z, iters = _solve(x.detach().to(work), mask, lam, tv, max_iter, tol)
    return z.to(x.dtype), iters


class TVM(Defense):
    """Random pixel dropout followed by total-variation reconstruction (module docstring).

    Args:
        p: probability of keeping a pixel, in (0, 1] (Liu & Cai: 0.1, 0.25, 1.0).
        lam: TV weight ``lam`` > 0 in ``1/2 ||m (z - x)||^2 + lam TV(z)``.
        tv: "isotropic" (default) or "anisotropic".
        max_iter: most primal-dual iterations; tol: per-image relative-change tolerance.
        generator: ``torch.Generator`` the masks are drawn from (torch's global RNG when ``None``).

    Every call draws a fresh mask per image, in train and eval mode alike (``last_mask`` keeps the
    last ones, ``(B, 1, H, W)`` bool; ``last_iters`` the iterations each image ran).
    ``randomized = True``, ``differentiable = False``, ``surrogate()`` is the identity (BPDA).

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)``.
    """

    differentiable = False
    randomized = True

    def __init__(self, p: float = 0.5, lam: float = 0.03, tv: str = "isotropic", max_iter: int = 500,
                 tol: float = 1e-4, generator: torch.Generator | None = None):
        super().__init__()
        self.p = check_real(p, "p", 0.0, 1.0, lo_open=True)
        self.lam = check_real(lam, "lam", 0.0, math.inf, lo_open=True, hi_open=True)
        self.tv = check_choice(tv, TV_NORMS, "tv")
        self.max_iter = check_int(max_iter, "max_iter", 1)
        self.tol = check_real(tol, "tol", 0.0, math.inf, hi_open=True)
        self.generator = check_generator(generator)
        self.last_mask: Tensor | None = None
        self.last_iters: Tensor | None = None

    def sample_mask(self, x: Tensor) -> Tensor:
        """Draw ``(B, 1, H, W)`` bool keep-masks (True with probability ``p``) on ``x``'s device."""
        b, _, h, w = x.shape
        u = torch.rand((b, 1, h, w), generator=self.generator, device=draw_device(self.generator))
        return (u < self.p).to(x.device)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        mask = self.sample_mask(x)
        z, iters = _run(x, mask, self.lam, self.tv, self.max_iter, self.tol)
        self.last_mask, self.last_iters = mask, iters
        return z

    def surrogate(self) -> nn.Module:
        return nn.Identity()

    def extra_repr(self) -> str:
        return f"p={self.p}, lam={self.lam}, tv={self.tv!r}, max_iter={self.max_iter}, tol={self.tol}"


register("tvm", TVM)
