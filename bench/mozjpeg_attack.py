"""BPDA-PGD against a JPEG defense deployed with mozjpeg, beside the same attack on libjpeg-turbo's.

Run::

    python bench/mozjpeg_attack.py            # EfficientNet-Lite0, foolbox's 20 ImageNet samples, 224x224

Each defense is the real codec (``JPEG(q=50)``: Pillow's libjpeg-turbo; ``JPEG(q=50,
backend="jpeglib", version="mozjpeg403")``: mozjpeg 4.0.3 through jpeglib, trellis quantisation
included). The attack is torchattacks' PGD (L-inf, 8/255 and 2/255, step eps/4, 10 steps) through
``BPDA(defense)``, whose backward pass is the defense's surrogate (``DiffJPEG`` with the "pillow"
preset; for mozjpeg with mozjpeg's own tables). Accuracy is that of the real defended model on the
adversarial images.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
import warnings

import torch
import torchattacks

from diffjpeg.eval.datasets import load_dataset
from diffjpeg.eval.zoo import load_model
from diffjpeg.jpeg.real import JPEG
from diffjpeg.wrappers import BPDA

DEFENSES = {
    "libjpeg-turbo 3.2 (Pillow), q=50": lambda: JPEG(q=50, backend="pillow"),
    "mozjpeg 4.0.3 (jpeglib), q=50": lambda: JPEG(q=50, backend="jpeglib", version="mozjpeg403"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--n", type=int, default=20, help="number of foolbox ImageNet samples (at most 20)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    loaded = load_model("efficientnet_lite0")
    data = load_dataset("foolbox:imagenet", n=args.n, image_size=loaded.image_size)
    x, y = data.images, data.labels
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
          f"{platform.platform()}, {torch.get_num_threads()} torch threads; {len(y)} images")
    print("\n| defense (real codec forward) | clean acc. | BPDA-PGD 2/255 | BPDA-PGD 8/255 | attack time (s) |")
    print("|---|---|---|---|---|", flush=True)
    for name, make in DEFENSES.items():
        defense = make()
        with warnings.catch_warnings():  # the real codec has no gradient: it is only evaluated here
            warnings.simplefilter("ignore")
            real = loaded.defended(defense)
        attacked = loaded.defended(BPDA(defense))
        with torch.no_grad():
            clean = (real(x).argmax(1) == y).float().mean().item()
        cells, start = [], time.perf_counter()
        for eps in (2 / 255, 8 / 255):
            attack = torchattacks.PGD(attacked, eps=eps, alpha=eps / 4, steps=args.steps, random_start=True)
            adv = attack(x, y)
            with torch.no_grad():
                cells.append((real(adv).argmax(1) == y).float().mean().item())
        elapsed = time.perf_counter() - start
        print(f"| {name} | {100 * clean:.0f} % | {100 * cells[0]:.0f} % | {100 * cells[1]:.0f} % | {elapsed:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
