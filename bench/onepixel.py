"""One-pixel attack speed and success: diffjpeg's batched DE versus torchattacks' ``OnePixel``.

Both attacks get the same classifier, images, labels, number of pixels, population (``popsize``,
torchattacks' meaning) and generations (``steps``); both stop an image early once it succeeds.
torchattacks runs one scipy-style DE per image (one forward pass of the image's population per
generation, Python loops to build candidates); diffjpeg evolves all populations together, one forward
pass per generation for every image still running.

The classifier is a deliberately small, fragile CNN (one 3x3 conv layer with 8 channels, 4x4 max-pool,
linear head) trained here for 100 Adam steps on 16x16 oriented gratings (4 classes), attacked on
low-contrast copies (contrast 0.3) of held-out gratings, where roughly half fall to one pixel.

Run::

    python bench/onepixel.py                        # 64 images, 1 pixel, popsize 20, 20 steps, CPU
    python bench/onepixel.py --targeted --pixels 3
    python bench/onepixel.py --device cuda --images 512
    python bench/onepixel.py --topa --images 256    # TOPA's Table I on the same model and images

Prints success rate (mean over ``--repeats`` seeds), wall-clock seconds (median; after one warm-up
run) and queries per image for both, the time ratio, and the classifier's own time on as many
candidates as the batched attack evaluated: the floor of any implementation of the same search, so
torchattacks' time over it is the largest speed-up such an implementation can reach on this device.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torchattacks

from diffjpeg.attacks import OnePixel
from diffjpeg.eval.datasets import gratings
from diffjpeg.eval.models import fragile_grating_classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--pixels", type=int, default=1)
    p.add_argument("--popsize", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--targeted", action="store_true", help="target label (y + 1) mod 4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="seeds run; success is their mean, time the median")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both attacks")
    p.add_argument("--topa", action="store_true", help="instead: TOPA's Table I (FGSM 0.02, JPEG q 20/40, TOPA "
                   "with population 400, 100 generations) on these images")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.topa:
        return topa_table(args)

    model = fragile_grating_classifier().to(args.device)
    x, y = gratings(args.images, seed=1)
    x = (0.5 + 0.3 * (x - 0.5)).to(args.device)
    y = y.to(args.device)
    goal = (y + 1) % 4 if args.targeted else y
    with torch.no_grad():
        print(f"clean accuracy {(model(x).argmax(1) == y).float().mean().item():.3f} on {args.images} images; "
              f"pixels={args.pixels} popsize={args.popsize} steps={args.steps} targeted={args.targeted} "
              f"device={args.device} threads={torch.get_num_threads()}")

    def verdict(adv):
        with torch.no_grad():
            pred = model(adv).argmax(1)
        return ((pred == goal) if args.targeted else (pred != goal)).float().mean().item()

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    def run_ours(seed):
        attack = OnePixel(model, pixels=args.pixels, steps=args.steps, popsize=args.popsize, targeted=args.targeted,
                          generator=torch.Generator(args.device).manual_seed(seed))
        return attack(x, goal), attack.last_queries.float().mean().item()

    def run_ta(seed):
        np.random.seed(seed)
        torch.manual_seed(seed)
        ta = torchattacks.OnePixel(model, pixels=args.pixels, steps=args.steps, popsize=args.popsize)
        if args.targeted:
            ta.set_mode_targeted_by_label(quiet=True)
        return ta(x, goal)

    run_ours(args.seed + 1000)  # warm-up (allocator, oneDNN/cuDNN kernel selection), then timed runs
    run_ta(args.seed + 1000) if args.images <= 8 else torchattacks.OnePixel(model, steps=1, popsize=args.popsize)(
        x[:4], goal[:4])
    rates_ours, rates_ta, times_ours, times_ta, queries = [], [], [], [], []
    for r in range(args.repeats):
        (adv, q), t = timed(lambda: run_ours(args.seed + r))
        rates_ours.append(verdict(adv)), times_ours.append(t), queries.append(q)
        adv_ta, t = timed(lambda: run_ta(args.seed + r))
        rates_ta.append(verdict(adv_ta)), times_ta.append(t)
    rate_ours, rate_ta = statistics.mean(rates_ours), statistics.mean(rates_ta)
    t_ours, t_ta, q_ours = statistics.median(times_ours), statistics.median(times_ta), statistics.mean(queries)

    print(f"{'attack':28s} {'success':>8s} {'seconds':>9s} {'queries/img':>12s}")
    print(f"{'diffjpeg OnePixel (batched)':28s} {rate_ours:8.3f} {t_ours:9.2f} {q_ours:12.1f}")
    print(f"{'torchattacks OnePixel':28s} {rate_ta:8.3f} {t_ta:9.2f} {'':>12s}")
    print(f"speed-up (torchattacks / diffjpeg): {t_ta / t_ours:.1f}x; success difference "
          f"{rate_ours - rate_ta:+.3f}")
    # the classifier alone on as many candidates, in the attack's chunks: the floor of any implementation
    # of this DE (same candidates), whatever its overhead
    chunk = OnePixel(model)._chunk(x)
    total = round(q_ours * args.images)
    batch = x[:1].expand(min(chunk, total), -1, -1, -1).contiguous()
    floor = []
    with torch.no_grad():
        for _ in range(args.repeats):
            _, t = timed(lambda: [model(batch[:min(chunk, total - i)]) for i in range(0, total, chunk)])
            floor.append(t)
    t_floor = statistics.median(floor)
    print(f"the classifier alone on the same {total} candidates ({chunk} per pass): {t_floor:.2f} s, "
          f"{100 * t_floor / t_ours:.0f}% of the batched attack; speed-up ceiling {t_ta / t_floor:.1f}x")


def topa_table(args) -> None:
    """The paper's Table I pipeline on the low-contrast gratings, at q = 20 and 40."""
    from diffjpeg.attacks import topa

    model = fragile_grating_classifier().to(args.device)
    x, y = gratings(args.images, seed=1)
    x = (0.5 + 0.3 * (x - 0.5)).to(args.device)
    for q in (20, 40):
        t0 = time.perf_counter()
        result = topa(model, x, y.to(args.device), q=q, attack="fgsm:eps=0.02",
                      generator=torch.Generator(args.device).manual_seed(args.seed))
        print(result.table())
        print(f"{int(result.attempted.sum())} attempted, {int(result.recovered.sum())} recovered, "
              f"{time.perf_counter() - t0:.1f} s\n")


if __name__ == "__main__":
    main()
