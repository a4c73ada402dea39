"""DCT coefficients and quantisation tables to and from ``.jpg`` files (through jpeglib).

Conventions (the same as :func:`diffjpeg.jpeg.codec.encode_coefficients` and
:mod:`diffjpeg.jpeg.exact`):

* coefficients: one ``int32`` tensor per component (Y, Cb, Cr -- or Y alone for grayscale) of shape
  ``(nby, nbx, 8, 8)``, the component's block grid as libjpeg stores it (``ceil(h_c / 8)`` x
  ``ceil(w_c / 8)`` for the component's plane size ``h_c x w_c``; MCU padding blocks are not part of
  it). Each 8x8 block is in natural (row-major) order: ``block[v, u]`` is vertical frequency ``v``,
  horizontal frequency ``u`` -- never zigzag. These are the quantised values ``round(F / Q)``.
* tables: ``(n_tables, 8, 8)`` ``int32`` in natural order, plus ``table_index``, the table of
  each component (``(0, 1, 1)`` in files from libjpeg / Pillow).

Reading and writing are lossless: no pixel is decoded and nothing is re-quantised. Decoding
coefficients to pixels differentiably is :mod:`diffjpeg.jpeg.decoding` (:func:`decode_file` here
reads and decodes in one call); writing an image tensor with Pillow is
:func:`diffjpeg.jpeg.pillow.save_jpeg`. Both names stay importable from this module.

Supported files: baseline and extended sequential Huffman JPEGs and progressive JPEGs, 8-bit,
grayscale (1 component) or YCbCr (3 components), any sampling factors for reading.
Not supported (``ValueError`` naming the reason): arithmetic coding, lossless/hierarchical JPEG,
12-bit precision, CMYK/YCCK (4 components), RGB-coded 3-component files (Adobe transform 0),
and files that are not JPEG, are truncated (no EOI marker after the image data) or corrupt.

libjpeg reports fatal errors through jpeglib as ``OSError`` (it does not abort the process; tested
with random bytes, PNGs, truncated and bit-flipped files), but it accepts a truncated file silently
(zero-filling the missing blocks) and jpeglib 1.0.2 has a fixed 50-entry buffer for APPn/COM markers.
So every file is first checked at the marker level here and handed to jpeglib with its APPn/COM
segments removed (except the JFIF APP0 and Adobe APP14 segments that decide the colour space).
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..files import output_mode
from .chroma import FACTORS, plane_sizes, sampling_factors
from .limits import check_jpeg
from .messages import captured_stderr
from .validate import check_qtables, check_subsampling

#: baseline Huffman coding limits (8-bit samples): |AC| < 2^10; DC in [-1024, 1023] so that DC
#: differences fit the 11 bits libjpeg allows (8-bit pixels give DC in [-1024, 1016] at Q = 1)
AC_LIMIT = 1023
DC_RANGE = (-1024, 1023)
#: libjpeg's largest quantisation table entry
TABLE_LIMIT = 32767

_SOF_SUPPORTED = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_SOF_UNSUPPORTED = {
    0xC3: "lossless", 0xC5: "differential sequential", 0xC6: "differential progressive",
    0xC7: "differential lossless", 0xC9: "arithmetic-coded sequential", 0xCA: "arithmetic-coded progressive",
    0xCB: "arithmetic-coded lossless", 0xCD: "arithmetic-coded differential sequential",
    0xCE: "arithmetic-coded differential progressive", 0xCF: "arithmetic-coded differential lossless",
}
_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}


@dataclasses.dataclass
class JPEGCoefficients:
    """The quantised DCT coefficients and tables of one JPEG image.

    Attributes:
        coefficients: per component ``(nby, nbx, 8, 8)`` int32, natural order within blocks.
        qtables: ``(n_tables, 8, 8)`` int32, natural order.
        table_index: index into ``qtables`` of each component.
        sampling_factors: ``(v, h)`` sampling factors of each component.
        height, width: image size in pixels.
        progressive: whether the file was progressive (informational; writing is sequential).
    """

    coefficients: list[Tensor]
    qtables: Tensor
    table_index: tuple[int, ...]
    sampling_factors: tuple[tuple[int, int], ...]
    height: int
    width: int
    progressive: bool = False

    @property
    def num_components(self) -> int:
        """1 (grayscale) or 3 (YCbCr)."""
        return len(self.coefficients)

    @property
    def color(self) -> str:
        """``"grayscale"`` or ``"ycbcr"``."""
        return "grayscale" if self.num_components == 1 else "ycbcr"

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def subsampling(self) -> str | None:
        """"444", "422" or "420"; ``None`` for other sampling layouts (e.g. 4:1:1, 4:4:0).

        Grayscale images report "444".
        """
        if self.num_components == 1:
            return "444"
        luma, *chroma = self.sampling_factors
        if any(c != (1, 1) for c in chroma):
            return None
        for name, factors in FACTORS.items():
            if tuple(luma) == factors:
                return name
        return None

    def component_qtables(self) -> Tensor:
        """``(C, 8, 8)``: the table of each component."""
        return self.qtables[list(self.table_index)]

    def to_batch(self, dtype: torch.dtype = torch.float32, device=None) -> tuple[list[Tensor], Tensor]:
        """The coefficients and tables as :func:`~diffjpeg.jpeg.codec.decode_coefficients` takes them.

        Returns:
            ``(coefficients, qtables)``: per component ``(1, nby, nbx, 8, 8)`` and ``(1, 2, 8, 8)``
            (luma, chroma), both ``dtype`` on ``device``.

        Raises:
            ValueError: the layout is not one the codec models (subsampling other than
                "444"/"422"/"420", or Cb and Cr with different tables).
        """
        if self.subsampling is None:
            raise ValueError(f"sampling factors {self.sampling_factors} are not 4:4:4, 4:2:2 or 4:2:0; "
                             f"the differentiable decoder does not model them")
        tables = self.component_qtables()
        if self.num_components == 3 and not torch.equal(tables[1], tables[2]):
            raise ValueError("Cb and Cr use different quantisation tables; the differentiable decoder uses one "
                             "chroma table")
        pair = torch.stack((tables[0], tables[-1]))[None].to(device=device, dtype=dtype)
        coefs = [c[None].to(device=device, dtype=dtype) for c in self.coefficients]
        return coefs, pair


# ----------------------------------------------------------------------------------------------
# marker-level validation


@dataclasses.dataclass
class _Scan:
    """What the marker walk learnt about a file."""

    kind: str
    components: int
    clean: bytes  # the file without APPn/COM segments (except JFIF APP0 and Adobe APP14)


def _inspect(data: bytes, path: str) -> _Scan:
    """Walk the markers up to the first scan; raise ``ValueError`` for anything not supported."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        start = " ".join(f"0x{b:02x}" for b in data[:4]) or "nothing (empty file)"
        raise ValueError(f"{path} is not a JPEG file: it starts with {start}, not the SOI marker 0xff 0xd8")
    pos, kept, kind, components = 2, [data[:2]], None, None
    kept_app = set()
    while True:
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 2 > len(data):
            raise ValueError(f"{path} is truncated: it ends inside the header, before any image data")
        if data[pos] != 0xFF:
            raise ValueError(f"{path} is corrupt: expected a marker at byte {pos}, found 0x{data[pos]:02x}")
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise ValueError(f"{path} contains no image: EOI marker before any scan")
        if pos + 4 > len(data):
            raise ValueError(f"{path} is truncated: it ends inside a marker segment at byte {pos}")
        length = (data[pos + 2] << 8) | data[pos + 3]
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise ValueError(f"{path} is truncated or corrupt: marker 0x{marker:02x} at byte {pos} declares "
                             f"{length} bytes, {len(data) - pos - 2} remain")
        segment = data[pos:end]
        if marker in _SOF_UNSUPPORTED:
            raise ValueError(f"{path} uses an unsupported JPEG process: {_SOF_UNSUPPORTED[marker]} (SOF marker "
                             f"0x{marker:02x}); only "
                             f"Huffman-coded baseline, extended sequential and progressive JPEGs are supported")
        if marker in _SOF_SUPPORTED:
            kind = _SOF_SUPPORTED[marker]
            if length < 8:
                raise ValueError(f"{path} is corrupt: SOF segment of {length} bytes")
            precision, components = segment[4], segment[9]
            if precision != 8:
                raise ValueError(f"{path} has {precision}-bit samples; only 8-bit JPEGs are supported")
            if components == 4:
                raise ValueError(f"{path} is a CMYK/YCCK JPEG (4 components); only grayscale and YCbCr "
                                 f"JPEGs are supported")
            if components not in (1, 3):
                raise ValueError(f"{path} has {components} components; only 1 (grayscale) or 3 (YCbCr) "
                                 f"are supported")
            if (segment[5] << 8 | segment[6]) == 0 or (segment[7] << 8 | segment[8]) == 0:
                raise ValueError(f"{path} declares a zero image height or width (DNL-defined heights are "
                                 f"not supported)")
        if marker == 0xDA:  # SOS: entropy-coded data follows
            if kind is None:
                raise ValueError(f"{path} is corrupt: a scan (SOS) before any frame header (SOF)")
            if data.find(b"\xff\xd9", end) < 0:
                raise ValueError(f"{path} is truncated: no EOI marker after the image data")
            kept.append(data[pos:])
            return _Scan(kind=kind, components=components, clean=b"".join(kept))
        is_app = 0xE0 <= marker <= 0xEF or marker == 0xFE
        if is_app:
            tag = bytes(segment[4:9])
            keep = ((marker == 0xE0 and tag == b"JFIF\x00") or (marker == 0xEE and tag == b"Adobe"))
            name = "jfif" if marker == 0xE0 else "adobe"
            if keep and name not in kept_app:
                kept_app.add(name)
                kept.append(segment)
        else:
            kept.append(segment)
        pos = end


def _read_bytes(path) -> tuple[str, bytes]:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a JPEG file, got {type(path).__name__} {path!r}")
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(2, f"no such JPEG file: {name!r}", name)
    with open(name, "rb") as f:
        return str(name), f.read()


# ----------------------------------------------------------------------------------------------
# reading


def read_coefficients(path) -> JPEGCoefficients:
    """Read the quantised DCT coefficients and tables of a JPEG file (no decoding).

    Args:
        path: a ``str`` or ``os.PathLike`` to a JPEG file.

    Returns:
        :class:`JPEGCoefficients` (int32 coefficients and tables, natural order).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TypeError: ``path`` is not a path.
        ValueError: not a JPEG, truncated, corrupt, or an unsupported kind (see the module docstring);
            :class:`~diffjpeg.jpeg.limits.DecompressionBombError` above the pixel limit or with too
            little data for its claimed size (see :mod:`diffjpeg.jpeg.limits`).
    """
    import jpeglib

    name, data = _read_bytes(path)
    scan = _inspect(data, name)
    check_jpeg(data, name)  # refuses decompression bombs before jpeglib allocates anything
    fd, tmp = tempfile.mkstemp(suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(scan.clean)
        try:
            with captured_stderr() as why:
                jpeg = jpeglib.read_dct(tmp)
                y, cb, cr = jpeg.Y, jpeg.Cb, jpeg.Cr
                qt, tbl_no = np.asarray(jpeg.qt), np.asarray(jpeg.quant_tbl_no)
        except OSError as err:
            reason = "; ".join(why) or str(err).replace(tmp, name)
            raise ValueError(f"{name} is corrupt: libjpeg could not read it: {reason}") from None
    finally:
        os.remove(tmp)
    space = str(jpeg.jpeg_color_space)
    if scan.components == 3 and not space.endswith("YCbCr"):
        raise ValueError(f"{name} stores {space.replace('JCS_', '')} components (e.g. an Adobe RGB-coded "
                         f"JPEG); only YCbCr colour JPEGs are supported")
    planes = [y] if scan.components == 1 else [y, cb, cr]
    coefficients = [torch.from_numpy(np.ascontiguousarray(p).astype(np.int32)) for p in planes]
    factors = tuple((int(v), int(h)) for v, h in np.asarray(jpeg.samp_factor)[: len(planes)])
    return JPEGCoefficients(
        coefficients=coefficients,
        qtables=torch.from_numpy(qt.astype(np.int32)),
        table_index=tuple(int(t) for t in tbl_no[: len(planes)]),
        sampling_factors=factors,
        height=int(jpeg.height),
        width=int(jpeg.width),
        progressive=scan.kind == "progressive",
    )


def read_qtables(path) -> Tensor:
    """The quantisation table of each component of a JPEG file: ``(C, 8, 8)`` int32, natural order."""
    return read_coefficients(path).component_qtables()


# ----------------------------------------------------------------------------------------------
# writing


def block_grid(height: int, width: int, factors: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """libjpeg's ``(height_in_blocks, width_in_blocks)`` of each component.

    ``factors`` are the ``(v, h)`` sampling factors of the components; a component's plane is
    ``ceil(H * v / v_max) x ceil(W * h / h_max)`` pixels (:func:`~diffjpeg.jpeg.chroma.plane_sizes`).
    """
    return [(math.ceil(h / 8), math.ceil(w / 8)) for h, w in plane_sizes(height, width, factors)]


def _as_planes(coefficients, name: str = "coefficients") -> list[np.ndarray]:
    """Tensors/arrays ``(nby, nbx, 8, 8)`` or ``(1, nby, nbx, 8, 8)`` -> int16 arrays, checked."""
    if isinstance(coefficients, (Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a list of per-component tensors (Y[, Cb, Cr]), got a single "
                        f"{type(coefficients).__name__}")
    planes = list(coefficients)
    if len(planes) not in (1, 3):
        raise ValueError(f"{name} must have 1 (grayscale) or 3 (Y, Cb, Cr) components, got {len(planes)}")
    out = []
    for i, plane in enumerate(planes):
        label = f"{name}[{i}]"
        if isinstance(plane, Tensor):
            plane = plane.detach().cpu()
            arr = plane.double().numpy() if plane.is_floating_point() else plane.to(torch.int64).numpy()
        else:
            arr = np.asarray(plane)
        if arr.ndim == 5:
            if arr.shape[0] != 1:
                raise ValueError(f"{label} holds a batch of {arr.shape[0]} images; a file holds one "
                                 f"(pass coefficients[i][k] for image k)")
            arr = arr[0]
        if arr.ndim != 4 or arr.shape[2:] != (8, 8) or min(arr.shape) < 1:
            raise ValueError(f"{label} must have shape (nby, nbx, 8, 8) or (1, nby, nbx, 8, 8), "
                             f"got {tuple(np.shape(plane))}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{label} must be finite, got NaN or Inf values")
        if np.issubdtype(arr.dtype, np.floating):
            rounded = np.round(arr)
            if np.any(np.abs(arr - rounded) > 1e-3):
                raise ValueError(f"{label} must hold integer values (quantised coefficients), got e.g. "
                                 f"{arr[np.abs(arr - rounded) > 1e-3][0]:.6g}")
            arr = rounded
        arr = arr.astype(np.int64)
        ac = arr.copy()
        ac[..., 0, 0] = 0
        dc = arr[..., 0, 0]
        if np.abs(ac).max() > AC_LIMIT or dc.min() < DC_RANGE[0] or dc.max() > DC_RANGE[1]:
            raise ValueError(f"{label} is out of baseline range: AC coefficients must be in "
                             f"[-{AC_LIMIT}, {AC_LIMIT}] and DC in [{DC_RANGE[0]}, {DC_RANGE[1]}], got AC up "
                             f"to {np.abs(ac).max()} in magnitude and DC in [{dc.min()}, {dc.max()}]")
        out.append(arr.astype(np.int16))
    return out


def _as_tables(qtables, components: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """User tables -> ``(n, 8, 8)`` uint16 and the per-component index, checked.

    Besides what :func:`check_qtables` takes, a single table as ``(1, 8, 8)`` or ``(1, 1, 8, 8)``
    (the table list of a grayscale file) is accepted.
    """
    if isinstance(qtables, np.ndarray):
        qtables = torch.from_numpy(qtables)
    if isinstance(qtables, Tensor) and qtables.ndim in (3, 4) and tuple(qtables.shape[:-2]) in ((1,), (1, 1)):
        qtables = qtables.reshape(8, 8)
    tables = check_qtables(qtables)
    if tables.ndim == 4:
        if tables.shape[0] != 1:
            raise ValueError(f"qtables holds tables for {tables.shape[0]} images; a file holds one image")
        tables = tables[0]
    values = tables.detach().cpu().double()
    rounded = values.round()
    if (values - rounded).abs().max() > 1e-3:
        raise ValueError("qtables must be integer-valued (a file stores integer tables); round them first")
    if rounded.max() > TABLE_LIMIT:
        raise ValueError(f"qtables entries must be <= {TABLE_LIMIT}, got {int(rounded.max())}")
    arr = rounded.numpy().astype(np.uint16)
    if components == 1:
        return arr[:1], (0,)
    return arr, (0, 1, 1)


def _infer_subsampling(planes: list[np.ndarray], size: tuple[int, int]) -> str:
    grids = [p.shape[:2] for p in planes]
    matches = [s for s in FACTORS
               if [tuple(g) for g in block_grid(*size, sampling_factors(s, 3))] == [tuple(g) for g in grids]]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"coefficient block grids {[tuple(g) for g in grids]} fit no subsampling for an image "
                         f"of size {size}; pass size=(H, W) and subsampling explicitly")
    raise ValueError(f"coefficient block grids {[tuple(g) for g in grids]} fit subsamplings {matches} for an "
                     f"image of size {size}; pass subsampling explicitly")


def write_coefficients(
    path,
    coefficients,
    qtables=None,
    *,
    size: tuple[int, int] | None = None,
    subsampling: str | None = None,
) -> None:
    """Write quantised DCT coefficients and tables to a baseline JPEG file, losslessly.

    The coefficients are entropy-coded as they are (standard Huffman tables, sequential, JFIF);
    nothing is re-quantised.

    Args:
        path: destination ``str`` / ``os.PathLike``; its folder must exist. Written atomically.
        coefficients: a :class:`JPEGCoefficients` (then ``qtables``, ``size`` and ``subsampling``
            must be left out), or a list of per-component integer-valued tensors/arrays
            ``(nby, nbx, 8, 8)`` or ``(1, nby, nbx, 8, 8)`` (Y, or Y, Cb, Cr), natural order, as
            :func:`~diffjpeg.jpeg.codec.encode_coefficients` / ``exact_encode`` return them for one
            image. AC values in [-1023, 1023], DC in [-1024, 1023].
        qtables: with a list: ``(8, 8)``, ``(2, 8, 8)`` or ``(1, 2, 8, 8)`` integer-valued tables in
            natural order (luma, chroma), entries in [1, 255]. (Tables of a
            :class:`JPEGCoefficients` read from a file may go up to 32767, as libjpeg allows;
            above 255 the file gets 16-bit tables and is no longer baseline.)
        size: ``(H, W)`` of the image; default: the luma block grid times 8 (for the exact size
            of a cropped image it must be given).
        subsampling: "444", "422" or "420"; default: inferred from the block grids (an error if
            they fit several, as for images of at most 8 or 16 pixels a side).

    Raises:
        FileNotFoundError: the destination folder does not exist.
        OSError: the destination cannot be written (a read-only folder, a folder of that name), naming it.
        TypeError, ValueError: malformed coefficients or tables (or a path that is not one), naming the argument.
    """
    import jpeglib

    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming the JPEG file to write, got {type(path).__name__} "
                        f"{path!r}")
    if isinstance(coefficients, JPEGCoefficients):
        if qtables is not None or size is not None or subsampling is not None:
            raise ValueError("qtables, size and subsampling come from the JPEGCoefficients; leave them out")
        jc = coefficients
        planes = _as_planes(jc.coefficients)
        tables = jc.qtables.detach().cpu().numpy()
        if tables.ndim != 3 or tables.shape[1:] != (8, 8) or tables.min() < 1 or tables.max() > TABLE_LIMIT:
            raise ValueError(f"JPEGCoefficients.qtables must be (n, 8, 8) with entries in [1, {TABLE_LIMIT}]")
        tables = tables.astype(np.uint16)
        index = tuple(jc.table_index)
        if any(not (0 <= t < len(tables)) for t in index) or any(t not in (0, 1, c) for c, t in enumerate(index)):
            raise ValueError(f"table_index {index} is not supported for writing: component c must use table "
                             f"0, 1 or c, and the table must exist")
        factors = tuple(tuple(f) for f in jc.sampling_factors)
        height, width = jc.height, jc.width
    else:
        if qtables is None:
            raise ValueError("qtables is required when coefficients is a list of tensors")
        planes = _as_planes(coefficients)
        tables, index = _as_tables(qtables, len(planes))
        if size is None:
            height, width = planes[0].shape[0] * 8, planes[0].shape[1] * 8
        else:
            height, width = (int(s) for s in size)
            if height < 1 or width < 1:
                raise ValueError(f"size must be (H, W) with H, W >= 1, got {tuple(size)}")
        if len(planes) == 1:
            factors = ((1, 1),)
        else:
            if subsampling is None:
                subsampling = _infer_subsampling(planes, (height, width))
            factors = sampling_factors(check_subsampling(subsampling), 3)
    if len(factors) != len(planes):
        raise ValueError(f"{len(planes)} components but {len(factors)} sampling factors")
    if any(not (1 <= v <= 4 and 1 <= h <= 4) for v, h in factors):
        raise ValueError(f"sampling factors must be in 1..4, got {factors}")
    expected = block_grid(height, width, factors)
    for i, (plane, grid) in enumerate(zip(planes, expected)):
        if tuple(plane.shape[:2]) != tuple(grid):
            raise ValueError(f"coefficients[{i}] has a {plane.shape[0]}x{plane.shape[1]} block grid, but an image "
                             f"of size {height}x{width} with sampling factors {factors} needs {grid[0]}x{grid[1]}")

    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, f"folder of the output file does not exist: {folder!r}", name)
    y, cb, cr = (planes + [None, None])[:3] if len(planes) == 1 else planes
    jpeg = jpeglib.from_dct(Y=y, Cb=cb, Cr=cr, qt=tables, quant_tbl_no=np.asarray(index, dtype=np.int16))
    jpeg.height, jpeg.width = height, width
    jpeg.samp_factor = np.asarray(factors, dtype=np.int32)
    jpeg.block_dims = np.asarray(expected, dtype=np.int32)
    try:
        fd, tmp = tempfile.mkstemp(suffix=".jpg", dir=folder)
    except OSError as err:
        raise type(err)(err.errno, f"cannot write {name!r}: its folder {folder!r} is not writable ({err.strerror})",
                        name) from None
    os.close(fd)
    try:
        os.chmod(tmp, output_mode(name))  # the usual mode of a new file (mkstemp's is 0600)
        try:
            with captured_stderr() as why:
                jpeg.write_dct(tmp)
        except OSError as err:
            reason = "; ".join(why) or str(err).replace(tmp, name)
            raise ValueError(f"libjpeg could not write the coefficients to {name}: {reason}") from None
        try:
            os.replace(tmp, name)
        except OSError as err:
            raise type(err)(err.errno, f"cannot write {name!r} ({err.strerror})", name) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------
# convenience


def decode_file(path, dtype: torch.dtype = torch.float32, device=None, preset="pillow") -> Tensor:
    """Read a JPEG's coefficients and decode them differentiably: ``(1, C, H, W)`` in [0, 1].

    :func:`read_coefficients` followed by :func:`diffjpeg.jpeg.decoding.decode` (``preset``: the
    decoder to reproduce, as there).
    """
    from .decoding import decode

    return decode(read_coefficients(path), dtype, device, preset)


#: names that moved out of this module, still importable from it: differentiable decoding and Pillow file writing
_MOVED = {"decode": "diffjpeg.jpeg.decoding", "save_jpeg": "diffjpeg.jpeg.pillow"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
