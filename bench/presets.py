"""Every JPEG library jpeglib bundles against the DiffJPEG preset that emulates it, and the speed of
each preset against the default, in one run.

Run::

    python bench/presets.py                # the table at q=50 4:2:0 on a 251x333 photo, the grid, speed
    python bench/presets.py --quick        # fewer qualities and photos

Part 1 redoes the table of share of identical pixel values (DiffJPEG's default "pillow" preset and
the matching preset, each against the library's own encode + decode through jpeglib) on
scikit-image's astronaut, cropped to 251x333, at quality 50, 4:2:0. Part 2 is the minimum identical
share of each preset over a grid of photos, qualities and samplings. Part 3 times forward + backward
(``ste``) and the no-grad forward of ``diff_jpeg`` with each preset against the default preset on
the same batch. mozjpeg's row uses DiffJPEG with mozjpeg's own tables as its surrogate: mozjpeg's
trellis quantisation searches for the coefficients that minimise rate + distortion, so no rounding
rule reproduces it; the row measures how close the surrogate is.
"""
from __future__ import annotations

import argparse
import datetime
import platform

import numpy as np
import torch

from diffjpeg.eval.report import photo_batch, time_call, time_forward_backward
from diffjpeg.jpeg.codec import diff_jpeg
from diffjpeg.jpeg.jpeglib_codec import jpeglib_roundtrip, library_tables
from diffjpeg.jpeg.presets import PRESETS, CodecOptions, resolve_preset

#: (row label, library, preset or options DiffJPEG runs, jpeglib switches)
ROWS = [
    ("libjpeg-turbo 2.1, islow (Pillow, torchvision CPU, OpenCV)", "turbo210", "pillow"),
    ("IJG libjpeg 6b", "6b", "libjpeg6b"),
    ("libjpeg-turbo decode with the fast integer IDCT (JDCT_IFAST)", "turbo210", CodecOptions(idct="ifast")),
    ("libjpeg-turbo decode with the float IDCT (JDCT_FLOAT)", "turbo210", CodecOptions(idct="float")),
    ("libjpeg-turbo decode without fancy upsampling", "turbo210", "turbo-simple"),
    ("libjpeg-turbo encode with the fast integer FDCT", "turbo210", CodecOptions(fdct="ifast")),
    ("libjpeg-turbo FASTDCT + FASTUPSAMPLE both ways (turbo-fast)", "turbo210", "turbo-fast"),
    ("libjpeg-turbo float DCT both ways (turbo-float)", "turbo210", "turbo-float"),
    ("IJG libjpeg 7", "7", "libjpeg7"),
    ("IJG libjpeg 9d", "9d", "libjpeg9a"),
    ("IJG libjpeg 9f", "9f", "libjpeg9"),
    ("IJG libjpeg 9f, JDCT_IFAST both ways", "9f", "libjpeg9-fast"),
    ("mozjpeg 4.0.3 (trellis quantisation), surrogate: pillow preset + mozjpeg's tables", "mozjpeg403", "pillow"),
]


def _ours(img: np.ndarray, q: int, subsampling: str, preset, tables=None) -> np.ndarray:
    gray = img.ndim == 2
    x = (torch.from_numpy(img)[None, None] if gray else torch.from_numpy(img).permute(2, 0, 1)[None]).double() / 255
    with torch.no_grad():
        y = diff_jpeg(x, q, subsampling, qtables=tables, preset=preset)
    y = (y * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return y[..., 0] if gray else y


def _compare(img, q, subsampling, version, preset) -> tuple[float, int, float, int]:
    """(identical share default, max diff default, identical share preset, max diff preset)."""
    options = resolve_preset(preset)
    theirs = jpeglib_roundtrip(img, version, q, subsampling, options=options).astype(int)
    tables = None
    if version.startswith("mozjpeg"):
        tables = torch.from_numpy(library_tables(version, q)).double()
    default = np.abs(_ours(img, q, subsampling, "pillow") - theirs)
    emulated = np.abs(_ours(img, q, subsampling, preset, tables) - theirs)
    return (default == 0).mean(), int(default.max()), (emulated == 0).mean(), int(emulated.max())


def _label(preset) -> str:
    return f"`{preset}`" if isinstance(preset, str) else "`" + ", ".join(
        f"{k}={v!r}" for k, v in vars(preset).items() if v != getattr(CodecOptions(), k)) + "`"


def table(photo: np.ndarray) -> list[str]:
    lines = [("| library path (jpeglib 1.0.2) | DiffJPEG default: identical | max diff | preset / options | "
              "identical | max diff |"), "|---|---|---|---|---|---|"]
    for label, version, preset in ROWS:
        d, dm, e, em = _compare(photo, 50, "420", version, preset)
        lines.append(f"| {label} | {100 * d:.3f} % | {dm} | {_label(preset)} | {100 * e:.3f} % | {em} |")
    return lines


def grid(images, qualities) -> list[str]:
    lines = ["| preset | library | cases | min identical | max diff |", "|---|---|---|---|---|"]
    for name, (_, version, _) in PRESETS.items():
        worst, maxdiff, cases = 1.0, 0, 0
        for img in images:
            for mode in ("420", "422", "444", "gray"):
                pixels = np.ascontiguousarray(img[..., 1]) if mode == "gray" else img
                for q in qualities:
                    _, _, e, em = _compare(pixels, q, "444" if mode == "gray" else mode, version, name)
                    worst, maxdiff, cases = min(worst, e), max(maxdiff, em), cases + 1
        lines.append(f"| `{name}` | {version} | {cases} | {100 * worst:.3f} % | {maxdiff} |")
    return lines


def speed(shape, repeats: int) -> list[str]:
    """Best-of-``repeats`` times of every preset, interleaved (one call of each per round), so that
    load changes on a shared machine hit all presets alike."""
    x = photo_batch(shape)
    names = list(PRESETS)
    fb = {n: [] for n in names}
    fw = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            fb[name].append(time_forward_backward(lambda t, p=name: diff_jpeg(t, q=50, preset=p), x, 1, 0))
            with torch.no_grad():
                fw[name].append(time_call(lambda p=name: diff_jpeg(x, q=50, preset=p), 1, min_seconds=0))
    base_fb, base_fw = min(fb["pillow"]), min(fw["pillow"])
    lines = ["| preset | forward+backward (s) | vs pillow | exact forward, no grad (s) | vs pillow |",
             "|---|---|---|---|---|"]
    for name in names:
        lines.append(f"| `{name}` | {min(fb[name]):.4f} | {min(fb[name]) / base_fb:.2f}x | {min(fw[name]):.4f} | "
                     f"{min(fw[name]) / base_fw:.2f}x |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="table,grid,speed", help="comma-separated subset of table,grid,speed")
    args = parser.parse_args(argv)
    import skimage.data

    photo = np.ascontiguousarray(skimage.data.astronaut()[:251, :333])
    if args.quick:
        images, qualities, shape = [photo], (1, 50, 95, 100), (2, 3, 128, 128)
    else:
        images = [np.ascontiguousarray(skimage.data.chelsea()[:199, :257]),
                  np.ascontiguousarray(skimage.data.coffee()[:97, :601])]
        qualities, shape = (1, 25, 50, 75, 95, 100), (4, 3, 256, 256)
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {platform.platform()}, {torch.get_num_threads()} torch threads")
    parts = args.parts.split(",")
    if "table" in parts:
        print("\n### Identical pixel values at q=50, 4:2:0, astronaut 251x333\n")
        print("\n".join(table(photo)), flush=True)
    if "grid" in parts:
        print(f"\n### Each preset against its library: {len(images)} photos x qualities {qualities} x "
              "4:2:0, 4:2:2, 4:4:4, grayscale\n")
        print("\n".join(grid(images, qualities)), flush=True)
    if "speed" in parts:
        print(f"\n### Speed of each preset against the default, batch {'x'.join(map(str, shape))}, CPU, "
              f"best of {args.repeats}\n")
        print("\n".join(speed(shape, args.repeats)))


if __name__ == "__main__":
    main()
