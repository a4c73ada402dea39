"""The base class of diffjpeg's own attacks, and the label check they share.

:class:`Attack` is called as a torchattacks attack is: ``attack(images, labels)`` returns
adversarial images in [0, 1] of the input's shape; the model is put in eval mode during the attack
and restored afterwards. It is a small class of its own (no torchattacks import): the targeted
modes are switched on with

* ``targeted=True`` at construction, or ``set_mode_targeted_by_label()``: ``labels`` passed to
  ``attack(images, labels)`` are the targets;
* ``set_mode_targeted_random()``: a random class other than the label, drawn from the attack's
  generator;
* ``set_mode_targeted_least_likely(kth_min=1)``: the class with the ``kth_min``-th smallest logit
  among the classes other than the label;
* ``set_mode_targeted_by_function(f)``: ``f(images, labels) -> targets``;
* ``set_mode_default()``: untargeted again.

``attack_mode`` names the mode as torchattacks does (``"default"``, ``"targeted(label)"``,
``"targeted(random)"``, ``"targeted(least-likely)"``, ``"targeted(custom)"``). Normalisation
belongs to the model (:class:`~diffjpeg.wrappers.DefendedModel`'s ``mean``/``std``), not to the
attack.

Example::

    attack = OnePixel(model, pixels=1)
    attack.set_mode_targeted_least_likely(quiet=True)
    adv = attack(images, labels)
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor, nn

from ..arguments import check_generator, check_int
from ..jpeg.validate import check_image

__all__ = ["Attack", "check_labels", "eval_mode"]


def check_labels(labels, batch: int, name: str = "labels") -> Tensor:
    """``labels`` must be an integer tensor of shape ``(batch,)``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({batch},), got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) to match the images, got {tuple(labels.shape)}")
    return labels


def _other_classes(logits: Tensor, labels: Tensor) -> Tensor:
    """``logits`` ``(B, K)`` with each image's own label pushed to +inf (never picked as a smallest)."""
    return logits.scatter(1, labels[:, None], float("inf"))


class Attack:
    """Base class: model in eval mode while attacking, targeted modes, a seedable generator, input checks.

    Args:
        name: the attack's name (shown by ``repr``).
        model: a classifier returning logits ``(B, K)`` for images ``(B, C, H, W)`` in [0, 1]
            (e.g. a :class:`~diffjpeg.wrappers.DefendedModel`).
        targeted: attack towards the labels passed to ``attack(images, labels)``.
        generator: random source of the attack (``None``: torch's global RNG).

    Subclasses implement ``forward(images, labels)``; they call :meth:`_prepare` first.
    """

    def __init__(self, name: str, model: nn.Module, *, targeted: bool = False,
                 generator: torch.Generator | None = None):
        if not callable(model):
            raise TypeError(f"model must be a callable torch.nn.Module returning logits, got {type(model).__name__}")
        if not isinstance(targeted, bool):
            raise TypeError(f"targeted must be True or False, got {type(targeted).__name__} {targeted!r}")
        self.attack, self.model = name, model
        params = model.parameters() if isinstance(model, nn.Module) else iter(())
        first = next(params, None)
        self.device = None if first is None else first.device  # None: the images' device
        self.generator = check_generator(generator)
        self.attack_mode, self.targeted = "default", False
        self._target_fn: Callable[[Tensor, Tensor], Tensor] | None = None
        if targeted:
            self.set_mode_targeted_by_label(quiet=True)

    # ------------------------------------------------------------------------------ modes

    def _set_mode(self, mode: str, fn, quiet: bool) -> None:
        self.attack_mode, self.targeted, self._target_fn = mode, mode != "default", fn
        if not quiet:
            print(f"Attack mode is changed to '{mode}'.")

    def set_mode_default(self, quiet: bool = False) -> None:
        """Untargeted: move each image away from its label."""
        self._set_mode("default", None, quiet)

    def set_mode_targeted_by_label(self, quiet: bool = False) -> None:
        """Targeted: the labels passed to ``attack(images, labels)`` are the targets."""
        self._set_mode("targeted(label)", None, quiet)

    def set_mode_targeted_by_function(self, target_map_function: Callable[[Tensor, Tensor], Tensor],
                                      quiet: bool = False) -> None:
        """Targeted: ``target_map_function(images, labels) -> (B,)`` targets."""
        if not callable(target_map_function):
            raise TypeError(f"target_map_function must be callable (images, labels) -> targets, "
                            f"got {type(target_map_function).__name__}")
        self._set_mode("targeted(custom)", target_map_function, quiet)

    def set_mode_targeted_random(self, quiet: bool = False) -> None:
        """Targeted: a class other than the label, uniformly at random (from the attack's generator)."""
        def random_other(images: Tensor, labels: Tensor) -> Tensor:
            k = self._logits_no_grad(images).shape[1]
            shift = self._randint(k - 1, labels.shape[0], device=labels.device)
            return (labels + 1 + shift) % k
        self._set_mode("targeted(random)", random_other, quiet)

    def set_mode_targeted_least_likely(self, kth_min: int = 1, quiet: bool = False) -> None:
        """Targeted: the class with the ``kth_min``-th smallest logit among the classes other than the label."""
        check_int(kth_min, "kth_min", 1)

        def least_likely(images: Tensor, labels: Tensor) -> Tensor:
            logits = _other_classes(self._logits_no_grad(images), labels)
            if kth_min >= logits.shape[1]:
                raise ValueError(f"kth_min must be below the number of classes ({logits.shape[1]}), got {kth_min}")
            return logits.argsort(1)[:, kth_min - 1]
        self._set_mode("targeted(least-likely)", least_likely, quiet)

    def get_target_label(self, images: Tensor, labels: Tensor) -> Tensor:
        """The label each image should move to (targeted modes); ``labels`` in the default mode."""
        return labels if self._target_fn is None else self._target_fn(images, labels)

    # ------------------------------------------------------------------------------ calling

    def get_logits(self, images: Tensor) -> Tensor:
        return self.model(images)

    @torch.no_grad()
    def _logits_no_grad(self, images: Tensor) -> Tensor:
        return self.get_logits(images)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """Adversarial images ``(B, C, H, W)`` in [0, 1] for ``images`` ``(B, C, H, W)`` and ``labels`` ``(B,)``."""
        with eval_mode(self.model):
            return self.forward(images, labels)

    def _prepare(self, images, labels) -> tuple[Tensor, Tensor, Tensor]:
        """Check and detach the inputs; returns ``(images, labels, goal)`` on the attack's device.

        ``goal`` is the label each image should move to (targeted) or away from (untargeted).
        """
        check_image(images, "images")
        labels = check_labels(labels, images.shape[0])
        device = self.device if self.device is not None else images.device
        images = images.detach().to(device)
        labels = labels.detach().to(device)
        goal = self.get_target_label(images, labels) if self.targeted else labels
        return images, labels, goal.long()

    def _rand(self, *shape: int, device) -> Tensor:
        """Uniform [0, 1) numbers from the attack's generator, on ``device``."""
        g = self.generator
        return torch.rand(shape, generator=g, device=g.device if g is not None else device).to(device)

    def _randint(self, high: int, *shape: int, device) -> Tensor:
        """Uniform integers in [0, high) from the attack's generator, on ``device``."""
        g = self.generator
        return torch.randint(high, shape, generator=g, device=g.device if g is not None else device).to(device)

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("model", "attack")}
        return f"{self.attack}({', '.join(f'{k}={v}' for k, v in fields.items())})"


@contextlib.contextmanager
def eval_mode(model):
    """``with eval_mode(model):`` -- the model in eval mode inside, its training flag restored afterwards."""
    training = getattr(model, "training", None)
    if training is not None:
        model.eval()
    try:
        yield model
    finally:
        if training:
            model.train()
