"""Time exact (libjpeg-turbo-emulating) JPEG round trip against Pillow on the same images.

Usage: python bench/exact_speed.py [--batch 32] [--size 224] [--quality 75] [--subsampling 420]
       [--device cpu] [--repeat 5] [--threads N]

Prints the best-of-``repeat`` wall time of Pillow encode+decode over the batch (one image at a
time, as a data loader would), of ``exact_jpeg`` on the whole batch, and their ratio; also checks
that both produce identical pixels.
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from diffjpeg.jpeg.exact import exact_jpeg

_PIL_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def _images(batch: int, size: int) -> np.ndarray:
    """``batch`` natural-looking RGB images (crops of scikit-image photos, else smooth noise)."""
    try:
        from skimage import data
        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    except Exception:  # pragma: no cover - scikit-image missing
        rng = np.random.default_rng(0)
        photos = [np.kron(rng.integers(0, 256, (64, 64, 3)), np.ones((8, 8, 1))).astype(np.uint8)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(batch):
        p = photos[i % len(photos)]
        y = rng.integers(0, p.shape[0] - size + 1)
        x = rng.integers(0, p.shape[1] - size + 1)
        out.append(p[y:y + size, x:x + size])
    return np.stack(out)


def _pil_tables(quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", quality=quality)
    q = Image.open(io.BytesIO(buf.getvalue())).quantization
    return torch.tensor([q[0], q[1]], dtype=torch.int64).view(2, 8, 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--subsampling", default="420", choices=sorted(_PIL_SUBSAMPLING))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); Pillow is single-threaded")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    imgs = _images(args.batch, args.size)
    ss = _PIL_SUBSAMPLING[args.subsampling]

    def pillow_round_trip() -> list[np.ndarray]:
        outs = []
        for a in imgs:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=args.quality, subsampling=ss)
            outs.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        return outs

    dev = torch.device(args.device)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(dev)
    qt = _pil_tables(args.quality).expand(args.batch, 2, 8, 8).to(dev)

    def exact_round_trip() -> torch.Tensor:
        y = exact_jpeg(x, qt, args.subsampling)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return y

    ref = pillow_round_trip()
    got = exact_round_trip()  # warm-up
    same = np.array_equal(np.stack(ref), got.permute(0, 2, 3, 1).cpu().numpy())

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_pil = best(pillow_round_trip)
    t_exact = best(exact_round_trip)
    n = args.batch
    print(f"batch {n}x3x{args.size}x{args.size}, q={args.quality}, {args.subsampling}, "
          f"device={dev}, torch threads={torch.get_num_threads()}")
    print(f"pillow encode+decode: {t_pil * 1e3:8.1f} ms  ({n / t_pil:8.1f} img/s)")
    print(f"exact_jpeg          : {t_exact * 1e3:8.1f} ms  ({n / t_exact:8.1f} img/s)")
    print(f"ratio exact/pillow  : {t_exact / t_pil:8.2f}x   identical pixels: {same}")


if __name__ == "__main__":
    main()
