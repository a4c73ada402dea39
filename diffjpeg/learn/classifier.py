"""Classifier training for the commands and benchmarks: cross-entropy with Adam, resumable; accuracy.

* :func:`train_classifier` -- train in place, one checkpoint per epoch (:func:`~.training.resumable_loop`);
* :func:`cached_classifier` -- load weights from a file if it exists, else train and save them;
* :func:`correct` / :func:`accuracy` -- which images, and what share, a model classifies right.

Example::

    history = train_classifier(net, images, labels, epochs=3, checkpoint="net.ckpt")
    print(accuracy(net, test_images, test_labels))
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..defenses.reconstruction import load_weights, save_weights
from ..wrappers import predict
from .training import minibatches, resumable_loop

__all__ = ["accuracy", "cached_classifier", "correct", "train_classifier"]


def train_classifier(model: nn.Module, images: Tensor, labels: Tensor, epochs: int = 3, batch_size: int = 128,
                     lr: float = 1e-3, checkpoint: str | Path | None = None,
                     generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Cross-entropy training with Adam, in train mode; per-epoch checkpoint and resume.

    Args:
        model: classifier ``(B, C, H, W) -> (B, K)`` logits, trained in place on its own device.
        images: ``(N, C, H, W)`` in [0, 1]; labels: ``(N,)`` int64.
        epochs, batch_size, lr: passes over the data, images per step, Adam's learning rate.
        checkpoint: per-epoch checkpoint path (resumed when it exists; run again with more
            ``epochs`` to train further), or ``None``.
        generator: the shuffling's source (default: seeded with 0).
        progress: show tqdm bars.

    Returns:
        the mean training loss of every epoch (the resumed ones included).
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = images.shape[0]

    def epoch(i: int) -> float:
        total = 0.0
        for idx in minibatches(n, batch_size, generator, f"classifier epoch {i + 1}/{epochs}", progress):
            loss = F.cross_entropy(model(images[idx].to(device)), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / n

    model.train()
    return resumable_loop(epoch, epochs, parts={"model": model, "optimizer": optimizer, "generator": generator},
                          kind="train_classifier", checkpoint=checkpoint, progress=progress, desc="classifier")


def cached_classifier(model: nn.Module, path: Path, images: Tensor, labels: Tensor, epochs: int, seed: int,
                      progress: bool = True) -> nn.Module:
    """Load ``model``'s weights from ``path`` if that file exists, else train it (resumably) and save them there."""
    if path.is_file():
        load_weights(path, model)
        print(f"classifier: loaded {path}")
        return model
    train_classifier(model, images, labels, epochs=epochs, checkpoint=path.with_name(path.name + ".ckpt"),
                     generator=torch.Generator().manual_seed(seed), progress=progress)
    save_weights(model, path)
    print(f"classifier: trained {epochs} epochs, saved {path}")
    return model


def correct(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> Tensor:
    """Bool ``(N,)`` on the CPU: whether the argmax logit of each image is its label (model in eval mode)."""
    model.eval()
    return predict(model, images, batch_size).cpu() == labels.cpu()


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Share of ``images`` whose argmax logit is the label (model in eval mode, on its device)."""
    return int(correct(model, images, labels, batch_size).sum()) / max(images.shape[0], 1)
