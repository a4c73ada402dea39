"""The real codec of every JPEG library jpeglib bundles: IJG libjpeg 6b-9f, libjpeg-turbo, mozjpeg.

``jpeglib_roundtrip(pixels, ...)`` encodes one 8-bit image with library ``version`` (jpeglib's names:
``"6b"``, ``"7"`` ... ``"9f"``, ``"turbo120"`` ... ``"turbo210"``, ``"mozjpeg101"`` ... ``"mozjpeg403"``)
and decodes it with the same library (or ``decoder``), with the DCT methods and sampling switches
of :class:`~diffjpeg.jpeg.presets.CodecOptions` where the library has them. It is the reference the
presets are tested against and the forward pass of ``JPEG(backend="jpeglib", version=...)``.

Settings:

* quality ``q`` goes through the library's own ``jpeg_set_quality`` with ``force_baseline`` (tables
  clipped to 255, as Pillow writes them), so each library uses its own base tables (mozjpeg 3+ its
  default ImageMagick-derived tables; use :func:`library_tables` to read them); explicit tables are
  written as they are;
* ``fdct`` / ``idct`` select ``JDCT_ISLOW`` / ``JDCT_IFAST`` / ``JDCT_FLOAT``;
* ``upsampling="simple"`` clears the decoder's ``do_fancy_upsampling``; otherwise it is set, which
  means the triangle filter in libjpeg 6b / libjpeg-turbo / mozjpeg and DCT-domain scaling in IJG
  libjpeg 7+ (the library does what it does: ``"fancy"`` and ``"dct"`` name the same switch);
* for IJG libjpeg 7+, ``downsampling="dct"`` sets ``do_fancy_downsampling`` (its default) and
  ``"box"`` clears it; the other libraries always box-average;
* everything else is the library's default (mozjpeg: trellis quantisation, progressive mode,
  optimised Huffman tables, overshoot deringing).

jpeglib selects the library process-wide, so calls are serialised by a lock.
"""
from __future__ import annotations

import os
import tempfile
import threading

import numpy as np

from .chroma import FACTORS
from .presets import PILLOW, CodecOptions

_LOCK = threading.Lock()


def versions() -> list[str]:
    """The library versions this jpeglib ships (jpeglib's names), sorted."""
    import jpeglib

    return sorted(jpeglib.version.versions())


def is_ijg7plus(version: str) -> bool:
    """IJG libjpeg 7 or later (the versions with DCT-scaled chroma)."""
    return version[:1] in "789"


def _dct_method(name: str):
    import jpeglib

    return {"islow": jpeglib.JDCT_ISLOW, "ifast": jpeglib.JDCT_IFAST, "float": jpeglib.JDCT_FLOAT}[name.split("-")[0]]


def jpeglib_roundtrip(pixels: np.ndarray, version: str, quality: int | None = None, subsampling: str = "420",
                      tables: np.ndarray | None = None, options: CodecOptions = PILLOW,
                      decoder: str | None = None) -> np.ndarray:
    """Encode and decode one image with a jpeglib library.

    Args:
        pixels: ``(H, W)`` or ``(H, W, 3)`` uint8.
        version: encoder library (one of :func:`versions`); ``decoder``: decoder library (default: the same).
        quality: integer quality 1..100 (ignored when ``tables`` is given).
        subsampling: "444", "422" or "420" (ignored for grayscale).
        tables: ``(2, 8, 8)`` integer tables (luma, chroma), natural order, or ``None``.
        options: DCT methods and sampling switches (``tables`` and the emulation-only choices are
            not library switches: the library's own behaviour is what they describe).

    Returns:
        The decoded image, same shape, uint8.
    """
    import jpeglib

    gray = pixels.ndim == 2
    encode_flags = ["+FORCE_BASELINE"]
    decode_flags = ["-DO_FANCY_UPSAMPLING"] if options.upsampling == "simple" else ["+DO_FANCY_UPSAMPLING"]
    if is_ijg7plus(version):  # libjpeg 7+ scales in the DCT domain where its fancy switches are on
        encode_flags.append("+DO_FANCY_UPSAMPLING" if options.downsampling == "dct" else "-DO_FANCY_UPSAMPLING")
    folder = tempfile.mkdtemp(prefix="diffjpeg-jpeglib-")
    path = os.path.join(folder, "image.jpg")
    try:
        with _LOCK:
            with jpeglib.version(version):
                image = jpeglib.from_spatial(np.ascontiguousarray(pixels[..., None] if gray else pixels))
                if not gray:
                    fv, fh = FACTORS[subsampling]
                    image.samp_factor = ((fv, fh), (1, 1), (1, 1))
                if tables is not None:
                    qt = np.asarray(tables, dtype=np.uint16)[: 1 if gray else 2]
                    image.write_spatial(path, qt=qt, quant_tbl_no=[0] if gray else [0, 1, 1],
                                        dct_method=_dct_method(options.fdct), flags=encode_flags)
                else:
                    image.write_spatial(path, qt=int(quality), dct_method=_dct_method(options.fdct),
                                        flags=encode_flags)
            with jpeglib.version(decoder or version):
                out = jpeglib.read_spatial(path, dct_method=_dct_method(options.idct), flags=decode_flags).spatial
    finally:
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(folder)
    out = np.asarray(out)
    return np.ascontiguousarray(out[..., 0] if gray and out.ndim == 3 else out)


def library_tables(version: str, quality: int, channels: int = 3) -> np.ndarray:
    """The ``(2, 8, 8)`` tables (luma, chroma; natural order) library ``version`` writes for ``quality``.

    Read from a file it encodes (an 8x8 image), so they are the library's own, e.g. mozjpeg's.
    """
    import jpeglib

    folder = tempfile.mkdtemp(prefix="diffjpeg-jpeglib-")
    path = os.path.join(folder, "tables.jpg")
    try:
        with _LOCK:
            with jpeglib.version(version):
                image = jpeglib.from_spatial(np.full((8, 8, 3), 128, dtype=np.uint8))
                image.write_spatial(path, qt=int(quality), flags=["+FORCE_BASELINE"])
            with jpeglib.version("turbo210" if "turbo210" in versions() else version):
                qt = np.asarray(jpeglib.read_dct(path).qt).astype(np.int64)
    finally:
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(folder)
    return qt[:2] if qt.shape[0] >= 2 else np.concatenate([qt, qt])


def default_version(options: CodecOptions) -> str:
    """The jpeglib library whose defaults ``options`` describe (the preset's reference library)."""
    from .presets import PRESETS

    for value, version, _ in PRESETS.values():
        if value == options:
            return version
    if options.tables == "libjpeg9e":
        return "9f"
    if options.color == "jfif9" or options.idct.endswith("9b"):
        return "9d"
    if options.upsampling == "dct" or options.downsampling == "dct":
        return "9"
    if options.idct == "float-6b":
        return "6b"
    return "turbo210"


def check_version(version: object) -> str:
    """``version`` must be one of the libraries this jpeglib ships (:func:`versions`)."""
    available = versions()
    if not isinstance(version, str) or version not in available:
        raise ValueError(f"version must be one of the libraries jpeglib ships ({', '.join(available)}), "
                         f"got {version!r}")
    return version


def jpeglib_batch(u8, qualities: list[int], subsampling: str, tables: np.ndarray | None, version: str,
                  options: CodecOptions = PILLOW):
    """``(B, C, H, W)`` uint8 tensor (any device) -> decoded ``(B, C, H, W)`` uint8 on the CPU, via jpeglib.

    ``tables``: ``(B, 2, 8, 8)`` integer tables or ``None`` (then ``qualities``, one per image).
    """
    import torch

    arr = u8.cpu().permute(0, 2, 3, 1).numpy()
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    out = [jpeglib_roundtrip(np.ascontiguousarray(arr[i]), version, qualities[i], subsampling,
                             None if tables is None else tables[i], options) for i in range(arr.shape[0])]
    out = torch.from_numpy(np.stack(out))
    if out.ndim == 3:
        out = out[..., None]
    return out.permute(0, 3, 1, 2)


def surrogate_tables(version: str, q, options: CodecOptions):
    """The library's own tables for quality ``q`` (number or ``(B,)`` tensor, integer-valued) as a
    ``(2, 8, 8)`` / ``(B, 2, 8, 8)`` float tensor, or ``None`` where they equal the ones
    ``DiffJPEG(q, preset=options)`` derives (every library but mozjpeg 3+)."""
    import torch

    from .tables import quality_tables

    values = [int(v) for v in torch.as_tensor(q).reshape(-1).tolist()]
    own = {v: torch.from_numpy(library_tables(version, v)).float() for v in set(values)}
    ours = {v: quality_tables(torch.tensor([float(v)]), options.tables)[0] for v in own}
    if all(torch.equal(own[v], ours[v]) for v in own):
        return None
    if isinstance(q, torch.Tensor) and q.ndim == 1:
        return torch.stack([own[v] for v in values])
    return own[values[0]]
