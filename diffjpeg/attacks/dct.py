"""An attack in the JPEG file's own domain: PGD on the quantised DCT coefficients.

The image is first JPEG-encoded exactly as Pillow does it at quality ``q`` (or with ``qtables``);
the attack then perturbs the *quantised coefficients* -- the integers a .jpg file stores -- by at
most ``eps`` quantisation steps each (an L-inf budget in coefficient units, so the pixel change a
coefficient may cause scales with its table entry), and decodes them with the differentiable decoder
:func:`~diffjpeg.jpeg.codec.decode_coefficients` to classify. Coefficients stay integers: the
forward pass rounds ``c0 + delta`` (straight-through gradient), so the model always sees a decodable
file's pixels. The result is written with :func:`~diffjpeg.jpeg.io.write_coefficients` -- no
re-encoding, so the adversarial example *is* a JPEG at the defense's quality and the tables are the
defense's tables.

After the last step the integer coefficients are decoded once more with
:func:`~diffjpeg.jpeg.exact.exact_decode`, which is bit-identical to what Pillow decodes from the
written file; the returned pixels and the ``success`` flags come from that exact decoding.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..jpeg.codec import decode_coefficients, resolve_qtables
from ..jpeg.exact import exact_decode, exact_encode
from ..jpeg.io import AC_LIMIT, write_coefficients
from ..jpeg.rounding import round_ste
from ..jpeg.validate import check_qtables, check_quality, check_subsampling
from ..arguments import check_int, check_real
from .base import Attack, eval_mode


@dataclasses.dataclass
class DCTAttackResult:
    """What :meth:`DCTAttack.attack_coefficients` returns.

    Attributes:
        coefficients: per component (Y, Cb, Cr or Y) int32 ``(B, nby, nbx, 8, 8)``, natural order.
        qtables: int32 ``(B, 2, 8, 8)`` (luma, chroma), natural order.
        subsampling: chroma subsampling of the coefficients.
        size: ``(H, W)``.
        pixels: ``(B, C, H, W)`` in [0, 1]: the exact decoding of the file (Pillow's pixels).
        success: ``(B,)`` bool, the model's prediction on ``pixels`` reaches the goal.
        changed: ``(B,)`` number of coefficients that differ from the clean file's.
    """

    coefficients: list[Tensor]
    qtables: Tensor
    subsampling: str
    size: tuple[int, int]
    pixels: Tensor
    success: Tensor
    changed: Tensor

    def save(self, paths: Sequence[str | os.PathLike]) -> None:
        """Write image ``i`` to ``paths[i]`` as a baseline JPEG holding exactly these coefficients."""
        if len(paths) != self.pixels.shape[0]:
            raise ValueError(f"paths must name one file per image ({self.pixels.shape[0]}), got {len(paths)}")
        for i, path in enumerate(paths):
            planes = [c[i].cpu() for c in self.coefficients]
            sub = self.subsampling if len(planes) == 3 else None
            write_coefficients(path, planes, self.qtables[i].cpu(), size=self.size, subsampling=sub)


class DCTAttack(Attack):
    """L-inf PGD on a JPEG's quantised DCT coefficients; the result is stored as a real .jpg.

    Args:
        model: classifier returning logits for images in [0, 1].
        q: JPEG quality in [1, 100] of the file (the defense's quality); ignored with ``qtables``.
        eps: largest change of any quantised coefficient, in quantisation steps (>= 0).
        alpha: PGD step in quantisation steps (> 0).
        steps: PGD iterations (>= 1).
        subsampling: "444", "422" or "420" (colour images).
        qtables: optional ``(8, 8)`` / ``(2, 8, 8)`` tables (natural order) instead of ``q``.
        random_start: start from a uniform point of the budget.
        targeted, generator: see :class:`~.base.Attack`.

    Shape: images ``(B, C, H, W)`` in [0, 1], labels ``(B,)``; ``forward`` returns the decoded
    adversarial JPEGs ``(B, C, H, W)`` (values ``k / 255``). ``last_result`` keeps the
    :class:`DCTAttackResult` of the last call (coefficients to save with ``.save(paths)``).
    """

    def __init__(self, model, q: float = 75, eps: float = 2.0, alpha: float = 0.5, steps: int = 20,
                 subsampling: str = "420", qtables: Tensor | None = None, random_start: bool = False, *,
                 targeted: bool = False, generator=None):
        super().__init__("DCTAttack", model, targeted=targeted, generator=generator)
        self.qtables = None if qtables is None else check_qtables(qtables)
        if self.qtables is not None and self.qtables.ndim == 4:
            raise ValueError(f"qtables must be (8, 8) or (2, 8, 8) (one set for all images), got "
                             f"{tuple(self.qtables.shape)}")
        self.q = q if self.qtables is not None else float(check_quality(q))
        self.eps = check_real(eps, "eps", 0.0)
        self.alpha = check_real(alpha, "alpha", 0.0, lo_open=True)
        self.steps = check_int(steps, "steps", 1)
        self.subsampling = check_subsampling(subsampling)
        if not isinstance(random_start, bool):
            raise TypeError(f"random_start must be True or False, got {random_start!r}")
        self.random_start = random_start
        self.last_result: DCTAttackResult | None = None

    def _tables(self, batch: int, device) -> Tensor:
        tables = None if self.qtables is None else self.qtables.to(torch.float32)
        if tables is not None and tables.ndim == 2:
            tables = torch.stack([tables, tables])
        return resolve_qtables(self.q, tables, batch, device, torch.float32).round()

    def _reached(self, logits: Tensor, goal: Tensor) -> Tensor:
        hit = logits.argmax(1) == goal
        return hit if self.targeted else ~hit

    def attack_coefficients(self, images: Tensor, labels: Tensor) -> DCTAttackResult:
        """Run the attack and return coefficients, tables and exactly decoded pixels.

        Puts the model in eval mode for the attack and restores its mode, as ``attack(...)`` does.
        """
        with eval_mode(self.model):
            return self._attack(images, labels)

    def _attack(self, images: Tensor, labels: Tensor) -> DCTAttackResult:
        images, _, goal = self._prepare(images, labels)
        b, c, h, w = images.shape
        dev = images.device
        tables = self._tables(b, dev)
        pixels8 = torch.floor(images * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        clean = [k.to(torch.float32) for k in exact_encode(pixels8, tables, self.subsampling)]
        deltas = [torch.zeros_like(k) for k in clean]
        if self.random_start:
            deltas = [(2 * self._rand(*k.shape, device=dev) - 1) * self.eps for k in clean]
        best = [d.clone() for d in deltas]
        ever = torch.zeros(b, dtype=torch.bool, device=dev)
        sign = -1.0 if self.targeted else 1.0
        for _ in range(self.steps):
            for d in deltas:
                d.requires_grad_(True)
            coefs = [round_ste((k + d).clamp(-AC_LIMIT, AC_LIMIT)) for k, d in zip(clean, deltas)]
            x = decode_coefficients(coefs, tables, self.subsampling, (h, w))
            logits = self.get_logits(x)
            loss = F.cross_entropy(logits, goal)
            grads = torch.autograd.grad(loss, deltas)
            reached = self._reached(logits.detach(), goal)
            with torch.no_grad():
                for i, d in enumerate(deltas):  # remember the last iterate that reached its goal
                    best[i][reached] = d[reached]
                ever |= reached
                deltas = [(d + sign * self.alpha * g.sign()).clamp(-self.eps, self.eps).detach()
                          for d, g in zip(deltas, grads)]
        with torch.no_grad():
            coefs = [round_ste((k + d).clamp(-AC_LIMIT, AC_LIMIT)) for k, d in zip(clean, deltas)]
            reached = self._reached(self.get_logits(decode_coefficients(coefs, tables, self.subsampling, (h, w))),
                                    goal)
            use_final = reached | ~ever  # the final iterate, unless only an earlier one reached the goal
            for i, d in enumerate(deltas):
                best[i][use_final] = d[use_final]
            final = [round_ste((k + d).clamp(-AC_LIMIT, AC_LIMIT)).to(torch.int32) for k, d in zip(clean, best)]
            pixels = exact_decode(final, tables, self.subsampling, h, w).to(images.dtype) / 255
            success = self._reached(self.get_logits(pixels), goal)
            changed = sum((f != k.to(torch.int32)).flatten(1).sum(1) for f, k in zip(final, clean))
        result = DCTAttackResult(final, tables.to(torch.int32), self.subsampling, (h, w), pixels, success, changed)
        self.last_result = result
        return result

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Adversarial JPEGs, decoded exactly as Pillow decodes the written files."""
        return self._attack(images, labels).pixels
