"""A differentiable bit-rate proxy for JPEG with given quantisation tables, and its validation.

Baseline JPEG Huffman-codes every nonzero quantised AC coefficient as a (run, size) symbol
followed by ``size`` magnitude bits, where ``size = floor(log2 |c|) + 1``; DC coefficients are coded
as differences to the previous block's DC the same way; each block ends with an end-of-block
symbol. The proxy mirrors that cost model:

    bits = sum over coefficients  [ log2(1 + |c|)  +  symbol_bits * nonzero(c) ]

with ``c`` the quantised AC coefficients and the DC differences along libjpeg's block raster order.
``log2(1 + |c|)`` is the magnitude-bit count made smooth (it equals ``size`` at |c| = 1 and stays
within one bit of it above), and ``symbol_bits`` (default 3) the typical length of a (run, size)
Huffman code in the standard tables. The forward value uses the exactly rounded coefficients
(libjpeg's round-half-away of ``coefficient / table``); the backward pass goes through the
unrounded ratio (straight-through), and the nonzero indicator's gradient is that of
``sigmoid((|u| - 1/2) / temperature)``, so the proxy has a useful gradient with respect to the
tables. It is a rank proxy, not an entropy coder: :func:`rate_correlation` measures how well it
orders tables by the real sizes Pillow writes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .. import arguments
from ..jpeg import pillow, validate
from ..jpeg.codec import encode_coefficients, working_dtype
from ..jpeg.rounding import round_ste, straight_through

__all__ = ["rate_proxy", "real_scan_bits", "real_bpp", "rate_correlation"]


def _identity(t: Tensor) -> Tensor:
    return t


def rate_proxy(x: Tensor, tables: Tensor, subsampling: str = "420", *, symbol_bits: float = 3.0,
               temperature: float = 0.25, reduction: str = "mean") -> Tensor:
    """Estimated entropy-coded bits per pixel of ``x`` JPEG-compressed with ``tables``.

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        tables: ``(8, 8)``, ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` (luma, chroma) in natural order, entries in
            [1, 255]; rounded to integers with a straight-through gradient, as a file stores them.
            Gradients flow to ``tables`` (and to ``x``).
        subsampling: "444", "422" or "420" (ignored for C = 1).
        symbol_bits: bits charged per nonzero coefficient for its Huffman symbol, >= 0.
        temperature: > 0, width of the sigmoid whose gradient stands in for the nonzero indicator's.
        reduction: "mean" (a scalar: mean bits per pixel over the batch) or "none" (``(B,)``).

    Returns:
        bits per pixel (per pixel of the ``H x W`` image, all components together), >= 0.
    """
    validate.check_image(x)
    subsampling = validate.check_subsampling(subsampling)
    tables = validate.check_qtables(tables, "tables", batch=x.shape[0])
    arguments.check_real(symbol_bits, "symbol_bits", 0.0, float("inf"), hi_open=True)
    arguments.check_real(temperature, "temperature", 0.0, float("inf"), lo_open=True, hi_open=True)
    arguments.check_choice(reduction, ("mean", "none"), "reduction")
    work = working_dtype(x)
    b, _, h, w = x.shape
    t = round_ste(tables.to(device=x.device, dtype=work))
    t = t.expand(b, -1, -1, -1) if t.ndim == 3 else t
    ratios = encode_coefficients(x.to(work), t, subsampling, quantize=_identity, integer=True)
    bits = x.new_zeros(b, dtype=work)
    for u in ratios:  # (B, nby, nbx, 8, 8): coefficient / table, unrounded
        flat = u.reshape(b, -1, 64)  # blocks in libjpeg's raster order
        dc = flat[..., 0]
        dc_diff = torch.cat((dc[:, :1], dc[:, 1:] - dc[:, :-1]), dim=1)  # DC coded as differences
        # round the DC values first, as the file stores them, then difference
        dc_q = round_ste(dc)
        dcd_q = torch.cat((dc_q[:, :1], dc_q[:, 1:] - dc_q[:, :-1]), dim=1)
        dcd = straight_through(dc_diff, dcd_q)
        values = torch.cat((dcd.unsqueeze(-1), round_ste(flat[..., 1:])), dim=-1)
        soft = torch.cat((dc_diff.unsqueeze(-1), flat[..., 1:]), dim=-1)
        magnitude = torch.log2(1.0 + values.abs())
        hard = (values.detach() != 0).to(work)
        nonzero = straight_through(torch.sigmoid((soft.abs() - 0.5) / temperature), hard)
        bits = bits + (magnitude + symbol_bits * nonzero).sum(dim=(1, 2))
    bpp = bits / (h * w)
    return bpp.mean() if reduction == "mean" else bpp


def _scan_bytes(data: bytes) -> int:
    """Bytes of entropy-coded data in a baseline JPEG file: from after the SOS header to before EOI."""
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:
            return len(data) - (pos + 2 + length) - 2
        pos += 2 + length
    raise ValueError("not a baseline JPEG stream: no SOS marker found")


def real_scan_bits(x: Tensor, tables: Tensor, subsampling: str = "420") -> np.ndarray:
    """Entropy-coded bits Pillow (libjpeg-turbo) writes for each image of ``x`` with ``tables``.

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}; stored as ``floor(255 x + 1/2)``.
        tables: ``(8, 8)``, ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` integer-valued tables in natural order.
        subsampling: "444", "422" or "420".

    Returns:
        ``(B,)`` int64: bits of the scan data (file size minus headers and markers, which do not
        depend on the image content), i.e. what the tables change.
    """
    validate.check_image(x)
    subsampling = validate.check_subsampling(subsampling)
    tables = validate.check_qtables(tables, "tables", batch=x.shape[0])
    u8 = pillow.to_uint8(x)
    t = pillow.integer_tables(tables, x.shape[0])
    return np.array([8 * _scan_bytes(pillow.encode(pillow.image_array(u8[i]), tables=t[i], subsampling=subsampling))
                     for i in range(x.shape[0])], dtype=np.int64)


def real_bpp(x: Tensor, tables: Tensor, subsampling: str = "420") -> float:
    """Mean entropy-coded bits per pixel of the real files (see :func:`real_scan_bits`)."""
    return float(real_scan_bits(x, tables, subsampling).mean() / (x.shape[2] * x.shape[3]))


def rate_correlation(images: Tensor, tables_list: Sequence[Tensor], subsampling: str = "420",
                     **proxy_options) -> dict:
    """Spearman rank correlation between :func:`rate_proxy` and Pillow's real sizes across tables.

    Args:
        images: ``(B, C, H, W)`` in [0, 1].
        tables_list: at least 3 table sets, each ``(8, 8)`` or ``(2, 8, 8)`` in [1, 255].
        subsampling: "444", "422" or "420".
        proxy_options: passed to :func:`rate_proxy` (``symbol_bits``, ``temperature``).

    Returns:
        ``{"spearman": rho, "pearson": r, "proxy_bpp": [...], "real_bpp": [...]}``: per table set, the
        proxy's and the real files' mean bits per pixel over ``images``.
    """
    from scipy.stats import pearsonr, spearmanr

    if isinstance(tables_list, (Tensor, str)) or not isinstance(tables_list, Sequence) or len(tables_list) < 3:
        size = len(tables_list) if hasattr(tables_list, "__len__") else "?"
        raise ValueError(f"tables_list must be a sequence of at least 3 table sets, got "
                         f"{type(tables_list).__name__} of length {size}")
    proxy, real = [], []
    with torch.no_grad():
        for tables in tables_list:
            proxy.append(float(rate_proxy(images, tables, subsampling, **proxy_options)))
            real.append(real_bpp(images, tables, subsampling))
    return {"spearman": float(spearmanr(proxy, real).statistic), "pearson": float(pearsonr(proxy, real).statistic),
            "proxy_bpp": proxy, "real_bpp": real}
