"""Feature Distillation (Liu et al., CVPR 2019): JPEG with a DNN-oriented defensive quantisation.

The 64 DCT frequency bands are split in two by the standard deviation of their coefficients on
benign images: the ``band_size`` bands with the largest deviation form the *accuracy-sensitive*
(AS) band and are quantised with a small step (QS 20), all others form the *malicious-defense* (MD)
band and get a larger step (QS 30). ``scale`` multiplies both steps (the paper's FD 1x, 2x, 3x).

Two placements of that quantisation (the paper's Fig. 2):

* **one pass** ("1pass"): the image goes through standard JPEG at quality ``q``; during
  decompression the dequantised coefficients ``C * T_q`` are quantised again with the FD table and
  dequantised (``round(C * T_q / T_fd) * T_fd``) before the inverse DCT;
* **two pass** ("2pass"): the FD table also replaces the standard table at compression. The extra
  quantisation at decompression is then idempotent, so the result *is* a baseline JPEG with the FD
  tables (what ``Image.save(..., qtables=fd.tables)`` produces).

Both results are baseline JPEG files with the FD tables (one pass: coefficients
``round(C * T_q / T_fd)``), so :meth:`FeatureDistillation.save` writes them losslessly and any decoder
reproduces the defense's output.

Arithmetic is libjpeg-turbo's (the codec's integer mode): 8-bit input ``floor(255 x + 1/2)``, its
colour conversion, chroma downsampling, islow DCT, round-half-away quantisation, islow IDCT, fancy
upsampling. The re-quantisation rounds half away from zero, as libjpeg's quantiser does. Every
rounding has an identity (straight-through) gradient, so the layer is differentiable and is its own
BPDA surrogate.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral

import torch
from torch import Tensor

from ..contract import Defense
from ..jpeg.codec import decode_coefficients, encode_coefficients, resolve_qtables, working_dtype
from ..jpeg.rounding import round_ste
from ..jpeg.validate import check_image, check_qtables, check_quality, check_subsampling
from ..arguments import check_choice, check_int
from .registry import register

__all__ = [
    "MODES",
    "FeatureDistillation",
    "band_std",
    "default_bands",
    "fd_tables",
    "feature_distillation",
    "select_bands",
    "zigzag_order",
]

MODES = ("1pass", "2pass")


def zigzag_order() -> list[tuple[int, int]]:
    """The 64 ``(row, column)`` positions of an 8x8 block in JPEG's zigzag order (low frequencies first)."""
    cells = [(r, c) for r in range(8) for c in range(8)]
    return sorted(cells, key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else -rc[0]))


def _check_qs(qs: object) -> tuple[int, int]:
    if (not isinstance(qs, (tuple, list)) or len(qs) != 2
            or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in qs)):
        raise TypeError(f"qs must be a pair of ints (sensitive, defense) in [1, 255], got {qs!r}")
    if not all(1 <= v <= 255 for v in qs):
        raise ValueError(f"qs entries must be in [1, 255], got {tuple(qs)}")
    return int(qs[0]), int(qs[1])


def _check_scale(scale: object, qs: tuple[int, int]) -> int:
    if isinstance(scale, bool) or not isinstance(scale, Integral):
        raise TypeError(f"scale must be a positive int (1 = the paper's FD 1x, 2 = 2x, 3 = 3x), "
                        f"got {type(scale).__name__} {scale!r}")
    limit = 255 // max(qs)
    if not 1 <= scale <= limit:
        raise ValueError(f"scale must be an integer in [1, {limit}] so that every step scale * {max(qs)} fits "
                         f"a baseline table (<= 255), got {scale}")
    return int(scale)


def _check_mode(mode: object) -> str:
    return check_choice(mode, MODES, "mode")


def default_bands(band_size: int, device=None) -> Tensor:
    """The uncalibrated AS band: the first ``band_size`` bands in zigzag order, ``(8, 8)`` bool."""
    mask = torch.zeros(8, 8, dtype=torch.bool, device=device)
    for r, c in zigzag_order()[:band_size]:
        mask[r, c] = True
    return mask


def _check_band_map(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be an (8, 8) tensor in natural order, got {type(t).__name__}")
    if tuple(t.shape) != (8, 8):
        raise ValueError(f"{name} must have shape (8, 8), got {tuple(t.shape)}")
    return t


def select_bands(std: Tensor, band_size: int) -> Tensor:
    """The ``band_size`` bands with the largest ``std`` ``(8, 8)`` as an ``(8, 8)`` bool mask.

    Ties are broken in zigzag order (the lower frequency wins).
    """
    _check_band_map(std, "std")
    band_size = check_int(band_size, "band_size", 0, 64)
    order = zigzag_order()
    flat = torch.stack([std[r, c] for r, c in order]).double().cpu()
    ranked = sorted(range(64), key=lambda i: (-float(flat[i]), i))
    mask = torch.zeros(8, 8, dtype=torch.bool, device=std.device)
    for i in ranked[:band_size]:
        mask[order[i]] = True
    return mask


def fd_tables(sensitive: Tensor, qs: tuple[int, int] = (20, 30), scale: int = 1) -> Tensor:
    """The FD quantisation tables: ``qs[0] * scale`` on the AS band, ``qs[1] * scale`` elsewhere.

    Args:
        sensitive: ``(8, 8)`` bool mask of the accuracy-sensitive bands (natural order).
        qs: quantisation steps (AS band, MD band); the paper's 20 and 30.
        scale: multiplier of both steps (the paper's 1x, 2x, 3x).

    Returns:
        ``(2, 8, 8)`` float32 tables (luma, chroma: the same table, as the paper uses one), integer
        values in [1, 255], natural order -- what Pillow's ``save(..., qtables=...)`` takes.
    """
    if _check_band_map(sensitive, "sensitive").dtype != torch.bool:
        raise TypeError(f"sensitive must be a bool mask, got dtype {sensitive.dtype}")
    qs = _check_qs(qs)
    scale = _check_scale(scale, qs)
    table = torch.where(sensitive, float(qs[0] * scale), float(qs[1] * scale)).to(torch.float32)
    return torch.stack((table, table))


def _coefficient_stats(x: Tensor, subsampling: str) -> tuple[Tensor, Tensor, int]:
    """Sum and sum of squares ``(8, 8)`` (float64) of the unquantised luma DCT coefficients, and the block count."""
    ones = torch.ones(x.shape[0], 2, 8, 8, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        luma = encode_coefficients(x.float(), ones, subsampling, quantize=lambda t: t, integer=False)[0]
    blocks = luma.reshape(-1, 8, 8).double()
    return blocks.sum(0), (blocks * blocks).sum(0), blocks.shape[0]


def band_std(data, subsampling: str = "420") -> Tensor:
    """Per-band standard deviation of the luma DCT coefficients (before quantisation) of benign images.

    Args:
        data: a ``(B, C, H, W)`` tensor in [0, 1], or an iterable of such tensors or of tuples/lists
            whose first element is one (a ``DataLoader`` yielding ``(images, labels)``).
        subsampling: only fixes the block grid; luma is never subsampled.

    Returns:
        ``(8, 8)`` float64 tensor (natural order) of the standard deviations over all 8x8 luma
        blocks of all images, in JPEG coefficient units (orthonormal DCT of 0..255 samples).
    """
    subsampling = check_subsampling(subsampling)
    if not isinstance(data, (Tensor, Iterable)):
        raise TypeError(f"data must be a (B, C, H, W) tensor or an iterable of them, got {type(data).__name__}")
    batches: Iterable = [data] if isinstance(data, Tensor) else data
    total = squares = None
    count = 0
    for i, batch in enumerate(batches):
        if isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        check_image(batch, f"data batch {i}")
        s, s2, n = _coefficient_stats(batch, subsampling)
        total = s if total is None else total + s.to(total.device)
        squares = s2 if squares is None else squares + s2.to(squares.device)
        count += n
    if count < 2:
        raise ValueError(f"data must hold at least two 8x8 luma blocks to estimate a deviation, got {count}")
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0.0) * count / (count - 1)
    return var.sqrt()


def feature_distillation(x: Tensor, tables: Tensor, mode: str = "1pass", q: float = 90,
                         subsampling: str = "420") -> Tensor:
    """Feature distillation of ``x`` with FD ``tables`` (the functional form of :class:`FeatureDistillation`).

    Args:
        x: ``(B, C, H, W)`` in [0, 1], C in {1, 3}.
        tables: ``(8, 8)``, ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` FD tables (e.g. :func:`fd_tables`),
            entries in [1, 255]; non-integer entries are rounded, as a file stores integers.
        mode: "1pass" or "2pass".
        q: quality of the standard JPEG compression in one-pass mode, in [1, 100], a number or a
            ``(B,)`` tensor (ignored in two-pass mode).
        subsampling: "444", "422" or "420".

    Returns:
        ``(B, C, H, W)`` with ``x``'s dtype and device.
    """
    check_image(x)
    tables = check_qtables(tables, "tables", batch=x.shape[0])
    mode = _check_mode(mode)
    check_quality(q, batch=x.shape[0])
    subsampling = check_subsampling(subsampling)
    return _feature_distillation(x, tables, mode, q, subsampling)


def _feature_distillation(x: Tensor, tables: Tensor, mode: str, q, subsampling: str) -> Tensor:
    coefficients, fd, _ = _fd_coefficients(x, tables, mode, q, subsampling)
    return decode_coefficients(coefficients, fd, subsampling, (x.shape[2], x.shape[3]), integer=True).to(x.dtype)


def _fd_coefficients(x: Tensor, tables: Tensor, mode: str, q, subsampling: str):
    """Quantised coefficients in FD-table units, the ``(B, 2, 8, 8)`` FD tables and the standard tables."""
    work = working_dtype(x)
    y = x.to(work)
    fd = resolve_qtables(None, tables, x.shape[0], x.device, work)
    if mode == "2pass":
        # compression with the FD table; the decompression-side re-quantisation round(C T / T) T is C T
        return encode_coefficients(y, fd, subsampling, round_ste, integer=True), fd, fd
    standard = resolve_qtables(q, None, x.shape[0], x.device, work)
    coefficients = encode_coefficients(y, standard, subsampling, round_ste, integer=True)
    out = []
    for i, c in enumerate(coefficients):
        t = min(i, 1)
        ratio = (standard[:, t] / fd[:, t])[:, None, None]  # dequantise with T_q, quantise with T_fd
        out.append(round_ste(c * ratio))
    return out, fd, standard


class FeatureDistillation(Defense):
    """Feature Distillation (Liu et al. 2019), one-pass or two-pass, with libjpeg-exact arithmetic.

    Args:
        mode: "1pass" (standard JPEG at quality ``q``, then an extra FD quantise/dequantise of the
            dequantised coefficients during decompression) or "2pass" (the FD table also at
            compression; equal to a baseline JPEG with the FD tables).
        q: quality of the standard JPEG of one-pass mode, in [1, 100] (default 90: the paper
            assumes the first compression keeps nearly all frequency content, and uses JPEG(90) as
            its accuracy-preserving baseline). Unused in two-pass mode.
        scale: multiplies both quantisation steps: 1, 2, 3 are the paper's FD 1x, 2x, 3x
            (any int up to ``255 // max(qs)``).
        qs: ``(AS step, MD step)``, the paper's ``(20, 30)``.
        band_size: number of bands in the accuracy-sensitive band, 0..64. The paper takes the
            top-n bands by coefficient deviation; its released code uses the low-frequency 4x4
            corner (16 bands). Until :meth:`calibrate` is called the AS band is the first
            ``band_size`` bands in zigzag order (default 15: the anti-diagonals ``u + v <= 4``,
            where natural images' coefficients have the largest deviations).
        subsampling: chroma subsampling "444", "422" or "420".

    The same FD table is used for luma and chroma (the paper defines one table); calibration
    measures the luma coefficients. ``tables`` holds the ``(2, 8, 8)`` FD tables, ``sensitive`` the
    ``(8, 8)`` AS mask, ``band_std`` the calibrated deviations (NaN until calibrated); all three
    travel with ``state_dict``.

    Gradients: every rounding (8-bit input, quantisation, FD re-quantisation, IDCT descaling, 8-bit
    storage) is straight-through, so ``differentiable`` is True and :meth:`surrogate` is the layer
    itself: BPDA with identity gradients through the quantisers, as in the paper's BPDA evaluation.

    Shape: ``(B, C, H, W)`` in [0, 1], C in {1, 3} -> same shape, dtype and device.
    """

    differentiable = True
    randomized = False

    def __init__(self, mode: str = "1pass", q: float = 90, scale: int = 1, qs=(20, 30), band_size: int = 15,
                 subsampling: str = "420"):
        super().__init__()
        self.mode = _check_mode(mode)
        check_quality(q)
        if isinstance(q, Tensor):
            raise TypeError("q must be a number for FeatureDistillation (one quality for every image)")
        self.q = q
        self.qs = _check_qs(qs)
        self.scale = _check_scale(scale, self.qs)
        self.band_size = check_int(band_size, "band_size", 0, 64)
        self.subsampling = check_subsampling(subsampling)
        self.register_buffer("sensitive", default_bands(self.band_size))
        self.register_buffer("band_std", torch.full((8, 8), math.nan, dtype=torch.float64))

    @property
    def calibrated(self) -> bool:
        """Whether the AS band comes from :meth:`calibrate` (else the zigzag default)."""
        return not bool(torch.isnan(self.band_std).any())

    @property
    def tables(self) -> Tensor:
        """The FD tables ``(2, 8, 8)`` (luma, chroma), float32 with integer values, natural order."""
        return fd_tables(self.sensitive, self.qs, self.scale).to(self.sensitive.device)

    def export_qtables(self) -> list[list[int]]:
        """The FD tables as Pillow's ``save(..., qtables=...)`` takes them: two lists of 64 ints."""
        return [t.flatten().to(torch.int64).tolist() for t in self.tables.cpu()]

    @torch.no_grad()
    def calibrate(self, data) -> Tensor:
        """Pick the AS band from benign images: the ``band_size`` bands of largest luma coefficient deviation.

        Args:
            data: a ``(B, C, H, W)`` tensor in [0, 1] or an iterable of them (or of ``(images, labels)``).

        Returns:
            The ``(8, 8)`` per-band deviations (also kept in ``band_std``); ``sensitive`` and
            ``tables`` are updated.
        """
        std = band_std(data, self.subsampling)
        self.band_std.copy_(std.to(self.band_std.device))
        self.sensitive.copy_(select_bands(std, self.band_size).to(self.sensitive.device))
        return self.band_std.clone()

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        return _feature_distillation(x, self.tables.to(x.device), self.mode, self.q, self.subsampling)

    def coefficients(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """The defense's output as JPEG data: per component quantised coefficients in FD-table units
        ``(B, nby, nbx, 8, 8)`` and the ``(B, 2, 8, 8)`` FD tables; decoding them gives ``forward(x)``."""
        check_image(x)
        coefficients, fd, _ = _fd_coefficients(x, self.tables.to(x.device), self.mode, self.q, self.subsampling)
        return coefficients, fd

    def save(self, path, x: Tensor) -> Tensor:
        """Write the defended image as a baseline JPEG with the FD tables (no re-encoding loss).

        Args:
            path: destination file.
            x: one image ``(1, C, H, W)`` in [0, 1].

        Returns:
            ``forward(x)``, which is exactly what libjpeg (Pillow) decodes from the file.
        """
        from ..jpeg.io import write_coefficients

        check_image(x)
        if x.shape[0] != 1:
            raise ValueError(f"x must hold one image (1, C, H, W) to save, got a batch of {x.shape[0]}")
        with torch.no_grad():
            coefficients, fd = self.coefficients(x)
            write_coefficients(path, [c[0] for c in coefficients], fd[0], size=(x.shape[2], x.shape[3]),
                               subsampling=self.subsampling)
            return decode_coefficients(coefficients, fd, self.subsampling, (x.shape[2], x.shape[3]),
                                       integer=True).to(x.dtype)

    def surrogate(self) -> FeatureDistillation:
        return self

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, q={self.q}, scale={self.scale}, qs={self.qs}, band_size={self.band_size}, "
                f"subsampling={self.subsampling!r}, calibrated={self.calibrated}")


register("fd", FeatureDistillation)
