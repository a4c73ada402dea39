"""The fidelity-and-speed report of the JPEG layer (``diffjpeg report``).

Fidelity: on the colour photos scikit-image ships (odd sizes included), compare each differentiable
JPEG's output with Pillow's ``decode(encode(x))`` (libjpeg-turbo) at the same quality and
subsampling: PSNR and the share of identical 8-bit pixels. Speed: forward + backward time of the
layer (eager, and compiled with ``--compile``) on batches of photo crops, and exact mode's forward
pass against Pillow's encode + decode; kornia's ``jpeg_codec_differentiable`` is measured in the same
run, and every timed forward pass is asserted to give Pillow's pixels.
Peak memory: the extra bytes that forward + backward allocate, per input byte, beside kornia's.
Presets: each codec preset (:mod:`diffjpeg.jpeg.presets`) against its own library's encode + decode
through jpeglib, one column per preset: the share of identical 8-bit values.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..compiled import compile as compile_module
from ..jpeg.codec import DiffJPEG, diff_jpeg
from ..jpeg.real import real_jpeg
from ..jpeg.presets import PRESETS
from ..metrics import psnr

QUALITIES = (1, 5, 10, 20, 30, 50, 75, 90, 95, 99)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SETTINGS = ("420", "444", "gray")
#: PSNR reported for identical images (the true value is infinite)
PSNR_CAP = 100.0

Layer = Callable[[torch.Tensor, int, str], torch.Tensor]


def photos(names=PHOTOS) -> list[tuple[str, np.ndarray]]:
    """scikit-image's colour photos (uint8 HxWx3), plus a 509x507 crop of the first (not a multiple of 16)."""
    import skimage.data

    out = [(name, getattr(skimage.data, name)()) for name in names]
    out.append((f"{names[0]}[:509,:507]", out[0][1][:509, :507]))
    return out


def to_tensor(image: np.ndarray, setting: str) -> torch.Tensor:
    """HxWx3 uint8 -> ``(1, C, H, W)`` float in [0, 1]; "gray" takes ITU-R 601 luma as Pillow's ``L``."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].double() / 255.0
    if setting == "gray":
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype)[None, :, None, None]
        x = torch.floor((x * weights).sum(1, keepdim=True) * 255.0 + 0.5) / 255.0
    return x.float()


def identical(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of 8-bit values (after rounding) that are equal."""
    return (torch.round(a * 255) == torch.round(b * 255)).double().mean().item()


def kornia_jpeg(x: torch.Tensor, q, subsampling: str) -> torch.Tensor | None:
    """kornia's differentiable JPEG (RGB, 4:2:0 only; ``None`` elsewhere)."""
    from kornia.enhance import jpeg_codec_differentiable

    if x.shape[1] != 3 or subsampling != "420":
        return None
    q = q if isinstance(q, torch.Tensor) else torch.tensor([float(q)], device=x.device)
    return jpeg_codec_differentiable(x, q.to(x.dtype))


def layers(exact: bool = True) -> dict[str, Layer]:
    """The layers compared: ours with the default "ste" estimator, with Shin & Song's smooth "cubic"
    estimator (its forward pass is not exact) and, optionally, "cubic" in exact mode; kornia."""
    out: dict[str, Layer] = {
        "diffjpeg ste": lambda x, q, s: diff_jpeg(x, q=q, subsampling=s),
        "diffjpeg cubic": lambda x, q, s: diff_jpeg(x, q=q, subsampling=s, rounding="cubic"),
    }
    if exact:
        out["diffjpeg cubic exact=True"] = lambda x, q, s: diff_jpeg(x, q=q, subsampling=s, rounding="cubic",
                                                                      exact=True)
    out["kornia"] = kornia_jpeg
    return out


@dataclass
class FidelityRow:
    layer: str
    setting: str
    quality: int
    psnr: float
    identical: float


def fidelity(images, qualities=QUALITIES, settings=SETTINGS, exact: bool = True) -> list[FidelityRow]:
    """PSNR / identical share of every layer against Pillow, averaged over ``images``."""
    rows = []
    tried = layers(exact)
    jobs = [(s, q) for s in settings for q in qualities]
    for setting, quality in tqdm(jobs, desc="fidelity", unit="setting"):
        subsampling = "444" if setting == "gray" else setting
        scores: dict[str, list[tuple[float, float]]] = {name: [] for name in tried}
        for _, image in images:
            x = to_tensor(image, setting)
            reference = real_jpeg(x, q=quality, subsampling=subsampling, backend="pillow")
            with torch.no_grad():
                for name, layer in tried.items():
                    y = layer(x, quality, subsampling)
                    if y is not None:
                        scores[name].append((min(PSNR_CAP, psnr(y, reference)), identical(y, reference)))
        for name, values in scores.items():
            if values:
                rows.append(FidelityRow(name, setting, quality, statistics.fmean(v[0] for v in values),
                                        statistics.fmean(v[1] for v in values)))
    return rows


@dataclass
class PresetRow:
    preset: str
    setting: str
    quality: int
    identical: float


def preset_fidelity(images, qualities=QUALITIES, settings=SETTINGS, presets=tuple(PRESETS)) -> list[PresetRow]:
    """Identical share of ``diff_jpeg(preset=p)`` against ``p``'s reference library (jpeglib), averaged
    over ``images``; the library runs with the preset's DCT and sampling switches."""
    from ..jpeg.jpeglib_codec import jpeglib_roundtrip

    rows = []
    jobs = [(s, q) for s in settings for q in qualities]
    for setting, quality in tqdm(jobs, desc="presets", unit="setting"):
        subsampling = "444" if setting == "gray" else setting
        for name in presets:
            options, version, _ = PRESETS[name]
            scores = []
            for _, image in images:
                x = to_tensor(image, setting)
                pixels = torch.round(x * 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
                reference = jpeglib_roundtrip(pixels[..., 0] if setting == "gray" else pixels, version, quality,
                                              subsampling, options=options)
                reference = torch.from_numpy(reference.reshape(pixels.shape)).permute(2, 0, 1)[None] / 255.0
                with torch.no_grad():
                    scores.append(identical(diff_jpeg(x, q=quality, subsampling=subsampling, preset=name), reference))
            rows.append(PresetRow(name, setting, quality, statistics.fmean(scores)))
    return rows


def time_forward_backward(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int,
                          min_seconds: float = 0.5) -> float:
    """Best (minimum) seconds of ``layer(x).backward(grad)`` (:func:`time_call`'s ``repeats`` and ``min_seconds``).

    ``grad`` is all ones (the gradient of ``.sum()``), made once, dense and in the output's layout: what
    a network's backward pass hands the layer. ``.sum()``'s own gradient is a single value broadcast
    (stride 0), which no network hands over; a compiled graph first copies it into the output's layout.
    """
    x = x.detach().requires_grad_(True)
    grad = torch.ones_like(layer(x).detach())

    def step():
        x.grad = None
        layer(x).backward(grad)

    return time_call(step, repeats, x.device, min_seconds)


def peak_extra_memory(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """Peak bytes of tensors alive on ``x``'s device during ``layer(x).sum().backward()`` (forward,
    backward and the input's gradient) beyond what was alive when it started; ``x`` is not counted.

    CUDA: the caching allocator's peak statistic. Other devices: the autograd profiler's memory
    timeline (``export_memory_timeline``: every tensor's allocation and release, in order).
    """
    x = x.detach().clone().requires_grad_(True)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        base = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        layer(x).sum().backward()
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        layer(x).sum().backward()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of CUDA-only snapshots
        path = Path(folder) / "timeline.json"
        prof.export_memory_timeline(str(path), device=str(x.device))
        _, sizes = json.loads(path.read_text())
    alive = [sum(per_category) for per_category in sizes]  # the first entry: what existed before (x)
    return max(alive) - alive[0]


def time_call(fn: Callable[[], object], repeats: int, device: torch.device | None = None,
              min_seconds: float = 0.5) -> float:
    """Best (minimum) seconds of ``fn()`` over ``repeats`` calls after a warm-up call, and over more calls
    until ``min_seconds`` have passed: on a shared machine a stall lasts milliseconds, longer than ten
    calls of a small batch, so a minimum over a fixed few calls of one is noise (``timeit``'s remedy)."""
    times: list[float] = []
    started = time.perf_counter()
    i = 0
    while i <= repeats or time.perf_counter() - started < min_seconds:
        i += 1
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        if i > 1:
            times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class MemoryRow:
    """Peak extra bytes of forward + backward (:func:`peak_extra_memory`), ours and the peer's."""

    shape: tuple
    device: str
    input_bytes: int
    ours: int
    peer_name: str
    peer: int

    @property
    def ratio(self) -> float:
        return self.peer / self.ours


@dataclass
class SpeedRow:
    task: str
    shape: tuple
    device: str
    ours: float
    peer_name: str
    peer: float

    @property
    def ratio(self) -> float:
        return self.peer / self.ours


def photo_batch(shape: tuple[int, int, int, int], seed: int = 0) -> torch.Tensor:
    """``(B, 3, S, S)`` crops of the photos at random offsets, in [0, 1]: realistic content for timing
    (Pillow's entropy coding is slower on noise, which would flatter a ratio against it)."""
    b, _, h, w = shape
    rng = np.random.default_rng(seed)
    images = [image for _, image in photos()]
    crops = []
    for i in range(b):
        image = images[i % len(images)]
        y, x = rng.integers(0, image.shape[0] - h + 1), rng.integers(0, image.shape[1] - w + 1)
        crops.append(image[y : y + h, x : x + w])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def _against_kornia(measure: Callable[[Callable, torch.Tensor], float], shapes, device, q: int, what: str):
    """Per shape: the photo batch ``x`` and ``measure(layer, x)`` of ``diff_jpeg`` at ``q`` and of kornia's
    layer (4:2:0), as ``(shape, x, ours, kornia's)``; ``what`` names the progress bar."""
    dev = torch.device(device)
    for shape in tqdm(shapes, desc=f"{what} ({device})", unit="shape"):
        x = photo_batch(shape).to(dev)
        qk = torch.full((shape[0],), float(q), device=dev)
        yield shape, x, measure(lambda t: diff_jpeg(t, q=q), x), measure(lambda t: kornia_jpeg(t, qk, "420"), x)


def speed(shapes=((8, 3, 256, 256), (32, 3, 224, 224)), device="cpu", repeats: int = 5, q: int = 50,
          exact: bool = True, compiled: bool = False) -> list[SpeedRow]:
    """Forward+backward time of DiffJPEG vs kornia; exact mode's forward vs Pillow encode+decode.

    The run asserts that every timed forward pass gives Pillow's pixels: the layer's at each shape
    (eager and, with ``compiled``, :func:`diffjpeg.compile`'s fullgraph module, whose compilation is
    the untimed warm-up call) and exact mode's.
    """
    timed = _against_kornia(lambda layer, x: time_forward_backward(layer, x, repeats), shapes, device, q, "speed")
    rows = []
    for shape, x, ours, peer in timed:
        _assert_pillow(diff_jpeg(x, q=q), x, q, "the layer")
        rows.append(SpeedRow("forward+backward", shape, device, ours, "kornia", peer))
        if compiled:
            layer = compile_module(DiffJPEG(q=q).to(x.device), after=1, fullgraph=True)
            _assert_pillow(layer(x.detach().requires_grad_()).detach(), x, q, "the compiled layer")
            rows.append(SpeedRow("forward+backward, compiled", shape, device, time_forward_backward(layer, x, repeats),
                                 "kornia", peer))
    dev = torch.device(device)
    if not exact:
        return rows
    x = photo_batch(shapes[-1]).to(dev)
    with torch.no_grad():
        ours = time_call(lambda: diff_jpeg(x, q=75, exact=True), repeats, dev)
        _assert_pillow(diff_jpeg(x, q=75, exact=True), x, 75, "exact mode")
    pillow = time_call(lambda: real_jpeg(x.cpu(), q=75, backend="pillow"), repeats)
    rows.append(SpeedRow("exact forward", tuple(shapes[-1]), device, ours, "Pillow encode+decode (CPU)", pillow))
    return rows


def _assert_pillow(out: torch.Tensor, x: torch.Tensor, q: int, what: str) -> None:
    if not torch.equal(out.cpu(), real_jpeg(x.detach().cpu(), q=q, backend="pillow")):
        raise AssertionError(f"{what} differs from Pillow on the {'x'.join(map(str, x.shape))} timing batch at q={q}")


def memory(shapes=((8, 3, 256, 256), (32, 3, 224, 224)), device="cpu", q: int = 50) -> list[MemoryRow]:
    """Peak extra memory of forward+backward of ``diff_jpeg`` (4:2:0) and kornia's layer, per shape."""
    return [MemoryRow(tuple(shape), device, x.numel() * x.element_size(), ours, "kornia", peer)
            for shape, x, ours, peer in _against_kornia(peak_extra_memory, shapes, device, q, "memory")]


def markdown(fid: list[FidelityRow], spd: list[SpeedRow], command: str, presets: list[PresetRow] = (),
             mem: list[MemoryRow] = ()) -> str:
    """The report as markdown: settings, fidelity per quality, summary, speed, peak memory."""
    lines = [
        "# diffjpeg fidelity and speed report", "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        (f"- machine: {platform.platform()}, {torch.get_num_threads()} torch threads, "
         f"{platform.processor() or platform.machine()}"),
        f"- torch {torch.__version__}, Pillow {_pil_versions()}, kornia {_version('kornia')}", "",
        (f"Reference: Pillow `decode(encode(x))`. PSNR on the 8-bit scale, identical images counted as "
         f"{PSNR_CAP:.0f} dB; 'identical' is the share of equal 8-bit values."), "",
    ]
    layer_names = list(dict.fromkeys(r.layer for r in fid))
    settings = list(dict.fromkeys(r.setting for r in fid))
    lines += ["## Fidelity: mean PSNR (dB) / identical values (%)", "",
              "| setting | q | " + " | ".join(layer_names) + " |", "|---|---|" + "---|" * len(layer_names)]
    by_key = {(r.layer, r.setting, r.quality): r for r in fid}
    for setting in settings:
        for quality in dict.fromkeys(r.quality for r in fid):
            cells = []
            for name in layer_names:
                r = by_key.get((name, setting, quality))
                cells.append(f"{r.psnr:.2f} / {100 * r.identical:.3f}" if r else "n/a")
            lines.append(f"| {setting} | {quality} | " + " | ".join(cells) + " |")
    lines += ["", "## Fidelity summary (mean over qualities)", "",
              "| layer | setting | mean PSNR (dB) | min PSNR (dB) | identical (%) |", "|---|---|---|---|---|"]
    for name in layer_names:
        for setting in settings:
            rs = [r for r in fid if r.layer == name and r.setting == setting]
            if rs:
                lines.append(f"| {name} | {setting} | {statistics.fmean(r.psnr for r in rs):.2f} | "
                             f"{min(r.psnr for r in rs):.2f} | {100 * statistics.fmean(r.identical for r in rs):.3f} |")
    if presets:
        names = list(dict.fromkeys(r.preset for r in presets))
        lines += ["", "## Presets against their libraries (jpeglib): identical values (%)", "",
                  "Library per preset: " + ", ".join(f"{n} = {PRESETS[n][1]}" for n in names) + ".", "",
                  "| setting | q | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        cell = {(r.preset, r.setting, r.quality): r.identical for r in presets}
        for setting in dict.fromkeys(r.setting for r in presets):
            for quality in dict.fromkeys(r.quality for r in presets):
                lines.append(f"| {setting} | {quality} | "
                             + " | ".join(f"{100 * cell[(n, setting, quality)]:.3f}" for n in names) + " |")
    lines += ["", "## Speed (best of at least --repeats calls and 0.5 s of calls, seconds; ratio = peer / ours)", "",
              "forward+backward: `layer(x).backward(g)`, `g` all ones, dense, in the output's layout.", "",
              "| task | shape | device | diffjpeg (s) | peer | peer (s) | ratio |", "|---|---|---|---|---|---|---|"]
    for r in spd:
        lines.append(f"| {r.task} | {'x'.join(map(str, r.shape))} | {r.device} | {r.ours:.4f} | {r.peer_name} | "
                     f"{r.peer:.4f} | {r.ratio:.2f}x |")
    if mem:
        lines += ["", "## Peak extra memory of forward+backward (per input byte; ratio = peer / ours)", "",
                  "| shape | device | input (MB) | diffjpeg (x input) | peer | peer (x input) | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for r in mem:
            lines.append(f"| {'x'.join(map(str, r.shape))} | {r.device} | {r.input_bytes / 1e6:.1f} | "
                         f"{r.ours / r.input_bytes:.2f} | {r.peer_name} | {r.peer / r.input_bytes:.2f} | "
                         f"{r.ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def _pil_versions() -> str:
    import PIL
    from PIL import features

    return f"{PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffjpeg report", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/report.md"), help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="two photos, three qualities, small speed shapes")
    parser.add_argument("--device", default="cpu", help="device for the speed part (cpu, cuda)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls per speed measurement, at least (more until 0.5 s have passed)")
    parser.add_argument("--no-exact", action="store_true", help="skip exact mode")
    parser.add_argument("--compile", action="store_true",
                        help="also time the layer compiled (diffjpeg.compile, fullgraph; 15-40 s of compilation per "
                        "shape on a 2-core CPU)")
    parser.add_argument("--no-presets", action="store_true", help="skip the presets-against-their-libraries table")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device must be a torch device such as cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but torch sees no CUDA device here")
    if args.quick:
        images, qualities, shapes = photos(PHOTOS[:2]), (5, 50, 95), ((2, 3, 64, 64), (4, 3, 96, 96))
    else:  # the CIFAR-sized batch is where the fixed cost per call shows; the last shape times exact mode
        images, qualities, shapes = photos(), QUALITIES, ((8, 3, 256, 256), (128, 3, 32, 32), (32, 3, 224, 224))
    fid = fidelity(images, qualities, exact=not args.no_exact)
    spd = speed(shapes, device=args.device, repeats=args.repeats, exact=not args.no_exact, compiled=args.compile)
    preset_images = [(f"{n}[:96,:96]", image[:96, :96]) for n, image in images[:1]] if args.quick else images
    pre = [] if args.no_presets else preset_fidelity(preset_images, qualities)
    mem = memory(shapes, device=args.device)
    text = markdown(fid, spd, "diffjpeg report " + " ".join(argv if argv is not None else sys.argv[1:]), pre, mem)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")
    return 0
