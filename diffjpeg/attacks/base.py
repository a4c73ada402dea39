"""The base class of diffjpeg's own attacks, and the label check they share (the other argument
checks are :mod:`diffjpeg.jpeg.validate`'s).

:class:`Attack` is a thin subclass of ``torchattacks.attack.Attack``, so every attack here behaves
like a torchattacks attack: ``attack(images, labels)`` returns adversarial images in [0, 1] of the
input's shape; the model is put in eval mode during the attack and restored afterwards; targeted
modes are switched on with ``set_mode_targeted_by_label()`` (``labels`` are then the targets),
``set_mode_targeted_random()``, ``set_mode_targeted_least_likely()`` or
``set_mode_targeted_by_function(f)``; ``set_normalization_used(mean, std)`` works as there.

What it adds: a ``targeted=True`` constructor argument (the same as calling
``set_mode_targeted_by_label(quiet=True)``, handy in registry specs), a seedable ``generator`` that
all the attack's randomness is drawn from, and validation of arguments at construction.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchattacks.attack import Attack as _TorchattacksAttack

from ..jpeg.validate import check_image
from ..arguments import check_generator


def check_labels(labels, batch: int, name: str = "labels") -> Tensor:
    """``labels`` must be an integer tensor of shape ``(batch,)``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({batch},), got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) to match the images, got {tuple(labels.shape)}")
    return labels


class Attack(_TorchattacksAttack):
    """torchattacks' ``Attack`` with a ``targeted`` switch, a seedable generator and input checks.

    Args:
        name: the attack's name (shown by ``repr``).
        model: a classifier returning logits ``(B, K)`` for images ``(B, C, H, W)`` in [0, 1]
            (e.g. a :class:`~diffjpeg.wrappers.DefendedModel`).
        targeted: attack towards the labels passed to ``attack(images, labels)``.
        generator: random source of the attack (``None``: torch's global RNG).

    Subclasses implement ``forward(images, labels)``; they call :meth:`_prepare` first.
    """

    def __init__(self, name: str, model: torch.nn.Module, *, targeted: bool = False,
                 generator: torch.Generator | None = None):
        if not callable(model):
            raise TypeError(f"model must be a callable torch.nn.Module returning logits, got {type(model).__name__}")
        if not isinstance(targeted, bool):
            raise TypeError(f"targeted must be True or False, got {type(targeted).__name__} {targeted!r}")
        super().__init__(name, model)  # device: the model's (None for a parameter-free model: the images')
        self.supported_mode = ["default", "targeted"]
        self.generator = check_generator(generator)
        if targeted:
            self.set_mode_targeted_by_label(quiet=True)

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
