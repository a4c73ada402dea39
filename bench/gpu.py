"""The prepared GPU run: one command, at most about 8 minutes on one GPU, one markdown file.

Sections (each records its own failure and the run goes on; the exit status is 1 if any failed):

1. the CUDA tests (``pytest -m cuda``);
2. CPU/device agreement of every differentiable layer, outputs and input gradients (bit-identical
   required for the integer mode: ``DiffJPEG`` with "ste", and exact mode);
3. forward+backward seconds of ``DiffJPEG(q=50)`` against kornia's ``jpeg_codec_differentiable`` on
   the device, eager and compiled (``diffjpeg.compile`` / ``torch.compile``);
4. exact forward images/s: ``DiffJPEG(exact=True)`` on the device against Pillow's encode+decode on the
   CPU and, on CUDA, torchvision's nvJPEG (``encode_jpeg``/``decode_jpeg``; 4:4:4, nvJPEG's only mode);
5. ``EOT(n=16)`` against torchattacks' ``EOTPGD`` (``bench/eot_pgd.py``);
6. the batched one-pixel attack against torchattacks' ``OnePixel`` (``bench/onepixel.py``);
7. with two or more GPUs, a two-process NCCL run of ``diffjpeg bench`` under ``torchrun``.

Run::

    python bench/gpu.py --out gpu-report.md                  # on a GPU machine
    python bench/gpu.py --device cpu --quick --out /tmp/r.md  # everything small, on the CPU (~1 minute)
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import eot_pgd  # noqa: E402  (bench/ scripts: reused, not copied)
import onepixel  # noqa: E402

import diffjpeg  # noqa: E402
from diffjpeg import BPDA, EOT, JPEG, DiffJPEG  # noqa: E402
from diffjpeg.defenses import (FeatureDistillation, KMeansColors, MedianSmoothing, RandomJPEG,  # noqa: E402
                               RandomResizePad)
from diffjpeg.eval.report import kornia_jpeg, photo_batch, time_call, time_forward_backward  # noqa: E402
from diffjpeg.jpeg.real import real_jpeg  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)  # CPU generator: the same draws for CPU and device inputs


#: name -> (factory, must be bit-identical across devices)
LAYERS = {
    "DiffJPEG ste": (lambda: DiffJPEG(50), True),
    "DiffJPEG cubic exact=True": (lambda: DiffJPEG(50, rounding="cubic", exact=True), True),
    "DiffJPEG per-image q": (lambda: DiffJPEG(torch.tensor([30.0, 60.0, 90.0, 75.0])), True),
    "DiffJPEG tables 444": (lambda: DiffJPEG(qtables=torch.full((2, 8, 8), 9.0), subsampling="444"), True),
    "DiffJPEG cubic": (lambda: DiffJPEG(50, rounding="cubic"), False),
    "DiffJPEG soft": (lambda: DiffJPEG(50, rounding="soft"), False),
    "DiffJPEG fourier": (lambda: DiffJPEG(50, rounding="fourier"), False),
    "JPEG surrogate": (lambda: JPEG(50).surrogate(), True),
    "RandomJPEG": (lambda: RandomJPEG(generator=_gen()), True),
    "MedianSmoothing": (lambda: MedianSmoothing(), False),
    "KMeansColors": (lambda: KMeansColors(k=4), False),
    "FeatureDistillation": (lambda: FeatureDistillation(), False),
    "RandomResizePad": (lambda: RandomResizePad(generator=_gen()), False),
    "BPDA(JPEG)": (lambda: BPDA(JPEG(50)), False),
    "EOT(RandomJPEG, n=4)": (lambda: EOT(RandomJPEG(generator=_gen()), n=4), False),
}


def cuda_tests(a) -> list[str]:
    if a.device.type != "cuda":
        return [f"not run: device {a.device} (the CUDA tests are `pytest -m cuda` on a CUDA machine)"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=a.budget)
    tail = (run.stdout + run.stderr).strip().splitlines()[-1:]
    if run.returncode not in (0, 5):
        raise RuntimeError(f"pytest -m cuda failed ({run.returncode}):\n" + (run.stdout + run.stderr)[-3000:])
    return [f"`pytest -m cuda`: {tail[0] if tail else 'no output'}"]


def agreement(a) -> list[str]:
    """Outputs and input gradients of each layer on the CPU and on the device, same input and draws."""
    x = photo_batch((4, 3, 40, 56), seed=3)
    weights = torch.rand(x.shape, generator=_gen(1))
    lines = ["| layer | max abs diff (output) | max abs diff (gradient) | required |", "|---|---|---|---|"]
    failed = []
    for name, (make, exact) in LAYERS.items():
        results = []
        for device in (torch.device("cpu"), a.device):
            layer = make().to(device)
            xi = x.to(device).requires_grad_(True)
            y = layer(xi)
            (g,) = torch.autograd.grad((y * weights.to(device)[..., :y.shape[-2], :y.shape[-1]]).sum()
                                       if y.shape == xi.shape else y.sum(), xi)
            results.append((y.detach().cpu(), g.cpu()))
        (y0, g0), (y1, g1) = results
        dy, dg = (y0 - y1).abs().max().item(), (g0 - g1).abs().max().item()
        ok = dy == 0 if exact else dy < 2 / 255
        lines.append(f"| {name} | {dy:.3g} | {dg:.3g} | {'bit-identical' if exact else '< 2/255'} "
                     f"{'' if ok else '**FAILED**'} |")
        if not ok:
            failed.append(name)
    if failed:
        raise AssertionError("\n".join(lines) + f"\n\nCPU/device disagreement: {failed}")
    return lines


def fwd_bwd(a) -> list[str]:
    lines = ["| shape | mode | diffjpeg s | kornia s | kornia / diffjpeg | forward = Pillow |",
             "|---|---|---|---|---|---|"]
    modes = ["eager"] + (["compiled"] if a.compile else [])
    for shape in a.shapes:
        x = photo_batch(shape).to(a.device)
        qk = torch.full((shape[0],), 50.0, device=a.device)
        with torch.no_grad():
            same = torch.equal(DiffJPEG(50)(x).cpu(), real_jpeg(x.cpu(), q=50, backend="pillow"))
        if not same:
            raise AssertionError(f"DiffJPEG(q=50) differs from Pillow on {shape}")
        for mode in modes:
            ours = DiffJPEG(50) if mode == "eager" else diffjpeg.compile(DiffJPEG(50), after=1)
            def peer(t, qk=qk):
                return kornia_jpeg(t, qk, "420")
            if mode == "compiled":
                peer = torch.compile(peer, dynamic=False)
            t_ours = time_forward_backward(ours, x, a.repeats)
            t_peer = time_forward_backward(peer, x, a.repeats)
            lines.append(f"| {'x'.join(map(str, shape))} | {mode} | {t_ours:.4f} | {t_peer:.4f} | "
                         f"{t_peer / t_ours:.1f}x | {same} |")
    return lines


def exact_forward(a) -> list[str]:
    shape = a.shapes[-1]
    x = photo_batch((shape[0], 3, 224, 224) if not a.quick else shape).to(a.device)
    n = x.shape[0]
    lines = ["| codec | subsampling | device | images/s |", "|---|---|---|---|"]
    for sub in ("420", "444"):
        layer = DiffJPEG(75, subsampling=sub, exact=True)
        with torch.no_grad():
            same = torch.equal(layer(x).cpu(), real_jpeg(x.cpu(), q=75, subsampling=sub, backend="pillow"))
            t = time_call(lambda: layer(x), a.repeats, a.device)
        lines.append(f"| DiffJPEG(exact=True){'' if same else ' **differs from Pillow**'} | {sub} | {a.device} | "
                     f"{n / t:.0f} |")
        t = time_call(lambda: real_jpeg(x.cpu(), q=75, subsampling=sub, backend="pillow"), a.repeats)
        lines.append(f"| Pillow encode+decode | {sub} | cpu | {n / t:.0f} |")
        if not same:
            raise AssertionError("\n".join(lines))
    if a.device.type == "cuda":
        from torchvision.io import decode_jpeg, encode_jpeg
        u8 = (x * 255 + 0.5).floor().to(torch.uint8)

        def nvjpeg():
            return decode_jpeg(encode_jpeg(list(u8), quality=75), device=a.device)

        t = time_call(nvjpeg, a.repeats, a.device)
        lines.append(f"| torchvision nvJPEG encode+decode | 444 | {a.device} | {n / t:.0f} |")
    return lines


def _captured(fn, argv: list[str]) -> list[str]:
    """Run a bench script's ``main`` with ``argv``; its printed lines, as a code block."""
    out, saved = io.StringIO(), sys.argv
    sys.argv = [fn.__module__] + argv
    try:
        with contextlib.redirect_stdout(out):
            fn(argv) if fn is eot_pgd.main else fn()
    finally:
        sys.argv = saved
    return ["```", f"{fn.__module__}.py {' '.join(argv)}", *out.getvalue().strip().splitlines(), "```"]


def eot(a) -> list[str]:
    if not a.quick:
        return _captured(eot_pgd.main, ["--device", str(a.device), "--n", "16", "--batch", "256", "--steps", "10",
                                        "--repeats", "3"])
    train = eot_pgd.train
    eot_pgd.train = lambda size: train(size, steps=5)  # --quick: a barely trained classifier, same code path
    try:
        return _captured(eot_pgd.main, ["--device", str(a.device), "--n", "4", "--batch", "4", "--size", "16",
                                        "--steps", "1", "--repeats", "1"])
    finally:
        eot_pgd.train = train


def one_pixel(a) -> list[str]:
    size = ["--images", "8", "--steps", "3", "--popsize", "10", "--repeats", "1"] if a.quick else \
        ["--images", "256", "--repeats", "3"]
    return _captured(onepixel.main, ["--device", str(a.device), *size])


def nccl(a) -> list[str]:
    if a.device.type != "cuda" or torch.cuda.device_count() < 2:
        return [f"not run: {torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s); needs 2"]
    with tempfile.TemporaryDirectory() as out:
        cmd = ["torchrun", "--nproc-per-node", "2", "-m", "diffjpeg.eval", "--model", "small_cnn", "--data",
               "foolbox:cifar10", "--defenses", "none", "jpeg:q=50", "--threat-models", "bpda", "--eps", "8/255",
               "--steps", "5", "--device", "cuda", "--out", out, "--no-progress"]
        t = time.perf_counter()
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.budget)
        seconds = time.perf_counter() - t
    if run.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}")
    return ["```", " ".join(cmd), *run.stdout.strip().splitlines()[-15:], "```", f"wall time {seconds:.1f} s"]


SECTIONS = [("CUDA tests", cuda_tests), ("CPU/device agreement of every layer", agreement),
            ("Forward+backward against kornia", fwd_bwd), ("Exact forward images/s", exact_forward),
            ("EOT(n=16) against torchattacks' EOTPGD", eot), ("One-pixel attack against torchattacks' OnePixel",
                                                               one_pixel),
            ("Two-process NCCL run of `diffjpeg bench`", nccl)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, no compilation on the CPU")
    p.add_argument("--out", default="gpu-report.md", help="markdown file to write")
    p.add_argument("--budget", type=int, default=300, help="seconds allowed to each subprocess")
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None)
    a = p.parse_args(argv)
    a.device = torch.device(a.device)
    if a.compile is None:
        a.compile = not (a.quick and a.device.type == "cpu")  # inductor takes minutes per graph on a small CPU
    a.shapes = [(2, 3, 32, 32)] if a.quick else [(8, 3, 256, 256), (32, 3, 224, 224), (128, 3, 32, 32)]
    a.repeats = 1 if a.quick else 5
    name = torch.cuda.get_device_name(a.device) if a.device.type == "cuda" else platform.processor() or "CPU"
    lines = [f"# diffjpeg on {name}", "",
             f"Command: `python bench/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; "
             f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads; device {a.device} ({name}).", ""]
    failures = []
    for title, section in SECTIONS:
        t = time.perf_counter()
        try:
            body = section(a)
        except Exception as e:  # record, go on with the next section
            body = ["**FAILED**", "```", *traceback.format_exception_only(e)[-1:], str(e)[:4000], "```"]
            failures.append(title)
        lines += [f"## {title}", "", *body, "", f"({time.perf_counter() - t:.1f} s)", ""]
        print(f"{title}: {'FAILED' if title in failures else 'ok'} ({time.perf_counter() - t:.1f} s)", flush=True)
    lines.append(f"Failed sections: {failures}" if failures else "All sections passed.")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
