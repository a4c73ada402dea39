"""EOT-PGD speed: one batched pass of EOT(n) per step versus torchattacks' EOTPGD (n passes per step).

Same classifier, defense (RandomJPEG), images, eps, alpha, steps and number of draws for all three:

* ``torchattacks.EOTPGD(DefendedModel(clf, RandomJPEG), eot_iter=n)`` -- n forward/backward passes
  of B images per step; gradient = sum of the n per-draw CE gradients.
* ``torchattacks.PGD(DefendedModel(clf, EOT(RandomJPEG, n)))`` -- one pass of n*B images per step;
  gradient of the CE of the mean logits (``reduce="logits"``).
* ``diffjpeg.attacks.core.pgd`` on ``DefendedModel(clf, EOT(RandomJPEG, n, reduce="grad"))`` -- one
  pass of n*B images per step; the core ascends the model's own ``loss``, whose gradient is the mean
  of the n per-draw CE gradients, i.e. EOTPGD's estimator (sign steps make sum and mean identical).

Run::

    python bench/eot_pgd.py                      # CPU defaults: 64 images 32x32, n=16, 10 steps
    python bench/eot_pgd.py --device cuda --batch 256

Prints wall-clock seconds per attack (median of --repeats runs after one warm-up run), the time
ratio EOTPGD / batched EOT and the robust accuracy each attack leaves.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from diffjpeg.attacks.core import pgd
from diffjpeg.defenses import RandomJPEG
from diffjpeg.eval.datasets import gratings
from diffjpeg.wrappers import EOT, DefendedModel


def classifier(size: int, classes: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, classes),
    )


def train(size: int, steps: int = 150) -> nn.Module:
    torch.manual_seed(0)
    x, y = gratings(2048, seed=0, size=size)
    model = classifier(size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,))
        loss = F.cross_entropy(model((x[idx] - 0.5) / 0.25), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def timed(cases: dict, repeats: int, device: torch.device) -> tuple[dict, dict]:
    """Median seconds per case; runs are interleaved (one warm-up each) so background load is shared."""
    def once(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, out

    for fn in cases.values():
        once(fn)
    runs = {name: [] for name in cases}
    last = {}
    for _ in range(repeats):
        for name, fn in cases.items():
            t, last[name] = once(fn)
            runs[name].append(t)
    return {name: statistics.median(ts) for name, ts in runs.items()}, last, runs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n", type=int, default=16, help="EOT draws (eot_iter)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=16 / 255)
    p.add_argument("--q", type=int, nargs=2, default=(50, 90), metavar=("LO", "HI"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-batch", default="auto", help="EOT max_batch: auto, none or an int")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    clf = train(a.size).to(device)
    x, y = gratings(a.batch, seed=1, size=a.size)
    x, y = x.to(device), y.to(device)
    alpha = a.eps / 4
    norm = dict(mean=(0.5,) * 3, std=(0.25,) * 3)

    plain = DefendedModel(clf, RandomJPEG(tuple(a.q)), **norm)
    mb = "auto" if a.max_batch == "auto" else None if a.max_batch == "none" else int(a.max_batch)
    eot_logits = DefendedModel(clf, EOT(RandomJPEG(tuple(a.q)), n=a.n, reduce="logits", max_batch=mb), **norm)
    eot_grad = DefendedModel(clf, EOT(RandomJPEG(tuple(a.q)), n=a.n, reduce="grad", max_batch=mb), **norm)
    eval_model = DefendedModel(clf, EOT(RandomJPEG(tuple(a.q)), n=32), **norm)  # accuracy: 32-draw vote

    def acc(adv):
        with torch.no_grad():
            return (eval_model(adv).argmax(1) == y).float().mean().item()

    cases = {
        f"torchattacks.EOTPGD(eot_iter={a.n})": lambda: torchattacks.EOTPGD(
            plain, eps=a.eps, alpha=alpha, steps=a.steps, eot_iter=a.n)(x, y),
        f"torchattacks.PGD on EOT(n={a.n}, reduce='logits')": lambda: torchattacks.PGD(
            eot_logits, eps=a.eps, alpha=alpha, steps=a.steps)(x, y),
        f"core pgd on EOT(n={a.n}, reduce='grad')": lambda: pgd(eot_grad, x, y, a.eps, a.steps, alpha,
                                                                 generator=torch.Generator().manual_seed(0)),
    }
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} images={a.batch}x3x"
          f"{a.size}x{a.size} n={a.n} steps={a.steps} eps={a.eps:.4f} q={tuple(a.q)} repeats={a.repeats} "
          f"max_batch={a.max_batch}")
    print(f"clean accuracy (32-draw EOT vote): {acc(x):.3f}")
    times, advs, runs = timed(cases, a.repeats, device)
    for name, t in times.items():
        print(f"{name:52s} {t:8.3f} s (runs {' '.join(f'{r:.2f}' for r in runs[name])})  "
              f"robust acc {acc(advs[name]):.3f}")
    base = next(iter(times.values()))
    for name, t in list(times.items())[1:]:
        print(f"speed-up EOTPGD / [{name}]: {base / t:.2f}x")


if __name__ == "__main__":
    main()
