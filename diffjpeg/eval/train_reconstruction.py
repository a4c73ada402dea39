"""``diffjpeg train-reconstruction``: train the reconstruction network of PixelDepthReconstruction.

On Fashion-MNIST (idx files, see :mod:`diffjpeg.eval.datasets`): load (or train) a small CNN
classifier, then train an :class:`~diffjpeg.defenses.reconstruction.EDSR` to map bit-depth
compressed clean and FGSM images back to the clean ones (Zhang et al.), and save its state dict.
Both trainings (:mod:`diffjpeg.learn.classifier`, :mod:`diffjpeg.learn.reconstruction`) checkpoint
after every epoch and resume when run again with the same paths.

Example::

    diffjpeg train-reconstruction --data /usr/share/datasets/fashion-mnist --levels 4 --epochs 5 \\
        --limit 10000 --out weights.pt

The classifier, when none is given with ``--classifier-weights``, is trained first and saved as
``OUT`` with the suffix ``.classifier.pt`` (reused on the next run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..cli import add_run_options, out_folder_missing
from ..defenses.reconstruction import EDSR, load_weights, quantize_depth, save_weights
from ..learn.classifier import accuracy, cached_classifier
from ..learn.reconstruction import train_reconstruction
from ..metrics import psnr
from .datasets import FASHION_MNIST_DIR, load_fashion_mnist
from .zoo import SmallCNN

__all__ = ["FMNISTNet", "main", "parser"]


class FMNISTNet(SmallCNN):
    """The Fashion-MNIST :class:`~diffjpeg.eval.zoo.SmallCNN`: 28x28 grayscale in [0, 1] (no normalisation).

    Shape:
        input ``(B, 1, 28, 28)`` in [0, 1]; output ``(B, classes)`` logits.
    """

    def __init__(self, classes: int = 10):
        super().__init__(in_channels=1, image_size=28, classes=classes)


def _eps(text: str) -> tuple[float, float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected EPS or LO,HI, got {text!r}")
    return parts[0], parts[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjpeg train-reconstruction",
                                description="Train the EDSR reconstruction network of PixelDepthReconstruction "
                                            "on Fashion-MNIST (bit-depth compressed clean and FGSM images -> clean).")
    p.add_argument("--data", default=FASHION_MNIST_DIR, help="folder with the Fashion-MNIST idx files "
                   "(default: %(default)s, from Debian's dataset-fashion-mnist)")
    p.add_argument("--out", required=True, help="where to write the network's state dict (.pt)")
    p.add_argument("--levels", type=int, default=4, help="grey levels of the compression (paper: 4) [%(default)s]")
    p.add_argument("--epochs", type=int, default=5, help="reconstruction epochs [%(default)s]")
    p.add_argument("--batch-size", type=int, default=64, help="[%(default)s]")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate [%(default)s]")
    p.add_argument("--limit", type=int, default=None, help="use the first N training images (default: all 60000)")
    p.add_argument("--features", type=int, default=32, help="EDSR width [%(default)s]")
    p.add_argument("--blocks", type=int, default=4, help="EDSR residual blocks [%(default)s]")
    p.add_argument("--fgsm-eps", type=_eps, default=(0.0, 0.1),
                   help="FGSM eps, EPS or LO,HI drawn per image (paper, F-MNIST: 0,0.1) [0,0.1]")
    p.add_argument("--adversarial-fraction", type=float, default=0.5,
                   help="share of each batch replaced by FGSM images [%(default)s]")
    p.add_argument("--no-fgsm", action="store_true", help="train on clean compressed images only (no classifier)")
    p.add_argument("--classifier-weights", default=None,
                   help="state dict of an FMNISTNet to craft FGSM against (default: train one, saved as "
                        "OUT.classifier.pt, reused when present)")
    p.add_argument("--classifier-epochs", type=int, default=3, help="epochs when training the classifier [%(default)s]")
    p.add_argument("--checkpoint", default=None, help="per-epoch checkpoint (default: OUT.ckpt); resumed if present")
    add_run_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out_folder_missing("train-reconstruction", out):
        return 2
    try:
        x_train, y_train = load_fashion_mnist(args.data, "train", limit=args.limit)
        x_test, y_test = load_fashion_mnist(args.data, "test", limit=1000)
    except FileNotFoundError as exc:
        print(f"train-reconstruction: {exc}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    progress = not args.quiet

    classifier = None
    if not args.no_fgsm:
        classifier = FMNISTNet().to(device)
        if args.classifier_weights:
            try:
                load_weights(args.classifier_weights, classifier)
            except (FileNotFoundError, ValueError) as exc:
                print(f"train-reconstruction: --classifier-weights: {exc}", file=sys.stderr)
                return 2
        else:
            cached_classifier(classifier, out.with_name(out.name + ".classifier.pt"), x_train, y_train,
                              args.classifier_epochs, args.seed, progress)
        classifier.eval()
        print(f"classifier clean test accuracy (first 1000 test images): {accuracy(classifier, x_test, y_test):.3f}")

    network = EDSR(channels=1, features=args.features, blocks=args.blocks).to(device)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".ckpt")
    history = train_reconstruction(network, x_train, levels=args.levels, classifier=classifier, labels=y_train,
                                   fgsm_eps=args.fgsm_eps, adversarial_fraction=args.adversarial_fraction,
                                   epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, checkpoint=checkpoint,
                                   generator=torch.Generator().manual_seed(args.seed), progress=progress)
    save_weights(network, out)
    network.eval()
    with torch.no_grad():
        q = quantize_depth(x_test, args.levels)
        rec = network(q.to(device)).clamp(0, 1).cpu()
    print("epoch mean MSE: " + ", ".join(f"{v:.5f}" for v in history))
    print(f"PSNR on the first 1000 test images: bit-depth only {psnr(q, x_test):.2f} dB, "
          f"reconstructed {psnr(rec, x_test):.2f} dB")
    print(f"saved {out} (use PixelDepthReconstruction(levels={args.levels}, weights={str(out)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
