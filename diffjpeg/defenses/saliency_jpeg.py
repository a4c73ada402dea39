"""Saliency-guided JPEG (after Prakash et al.'s Aug-MSROI), realised as one standard baseline JPEG.

Prakash et al. keep the 8x8 blocks that matter for recognition at high quality and quantise the
rest hard, so that adversarial noise outside the object is removed while the object survives; the
saliency map is averaged over randomly perturbed copies of the input (Aug-MSROI), which makes it
harder for the attacker's noise to steer it. Their map comes from the MSROI network; this module
has no such network and uses the *protected classifier itself*:

1. **Saliency.** ``n_jitter`` copies of the image, each shifted by a random integer offset in
   ``[-jitter, jitter]`` pixels (edges replicated) and with Gaussian noise of deviation ``noise``
   added, go through the classifier in one batch. The saliency of a copy is
   ``sum_c |d logsumexp(logits) / d x_c|`` -- the input gradient of the log-sum-exp of the logits,
   i.e. the softmax-weighted mix of every class's gradient, so that all classes the model finds
   plausible are represented, not only the (possibly adversarial) top one. Each map is shifted
   back to the original's pixel grid; the maps are averaged (each pixel over the copies that saw it).
2. **Blocks.** The map is averaged over each 8x8 luma block and divided by its largest block value
   (per image). A block is *salient* if it is among the top ``fraction`` of blocks of its image
   (default 0.5), or, with ``threshold``, if its normalised saliency is at least ``threshold``. A
   chroma block is salient if any luma block it covers is.
3. **Quantisation in one table.** Salient blocks are quantised with the standard table of quality
   ``q_high`` (``T_h``); the others with ``T_c = T_h * max(1, round(T_l / T_h))``, the ``q_low``
   table ``T_l`` rounded to whole multiples of ``T_h``. A coarse coefficient ``k`` is stored as the
   integer ``k * T_c / T_h`` in a file whose only tables are ``T_h``: every decoder dequantises it to
   ``k * T_c``. The result is one standard baseline JPEG (:meth:`SaliencyJPEG.save`), and the
   defense's output is exactly what libjpeg-turbo (Pillow) decodes from it.

The codec stages are libjpeg-turbo's integer arithmetic (:mod:`diffjpeg.jpeg.codec`); quantisation
rounds half away from zero, as libjpeg does, so a salient block is bit-identical to plain JPEG at
``q_high`` and a coarse one to JPEG with the table ``T_c``.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contract import Defense
from ..jpeg.chroma import FACTORS
from ..jpeg.codec import decode_coefficients, encode_coefficients, resolve_qtables, working_dtype
from ..jpeg.rounding import round_half_away, round_ste
from ..jpeg.validate import check_image, check_quality, check_subsampling
from ..arguments import check_int
from .registry import register

__all__ = ["SaliencyJPEG", "block_saliency", "coarse_tables", "gradient_saliency", "saliency_jpeg_coefficients",
           "salient_blocks"]


def _check_jitter(n_jitter: object, jitter: object, noise: object) -> tuple[int, int, float]:
    n_jitter = check_int(n_jitter, "n_jitter", 1)
    jitter = check_int(jitter, "jitter", 0)
    if isinstance(noise, bool) or not isinstance(noise, Real) or not 0 <= noise < float("inf"):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return n_jitter, jitter, float(noise)


def _check_selection(fraction: object, threshold: object) -> None:
    if fraction is not None and threshold is not None:
        raise ValueError(f"give fraction or threshold, not both; got fraction = {fraction}, threshold = {threshold}")
    for name, v in (("fraction", fraction), ("threshold", threshold)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, Real) or not 0 <= v <= 1):
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")


def _check_qualities(q_high: object, q_low: object) -> None:
    for name, q in (("q_high", q_high), ("q_low", q_low)):
        if isinstance(q, Tensor):
            raise TypeError(f"{name} must be an int or float in [1, 100], got a tensor")
        check_quality(q, name)
    if q_low > q_high:
        raise ValueError(f"q_low must be <= q_high, got q_low = {q_low}, q_high = {q_high}")


def _shift(x: Tensor, dy: Tensor, dx: Tensor, pad: int, mode: str) -> Tensor:
    """``out[n, :, i, j] = x[n, :, i + dy[n], j + dx[n]]``, outside pixels by ``mode`` padding.

    ``x`` is ``(N, C, H, W)``; ``dy``, ``dx`` are ``(N,)`` integer tensors with ``|d| <= pad``.
    """
    if pad == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    rows = (pad + dy)[:, None] + torch.arange(h, device=x.device)
    cols = (pad + dx)[:, None] + torch.arange(w, device=x.device)
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def gradient_saliency(classifier: nn.Module, x: Tensor, n_jitter: int = 8, jitter: int = 4, noise: float = 0.02,
                      generator: torch.Generator | None = None) -> Tensor:
    """Jitter-averaged input-gradient saliency of ``classifier`` at ``x``.

    Args:
        classifier: maps ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)`` (include any input
            normalisation in it, e.g. ``DefendedModel(clf, None, mean, std)``). Put it in eval mode:
            the jittered batch goes through it as it is (batch-norm statistics would update in
            training mode). Its parameters receive no gradient.
        x: ``(B, C, H, W)`` in [0, 1].
        n_jitter: number of perturbed copies (all in one batch of ``n_jitter * B``).
        jitter: largest shift in pixels (integer offsets drawn uniformly in ``[-jitter, jitter]``
            per copy and axis; edges replicated).
        noise: deviation of the Gaussian noise added to each copy (0: none); copies are clamped to [0, 1].
        generator: source of all draws (torch's global RNG when ``None``): shifts ``(n_jitter * B, 2)``
            first, then the noise.

    Returns:
        ``(B, 1, H, W)`` non-negative saliency (detached), in ``x``'s dtype and device.
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module mapping images to logits, "
                        f"got {type(classifier).__name__}")
    check_image(x)
    n_jitter, jitter, noise = _check_jitter(n_jitter, jitter, noise)
    return _gradient_saliency(classifier, x, n_jitter, jitter, noise, generator)


def _gradient_saliency(classifier: nn.Module, x: Tensor, n_jitter: int, jitter: int, noise: float,
                       generator: torch.Generator | None) -> Tensor:
    b, _, h, w = x.shape
    n = n_jitter * b
    device = generator.device if generator is not None else torch.device("cpu")
    shifts = torch.randint(-jitter, jitter + 1, (n, 2), generator=generator, device=device).to(x.device)
    copies = _shift(x.detach().repeat(n_jitter, 1, 1, 1), shifts[:, 0], shifts[:, 1], jitter, "replicate")
    if noise > 0:
        eps = torch.randn(copies.shape, generator=generator, device=device, dtype=copies.dtype).to(x.device)
        copies = (copies + noise * eps).clamp(0.0, 1.0)
    with torch.enable_grad():
        copies = copies.requires_grad_(True)
        logits = classifier(copies)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != n:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"classifier must return logits of shape (N, K) for N = {n} images, got {got}")
        if not logits.requires_grad:
            raise ValueError("classifier output does not depend on its input through autograd (is gradient "
                             "tracking disabled inside it?); the saliency map needs the input gradient")
        (grad,) = torch.autograd.grad(torch.logsumexp(logits, dim=1).sum(), copies, allow_unused=True)
    if grad is None:  # logits independent of the input: nothing is salient
        grad = torch.zeros_like(copies)
    maps = grad.abs().sum(1, keepdim=True)
    back = _shift(maps, -shifts[:, 0], -shifts[:, 1], jitter, "constant")
    seen = _shift(torch.ones_like(maps), -shifts[:, 0], -shifts[:, 1], jitter, "constant")
    total = back.reshape(n_jitter, b, 1, h, w).sum(0)
    count = seen.reshape(n_jitter, b, 1, h, w).sum(0)
    return (total / count.clamp_min(1.0)).detach()


def block_saliency(saliency: Tensor) -> Tensor:
    """``(B, 1, H, W)`` pixel saliency -> ``(B, ceil(H/8), ceil(W/8))`` block means, each image divided by its max.

    Edge blocks average the pixels they hold. An all-zero map stays zero.
    """
    blocks = F.avg_pool2d(saliency, 8, ceil_mode=True)[:, 0]
    top = blocks.flatten(1).amax(1).clamp_min(torch.finfo(blocks.dtype).tiny)
    return blocks / top[:, None, None]


def salient_blocks(scores: Tensor, fraction: float | None = None, threshold: float | None = None) -> Tensor:
    """Boolean ``(B, nby, nbx)`` mask of salient luma blocks from normalised block scores.

    Exactly one of ``fraction`` (the top ``floor(fraction * nby * nbx + 1/2)`` blocks of each image; ties
    go to the earlier block in raster order) and ``threshold`` (score ``>= threshold``) is used.
    """
    _check_selection(fraction, threshold)
    if fraction is None and threshold is None:
        raise ValueError("give fraction or threshold (one of them), got neither")
    if not isinstance(scores, Tensor) or scores.ndim != 3:
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a (B, nby, nbx) tensor, got {got}")
    if threshold is not None:
        return scores >= threshold
    b, nby, nbx = scores.shape
    k = math.floor(fraction * nby * nbx + 0.5)
    order = torch.argsort(scores.flatten(1), dim=1, descending=True, stable=True)
    mask = torch.zeros(b, nby * nbx, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order[:, :k], True)
    return mask.reshape(b, nby, nbx)


def _component_masks(luma: Tensor, channels: int, subsampling: str) -> list[Tensor]:
    """Per-component block masks: luma's, and for chroma the OR over the luma blocks each covers."""
    if channels == 1:
        return [luma]
    fv, fh = FACTORS[subsampling]
    chroma = F.max_pool2d(luma[:, None].float(), (fv, fh), ceil_mode=True)[:, 0] > 0
    return [luma, chroma, chroma]


def coarse_tables(fine: Tensor, low: Tensor) -> Tensor:
    """``fine * max(1, round(low / fine))``: the ``low`` tables rounded to whole multiples of ``fine``."""
    return fine * round_half_away(low / fine).clamp_min(1.0)


def saliency_jpeg_coefficients(x: Tensor, mask: Tensor, q_high: float, q_low: float,
                               subsampling: str = "420") -> tuple[list[Tensor], Tensor]:
    """Per-block quantisation of ``x``: fine (``q_high``) where ``mask``, coarse (``q_low``) elsewhere.

    Args:
        x: ``(B, C, H, W)`` in [0, 1] (float32/float64).
        mask: ``(B, ceil(H/8), ceil(W/8))`` bool, salient luma blocks.
        q_high, q_low: qualities in [1, 100], ``q_low <= q_high``.
        subsampling: "444", "422" or "420".

    Returns:
        Per component ``(B, nby, nbx, 8, 8)`` integer-valued coefficients in units of the ``q_high``
        tables, and those tables ``(B, 2, 8, 8)``. Rounding is straight-through (differentiable in ``x``).
    """
    check_image(x)
    _check_qualities(q_high, q_low)
    subsampling = check_subsampling(subsampling)
    grid = (x.shape[0], -(-x.shape[2] // 8), -(-x.shape[3] // 8))
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != grid:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape {grid} (luma blocks of x), got {got}")
    return _saliency_jpeg_coefficients(x, mask, q_high, q_low, subsampling)


def _saliency_jpeg_coefficients(x: Tensor, mask: Tensor, q_high: float, q_low: float,
                                subsampling: str) -> tuple[list[Tensor], Tensor]:
    b = x.shape[0]
    fine = resolve_qtables(q_high, None, b, x.device, x.dtype)
    coarse = coarse_tables(fine, resolve_qtables(q_low, None, b, x.device, x.dtype))
    ones = torch.ones_like(fine)
    raw = encode_coefficients(x, ones, subsampling, quantize=lambda t: t, integer=True)
    out = []
    for i, (c, m) in enumerate(zip(raw, _component_masks(mask, x.shape[1], subsampling))):
        t = min(i, 1)
        step = torch.where(m[..., None, None], fine[:, t, None, None], coarse[:, t, None, None])
        out.append(round_ste(c / step) * (step / fine[:, t, None, None]))
    return out, fine


class SaliencyJPEG(Defense):
    """Saliency-guided JPEG: salient 8x8 blocks at ``q_high``, the rest at ``q_low``, one standard file.

    See the module docstring for the method. Saliency comes from the protected classifier's input
    gradient averaged over ``n_jitter`` jittered copies (not from the MSROI network of the paper).

    Args:
        classifier: the protected model, images in [0, 1] -> logits ``(N, K)`` (include input
            normalisation in it); kept as a submodule (``.to()`` moves it). Use it in eval mode.
        q_high: quality of salient blocks (default 90), in [1, 100].
        q_low: quality of the other blocks (default 20; seeds 000/004 use JPEG q=20 as a defense),
            ``<= q_high``.
        n_jitter: perturbed copies averaged for the saliency map (>= 1; default 8).
        jitter: largest random shift in pixels (>= 0; default 4).
        noise: deviation of the Gaussian noise added to each copy (>= 0; default 0.02).
        fraction: share of luma blocks kept at ``q_high`` per image, in [0, 1] (default 0.5 when
            ``threshold`` is not given).
        threshold: alternatively, keep blocks whose saliency (divided by the image's largest block
            saliency) is at least ``threshold``, in [0, 1]. Give ``fraction`` or ``threshold``, not both.
        subsampling: "444", "422" or "420".
        generator: ``torch.Generator`` for the jitter draws (torch's global RNG when ``None``).

    ``randomized`` is True when ``jitter > 0`` or ``noise > 0`` (fresh draws on every call, from
    ``generator``, so :class:`~diffjpeg.wrappers.RNGSnapshot` replays them). ``differentiable`` is
    True: the block selection is piecewise constant in ``x`` (held fixed in the backward pass) and
    the codec's roundings are straight-through; :meth:`surrogate` is the layer itself. The last
    call's pixel saliency ``(B, 1, H, W)`` and block mask ``(B, nby, nbx)`` are in ``last_saliency``
    and ``last_mask``.

    Shape: ``(B, C, H, W)`` in [0, 1] -> same shape, dtype and device.
    """

    differentiable = True

    def __init__(self, classifier: nn.Module, q_high: float = 90, q_low: float = 20, n_jitter: int = 8,
                 jitter: int = 4, noise: float = 0.02, fraction: float | None = None,
                 threshold: float | None = None, subsampling: str = "420",
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be an nn.Module mapping images to logits, "
                            f"got {type(classifier).__name__}")
        _check_qualities(q_high, q_low)
        self.n_jitter, self.jitter, self.noise = _check_jitter(n_jitter, jitter, noise)
        _check_selection(fraction, threshold)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.classifier = classifier
        self.q_high, self.q_low = q_high, q_low
        self.threshold = threshold
        self.fraction = (0.5 if fraction is None else fraction) if threshold is None else None
        self.subsampling = check_subsampling(subsampling)
        self.generator = generator
        self.last_saliency: Tensor | None = None
        self.last_mask: Tensor | None = None

    @property
    def randomized(self) -> bool:
        return self.jitter > 0 or self.noise > 0

    def saliency(self, x: Tensor) -> Tensor:
        """Pixel saliency ``(B, 1, H, W)`` of ``x`` (one draw of the jitter)."""
        return _gradient_saliency(self.classifier, x, self.n_jitter, self.jitter, self.noise, self.generator)

    def mask(self, saliency: Tensor) -> Tensor:
        """Salient luma blocks ``(B, nby, nbx)`` bool from a pixel saliency map."""
        return salient_blocks(block_saliency(saliency), self.fraction, self.threshold)

    def encode(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Coefficients (in ``q_high`` table units, per component ``(B, nby, nbx, 8, 8)``), the
        ``(B, 2, 8, 8)`` ``q_high`` tables and the block mask, for one draw of the jitter."""
        check_image(x)
        work = working_dtype(x)
        sal = self.saliency(x.detach().to(work))
        mask = self.mask(sal)
        self.last_saliency, self.last_mask = sal, mask
        coefficients, tables = _saliency_jpeg_coefficients(x.to(work), mask, self.q_high, self.q_low,
                                                           self.subsampling)
        return coefficients, tables, mask

    def forward(self, x: Tensor) -> Tensor:
        coefficients, tables, _ = self.encode(x)
        out = decode_coefficients(coefficients, tables, self.subsampling, (x.shape[2], x.shape[3]), integer=True)
        return out.to(x.dtype)

    @property
    def tables(self) -> Tensor:
        """The ``(2, 8, 8)`` tables of the file: the standard tables of ``q_high`` (luma, chroma)."""
        return resolve_qtables(self.q_high, None, 1, "cpu", torch.float32)[0]

    @property
    def coarse(self) -> Tensor:
        """The ``(2, 8, 8)`` effective steps of non-salient blocks: ``q_low``'s tables rounded to whole
        multiples of :attr:`tables` (entries may exceed 255: they are never stored, only their ratios)."""
        return coarse_tables(self.tables, resolve_qtables(self.q_low, None, 1, "cpu", torch.float32)[0])

    def save(self, path, x: Tensor) -> Tensor:
        """Defend one image ``(1, C, H, W)`` and write it as a baseline JPEG (tables: ``q_high``'s).

        Returns the defense's output for this draw: exactly what Pillow decodes from the file.
        """
        from ..jpeg.io import write_coefficients

        check_image(x)
        if x.shape[0] != 1:
            raise ValueError(f"x must hold one image (1, C, H, W) to save, got a batch of {x.shape[0]}")
        with torch.no_grad():
            coefficients, tables, _ = self.encode(x)
            write_coefficients(path, [c[0] for c in coefficients], tables[0], size=(x.shape[2], x.shape[3]),
                               subsampling=self.subsampling)
            out = decode_coefficients(coefficients, tables, self.subsampling, (x.shape[2], x.shape[3]), integer=True)
        return out.to(x.dtype)

    def surrogate(self) -> SaliencyJPEG:
        return self

    def extra_repr(self) -> str:
        pick = f"threshold={self.threshold}" if self.threshold is not None else f"fraction={self.fraction}"
        return (f"q_high={self.q_high}, q_low={self.q_low}, n_jitter={self.n_jitter}, jitter={self.jitter}, "
                f"noise={self.noise}, {pick}, subsampling={self.subsampling!r}")


register("saliency_jpeg", SaliencyJPEG)
