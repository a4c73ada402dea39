"""Small models the tests and benchmarks train on the spot (no weights to download)."""
from __future__ import annotations

import torch
from torch import nn

from .datasets import gratings


class Scale(nn.Module):
    """``x -> 4 x - 2``: maps [0, 1] inputs to [-2, 2] (a fixed input normalisation)."""

    def forward(self, x):
        return x * 4 - 2


def fragile_grating_classifier(classes: int = 4, steps: int = 100) -> nn.Module:
    """A tiny CNN ``(B, 3, 16, 16)`` in [0, 1] -> logits ``(B, classes)`` trained on :func:`gratings`.

    Deliberately small and fragile (few pixels flip it), for one-pixel attack tests and benchmarks.
    Deterministic; trains in under a second on one thread (a thread count of one is set during
    training, since two OpenMP threads make such tiny steps much slower on a busy 2-core machine).
    Returned in eval mode with frozen parameters.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                                nn.Linear(8 * 16, classes))
        x, y = gratings(2048, seed=0, classes=classes)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (128,), generator=g)
            loss = nn.functional.cross_entropy(net(x[idx] * 4 - 2), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model = nn.Sequential(Scale(), net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
