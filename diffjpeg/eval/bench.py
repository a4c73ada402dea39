"""``diffjpeg bench``: the command line of :func:`~diffjpeg.eval.runner.run_benchmark`.

Flags are the keys of :class:`~diffjpeg.eval.config.BenchConfig` with dashes; a ``--config`` TOML file
gives any of them, and flags win over it. Every option's help states its default. The benchmark
itself: :mod:`diffjpeg.eval.runner` (units, resume, ranks), :mod:`diffjpeg.eval.tasks` (what each unit
computes), :mod:`diffjpeg.eval.threats` (the threat models), :mod:`diffjpeg.eval.tables` (the report).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import threats
from .checks import eps_name
from .config import GRIDS, BenchConfig, load_config
from .runner import USER_ERRORS, run_benchmark

__all__ = ["config_from_args", "main", "parser"]


def _threat_help() -> str:
    listed = "; ".join(f"{t.name}: {t.definition}" for t in threats.THREAT_MODELS.values() if t.selectable)
    return (f"threat models (default: {' '.join(BenchConfig().threat_models)}). {listed}; {threats.ADAPTIVE}: one "
            f"per defense, bpda_eot if randomized, else surrogate if differentiable, else bpda")


def _eps_list(values) -> str:
    return " ".join(eps_name(e) for e in values)


def parser() -> argparse.ArgumentParser:
    d, full = BenchConfig(), GRIDS["full"]
    p = argparse.ArgumentParser(
        prog="diffjpeg bench", description="White-box robustness benchmark: defenses under attacks and threat models. "
        "With no arguments: the embedded default (EfficientNet-Lite0 on foolbox's ImageNet samples), offline.")
    # "--eps -1/255": a token of a minus sign and a digit is a value, not an option, so that the eps check names it
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.add_argument("--config", help="TOML file with any of the keys below, at the top level or under [bench] "
                   "(flags win over it; default: none)")
    p.add_argument("--grid", choices=sorted(GRIDS), help=f"start from this grid (default: {d.grid}; full: threat "
                   f"models {' '.join(full['threat_models'])}, eps {_eps_list(full['eps'])}, {full['steps']} steps, "
                   f"{full['restarts']} restarts, EOT {full['eot_samples']}, more defenses)")
    p.add_argument("--model", help=f"efficientnet_lite0 | small_cnn | torchvision:NAME | MODULE:FACTORY "
                   f"(default: {d.model})")
    p.add_argument("--checkpoint", help="state-dict file for the model, loaded with weights_only=True "
                   "(default: none, the model's own weights)")
    p.add_argument("--data", help="foolbox:imagenet|cifar10|... | imagefolder:PATH | cifar10:PATH | "
                   f"fashion_mnist[:PATH] | skimage (default: {d.data})")
    # not "--n": torchrun's parser would take it for an abbreviation of its own --nnodes/--nproc-per-node
    p.add_argument("--examples", dest="n", type=int, help="number of examples, config key n (default: all)")
    p.add_argument("--image-size", type=int, help="resize+crop to this size (default: the model's)")
    p.add_argument("--batch-size", type=int, help=f"examples per unit of work; a killed run loses at most one "
                   f"unit (default: {d.batch_size})")
    p.add_argument("--defenses", nargs="+", metavar="SPEC", help="defense specs, none for no defense "
                   f"(default: {' '.join(d.defenses)})")
    p.add_argument("--threat-models", nargs="+", metavar="NAME", help=_threat_help())
    p.add_argument("--attack", nargs="+", metavar="SPEC", help="attack spec(s) without eps: a named ensemble "
                   "(standard: APGD-CE then targeted APGD-DLR, square=true adds Square; autoattack[:version="
                   "standard|rand|plus|custom]: AutoAttack itself), one attack (pgd, apgd:loss=ce), or several run "
                   "as an ensemble, each on the examples still robust, worst case per example "
                   f"(default: {' '.join(d.attack)})")
    p.add_argument("--eps", nargs="+", metavar="EPS", help=f"L-inf budgets, increasing (default: {_eps_list(d.eps)})")
    p.add_argument("--steps", type=int, help=f"iterations of each attack (APGD: its steps; PGD: step size 2.5 eps / steps) "
                   f"(default: {d.steps})")
    p.add_argument("--restarts", type=int, help=f"restarts of each attack per eps, each on the examples still "
                   f"robust (default: {d.restarts}); check B reruns with 4x steps and 4x restarts")
    p.add_argument("--eot-samples", type=int, help=f"draws of a randomized defense per gradient in bpda_eot "
                   f"(default: {d.eot_samples})")
    p.add_argument("--large-eps", help=f"eps of the 'accuracy reaches ~0' check E (default: {eps_name(d.large_eps)})")
    p.add_argument("--tolerance", type=float, help=f"slack of the masking checks, a fraction "
                   f"(default: {d.tolerance})")
    p.add_argument("--seed", type=int, help=f"seed of every unit's randomness (default: {d.seed})")
    p.add_argument("--out", help=f"output folder; rerunning the same command resumes it; one run at a time holds it "
                   f"(default: {d.out})")
    p.add_argument("--device", help=f"cpu | cuda | cuda:N (default: {d.device})")
    p.add_argument("--compile", action="store_true", default=None,
                   help="compile the attacked graphs per input shape with torch.compile (diffjpeg.compile); "
                   "pays on a GPU, not on a small CPU (default: eager)")
    p.add_argument("--restart", action="store_true", default=None,
                   help="discard the results in --out and start over (default: resume)")
    p.add_argument("--download", action="store_true", default=None,
                   help="allow torchvision to download data/weights, needs internet (default: offline)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (default: shown)")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    values = load_config(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return BenchConfig.from_dict({**values, **flags})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        summary = run_benchmark(cfg)
    except USER_ERRORS as e:
        print(f"diffjpeg bench: error: {e}", file=sys.stderr)
        return 2
    if summary is not None:
        print(Path(cfg.out, "table.md").read_text())
        print(f"results in {cfg.out}/: results.jsonl, table.md, summary.json, robust_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
