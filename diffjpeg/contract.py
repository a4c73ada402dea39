"""The Defense contract shared by every defense in the project.

A defense is an ``nn.Module`` whose ``forward(x)`` is the real defense (same shape, dtype and
device out as in) and which states three facts about itself, so that wrappers (BPDA, EOT) and the
benchmark can decide how to attack it without special cases:

* ``differentiable`` -- autograd through ``forward`` gives a meaningful gradient;
* ``randomized`` -- two calls on the same input can return different outputs;
* ``surrogate()`` -- a differentiable module to use in BPDA's backward pass (identity when nothing
  better exists).

How a model uses a defense is one more method, so a model never asks which defense it holds:
``compose(x, rest)`` is ``rest(defense(x))`` (``rest``: normalisation and classifier), with the
defense's output checked by :func:`check_output` (batch, channels, dtype and device kept; the image
size may change, as a resizing defense's does). A defense that averages over random draws
(:class:`~diffjpeg.wrappers.EOT`) overrides it to average ``rest``'s outputs over its draws, and
``compose_loss`` to average the losses. :func:`as_defense` turns a plain module or callable into a
defense with the default facts.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Defense", "as_defense", "check_output", "draw_device"]


class Defense(nn.Module):
    """Base class of all defenses. Subclasses implement ``forward`` and override the facts."""

    #: autograd through ``forward`` yields a useful gradient
    differentiable: bool = False
    #: two calls on the same input may differ
    randomized: bool = False

    def surrogate(self) -> nn.Module:
        """A differentiable stand-in for the backward pass (BPDA). Default: identity."""
        return nn.Identity()

    def compose(self, x: Tensor, rest: Callable[[Tensor], Tensor]) -> Tensor:
        """``rest(self(x))``, the defense's output checked (same batch, channels, dtype, device as ``x``).

        The image size may change (a classifier that takes any size can follow a resizing defense).
        """
        return rest(check_output(self, x, self(x), resize=True))

    def compose_loss(self, x: Tensor, y: Tensor, rest: Callable[[Tensor], Tensor],
                     loss_fn: Callable = F.cross_entropy) -> Tensor:
        """The attacker's loss of the composed model: ``loss_fn(self.compose(x, rest), y)``."""
        return loss_fn(self.compose(x, rest), y)


def _name(module: object) -> str:
    fn = getattr(module, "fn", None)  # a wrapped callable: its own name
    return getattr(fn, "__name__", type(fn).__name__) if fn is not None else type(module).__name__


def check_output(defense: object, x: Tensor, y: object, owner: str = "DefendedModel", resize: bool = False
                 ) -> Tensor:
    """``y``, the output of ``defense`` on ``x``, must be a tensor of ``x``'s shape, dtype and device.

    ``resize=True`` lets the image size change (the last two dimensions; e.g. Xie et al.'s random
    resize and pad), not the batch or the channels. Raises ``TypeError`` (not a tensor: numpy,
    ``None``, a tuple) or ``ValueError`` naming the defense and what differs; ``owner`` starts the
    message (the wrapper that called the defense).
    """
    name = _name(defense)
    if not isinstance(y, Tensor):
        raise TypeError(f"{owner}: the defense {name} must return a torch.Tensor, got {type(y).__name__}")
    shape_y, shape_x = tuple(y.shape), tuple(x.shape)
    if resize and y.ndim == x.ndim >= 2:
        shape_y, shape_x = shape_y[:-2], shape_x[:-2]
    for what, a, b in (("shape", shape_y, shape_x), ("dtype", y.dtype, x.dtype), ("device", y.device, x.device)):
        if a != b:
            keep = "batch, channels, dtype and device" if resize else "shape, dtype and device"
            raise ValueError(f"{owner}: the defense {name} returned {what} {tuple(y.shape) if what == 'shape' else a} "
                             f"for an input of {what} {tuple(x.shape) if what == 'shape' else b}; a defense must "
                             f"keep the input's {keep}")
    return y


class Lambda(Defense):
    """A plain module or callable ``x -> x'`` (e.g. a Pillow round trip) as a defense with default facts.

    ``differentiable`` is True (autograd goes wherever the function lets it), ``randomized``
    False unless the wrapped object says otherwise.
    """

    differentiable = True

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn
        self.differentiable = bool(getattr(fn, "differentiable", True))
        self.randomized = bool(getattr(fn, "randomized", False))

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return "" if isinstance(self.fn, nn.Module) else getattr(self.fn, "__name__", repr(self.fn))


def as_defense(obj: object, name: str = "defense") -> Defense:
    """``obj`` itself when it is a :class:`Defense`, else a :class:`Lambda` around a module or callable."""
    if isinstance(obj, Defense):
        return obj
    if callable(obj):
        return Lambda(obj)
    raise TypeError(f"{name} must be an nn.Module or a callable x -> x', got {type(obj).__name__}")


def draw_device(generator: torch.Generator | None) -> torch.device:
    """Where a defense draws its random numbers: its generator's device, the CPU for the global RNG."""
    return generator.device if generator is not None else torch.device("cpu")
