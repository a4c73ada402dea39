"""``diffjpeg train``: train the project's small CNN on Fashion-MNIST or CIFAR-10 for ``diffjpeg bench``.

Example::

    diffjpeg train --recipe fashion_mnist --out fmnist.pt              # Debian's dataset-fashion-mnist
    diffjpeg train --recipe cifar10 --data ~/data --download --out cifar10.pt

The result is a checkpoint that ``load_model("small_cnn", checkpoint=OUT)`` reads (weights, sizes,
normalisation, dataset). Training checkpoints after every epoch to ``OUT.ckpt`` and resumes from it
when run again with the same ``--out`` (raise ``--epochs`` to train further).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cli import add_run_options, out_folder_missing
from ..learn.classifier import accuracy, train_classifier
from ..wrappers import DefendedModel
from .datasets import load_dataset
from .zoo import LoadedModel, SmallCNN, save_small_cnn

__all__ = ["RECIPES", "main", "parser", "train_small_cnn"]

#: recipe -> dataset kind, the normalisation the model is trained with, default epochs, augmentation
RECIPES = {
    "fashion_mnist": {"spec": "fashion_mnist", "mean": (0.2860,), "std": (0.3530,), "epochs": 5, "augment": False},
    "cifar10": {"spec": "cifar10", "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616), "epochs": 30,
                "augment": True},
}


class _Augment(nn.Module):
    """Random translation by up to 4 pixels (zero padding) and horizontal flip, in training mode only."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        b, _, h, w = x.shape
        padded = F.pad(x, (4, 4, 4, 4))
        dx, dy = torch.randint(0, 9, (2, b)).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
        flip = (torch.rand(b) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train_small_cnn(images: Tensor, labels: Tensor, classes: int | None = None, *, mean=None, std=None,
                    epochs: int = 1, batch_size: int = 128, lr: float = 1e-3, augment: bool = False, seed: int = 0,
                    out: str | Path | None = None, checkpoint: str | Path | None = None, dataset: str | None = None,
                    device: str | torch.device = "cpu", progress: bool = False) -> LoadedModel:
    """Train a :class:`~diffjpeg.eval.zoo.SmallCNN` with Adam and cross-entropy (deterministic for a seed).

    Args:
        images: float ``(N, C, S, S)`` in [0, 1], ``C`` = 1 or 3; labels: int64 ``(N,)``.
        classes: number of classes (default: ``labels.max() + 1``).
        mean, std: per-channel normalisation applied (after augmentation) in training, stored with the model.
        augment: random 4-pixel translations and horizontal flips (CIFAR-style).
        out: where to write the ``small_cnn`` checkpoint (see :func:`~diffjpeg.eval.zoo.save_small_cnn`).
        checkpoint: per-epoch training checkpoint, resumed when it exists (default: ``OUT.ckpt`` with
            ``out``, else none).
        dataset: a name stored in the checkpoint (e.g. ``"cifar10"``).

    Returns:
        the trained model as :func:`~diffjpeg.eval.zoo.load_model` returns it (eval mode, frozen).
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) \
            or images.shape[2] != images.shape[3] or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (N, 1|3, S, S), got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1] or labels.dtype != torch.int64:
        raise ValueError(f"labels must be an int64 tensor of shape ({images.shape[0]},), got "
                         f"{(labels.dtype, tuple(labels.shape)) if isinstance(labels, Tensor) else type(labels).__name__}")
    classes = int(labels.max()) + 1 if classes is None else classes
    if checkpoint is None and out is not None:
        checkpoint = Path(out).with_name(Path(out).name + ".ckpt")
    with torch.random.fork_rng(devices=[]):  # seeded init and augmentation; the caller's RNG is left alone
        torch.manual_seed(seed)
        net = SmallCNN(int(images.shape[1]), int(images.shape[2]), classes).to(device)
        trainee = DefendedModel(net, _Augment() if augment else None, mean=mean, std=std)
        train_classifier(trainee, images, labels, epochs=epochs, batch_size=batch_size, lr=lr, checkpoint=checkpoint,
                         generator=torch.Generator().manual_seed(seed), progress=progress)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if out is not None:
        save_small_cnn(net, out, mean, std, dataset)
    return LoadedModel(net, None if mean is None else tuple(mean), None if std is None else tuple(std),
                       net.image_size, net.in_channels, classes, "small_cnn", dataset)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjpeg train", description="Train the project's small CNN on "
                                "Fashion-MNIST or CIFAR-10; writes a checkpoint for load_model('small_cnn', checkpoint=OUT).")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="fashion_mnist", help="[%(default)s]")
    p.add_argument("--data", default=None, help="dataset folder (fashion_mnist: default Debian's "
                   "/usr/share/datasets/fashion-mnist; cifar10: required, the folder holding cifar-10-batches-py)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing data (internet)")
    p.add_argument("--out", default=None, help="checkpoint to write [small_cnn_RECIPE.pt]")
    p.add_argument("--epochs", type=int, default=None, help="[fashion_mnist 5, cifar10 30]")
    p.add_argument("--batch-size", type=int, default=128, help="[%(default)s]")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate [%(default)s]")
    p.add_argument("--limit", type=int, default=None, help="use the first N training images (default: all)")
    p.add_argument("--no-augment", action="store_true", help="no random crops and flips (cifar10)")
    add_run_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    recipe = RECIPES[args.recipe]
    if args.recipe == "cifar10" and not args.data:
        print("train: --recipe cifar10 needs --data FOLDER (holding cifar-10-batches-py, or where --download "
              "puts it)", file=sys.stderr)
        return 2
    spec = f"{recipe['spec']}:{args.data}" if args.data else recipe["spec"]
    out = Path(args.out or f"small_cnn_{args.recipe}.pt")
    if out_folder_missing("train", out):
        return 2
    try:
        train = load_dataset(spec, n=args.limit, split="train", download=args.download)
        test = load_dataset(spec, split="test", download=args.download)
    except (FileNotFoundError, ValueError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    checkpoint = out.with_name(out.name + ".ckpt")
    if checkpoint.is_file():
        print(f"resuming from {checkpoint}")
    epochs = recipe["epochs"] if args.epochs is None else args.epochs
    loaded = train_small_cnn(train.images, train.labels, train.classes, mean=recipe["mean"], std=recipe["std"],
                             epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                             augment=recipe["augment"] and not args.no_augment, seed=args.seed, out=out,
                             checkpoint=checkpoint, dataset=args.recipe, device=args.device, progress=not args.quiet)
    acc = accuracy(loaded.defended(), test.images, test.labels)
    print(f"{args.recipe}: trained {epochs} epoch(s) on {len(train)} images; test accuracy {acc:.4f} ({len(test)} test images)")
    print(f"saved {out} (use load_model('small_cnn', checkpoint={str(out)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
