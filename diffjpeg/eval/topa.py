"""``diffjpeg topa``: JPEG + targeted one-pixel class recovery (TOPA) on a labelled tensor file.

A label-using dataset-cleaning procedure (Cucu et al. 2023), not an inference-time defense: see
:mod:`diffjpeg.attacks.topa`.

Inputs:

* ``--data FILE``: a ``torch.save``'d dict ``{"images": (N, C, H, W), "labels": (N,)}`` (or a tuple
  ``(images, labels)``); images float in [0, 1] or uint8 0..255.
* ``--model FILE``: a TorchScript module (``torch.jit.save``) or a whole pickled ``nn.Module``
  (``torch.save(model)``; loaded with ``weights_only=False``, so only for files you trust), taking
  images in [0, 1] -- or normalised images, with ``--mean``/``--std``, which are applied first.

Output (``--out DIR``): ``images/NNNNN.png`` (the cleaned images), ``results.csv`` (per image: label,
prediction after each stage, attempted, recovered), ``summary.json``, and the table of
misclassification rates (also printed), as the paper's Table I.

Example (the paper's setting: FGSM eps = 0.02, then JPEG at q = 20, then TOPA)::

    diffjpeg topa --data cifar_subset.pt --model vgg16.ts --attack fgsm:eps=0.02 --q 20 --out out/topa
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch


def _load_data(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        missing = {"images", "labels"} - set(obj)
        if missing:
            raise ValueError(f"--data {path}: the dict needs keys 'images' and 'labels', missing {sorted(missing)}")
        images, labels = obj["images"], obj["labels"]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        images, labels = obj
    else:
        raise ValueError(f"--data {path}: expected a dict {{'images', 'labels'}} or a tuple (images, labels), "
                         f"got {type(obj).__name__}")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"--data {path}: images and labels must be tensors")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return images, labels.long()


def _load_model(path: str) -> torch.nn.Module:
    model = torch.load(path, map_location="cpu", weights_only=False)  # TorchScript archives dispatch to jit.load
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model {path}: expected a TorchScript or pickled nn.Module, got {type(model).__name__}")
    return model


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffjpeg topa", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="torch.save'd {'images': (N,C,H,W), 'labels': (N,)}")
    p.add_argument("--model", required=True, help="TorchScript or pickled nn.Module returning logits")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--q", type=float, default=20, help="JPEG quality (default 20)")
    p.add_argument("--attack", default=None, help="optional first stage, a registry spec, e.g. fgsm:eps=0.02")
    p.add_argument("--pixels", type=int, default=1)
    p.add_argument("--steps", type=int, default=100, help="DE generations (default 100, Su et al.)")
    p.add_argument("--popsize", type=int, default=400, help="DE population (default 400, Su et al.)")
    p.add_argument("--codec", default="pillow", choices=("pillow", "exact"))
    p.add_argument("--subsampling", default="420", choices=("444", "422", "420"))
    p.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel normalisation mean")
    p.add_argument("--std", type=float, nargs="+", default=None, help="per-channel normalisation std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ..attacks.topa import topa
    from ..wrappers import DefendedModel

    try:
        images, labels = _load_data(args.data)
        model = _load_model(args.model).eval()
        if (args.mean is None) != (args.std is None):
            raise ValueError("--mean and --std go together")
        model = DefendedModel(model, None, args.mean, args.std).to(args.device).eval()
        generator = torch.Generator(args.device).manual_seed(args.seed)
        start = time.perf_counter()
        result = topa(model, images.to(args.device), labels.to(args.device), q=args.q, pixels=args.pixels,
                      steps=args.steps, popsize=args.popsize, attack=args.attack, codec=args.codec,
                      subsampling=args.subsampling, generator=generator)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"diffjpeg topa: error: {err}", file=sys.stderr)
        return 2
    result.save(args.out)
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write(result.table() + "\n")
    print(result.table())
    print(f"\n{int(result.attempted.sum())} images attempted, {int(result.recovered.sum())} recovered, "
          f"{time.perf_counter() - start:.1f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
