"""``diffjpeg learn-qtables``: learn JPEG quantisation tables for a classifier, write them as JSON.

Loads the data (Fashion-MNIST from Debian's idx files, or the synthetic gratings), loads or trains a
small classifier, runs :func:`diffjpeg.learn.learn_qtables` (resumable from ``OUT.ckpt``), writes the
integer tables to ``OUT`` (JSON ``{"luma": [...], "chroma": [...], ...}``), and prints the test
accuracy through the real codec (``JPEG(qtables=...)``, Pillow) and through the differentiable layer
(they must agree within one percentage point; the exit status is 1 otherwise), with the bits per
pixel of the real files, next to the starting IJG tables.

Example::

    diffjpeg learn-qtables --data fmnist --lam 0.05 --steps 200 --out tables.json [--adversarial]

Without ``--classifier-weights`` a classifier is trained first (Fashion-MNIST: ``FMNISTNet``, saved as
``OUT`` + ``.classifier.pt`` and reused on the next run; gratings: the small grating CNN, in a second).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from ..cli import add_run_options, out_folder_missing
from ..defenses.reconstruction import load_weights
from ..jpeg.real import JPEG
from ..jpeg.tables import quality_tables
from ..jpeg.codec import DiffJPEG
from ..learn import learn_qtables, objective, real_bpp, save_tables
from ..learn.classifier import accuracy, cached_classifier
from ..wrappers import DefendedModel
from .datasets import FASHION_MNIST_DIR, gratings, load_fashion_mnist
from .models import fragile_grating_classifier
from .train_reconstruction import FMNISTNet

__all__ = ["main", "parser", "evaluate_tables"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjpeg learn-qtables", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("fmnist", "gratings"), default="fmnist", help="training data (default fmnist)")
    p.add_argument("--data-dir", default=FASHION_MNIST_DIR, help="Fashion-MNIST idx folder (default: Debian's)")
    p.add_argument("--out", required=True, help="tables JSON to write")
    p.add_argument("--lam", type=float, default=0.05,
                   help="weight of the rate proxy (CE per bit per pixel; default 0.05)")
    p.add_argument("--steps", type=int, default=200, help="optimisation steps (default 200)")
    p.add_argument("--lr", type=float, default=1.0, help="Adam step size in table units (default 1.0)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--init-quality", type=float, default=50,
                   help="IJG quality the tables start from (default 50)")
    p.add_argument("--subsampling", default="420", choices=("444", "422", "420"),
                   help="chroma subsampling (default 420)")
    p.add_argument("--adversarial", action="store_true",
                   help="add PGD examples crafted each step to the loss (default: off)")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf budget of the training PGD (default 0.1)")
    p.add_argument("--pgd-steps", type=int, default=3, help="steps of the training PGD (default 3)")
    p.add_argument("--classifier-weights", default=None, help="state dict of the classifier (default: train one)")
    p.add_argument("--classifier-epochs", type=int, default=3, help="epochs of that training (default 3)")
    p.add_argument("--limit", type=int, default=10000, help="training images used (default 10000)")
    p.add_argument("--test-limit", type=int, default=2000, help="test images evaluated (default 2000)")
    add_run_options(p)
    return p


def evaluate_tables(classifier: nn.Module, images: Tensor, labels: Tensor, tables: Tensor,
                    subsampling: str = "420") -> dict[str, float]:
    """Accuracy through the real codec and through ``DiffJPEG``, and real bits per pixel, for ``tables``.

    Args:
        classifier: eval-mode classifier on ``(B, C, H, W)`` in [0, 1]; images ``(N, C, H, W)``; labels ``(N,)``.
        tables: ``(2, 8, 8)`` integer tables in [1, 255].

    Returns:
        ``{"acc_real", "acc_diff", "bpp"}``; ``bpp`` counts the entropy-coded data of Pillow's files.
    """
    device = next(classifier.parameters()).device
    with torch.no_grad():
        real = JPEG(qtables=tables, subsampling=subsampling)(images)
    acc_real = accuracy(classifier, real, labels)
    acc_diff = accuracy(DefendedModel(classifier, DiffJPEG(qtables=tables, subsampling=subsampling)).to(device),
                        images, labels)
    return {"acc_real": acc_real, "acc_diff": acc_diff, "bpp": real_bpp(images, tables, subsampling)}


def _data(args) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if args.data == "gratings":
        x, y = gratings(args.limit, seed=args.seed + 1)
        xt, yt = gratings(args.test_limit, seed=args.seed + 2)
        return x, y, xt, yt
    x, y = load_fashion_mnist(args.data_dir, "train", limit=args.limit)
    xt, yt = load_fashion_mnist(args.data_dir, "test", limit=args.test_limit)
    return x, y, xt, yt


def _classifier(args, out: Path, x: Tensor, y: Tensor, device) -> nn.Module:
    if args.data == "gratings":
        model = fragile_grating_classifier()
        if args.classifier_weights:
            load_weights(args.classifier_weights, model)
        return model.to(device).eval()
    model = FMNISTNet().to(device)
    if args.classifier_weights:
        load_weights(args.classifier_weights, model)
        return model.eval()
    cached_classifier(model, out.with_name(out.name + ".classifier.pt"), x, y, args.classifier_epochs, args.seed,
                      not args.quiet)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out_folder_missing("learn-qtables", out):
        return 2
    for name in ("limit", "test_limit", "steps", "batch_size", "pgd_steps", "classifier_epochs"):
        if getattr(args, name) < 1:
            print(f"learn-qtables: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    try:
        x, y, xt, yt = _data(args)
    except FileNotFoundError as exc:
        print(f"learn-qtables: {exc}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    try:
        classifier = _classifier(args, out, x, y, device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"learn-qtables: --classifier-weights: {exc}", file=sys.stderr)
        return 2
    print(f"classifier clean test accuracy ({len(yt)} test images): {accuracy(classifier, xt, yt):.4f}")

    adversarial = {"eps": args.eps, "steps": args.pgd_steps} if args.adversarial else None
    try:
        result = learn_qtables(classifier, x, y, init_quality=args.init_quality, lam=args.lam,
                               adversarial=adversarial, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                               subsampling=args.subsampling, generator=torch.Generator().manual_seed(args.seed),
                               checkpoint=out.with_name(out.name + ".ckpt"), progress=not args.quiet)
    except (TypeError, ValueError) as exc:
        print(f"learn-qtables: {exc}", file=sys.stderr)
        return 2
    learned = result.qtables()
    initial = quality_tables(torch.tensor([float(args.init_quality)]))[0]
    rows = {f"IJG q={args.init_quality:g} (start)": evaluate_tables(classifier, xt, yt, initial, args.subsampling),
            "learned": evaluate_tables(classifier, xt, yt, learned, args.subsampling)}
    print("\n| tables | acc. real codec | acc. DiffJPEG | bpp (real files) |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['acc_real']:.4f} | {r['acc_diff']:.4f} | {r['bpp']:.4f} |")
    sub = slice(0, min(1000, len(y)))
    start, end = (objective(classifier, DiffJPEG(qtables=t, subsampling=args.subsampling), x[sub], y[sub],
                            args.lam)["total"].item() for t in (initial, learned))
    print(f"\nclean objective (exact codec, first {sub.stop} training images): {start:.4f} with the starting "
          f"tables -> {end:.4f} learned ({args.steps} steps)")
    r = rows["learned"]
    save_tables(out, result.tables, data=args.data, lam=args.lam, steps=args.steps, adversarial=adversarial,
                subsampling=args.subsampling, acc_real=r["acc_real"], acc_diff=r["acc_diff"], bpp=r["bpp"])
    print(f"saved {out} (use JPEG(qtables=diffjpeg.learn.load_tables({str(out)!r})))")
    gap = abs(r["acc_real"] - r["acc_diff"])
    if gap > 0.01:
        print(f"learn-qtables: real-codec and DiffJPEG accuracies differ by {100 * gap:.2f} points (> 1)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
