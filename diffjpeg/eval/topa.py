"""``diffjpeg topa``: JPEG + targeted one-pixel class recovery (TOPA) on a labelled tensor file.

A label-using dataset-cleaning procedure (Cucu et al. 2023), not an inference-time defense: see
:mod:`diffjpeg.attacks.topa`.

Inputs:

* ``--data FILE``: a ``torch.save``'d dict ``{"images": (N, C, H, W), "labels": (N,)}`` (or a tuple
  ``(images, labels)``); images float in [0, 1] or uint8 0..255.
* ``--model SPEC`` [``--checkpoint FILE``]: a classifier as :func:`diffjpeg.eval.zoo.load_model`
  names it (``efficientnet_lite0``, ``small_cnn``, ``torchvision:NAME``, ``MODULE:FACTORY``), with
  weights from a state-dict file read with ``weights_only=True``; its normalisation is applied after
  JPEG (``--mean``/``--std`` override it).

Output (``--out DIR``): ``images/NNNNN.png`` (the cleaned images), ``results.csv`` (per image: label,
prediction after each stage, attempted, recovered), ``summary.json``, and the table of
misclassification rates (also printed), as the paper's Table I.

Example (the paper's setting: FGSM eps = 0.02, then JPEG at q = 20, then TOPA)::

    diffjpeg topa --data cifar_subset.pt --model torchvision:vgg16 --checkpoint vgg16_cifar.pt \\
        --attack fgsm:eps=0.02 --q 20 --out out/topa
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..files import load_checkpoint


def _load_data(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    obj = load_checkpoint(path, "--data")
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffjpeg topa", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="torch.save'd {'images': (N,C,H,W), 'labels': (N,)}")
    p.add_argument("--model", required=True, help="efficientnet_lite0 | small_cnn | torchvision:NAME | MODULE:FACTORY")
    p.add_argument("--checkpoint", default=None, help="state-dict file for --model (read with weights_only=True)")
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
    from .zoo import load_model

    try:
        images, labels = _load_data(args.data)
        if (args.mean is None) != (args.std is None):
            raise ValueError("--mean and --std go together")
        loaded = load_model(args.model, checkpoint=args.checkpoint, device=args.device, mean=args.mean,
                            std=args.std, image_size=images.shape[-1])
        model = DefendedModel(loaded.model, None, loaded.mean, loaded.std).to(args.device).eval()
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
