"""The one adapter to Pillow's JPEG codec (libjpeg-turbo): 8-bit conversion, quality and tables,
subsampling codes, encode and decode.

Everything in the project that asks Pillow for a JPEG goes through :func:`encode`: the real codec
(:mod:`diffjpeg.jpeg.real`), file writing (:func:`save_jpeg`), the rate measure
(:func:`diffjpeg.learn.rate.real_scan_bits`) and table export (:func:`diffjpeg.learn.qtables.export_jpeg`).

Conventions:

* pixels: ``floor(255 x + 1/2)`` clipped to [0, 255] (:func:`to_uint8`; round half up, so that
  ``x = k / 255`` maps back to ``k`` exactly -- ``torchvision``'s ``to_pil_image`` truncates
  instead). Half-precision inputs are converted in float32, as :class:`~diffjpeg.jpeg.codec.DiffJPEG`
  does, so both see the same 8-bit image.
* quality: an integer in [1, 100]; real-valued qualities are rounded to the nearest integer,
  halves up (:func:`round_quality`), the rule the differentiable codec follows too.
* tables: ``(2, 8, 8)`` integers (luma, chroma) in natural (row-major) order, written as they are:
  no quality is passed with them, since libjpeg would scale custom tables by it. A grayscale image
  is written with the luma table alone.
* subsampling: "444", "422", "420" are Pillow's ``subsampling=0, 1, 2`` (ignored for grayscale).

:func:`save_jpeg` is the checked public entry (an image tensor to a file); :func:`encode`,
:func:`decode` and :func:`write_image` take arguments already checked by their caller.

Example::

    >>> x = torch.rand(1, 3, 16, 16)
    >>> data = encode(image_array(to_uint8(x)[0]), quality=50, subsampling="420")
    >>> decode(data).shape
    (16, 16, 3)
"""
from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .codec import integer_quality, working_dtype
from .validate import check_image, check_qtables, check_quality, check_subsampling

__all__ = ["PIL_SUBSAMPLING", "decode", "encode", "image_array", "integer_tables", "round_quality", "save_jpeg",
           "to_uint8", "write_image"]

#: Pillow's ``subsampling=`` codes
PIL_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def to_uint8(x: Tensor) -> Tensor:
    """Float in [0, 1] (any shape) -> ``uint8`` by ``floor(255 x + 1/2)``, clipped to [0, 255].

    float16 / bfloat16 are converted in float32 (in half precision ``255 x + 1/2`` would round to
    another level). No gradient.
    """
    x = x.detach()
    return torch.floor(x.to(working_dtype(x)) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


def round_quality(q: float | Tensor, batch: int) -> list[int]:
    """``q`` (number, 0-d or ``(B,)`` tensor in [1, 100]) -> ``batch`` integer qualities.

    The codec's rule (:func:`~diffjpeg.jpeg.codec.integer_quality`): the nearest integer, halves up.
    """
    t = q.detach().double().cpu() if isinstance(q, Tensor) else torch.tensor(float(q), dtype=torch.float64)
    values = integer_quality(t).to(torch.int64).reshape(-1).tolist()
    return values * batch if len(values) == 1 else values


def integer_tables(qtables: Tensor, batch: int) -> np.ndarray:
    """Checked tables ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` -> ``(batch, 2, 8, 8)`` int64, rounded half up."""
    t = torch.floor(qtables.detach().double().cpu() + 0.5).to(torch.int64)
    if t.ndim == 3:
        t = t.expand(batch, 2, 8, 8)
    return t.numpy()


def image_array(u8: Tensor) -> np.ndarray:
    """One ``(C, H, W)`` ``uint8`` image (C in {1, 3}, any device) -> Pillow's layout ``(H, W)`` or ``(H, W, 3)``."""
    a = u8.cpu().numpy()
    return np.ascontiguousarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))


def encode(pixels: np.ndarray, quality: int | None = None, tables: np.ndarray | None = None,
           subsampling: str = "420") -> bytes:
    """Encode one image with Pillow (libjpeg-turbo, baseline, islow DCT): the JPEG file's bytes.

    Args:
        pixels: ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB) ``uint8``.
        quality: integer libjpeg quality in [1, 100]; used when ``tables`` is ``None``.
        tables: ``(2, 8, 8)`` integer tables in natural order (luma, chroma), or ``None``.
        subsampling: "444", "422" or "420" (ignored for grayscale).
    """
    options: dict = {"format": "JPEG"}
    if tables is not None:
        n = 1 if pixels.ndim == 2 else 2
        options["qtables"] = [np.asarray(tables[i]).reshape(64).tolist() for i in range(n)]
    else:
        options["quality"] = int(quality)
    if pixels.ndim == 3:
        options["subsampling"] = PIL_SUBSAMPLING[subsampling]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode JPEG bytes with Pillow: ``(H, W)`` or ``(H, W, 3)`` ``uint8``."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def save_jpeg(path, x, q: float = 75, subsampling: str = "420", qtables=None, **kwargs) -> None:
    """Save an image tensor as a JPEG file with Pillow, or coefficients losslessly.

    Args:
        path: destination ``str`` / ``os.PathLike``.
        x: an image ``(1, C, H, W)`` or ``(C, H, W)`` float in [0, 1], C in {1, 3}, written at quality
            ``q`` (rounded to an integer, halves up) or with ``qtables`` (``(8, 8)``, ``(2, 8, 8)`` or
            ``(1, 2, 8, 8)``, natural order, entries in [1, 255], rounded) after :func:`to_uint8`; or
            coefficients (a :class:`~diffjpeg.jpeg.io.JPEGCoefficients` or a list of per-component
            tensors), which go to :func:`~diffjpeg.jpeg.io.write_coefficients` with ``qtables`` and
            ``kwargs`` (``size``; ``subsampling`` is then inferred unless given in ``kwargs``).
        subsampling: "444", "422" or "420" for a colour image.

    Example::

        >>> save_jpeg("out.jpg", torch.rand(3, 32, 32), q=90)
    """
    from .io import JPEGCoefficients, write_coefficients

    if isinstance(x, JPEGCoefficients):
        write_coefficients(path, x)
        return
    if isinstance(x, (list, tuple)):
        write_coefficients(path, x, qtables, subsampling=kwargs.pop("subsampling", None), **kwargs)
        return
    if isinstance(x, Tensor) and x.ndim == 3:
        x = x[None]
    x = check_image(x)
    if x.shape[0] != 1:
        raise ValueError(f"x must hold one image, got a batch of {x.shape[0]}")
    subsampling = check_subsampling(subsampling)
    tables = None if qtables is None else integer_tables(check_qtables(qtables, batch=1), 1)[0]
    quality = None if tables is not None else round_quality(check_quality(q), 1)[0]
    write_image(path, x, quality, tables, subsampling)


def write_image(path, x: Tensor, quality: int | None = None, tables: np.ndarray | None = None,
                subsampling: str = "420") -> None:
    """Write one image ``(1, C, H, W)`` in [0, 1] to ``path`` as :func:`encode` codes it.

    The arguments are those of :func:`encode`, already checked (:func:`save_jpeg` is the checked form).
    """
    data = encode(image_array(to_uint8(x)[0]), quality, tables, subsampling)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
