"""Time per image of every defense at 224x224, beside reference implementations timed in the same run.

Run::

    python bench/defenses.py                  # CPU, batch 8, photo crops
    python bench/defenses.py --device cuda --batch 32

Peers measured in the same run: Pillow's JPEG encode+decode (the real codec), scipy's
``median_filter`` (3x3, per image and channel) and scikit-image's ``denoise_tv_chambolle`` (the
classic TV solver, all pixels kept). The times seed 004 reports (FD 0.16 s, TVM 38.9 s per image,
on its hardware) are printed beside ours for orientation only.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from diffjpeg.defenses import build
from diffjpeg.eval.report import photo_batch, time_call
from diffjpeg.jpeg.real import real_jpeg

SPECS = [
    "diffjpeg:q=75",
    "jpeg:q=75",
    "random_jpeg:q=(50, 90)",
    "fd:mode=1pass",
    "fd:mode=2pass,scale=2",
    "saliency_jpeg",
    "bit_depth:bits=4",
    "median:kernel=3x3",
    "median:kernel=5x5",
    "tvm:p=0.1",
    "tvm:p=0.25",
    "kmeans:k=8",
    "resize_pad:pad=30",
    "pixel_depth_reconstruction:levels=4,channels=3",
]
PAPER = {"fd": "0.16 s (seed 004)", "tvm": "38.9 s (seed 004)"}


def tiny_classifier() -> nn.Module:
    """A random small CNN (no weights to download) for the saliency defense's gradients."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def per_image(fn, batch: int, repeats: int, device: torch.device) -> float:
    """Best of ``repeats`` timed calls after a warm-up, divided by the batch size."""
    return time_call(fn, repeats, device) / batch


def peers(x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Reference implementations on the CPU, seconds per image."""
    from scipy.ndimage import median_filter
    from skimage.restoration import denoise_tv_chambolle

    arrays = x.cpu().numpy()
    return {
        "Pillow JPEG q=75 encode+decode": per_image(lambda: real_jpeg(x.cpu(), q=75, backend="pillow"), len(x),
                                                    repeats, torch.device("cpu")),
        "scipy median_filter 3x3": per_image(lambda: [median_filter(a, size=(1, 3, 3)) for a in arrays], len(x),
                                             repeats, torch.device("cpu")),
        "skimage denoise_tv_chambolle": per_image(
            lambda: [denoise_tv_chambolle(a, weight=0.1, channel_axis=0) for a in arrays], len(x), 1,
            torch.device("cpu")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = photo_batch((args.batch, 3, 224, 224)).to(device)
    clf = tiny_classifier().to(device)
    print(f"device={device} batch={args.batch} torch threads={torch.get_num_threads()} images 224x224 photo crops")
    print("| defense | s per image | reported |\n|---|---|---|")
    for spec in SPECS:
        defense = build(spec, classifier=clf) if spec.startswith("saliency") else build(spec)
        defense = defense.to(device).eval()
        with torch.no_grad() if not spec.startswith("saliency") else torch.enable_grad():
            seconds = per_image(lambda: defense(x), args.batch, args.repeats, device)
        print(f"| `{spec}` | {seconds:.4f} | {PAPER.get(spec.split(':')[0], '')} |")
    for name, seconds in peers(x, args.repeats).items():
        print(f"| peer: {name} (CPU) | {seconds:.4f} | |")


if __name__ == "__main__":
    main()
