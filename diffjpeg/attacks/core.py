"""The attack core: functional L-inf / L2 PGD and FGSM, on the model's own loss when it has one.

Every gradient step of the library that is not a torchattacks attack goes through here: the table
learner's adversarial examples, the FGSM examples the reconstruction network trains on, and the EOT
benchmark's PGD.

The loss an attack ascends is :func:`attack_loss`: ``model.loss(images, labels)`` when the model
has a ``loss`` method (a :class:`~diffjpeg.wrappers.DefendedModel` has one; around an
``EOT(..., reduce="grad")`` defense it is the mean of the per-draw losses, so its gradient is the
mean of the per-draw gradients, Athalye et al. 2018), else the cross-entropy of ``model(images)``.
A targeted attack descends the same loss towards the target labels.

Example::

    from diffjpeg.attacks.core import fgsm, pgd
    adv = pgd(model, images, labels, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    adv2 = pgd(model, images, labels, eps=1.0, steps=10, norm="l2")
    adv3 = fgsm(model, images, labels, eps=torch.full((len(images),), 0.1))   # one eps per image

Functions here change no module's mode (put the model in eval mode yourself, as the attack
classes of :mod:`diffjpeg.attacks` do) and return detached tensors. :class:`PGD` and :class:`FGSM`
are the same attacks as objects (eval mode, targeted modes), registered as ``diffjpeg.pgd`` and
``diffjpeg.fgsm``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arguments import check_bool, check_choice, check_generator, check_int, check_real
from ..contract import draw_device
from ..jpeg.validate import check_image
from .base import Attack, check_labels

__all__ = ["FGSM", "NORMS", "PGD", "attack_loss", "fgsm", "input_gradient", "pgd"]

NORMS = ("linf", "l2")


def attack_loss(model, images: Tensor, labels: Tensor) -> Tensor:
    """Scalar loss of ``model`` on ``(images, labels)``: ``model.loss(images, labels)`` if it has one, else CE."""
    loss = getattr(model, "loss", None)
    if callable(loss):
        return loss(images, labels)
    return F.cross_entropy(model(images), labels)


def input_gradient(model, images: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Gradient ``(B, C, H, W)`` of :func:`attack_loss` (its negative when ``targeted``) at ``images``."""
    with torch.enable_grad():
        x = images.detach().requires_grad_(True)
        loss = attack_loss(model, x, labels)
        (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
    return grad


def _per_image(v: Tensor | float, like: Tensor) -> Tensor | float:
    return v.view(-1, *([1] * (like.ndim - 1))) if isinstance(v, Tensor) else v


def _l2(v: Tensor) -> Tensor:
    """Per-image L2 norms ``(B, 1, 1, 1)`` of ``v`` ``(B, C, H, W)``."""
    return _per_image(v.flatten(1).norm(dim=1), v)


def _check(images, labels, eps, name: str = "eps"):
    check_image(images, "images")
    labels = check_labels(labels, images.shape[0])
    if isinstance(eps, Tensor):
        if eps.shape != (images.shape[0],) or not eps.is_floating_point() or not bool((eps >= 0).all()):
            raise ValueError(f"{name} must be a number >= 0 or a float tensor of shape ({images.shape[0]},) with "
                             f"entries >= 0, got {eps.dtype} {tuple(eps.shape)}")
        return labels, eps.to(device=images.device, dtype=images.dtype)
    return labels, check_real(eps, name, 0.0)


def fgsm(model, images: Tensor, labels: Tensor, eps: float | Tensor, *, targeted: bool = False) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clamp(x + eps * sign(grad), 0, 1)``.

    Args:
        model: images in [0, 1] -> logits (or with a ``loss(images, labels)`` method).
        images: ``(B, C, H, W)`` in [0, 1]; labels: ``(B,)`` integer (targets when ``targeted``).
        eps: step size >= 0, one number or a ``(B,)`` float tensor (one per image).
        targeted: step towards ``labels`` instead of away from them.

    Returns:
        ``(B, C, H, W)`` in [0, 1], detached.
    """
    labels, eps = _check(images, labels, eps)
    grad = input_gradient(model, images, labels, check_bool(targeted, "targeted"))
    return (images.detach() + _per_image(eps, images) * grad.sign()).clamp(0, 1).detach()


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform point of the L-inf ball, or a uniform direction at a uniform radius in the L2 ball."""
    device = draw_device(generator)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
        return (x + (2 * noise - 1) * eps).clamp(0, 1)
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    radius = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=device).to(x.device)
    delta = direction / _l2(direction).clamp_min(1e-12) * _per_image(radius, x) * eps
    return (x + delta).clamp(0, 1)


def _step(adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float, norm: str) -> Tensor:
    """One ascent step from ``adv`` along ``grad``, projected onto the ``eps`` ball around ``x`` and [0, 1]."""
    if norm == "linf":
        return torch.min(torch.max(adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    delta = adv + alpha * grad / _l2(grad).clamp_min(1e-12) - x
    delta = delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0, 1)


def pgd(model, images: Tensor, labels: Tensor, eps: float, steps: int, alpha: float | None = None, *,
        norm: str = "linf", random_start: bool = True, targeted: bool = False,
        generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) in the L-inf or L2 ball, seedable.

    Args:
        model: images in [0, 1] -> logits (or with a ``loss(images, labels)`` method, see
            :func:`attack_loss`); differentiable, or wrapped in BPDA.
        images: ``(B, C, H, W)`` in [0, 1]; labels: ``(B,)`` integer (targets when ``targeted``).
        eps: radius of the ball, >= 0 (L-inf: per pixel; L2: over the whole image, in [0, 1] units).
        steps: >= 1. alpha: step size (default ``2.5 * eps / steps``); L-inf steps along the
            gradient's sign, L2 along the gradient scaled to L2 length ``alpha``.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start at a uniform point of the L-inf ball (L2: a uniform direction at a
            uniform radius), from ``generator``; else at the images.
        targeted: descend towards ``labels`` instead of ascending away from them.
        generator: the random start's source (torch's global CPU RNG when ``None``).

    Returns:
        ``(B, C, H, W)`` adversarial images in [0, 1] within ``eps`` of ``images``, detached.
    """
    labels, eps = _check(images, labels, eps)
    if isinstance(eps, Tensor):
        raise TypeError("pgd: eps must be one number (a per-image eps is for fgsm)")
    steps = check_int(steps, "steps", 1)
    alpha = 2.5 * eps / steps if alpha is None else check_real(alpha, "alpha", 0.0)
    norm = check_choice(norm, NORMS, "norm")
    generator = check_generator(generator)
    random_start, targeted = check_bool(random_start, "random_start"), check_bool(targeted, "targeted")
    x = images.detach()
    adv = _random_start(x, eps, norm, generator) if random_start else x.clone()
    for _ in range(steps):
        adv = _step(adv, input_gradient(model, adv, labels, targeted), x, eps, alpha, norm)
    return adv.detach()


class PGD(Attack):
    """:func:`pgd` as an attack object (registry name ``diffjpeg.pgd``), with the base class's targeted modes.

    Unlike torchattacks' PGD it ascends the model's own ``loss`` (see :func:`attack_loss`), so on
    ``DefendedModel(clf, EOT(defense, n, reduce="grad"))`` it follows the mean of the per-draw gradients.

    Args:
        model: classifier (images in [0, 1] -> logits), e.g. a ``DefendedModel``.
        eps, steps, alpha, norm, random_start: as :func:`pgd`.
        targeted, generator: see :class:`~.base.Attack` (the random start comes from ``generator``).

    Example::

        adv = build("diffjpeg.pgd:eps=8/255,steps=20", model)(images, labels)
    """

    def __init__(self, model, eps: float = 8 / 255, steps: int = 10, alpha: float | None = None,
                 norm: str = "linf", random_start: bool = True, *, targeted: bool = False, generator=None):
        super().__init__("PGD", model, targeted=targeted, generator=generator)
        self.eps, self.steps = check_real(eps, "eps", 0.0), check_int(steps, "steps", 1)
        self.alpha = None if alpha is None else check_real(alpha, "alpha", 0.0)
        self.norm = check_choice(norm, NORMS, "norm")
        if not isinstance(random_start, bool):
            raise TypeError(f"random_start must be True or False, got {random_start!r}")
        self.random_start = random_start

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        images, _, goal = self._prepare(images, labels)
        return pgd(self.model, images, goal, self.eps, self.steps, self.alpha, norm=self.norm,
                   random_start=self.random_start, targeted=self.targeted, generator=self.generator)


class FGSM(Attack):
    """:func:`fgsm` as an attack object (registry name ``diffjpeg.fgsm``), on the model's own ``loss``."""

    def __init__(self, model, eps: float = 8 / 255, *, targeted: bool = False, generator=None):
        super().__init__("FGSM", model, targeted=targeted, generator=generator)
        self.eps = check_real(eps, "eps", 0.0)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        images, _, goal = self._prepare(images, labels)
        return fgsm(self.model, images, goal, self.eps, targeted=self.targeted)
