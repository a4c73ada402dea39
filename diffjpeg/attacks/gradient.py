"""Two gradient attacks that torchattacks lacks: GA and L-BFGS.

* :class:`GA` -- the "gradient attack": one step of length ``eps`` (L2) along the gradient of the
  cross-entropy loss normalised to unit L2 norm per image (FGSM's step, but along the gradient itself
  rather than its sign), then clipped to [0, 1].
* :class:`LBFGS` -- Szegedy et al. (2014): minimise ``c * ||x' - x||_2^2 + loss(x')`` over the box
  ``x' in [0, 1]^n``, with a per-image search over ``c``. The minimisation is a projected,
  batched L-BFGS written here (not ``torch.optim.LBFGS``, which couples all images through one
  line search): every image keeps its own curvature pairs, two-loop recursion and Armijo
  backtracking, directions are projected onto the box (components pushing against an active bound
  are dropped) and iterates are clipped to it -- a simple L-BFGS-B. The search over ``c`` is a
  bisection per image, as in Carlini & Wagner's implementation: start at ``c``; after a success try
  a larger ``c`` (smaller perturbation: times 10 until a failure brackets it, then halves), after a
  failure a smaller one; the smallest successful perturbation over all ``c`` is returned.

  ``loss`` is the cross-entropy towards the target (targeted mode), or, untargeted,
  ``-log(1 - p_y)``, the cross-entropy of "any class but the true one" (bounded below, unlike
  ``-CE``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arguments import check_int, check_real
from .base import Attack


def _per_image_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class GA(Attack):
    """Gradient attack: ``x' = clip(x + eps * g / ||g||_2)`` (targeted: ``- eps * g_target / ||g||``).

    Args:
        model: classifier returning logits.
        eps: L2 length of the step (>= 0), in [0, 1] pixel units over the whole image.
        targeted, generator: see :class:`~.base.Attack`.

    Shape: images ``(B, C, H, W)`` in [0, 1], labels ``(B,)``; output ``(B, C, H, W)``.
    """

    def __init__(self, model, eps: float = 1.0, *, targeted: bool = False, generator=None):
        super().__init__("GA", model, targeted=targeted, generator=generator)
        self.eps = check_real(eps, "eps", 0.0)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        images, _, goal = self._prepare(images, labels)
        x = images.clone().requires_grad_(True)
        loss = F.cross_entropy(self.get_logits(x), goal, reduction="sum")
        grad, = torch.autograd.grad(loss, x)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        step = self.eps * grad / _view(norm, grad)
        adv = images - step if self.targeted else images + step
        return adv.clamp(0, 1).detach()


class LBFGS(Attack):
    """Box-constrained L-BFGS attack (Szegedy et al. 2014), batched, with a search over ``c``.

    Args:
        model: classifier returning logits.
        c: initial weight of the distance term (> 0).
        search_steps: number of values of ``c`` tried per image (>= 1).
        steps: L-BFGS iterations per value of ``c`` (>= 1).
        history: L-BFGS memory (curvature pairs kept, >= 1).
        targeted, generator: see :class:`~.base.Attack`.

    Shape: images ``(B, C, H, W)`` in [0, 1], labels ``(B,)``; output ``(B, C, H, W)``. Images for
    which no ``c`` succeeds are returned unchanged. ``last_c`` ``(B,)`` holds the largest
    successful ``c`` per image (0 where none succeeded).
    """

    def __init__(self, model, c: float = 0.1, search_steps: int = 5, steps: int = 20, history: int = 10, *,
                 targeted: bool = False, generator=None):
        super().__init__("LBFGS", model, targeted=targeted, generator=generator)
        self.c = check_real(c, "c", 0.0, lo_open=True)
        self.search_steps = check_int(search_steps, "search_steps", 1)
        self.steps = check_int(steps, "steps", 1)
        self.history = check_int(history, "history", 1)
        self.last_c: Tensor | None = None

    def _objective(self, x: Tensor, images: Tensor, goal: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-image objective ``(B,)``, its gradient and whether each ``x`` reaches its goal."""
        x = x.detach().requires_grad_(True)
        logits = self.get_logits(x)
        if self.targeted:
            loss = F.cross_entropy(logits, goal, reduction="none")
            hit = logits.argmax(1) == goal
        else:
            p_true = F.softmax(logits, 1).gather(1, goal[:, None]).squeeze(1)
            loss = -torch.log1p(-p_true.clamp(max=1 - 1e-7))
            hit = logits.argmax(1) != goal
        f = c * _per_image_dot(x - images, x - images) + loss
        grad, = torch.autograd.grad(f.sum(), x)
        return f.detach(), grad, hit

    def _minimise(self, images: Tensor, goal: Tensor, c: Tensor, best_adv: Tensor, best_dist: Tensor) -> Tensor:
        """Projected batched L-BFGS from ``images``; updates the best adversarials in place.

        Returns which images succeeded at some iterate for this ``c``.
        """
        x = images.clone()
        f, g, hit = self._objective(x, images, goal, c)
        found = torch.zeros_like(hit)
        s_hist, y_hist, rho_hist = [], [], []
        for _ in range(self.steps):
            # two-loop recursion, per image
            q = g.clone()
            alphas = []
            for s, y, rho in reversed(list(zip(s_hist, y_hist, rho_hist))):
                a = rho * _per_image_dot(s, q)
                q -= _view(a, q) * y
                alphas.append(a)
            if s_hist:
                s, y = s_hist[-1], y_hist[-1]
                yy = _per_image_dot(y, y)
                gamma = torch.where(yy > 0, _per_image_dot(s, y) / yy.clamp_min(1e-30), torch.ones_like(yy))
                q *= _view(gamma, q)
            else:  # first step: unit length
                q /= _view(g.flatten(1).norm(dim=1).clamp_min(1e-12), q)
            for (s, y, rho), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
                b = rho * _per_image_dot(y, q)
                q += _view(a - b, q) * s
            d = -q
            # projection: no movement against active bounds; fall back to -g when not a descent
            d = torch.where(((x <= 0) & (d < 0)) | ((x >= 1) & (d > 0)), torch.zeros_like(d), d)
            descent = _per_image_dot(d, g) < 0
            pg = -torch.where(((x <= 0) & (g > 0)) | ((x >= 1) & (g < 0)), torch.zeros_like(g), g)
            d = torch.where(_view(descent, d), d, pg / _view(pg.flatten(1).norm(dim=1).clamp_min(1e-12), pg))
            # Armijo backtracking per image
            t = torch.ones_like(f)
            pending = torch.ones_like(hit)
            x_new, f_new, g_new, hit_new = x, f, g, hit
            for _ in range(12):
                cand = (x + _view(t, x) * d).clamp(0, 1)
                fc, gc, hc = self._objective(cand, images, goal, c)
                ok = pending & (fc <= f + 1e-4 * _per_image_dot(g, cand - x))
                x_new = torch.where(_view(ok, x), cand, x_new)
                f_new, g_new = torch.where(ok, fc, f_new), torch.where(_view(ok, g), gc, g_new)
                hit_new = torch.where(ok, hc, hit_new)
                pending = pending & ~ok
                if not pending.any():
                    break
                t = torch.where(pending, t / 2, t)
            s, y = x_new - x, g_new - g
            sy = _per_image_dot(s, y)
            rho = torch.where(sy > 1e-12, 1 / sy.clamp_min(1e-12), torch.zeros_like(sy))  # skip bad pairs
            s_hist.append(s), y_hist.append(y), rho_hist.append(rho)
            if len(s_hist) > self.history:
                s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
            x, f, g, hit = x_new, f_new, g_new, hit_new
            dist = _per_image_dot(x - images, x - images)
            better = hit & (dist < best_dist)
            best_adv[better], best_dist[better] = x[better], dist[better]
            found |= hit
        return found

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        images, _, goal = self._prepare(images, labels)
        n = images.shape[0]
        c = torch.full((n,), self.c, device=images.device, dtype=images.dtype)
        lo = torch.zeros_like(c)
        hi = torch.full_like(c, float("inf"))
        best_adv = images.clone()
        best_dist = torch.full_like(c, float("inf"))
        best_c = torch.zeros_like(c)
        for _ in range(self.search_steps):
            found = self._minimise(images, goal, c, best_adv, best_dist)
            best_c = torch.where(found, torch.maximum(best_c, c), best_c)
            lo = torch.where(found, c, lo)
            hi = torch.where(found, hi, c)
            c = torch.where(torch.isinf(hi), c * 10, torch.where(lo == 0, hi / 10, (lo + hi) / 2))
        self.last_c = best_c
        return best_adv.detach()
