"""The Defense contract shared by every defense in the project.

A defense is an ``nn.Module`` whose ``forward(x)`` is the real defense (same shape, dtype and
device out as in) and which states three facts about itself, so that wrappers (BPDA, EOT) and the
benchmark can decide how to attack it without special cases:

* ``differentiable`` -- autograd through ``forward`` gives a meaningful gradient;
* ``randomized`` -- two calls on the same input can return different outputs;
* ``surrogate()`` -- a differentiable module to use in BPDA's backward pass (identity when nothing
  better exists).
"""
from __future__ import annotations

import torch
from torch import nn


class Defense(nn.Module):
    """Base class of all defenses. Subclasses implement ``forward`` and override the facts."""

    #: autograd through ``forward`` yields a useful gradient
    differentiable: bool = False
    #: two calls on the same input may differ
    randomized: bool = False

    def surrogate(self) -> nn.Module:
        """A differentiable stand-in for the backward pass (BPDA). Default: identity."""
        return nn.Identity()


def draw_device(generator: torch.Generator | None) -> torch.device:
    """Where a defense draws its random numbers: its generator's device, the CPU for the global RNG."""
    return generator.device if generator is not None else torch.device("cpu")
