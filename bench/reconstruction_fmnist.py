"""PixelDepthReconstruction (Zhang et al.) on Fashion-MNIST: gray-box and BPDA white-box accuracy.

Trains (or reuses, from ``--workdir``) a small CNN classifier and the EDSR reconstruction network
(bit-depth compressed clean + FGSM images -> clean, FGSM eps drawn from [0, 0.1] against the
classifier, as in the paper), then reports on the first ``--test`` test images:

* accuracy on clean images, under FGSM, BIM and PGD with a random start (L-inf, eps 0.05: the paper's
  F-MNIST setting; the paper has no PGD column),
  for: the undefended classifier; bit-depth reduction only; bit-depth + reconstruction.
  *gray-box*: the attack is crafted on the undefended classifier and then passed through the
  defense (the paper's setting); *BPDA*: the attack differentiates the defended model end to end,
  with the straight-through quantiser (+ the network) in the backward pass (white-box, adaptive);
* PSNR (dB) of the defense's output against the clean image, for clean inputs and for gray-box
  FGSM inputs.

Run (CPU, a few minutes; checkpoints make an interrupted run resumable)::

    python bench/reconstruction_fmnist.py
    python bench/reconstruction_fmnist.py --train 60000 --test 10000 --epochs 10   # the full data

Needs the Fashion-MNIST idx files (Debian: ``apt install dataset-fashion-mnist``).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torchattacks
from torch import nn

from diffjpeg.defenses.reconstruction import EDSR, PixelDepthReconstruction, load_weights, save_weights
from diffjpeg.eval.datasets import FASHION_MNIST_DIR, load_fashion_mnist
from diffjpeg.eval.train_reconstruction import FMNISTNet
from diffjpeg.learn.classifier import accuracy, train_classifier
from diffjpeg.learn.reconstruction import train_reconstruction
from diffjpeg.metrics import psnr
from diffjpeg.wrappers import BPDA, DefendedModel

#: Zhang et al., Fashion-MNIST, eps = 0.05, ResNet-50 (Table 2 / Table 4, first attack strength)
PAPER = [
    ("paper, ResNet-50, no defense (Table 2)", "93 %", "22 %", "2 %"),
    ("paper, ResNet-50, defense, gray-box (Table 2)", "89 %", "85 %", "85 %"),
    ("paper, ResNet-50, no defense (Table 4)", "93 %", "38 %", "0 %"),
    ("paper, ResNet-50, defense, gray-box (Table 4)", "89 %", "87 %", "87 %"),
]


def attack_batches(attack, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=FASHION_MNIST_DIR)
    p.add_argument("--workdir", default="out/reconstruction_fmnist", help="weights and checkpoints [%(default)s]")
    p.add_argument("--train", type=int, default=10000, help="training images (first N) [%(default)s]")
    p.add_argument("--test", type=int, default=500, help="test images (first N) [%(default)s]")
    p.add_argument("--levels", type=int, default=4, help="grey levels (paper: 4 on F-MNIST) [%(default)s]")
    p.add_argument("--eps", type=float, default=0.05, help="attack eps (paper: 0.05) [%(default)s]")
    p.add_argument("--bim-steps", type=int, default=10, help="BIM steps, step eps/4 [%(default)s]")
    p.add_argument("--pgd-steps", type=int, default=20,
                   help="PGD steps (random start, step 2.5 eps/steps) [%(default)s]")
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="reconstruction epochs [%(default)s]")
    p.add_argument("--features", type=int, default=32, help="EDSR width [%(default)s]")
    p.add_argument("--blocks", type=int, default=4, help="EDSR residual blocks [%(default)s]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    command = "python bench/reconstruction_fmnist.py" + ("" if not argv else " " + " ".join(argv))

    try:
        x_train, y_train = load_fashion_mnist(args.data, "train", limit=args.train)
        x_test, y_test = load_fashion_mnist(args.data, "test", limit=args.test)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    tag = f"n{args.train}_s{args.seed}"
    clf = FMNISTNet()
    clf_path = work / f"classifier_{tag}_e{args.classifier_epochs}.pt"
    reused = []
    if clf_path.is_file():
        load_weights(clf_path, clf)
        reused.append("classifier")
    else:
        train_classifier(clf, x_train, y_train, epochs=args.classifier_epochs,
                         checkpoint=clf_path.with_suffix(".ckpt"), generator=torch.Generator().manual_seed(args.seed),
                         progress=not args.quiet)
        save_weights(clf, clf_path)
    clf.eval()
    t_clf = time.perf_counter() - t0

    net = EDSR(channels=1, features=args.features, blocks=args.blocks)
    rec_path = work / f"edsr_{tag}_k{args.levels}_f{args.features}b{args.blocks}_e{args.epochs}.pt"
    if rec_path.is_file():
        load_weights(rec_path, net)
        reused.append("reconstruction")
    else:
        train_reconstruction(net, x_train, levels=args.levels, classifier=clf, labels=y_train, fgsm_eps=(0.0, 0.1),
                             epochs=args.epochs, checkpoint=rec_path.with_suffix(".ckpt"),
                             generator=torch.Generator().manual_seed(args.seed), progress=not args.quiet)
        save_weights(net, rec_path)
    net.eval()
    t_rec = time.perf_counter() - t0 - t_clf

    defenses = {
        "bit-depth only": PixelDepthReconstruction(levels=args.levels, network=nn.Identity()),
        "bit-depth + reconstruction": PixelDepthReconstruction(levels=args.levels, network=net),
    }
    undefended = DefendedModel(clf)
    alpha = args.eps / 4

    def attacks(model):
        torch.manual_seed(args.seed)  # PGD's random start
        return {"FGSM": torchattacks.FGSM(model, eps=args.eps),
                "BIM": torchattacks.BIM(model, eps=args.eps, alpha=alpha, steps=args.bim_steps),
                "PGD": torchattacks.PGD(model, eps=args.eps, alpha=2.5 * args.eps / args.pgd_steps,
                                        steps=args.pgd_steps, random_start=True)}

    # gray-box adversarial examples: crafted once on the undefended classifier
    gray = {name: attack_batches(a, x_test, y_test) for name, a in attacks(undefended).items()}
    rows = [("undefended", "-", accuracy(undefended, x_test, y_test),
             *(accuracy(undefended, gray[k], y_test) for k in ("FGSM", "BIM", "PGD")), None, None)]
    for name, defense in defenses.items():
        with warnings.catch_warnings():  # evaluated without gradients; attacks below go through BPDA
            warnings.simplefilter("ignore", UserWarning)
            model = DefendedModel(clf, defense)
        with torch.no_grad():
            psnr_clean = psnr(defense(x_test), x_test)
            psnr_adv = psnr(defense(gray["FGSM"]), x_test)
        clean = accuracy(model, x_test, y_test)
        rows.append((name, "gray-box", clean, *(accuracy(model, gray[k], y_test) for k in ("FGSM", "BIM", "PGD")),
                     psnr_clean, psnr_adv))
        bpda = DefendedModel(clf, BPDA(defense))
        white = {k: attack_batches(a, x_test, y_test) for k, a in attacks(bpda).items()}
        rows.append((name, "BPDA (white-box)", clean,
                     *(accuracy(model, white[k], y_test) for k in ("FGSM", "BIM", "PGD")), psnr_clean, None))
    t_all = time.perf_counter() - t0

    def pct(v):
        return f"{100 * v:.1f} %"

    def db(v):
        return "-" if v is None else f"{v:.2f}"

    print(f"\nFashion-MNIST, first {len(x_test)} test images; classifier FMNISTNet trained {args.classifier_epochs} "
          f"epochs on {len(x_train)} images; EDSR(features={args.features}, blocks={args.blocks}) trained "
          f"{args.epochs} epochs; levels k = {args.levels}; L-inf eps = {args.eps:g}; BIM {args.bim_steps} steps "
          f"of {alpha:g}; PGD {args.pgd_steps} steps, random start\n")
    print(f"| defense | attack | clean | FGSM | BIM-{args.bim_steps} | PGD-{args.pgd_steps} | PSNR clean (dB) | "
          f"PSNR FGSM (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mode, clean, fgsm, bim, pgd, pc, pa in rows:
        print(f"| {name} | {mode} | {pct(clean)} | {pct(fgsm)} | {pct(bim)} | {pct(pgd)} | {db(pc)} | {db(pa)} |")
    for name, clean, fgsm, bim in PAPER:
        print(f"| {name} | - | {clean} | {fgsm} | {bim} | - | - | - |")
    note = f"; reused from {work}: {', '.join(reused)}" if reused else f"; a rerun reuses the weights in {work}"
    print(f"\ntime: classifier {t_clf:.0f} s, reconstruction {t_rec:.0f} s, total {t_all:.0f} s "
          f"({torch.get_num_threads()} threads{note})")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
