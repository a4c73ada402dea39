"""The field's anchors reproduced with `diffjpeg bench`, each table beside the paper's numbers.

Sections (``--only NAME`` runs some; every table is printed and written to ``--out/NAME.md``):

* ``athalye``: Athalye et al. 2018 broke JPEG, bit-depth reduction and TVM (Guo et al. 2018's input
  transformations) with BPDA (+EOT for randomized ones) to 0 %. Here: the rows of the embedded
  default run (``diffjpeg bench``; its ``bench-results/`` is reused when it is there) and TVM, which
  the default grid leaves out for time, under BPDA+EOT on the same model, images and attack.
* ``fd``: feature distillation (seed 004) and JPEG under BPDA on the embedded ImageNet default; the
  paper's Table 2 (Inception-v3, 100 BPDA iterations).
* ``fmnist``: feature distillation (one and two passes) under BPDA on the full Fashion-MNIST test set
  (10 000 images) with a small CNN trained here (``diffjpeg train --recipe fashion_mnist``), where
  the intervals are tight.
* ``topa``: seed 000's Table I stages (FGSM eps 0.02 -> JPEG q20 / q40 -> targeted one-pixel) on the
  full Fashion-MNIST test set with the same small CNN, beside the paper's CIFAR-10 / VGG16 numbers.

Every bench section runs the default attack ensemble (PGD, then APGD-CE and APGD-T) with the default
masking checks, and is resumable: rerunning the command reuses finished units in ``--out``.

Run (CPU; times in BENCHMARKS.md)::

    python bench/anchors.py                       # every section
    python bench/anchors.py --only fmnist topa    # some
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from diffjpeg.eval import run_benchmark
from diffjpeg.eval.checks import eps_name
from diffjpeg.eval.config import BenchConfig

#: Athalye et al. 2018, Table 1: Guo et al.'s transformations at a normalised L2 budget of 0.05, and
#: Xie et al.'s randomization at L-inf 0.031 (8/255), both ImageNet, both 0 % under BPDA(+EOT)
TVM_ANCHOR = "tvm:p=0.5,max_iter=20"
ATHALYE = {"none": "0 % (any undefended ImageNet model)", "jpeg:q=75": "0 % (Guo et al., BPDA)",
           "bit_depth:levels=16": "0 % (Guo et al., BPDA)", TVM_ANCHOR: "0 % (Guo et al., BPDA+EOT)",
           "random_jpeg:q=(50, 90)": "0 % (randomized input transformations, BPDA+EOT)"}
#: seed 004 (feature distillation), Table 2: accuracy under BPDA on 100 adversarial images (clean accuracy
#: on 1000 images in brackets), Inception-v3 at 78 % clean
FD_PAPER = {"jpeg:q=75": "0 %", "jpeg:q=20": "34 %", "jpeg:q=10": "45 % (61 % clean)", "fd": "10 % (77 % clean)",
            "fd:scale=2": "42 % (76 % clean)", "fd:scale=3": "60 % (74 % clean)", "fd:mode=2pass": "-"}
FD_DEFENSES = ["jpeg:q=75", "jpeg:q=20", "jpeg:q=10", "fd", "fd:scale=2", "fd:scale=3", "fd:mode=2pass"]
#: on the 10 000 Fashion-MNIST test images: the undefended model and feature distillation's one and two
#: passes (each row costs about 12 minutes on 2 CPU cores there)
FMNIST_DEFENSES = ["none", "fd", "fd:mode=2pass"]
#: seed 000 (TOPA), Table I: % misclassified after each stage, VGG16 on 1000 CIFAR-10 images (86.58 % clean)
TOPA_PAPER = {20: ("13.4", "89.3", "48.5", "12.5"), 40: ("13.4", "89.3", "52.0", "16.8")}


def _cell(row: dict, k: int) -> str:
    lo, hi = row["robust_ci"][k]
    flags = "".join(sorted({c["code"] for c in row["checks"] if not c["passed"] and c["eps"] in (None, row["eps"][k])}))
    return f"{100 * row['robust'][k]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" + (f" ⚠{flags}" if flags else "")


def bench_table(summary: dict, paper: dict[str, str], paper_name: str) -> str:
    """The summary's adaptive rows as a markdown table with the paper's column."""
    eps = summary["eps"]
    head = ["defense", "threat model", "defended"] + [f"ε={eps_name(e)}" for e in eps] + [paper_name]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        if row["defense"] not in paper or row["threat"] == "graybox":
            continue
        row = {**row, "eps": eps}
        cells = [_cell(row, k) for k in range(len(eps))]
        lo, hi = row["defended_ci"]
        defended = f"{100 * row['defended']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
        out.append("| " + " | ".join([row["defense"], row["threat"], defended, *cells, paper[row["defense"]]]) + " |")
    cfg = summary["config"]
    return (f"{cfg['model']} on {cfg['data']} (n={summary['examples']}), attack {' + '.join(cfg['attack'])}, "
            f"{cfg['steps']} steps; accuracy in % [95 % Clopper-Pearson interval]\n\n" + "\n".join(out) + "\n")


def athalye(args) -> str:
    summary = run_benchmark(BenchConfig(out=args.default_out, progress=not args.quiet))
    tvm = run_benchmark(BenchConfig(defenses=[TVM_ANCHOR], out=str(Path(args.out) / "tvm"), progress=not args.quiet))
    return bench_table({**summary, "rows": summary["rows"] + tvm["rows"]}, ATHALYE, "Athalye et al. 2018")


def fd(args) -> str:
    cfg = BenchConfig(defenses=FD_DEFENSES, threat_models=["bpda"], out=str(Path(args.out) / "fd-imagenet"),
                      progress=not args.quiet)
    return bench_table(run_benchmark(cfg), FD_PAPER, "paper (Table 2, BPDA)")


def fmnist_classifier(args) -> str:
    """The small CNN on Fashion-MNIST (trained once, then reused from ``--out``)."""
    from diffjpeg.eval.train import main as train

    path = Path(args.out) / "small_cnn_fashion_mnist.pt"
    if not path.is_file():
        argv = ["--recipe", "fashion_mnist", "--epochs", str(args.epochs), "--out", str(path), "--seed", "0"]
        if train(argv + (["--quiet"] if args.quiet else [])) != 0:
            raise SystemExit("training the Fashion-MNIST classifier failed")
    return str(path)


def fmnist(args) -> str:
    cfg = BenchConfig(model="small_cnn", checkpoint=fmnist_classifier(args), data="fashion_mnist",
                      batch_size=args.batch_size, defenses=FMNIST_DEFENSES, threat_models=["bpda"],
                      eps=[0.05, 0.1], large_eps=0.5, out=str(Path(args.out) / "fd-fmnist"), progress=not args.quiet)
    return bench_table(run_benchmark(cfg), {"none": "-", **FD_PAPER}, "paper (ImageNet, Table 2, BPDA)")


def topa_table(args) -> str:
    from diffjpeg.attacks import topa
    from diffjpeg.eval.datasets import load_dataset
    from diffjpeg.eval.zoo import load_model
    from diffjpeg.wrappers import DefendedModel

    loaded = load_model("small_cnn", checkpoint=fmnist_classifier(args))
    model = DefendedModel(loaded.model, None, loaded.mean, loaded.std).eval()
    data = load_dataset("fashion_mnist")
    head = "| stage | q=20 | q=40 | paper q=20 | paper q=40 |\n|---|---|---|---|---|"
    results, seconds = {}, {}
    for q in (20, 40):
        start = time.perf_counter()
        results[q] = topa(model, data.images, data.labels, q=q, attack="fgsm:eps=0.02", pixels=1, steps=args.de_steps,
                          popsize=args.popsize, generator=torch.Generator().manual_seed(0))
        seconds[q] = time.perf_counter() - start
    rates = {q: r.stages for q, r in results.items()}  # clean, after attack, after JPEG, after TOPA
    lines = [head] + [f"| {stage} | {100 * rates[20][stage]:.1f} | {100 * rates[40][stage]:.1f} | "
                      f"{TOPA_PAPER[20][i]} | {TOPA_PAPER[40][i]} |" for i, stage in enumerate(rates[20])]
    return (f"small_cnn on fashion_mnist (n={len(data.labels)}), % misclassified; one pixel, DE population "
            f"{args.popsize}, {args.de_steps} generations ({seconds[20]:.0f} s / {seconds[40]:.0f} s)\n\n"
            + "\n".join(lines) + "\n")


SECTIONS = {"athalye": athalye, "fd": fd, "fmnist": fmnist, "topa": topa_table}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS), help="sections [all]")
    p.add_argument("--out", default="out/anchors", help="work folder (resumable) [%(default)s]")
    p.add_argument("--default-out", default="bench-results", help="the default run's folder [%(default)s]")
    p.add_argument("--epochs", type=int, default=3, help="Fashion-MNIST classifier epochs [%(default)s]")
    p.add_argument("--batch-size", type=int, default=500, help="Fashion-MNIST bench batch [%(default)s]")
    p.add_argument("--popsize", type=int, default=40, help="TOPA's DE population [%(default)s]")
    p.add_argument("--de-steps", type=int, default=20, help="TOPA's DE generations [%(default)s]")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in args.only:
        start = time.perf_counter()
        table = SECTIONS[name](args)
        text = f"{table}\n{name}: {time.perf_counter() - start:.0f} s\n"
        (Path(args.out) / f"{name}.md").write_text(text)
        print(f"## {name}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
