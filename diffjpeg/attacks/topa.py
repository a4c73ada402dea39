"""TOPA: JPEG compression followed by a *targeted* one-pixel attack towards the true label.

Cucu et al. (ICSTCC 2023) clean a dataset whose images may carry adversarial perturbations: every
image is JPEG-compressed at a low quality ``q`` (which removes much of the perturbation), and each
image the classifier still gets wrong after compression is given a targeted one-pixel attack whose
target is its **true label** -- the one pixel that "recovers" the class. Their Table I (CIFAR-10,
VGG16, FGSM eps = 0.02, 1000 images) reports the misclassification rate after each stage: 89.3 %
after FGSM, 48.5 % / 52.0 % after JPEG at q = 20 / 40, 12.5 % / 16.8 % after TOPA.

**This is a dataset-cleaning procedure that uses the labels, not a defense at inference time**: the
last stage needs the true label of every image it changes, which a deployed classifier never has.
Its numbers say how many images of a labelled set can be brought back to their class by JPEG plus
one pixel; they are not robust accuracy.

:func:`topa` runs the pipeline (optionally the attack of the first stage as well, from a registry
spec such as ``"fgsm:eps=0.02"``), and returns a :class:`TopaResult` with the misclassification
rate after each stage (``result.table()`` prints it as Table I does), the per-image predictions
and the cleaned images; ``result.save(folder)`` writes the images as PNG files (lossless: the
cleaned images are 8-bit exactly, JPEG output plus one pixel rounded to 1/255) with a CSV of
per-image results and a JSON summary.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import torch
from torch import Tensor

from ..jpeg.codec import diff_jpeg
from ..jpeg.real import real_jpeg
from ..jpeg.validate import check_image, check_quality, check_subsampling
from ..arguments import check_generator
from ..arguments import check_int
from ..wrappers import predict
from .base import check_labels
from .onepixel import OnePixel

CODECS = ("pillow", "exact")


@dataclasses.dataclass
class TopaResult:
    """Outcome of :func:`topa`.

    Attributes:
        stages: ``{stage name: misclassification rate}`` in pipeline order ("clean" and "after
            attack" when :func:`topa` ran the attack, else "input"; then "after JPEG", "after TOPA").
        predictions: ``{stage name: (N,) predicted labels}``.
        labels: ``(N,)`` true labels.
        images: ``(N, C, H, W)`` the cleaned dataset (JPEG output; TOPA's image where it recovered).
        compressed: ``(N, C, H, W)`` the JPEG output.
        attempted: ``(N,)`` bool, misclassified after JPEG (the images TOPA worked on).
        recovered: ``(N,)`` bool, TOPA brought the prediction back to the true label.
        q, pixels: the JPEG quality and the pixels TOPA could change.
    """

    stages: dict[str, float]
    predictions: dict[str, Tensor]
    labels: Tensor
    images: Tensor
    compressed: Tensor
    attempted: Tensor
    recovered: Tensor
    q: float
    pixels: int

    def table(self) -> str:
        """The misclassification rate after each stage, as a Markdown table (like the paper's Table I)."""
        n = self.labels.numel()
        lines = [f"| misclassification rate ({n} images) | q = {self.q:g} |", "|---|---|"]
        lines += [f"| {name} | {100 * rate:.1f} % |" for name, rate in self.stages.items()]
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``images/NNNNN.png`` (the cleaned images), ``results.csv`` and ``summary.json``."""
        from PIL import Image

        folder = os.fspath(folder)
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        pixels = torch.floor(self.images.detach().cpu() * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        names = []
        for i, img in enumerate(pixels):
            name = f"images/{i:05d}.png"
            arr = img.permute(1, 2, 0).numpy()
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(os.path.join(folder, name))
            names.append(name)
        stage_names = list(self.predictions)
        with open(os.path.join(folder, "results.csv"), "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["index", "file", "label"] + [f"pred {s}" for s in stage_names]
                            + ["attempted", "recovered"])
            for i in range(self.labels.numel()):
                writer.writerow([i, names[i], int(self.labels[i])] + [int(self.predictions[s][i]) for s in stage_names]
                                + [int(self.attempted[i]), int(self.recovered[i])])
        summary = {"images": self.labels.numel(), "q": self.q, "pixels": self.pixels,
                   "misclassification_rate": self.stages, "attempted": int(self.attempted.sum()),
                   "recovered": int(self.recovered.sum())}
        with open(os.path.join(folder, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2)


def topa(model, images: Tensor, labels: Tensor, q: float = 20, pixels: int = 1, steps: int = 100,
         popsize: int = 400, *, attack=None, codec: str = "pillow", subsampling: str = "420",
         max_batch: int | str | None = "auto", generator: torch.Generator | None = None) -> TopaResult:
    """Run TOPA (JPEG at ``q``, then a targeted one-pixel attack towards the true label).

    A label-using dataset-cleaning procedure, not an inference-time defense (see the module docstring).

    Args:
        model: classifier returning logits for images in [0, 1] (include normalisation in it,
            e.g. ``DefendedModel(clf, None, mean, std)``).
        images: ``(N, C, H, W)`` in [0, 1]: the dataset to clean (or the clean set when ``attack``
            is given).
        labels: ``(N,)`` true labels.
        q: JPEG quality in [1, 100].
        pixels, steps, popsize: of the targeted one-pixel attack (:class:`~.onepixel.OnePixel`;
            the defaults, population 400 and 100 generations, are Su et al.'s).
        attack: optional first stage: a registry spec (``"fgsm:eps=0.02"``, the paper's) or an
            attack object; applied to ``images`` before compression.
        codec: "pillow" (the real libjpeg-turbo codec, :func:`~diffjpeg.jpeg.real.real_jpeg`) or
            "exact" (:func:`~diffjpeg.functional.diff_jpeg`, bit-identical to it, runs on GPU).
        subsampling: chroma subsampling of the JPEG stage.
        max_batch: candidate images per forward pass of the one-pixel attack (see ``OnePixel``).
        generator: random source of the one-pixel attack.

    Returns:
        :class:`TopaResult`.
    """
    check_image(images, "images")
    labels = check_labels(labels, images.shape[0]).to(images.device).long()
    q = float(check_quality(q))
    subsampling = check_subsampling(subsampling)
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    check_int(pixels, "pixels", 1)
    check_generator(generator)
    stages, preds = {}, {}

    def record(name: str, x: Tensor) -> None:
        preds[name] = predict(model, x).cpu()
        stages[name] = (preds[name] != labels.cpu()).float().mean().item()

    x = images.detach()
    if attack is not None:
        if isinstance(attack, str):
            from .registry import build
            attack = build(attack, model)
        record("clean", x)
        x = attack(x, labels).detach()
        record("after attack", x)
    else:
        record("input", x)
    if codec == "pillow":
        compressed = real_jpeg(x, q, subsampling, backend="pillow")
    else:
        with torch.no_grad():
            compressed = diff_jpeg(x, q, subsampling)
    record("after JPEG", compressed)
    attempted = preds["after JPEG"] != labels.cpu()
    recovered = torch.zeros_like(attempted)
    cleaned = compressed.clone()
    idx = attempted.nonzero().squeeze(1).to(images.device)
    if idx.numel():
        opa = OnePixel(model, pixels=pixels, steps=steps, popsize=popsize, max_batch=max_batch, quantize=True,
                       targeted=True, generator=generator)
        fixed = opa(compressed[idx], labels[idx])
        ok = opa.last_success
        cleaned[idx[ok]] = fixed[ok].to(cleaned.dtype)
        recovered[idx.cpu()[ok.cpu()]] = True
    record("after TOPA", cleaned)
    return TopaResult(stages, preds, labels.cpu(), cleaned, compressed, attempted, recovered, q, int(pixels))
