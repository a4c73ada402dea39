"""Learned JPEG tables vs the IJG quality sweep vs Feature Distillation on Fashion-MNIST.

Trains (or reuses, from ``--workdir``) the small ``FMNISTNet`` classifier, learns tables with
:func:`diffjpeg.learn.learn_qtables` at a few rate weights ``lam`` (clean, and one adversarially
trained run), and reports on the first ``--test`` test images, for every table set:

* bits per pixel of the real files (entropy-coded data Pillow writes, headers excluded);
* clean accuracy through the real codec (``JPEG(qtables=...)``, Pillow / libjpeg-turbo);
* robust accuracy under BPDA PGD: L-inf PGD with a random start (torchattacks) on
  ``DefendedModel(clf, BPDA(JPEG(qtables=...)))`` -- Pillow forward, ``DiffJPEG`` gradient backward;
* for the learned and FD rows, the IJG sweep's clean and robust accuracy interpolated (linearly in
  bpp) at the same bpp: the matched-rate comparison.

Also prints the rate proxy's Spearman correlation with the real sizes over all table sets, and draws
clean and robust accuracy against bits per pixel (IJG sweep, learned tables, FD tables) into ``--plot``
(a PNG; ``--plot ''`` for none).

Run (CPU, a few minutes; classifier and learning runs are checkpointed in ``--workdir``)::

    python bench/learn_qtables_fmnist.py

Needs the Fashion-MNIST idx files (Debian: ``apt install dataset-fashion-mnist``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffjpeg.attacks import build
from diffjpeg.defenses import FeatureDistillation
from diffjpeg.defenses.reconstruction import load_weights, save_weights
from diffjpeg.eval.datasets import FASHION_MNIST_DIR, load_fashion_mnist
from diffjpeg.eval.train_reconstruction import FMNISTNet, accuracy, train_classifier
from diffjpeg.jpeg.real import JPEG
from diffjpeg.jpeg.tables import quality_tables
from diffjpeg.jpeg.codec import DiffJPEG
from diffjpeg.learn import learn_qtables, objective, rate_correlation, real_bpp, tables_tensor
from diffjpeg.wrappers import BPDA, DefendedModel


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=FASHION_MNIST_DIR)
    p.add_argument("--workdir", default="out/learn_qtables_fmnist")
    p.add_argument("--train", type=int, default=10000, help="training images (classifier and tables)")
    p.add_argument("--test", type=int, default=1000, help="test images evaluated")
    p.add_argument("--robust", type=int, default=1000, help="test images attacked")
    p.add_argument("--lams", default="0.02,0.1,0.5", help="rate weights of the learned tables")
    p.add_argument("--steps", type=int, default=150, help="learning steps per lam")
    p.add_argument("--adv-lam", type=float, default=0.1, help="lam of the adversarially trained run (<0: none)")
    p.add_argument("--eps", type=float, default=0.05, help="L-inf budget of the evaluation and training PGD")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--qualities", default="5,10,20,30,50,75,90")
    p.add_argument("--rounding", default="ste", help="estimator while learning (ste, noise, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="bench/results/learn_qtables_fmnist.png",
                   help="PNG of accuracy vs bits per pixel ('' for none)")
    return p


def plot_rate_accuracy(rows: dict[str, tuple[float, float, float]], path: str | Path, title: str = "") -> Path:
    """Clean and robust accuracy against real bits per pixel, one panel each, as a PNG (Agg, no display).

    Args:
        rows: table-set name -> ``(bpp, clean accuracy, robust accuracy)``. Names starting with "IJG q="
            form the quality sweep (a line, labelled with q); "learned ..." names are stars (open when
            adversarially trained, "+PGD" in the name); "FD ..." names are diamonds; others are crosses.
        path: PNG to write (its folder is created).
        title: figure title.

    Returns:
        ``Path(path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ijg = sorted((v + (k.split("=", 1)[1],) for k, v in rows.items() if k.startswith("IJG q=")), key=lambda r: r[0])
    others = [(k, v) for k, v in rows.items() if not k.startswith("IJG q=")]
    colours = iter(["tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"])
    styles = {}
    for name, _ in others:
        if name.startswith("FD"):
            styles[name] = dict(marker="D", markersize=8, color="tab:green", linestyle="none")
        elif name.startswith("learned"):
            colour = next(colours, "tab:gray")
            styles[name] = dict(marker="*", markersize=14, color=colour, linestyle="none",
                                markerfacecolor="none" if "+PGD" in name else colour, markeredgewidth=1.5)
        else:
            styles[name] = dict(marker="X", markersize=9, color="tab:gray", linestyle="none")
    for ax, column, label in ((axes[0], 1, "clean accuracy"), (axes[1], 2, "robust accuracy (BPDA PGD)")):
        if ijg:
            ax.plot([r[0] for r in ijg], [r[column] for r in ijg], "o-", color="tab:blue", label="IJG quality sweep")
            for r in ijg:
                ax.annotate(f"q={r[3]}", (r[0], r[column]), textcoords="offset points", xytext=(4, -11), fontsize=7,
                            color="tab:blue")
        for name, value in others:
            ax.plot(value[0], value[column], label=name, **styles[name])
        ax.set_xscale("log")
        ax.margins(x=0.06)
        ticks = FuncFormatter(lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (1, 2, 3, 5) else "")
        ax.xaxis.set_major_formatter(ticks)
        ax.xaxis.set_minor_formatter(ticks)
        ax.set_xlabel("bits per pixel (entropy-coded data of the real files)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def robust_accuracy(clf, tables, x, y, eps: float, steps: int, seed: int) -> float:
    model = DefendedModel(clf, BPDA(JPEG(qtables=tables))).eval()
    attack = build(f"pgd:eps={eps},alpha={2.5 * eps / steps},steps={steps}", model)
    torch.manual_seed(seed)
    adv = torch.cat([attack(x[i:i + 250], y[i:i + 250]) for i in range(0, len(y), 250)])
    return accuracy(model, adv, y)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    x, y = load_fashion_mnist(args.data, "train", limit=args.train)
    xt, yt = load_fashion_mnist(args.data, "test", limit=args.test)
    t0 = time.time()
    clf = FMNISTNet()
    path = work / "classifier.pt"
    if path.is_file():
        load_weights(path, clf)
    else:
        train_classifier(clf, x, y, epochs=3, checkpoint=work / "classifier.ckpt",
                         generator=torch.Generator().manual_seed(args.seed))
        save_weights(clf, path)
    clf.eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    print(f"classifier: clean accuracy without JPEG {accuracy(clf, xt, yt):.4f} ({time.time() - t0:.0f} s)")

    sets: dict[str, torch.Tensor] = {}
    for q in [int(v) for v in args.qualities.split(",")]:
        sets[f"IJG q={q}"] = quality_tables(torch.tensor([float(q)]))[0]
    fd = FeatureDistillation(mode="2pass")
    fd.calibrate(x[:2000])
    sets["FD 2pass (calibrated)"] = tables_tensor(fd.export_qtables())
    runs = [(float(v), None) for v in args.lams.split(",")]
    if args.adv_lam >= 0:
        runs.append((args.adv_lam, {"eps": args.eps, "steps": 2}))
    for lam, adversarial in runs:
        t0 = time.time()
        name = f"learned lam={lam:g}" + (f" +PGD(eps={args.eps:g})" if adversarial else "")
        slug = f"{name}_{args.rounding}".replace(" ", "_").replace("=", "").replace("(", "").replace(")", "")
        result = learn_qtables(clf, x, y, init_quality=50, lam=lam, adversarial=adversarial, steps=args.steps,
                               lr=1.0, batch_size=128, rounding=args.rounding,
                               generator=torch.Generator().manual_seed(args.seed), checkpoint=work / f"{slug}.ckpt")
        sets[name] = result.qtables()
        # the clean objective on 2000 training images, exact codec, before and after
        start, end = (objective(clf, DiffJPEG(qtables=t), x[:2000], y[:2000], lam)["total"].item()
                      for t in (quality_tables(torch.tensor([50.0]))[0], result.qtables()))
        print(f"{name}: {time.time() - t0:.0f} s, clean objective (exact codec, 2000 train images) "
              f"{start:.4f} at IJG q=50 -> {end:.4f}; luma table row 0 {result.tables[0][:8]}")

    xr, yr = xt[:args.robust], yt[:args.robust]
    rows = {}
    for name, tables in sets.items():
        with torch.no_grad():
            clean = accuracy(clf, JPEG(qtables=tables)(xt), yt)
        rows[name] = (real_bpp(xt, tables), clean, robust_accuracy(clf, tables, xr, yr, args.eps, args.pgd_steps,
                                                                   args.seed))
    ijg = sorted((v for k, v in rows.items() if k.startswith("IJG")), key=lambda r: r[0])
    bpp_axis = np.array([r[0] for r in ijg])

    def at(bpp: float, column: int) -> str:
        if not bpp_axis[0] <= bpp <= bpp_axis[-1]:
            return "(outside sweep)"
        return f"{np.interp(bpp, bpp_axis, [r[column] for r in ijg]):.3f}"

    print(f"\nFashion-MNIST, {args.test} test images ({args.robust} attacked); BPDA PGD L-inf eps={args.eps:g}, "
          f"{args.pgd_steps} steps, random start; tables learned with rounding={args.rounding!r}, "
          f"{args.steps} steps\n")
    print("| tables | bpp (real files) | clean acc. | BPDA PGD acc. | IJG clean at same bpp | IJG PGD at same bpp |")
    print("|---|---|---|---|---|---|")
    for name, (bpp, clean, robust) in sorted(rows.items(), key=lambda kv: kv[1][0]):
        match = ("", "") if name.startswith("IJG") else (at(bpp, 1), at(bpp, 2))
        print(f"| {name} | {bpp:.3f} | {clean:.3f} | {robust:.3f} | {match[0]} | {match[1]} |")
    corr = rate_correlation(xt[:200], list(sets.values()), subsampling="420")
    print(f"\nrate proxy vs real sizes over these {len(sets)} table sets (200 test images): "
          f"Spearman {corr['spearman']:.3f}, Pearson {corr['pearson']:.3f}")
    if args.plot:
        title = (f"Fashion-MNIST, {args.test} test images ({args.robust} attacked, BPDA PGD L-inf eps={args.eps:g}, "
                 f"{args.pgd_steps} steps); learned: {args.steps} steps, rounding={args.rounding!r}")
        print(f"plot: {plot_rate_accuracy(rows, args.plot, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
