"""Shared fixtures: a tiny synthetic image task and a small CNN trained on it in the session.

The task: 16x16 RGB images of a sinusoidal grating (period 8 px, random phase, random colour
tint, pixel noise); the class is the grating's orientation (0, 45, 90, 135 degrees). Low
frequencies survive JPEG at the qualities the tests use, so a defended classifier stays accurate
and attack results mean something. Training takes one to two seconds on an idle CPU.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffjpeg.eval.datasets import gratings

NUM_CLASSES = 4
SIZE = 16
AMPLITUDE = 0.22


def make_gratings(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 3, size, size)`` in [0, 1] and labels ``(n,)`` in [0, NUM_CLASSES)."""
    return gratings(n, seed, size, NUM_CLASSES, AMPLITUDE)


class SmallCNN(nn.Module):
    """``(B, 3, 16, 16) -> (B, 4)`` logits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


#: normalisation the classifier is trained with (DefendedModel applies it after the defense)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def rounding_bound(reference: torch.Tensor) -> float:
    """How far two gradients computed in a different order may differ: 8 units in the last place of the
    largest entry of ``reference`` (4.5-5 seen on an Intel Xeon, in both dtypes; a 1e-5 relative error
    in one adjoint stage is far above it)."""
    return 8 * torch.finfo(reference.dtype).eps * reference.abs().max().item()


@pytest.fixture(scope="session")
def grating_data():
    """Held-out test images ``(64, 3, 16, 16)`` and labels ``(64,)``."""
    return make_gratings(64, seed=1)


@pytest.fixture(scope="session")
def classifier():
    """A SmallCNN trained on normalised gratings, in eval mode, on the CPU (~1-2 s idle)."""
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as other tests find it
        torch.manual_seed(0)
        model = SmallCNN()
    x, y = make_gratings(2048, seed=0)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture
def eager_compile(monkeypatch):
    """``torch.compile`` on dynamo's "eager" backend: the real graph capture (graph breaks, guards) without
    inductor's code generation, which takes a minute per graph on a small CPU. Returns the list of the
    calls' ``(function, options)``."""
    calls = []
    real = torch.compile

    def compile_eagerly(fn, **options):
        calls.append((fn, options))
        return real(fn, backend="eager", **options)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    return calls
