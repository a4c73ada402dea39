"""Refuse decompression bombs before anything is allocated: a JPEG's frame header, read alone.

A JPEG of a few hundred bytes can claim 65 535 x 65 535 pixels; decoding it, or reading its DCT
coefficients, would allocate tens of gigabytes. :func:`check_jpeg` reads the frame header (SOF)
of the bytes in hand -- a walk over the marker segments, nothing proportional to the claimed size
-- and refuses, with :class:`DecompressionBombError` (a ``ValueError``) for the first two:

* images of more pixels than the limit, which is **Pillow's** ``PIL.Image.MAX_IMAGE_PIXELS``
  (89 478 485 pixels by default, about 9459 x 9459), read at every call. Raise it, or set it to
  ``None`` to disable the check, for Pillow and diffjpeg at once::

      import PIL.Image
      PIL.Image.MAX_IMAGE_PIXELS = 400_000_000

  (Pillow itself only warns between one and two times the limit and refuses above twice it;
  diffjpeg refuses above it.)
* files whose data after the headers is too short for the size they claim: every 8 x 8 block of
  every component costs at least one bit of entropy-coded data (a Huffman code is at least one bit
  long, and every block's DC coefficient is coded), so a file with fewer than ``blocks / 8`` bytes
  after its headers is truncated or forged, whatever its claimed size;
* progressive files whose scans do not bring every coefficient of every component to full
  precision (scans missing, as in a truncated file whose end was patched with an EOI marker):
  libjpeg would smooth the blocks of such an image when it decodes pixels, so its coefficients are
  not the image Pillow shows. Every encoder's progressive script is complete.

The checks are pure functions of the bytes: :func:`read_frame_header` returns ``None`` for data it
cannot find a frame header in (no SOI, truncated headers, ...), leaving the reader's own
validation to explain what is wrong.

Example:
    >>> from diffjpeg.jpeg.limits import check_jpeg
    >>> check_jpeg(open("photo.jpg", "rb").read(), "photo.jpg")  # doctest: +SKIP
    FrameHeader(height=480, width=640, components=((2, 2), (1, 1), (1, 1)), ids=(1, 2, 3), marker=192, header_bytes=623)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["DecompressionBombError", "FrameHeader", "check_jpeg", "check_pixels", "incomplete_components",
           "max_image_pixels", "min_scan_bytes", "read_frame_header"]

#: SOF markers (every JPEG process): 0xc0-0xcf except DHT (0xc4), JPG (0xc8) and DAC (0xcc)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: markers without a length field: TEM and RST0-7 (SOI/EOI end the walk)
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
#: a marker inside entropy-coded data: 0xff followed by anything but a stuffed 0x00, RSTn or fill
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class DecompressionBombError(ValueError):
    """An image claims more pixels than the limit, or more than its data can hold."""


@dataclass(frozen=True)
class FrameHeader:
    """What a JPEG's frame header (SOF) declares.

    Attributes:
        height, width: image size in pixels (height 0 means "defined later by a DNL marker").
        components: ``(v, h)`` sampling factors of each component.
        ids: the component identifiers (what scan headers refer to).
        marker: the SOF marker's second byte (0xc0 baseline, 0xc2 progressive, ...).
        header_bytes: offset of the first scan header (SOS), or the length of the data when none
            follows; what comes after is entropy-coded data (and later scan headers).
    """

    height: int
    width: int
    components: tuple[tuple[int, int], ...]
    ids: tuple[int, ...]
    marker: int
    header_bytes: int

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def blocks(self) -> int:
        """8 x 8 blocks of all components (without MCU padding): ``sum ceil(h_c / 8) * ceil(w_c / 8)``."""
        vmax = max(v for v, _ in self.components)
        hmax = max(h for _, h in self.components)
        total = 0
        for v, h in self.components:
            rows = math.ceil(math.ceil(self.height * v / vmax) / 8)
            cols = math.ceil(math.ceil(self.width * h / hmax) / 8)
            total += rows * cols
        return total


def read_frame_header(data: bytes) -> FrameHeader | None:
    """The frame header of JPEG ``data``, or ``None`` when the markers do not lead to a well-formed one.

    Walks the marker segments from SOI; reads nothing but the segment lengths and the SOF segment.
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, frame = 2, None
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9) or pos + 4 > len(data):
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > len(data):
            return None
        if marker == 0xDA:
            return None if frame is None else FrameHeader(*frame, pos)
        if marker in _SOF and frame is None:
            segment = data[pos + 4: pos + 2 + length]
            if len(segment) < 6:
                return None
            height, width, count = (segment[1] << 8) | segment[2], (segment[3] << 8) | segment[4], segment[5]
            factors = tuple((segment[7 + 3 * i] & 0x0F, segment[7 + 3 * i] >> 4) for i in range(count)
                            if 8 + 3 * i <= len(segment))
            if count < 1 or len(factors) != count or any(not (1 <= v <= 4 and 1 <= h <= 4) for v, h in factors):
                return None
            frame = (height, width, factors, tuple(segment[6 + 3 * i] for i in range(count)), marker)
        pos += 2 + length
    return None if frame is None else FrameHeader(*frame, len(data))


def incomplete_components(data: bytes, frame: FrameHeader) -> list[int]:
    """Progressive ``data``: the components (indices) with a coefficient no scan brings to full precision.

    Walks every scan header (SOS) of the file, skipping the entropy-coded data between them with
    one regular-expression search per marker; a scan with successive-approximation low bit
    ``Al = 0`` completes its components' coefficients ``Ss..Se``. Empty for complete files (and for
    sequential ones, whose single pass is complete by definition).
    """
    if frame.marker not in (0xC2, 0xC6, 0xCA, 0xCE):
        return []
    done = [[False] * 64 for _ in frame.ids]
    pos = frame.header_bytes
    while 0 <= pos and pos + 4 <= len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if marker == 0xDA and end <= len(data):
            segment = data[pos + 4: end]
            count = segment[0] if segment else 0
            if len(segment) >= 4 + 2 * count:
                ss, se, al = segment[1 + 2 * count], segment[2 + 2 * count], segment[3 + 2 * count] & 0x0F
                if al == 0:
                    for selector in segment[1: 1 + 2 * count: 2]:
                        if selector in frame.ids:
                            index = frame.ids.index(selector)
                            for k in range(ss, min(se, 63) + 1):
                                done[index][k] = True
        found = _NEXT_MARKER.search(data, max(end, pos + 2))
        pos = found.start() if found else -1
    return [i for i, flags in enumerate(done) if not all(flags)]


def max_image_pixels() -> int | None:
    """The pixel limit in force: Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (``None``: no limit)."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def check_pixels(width: int, height: int, name: str) -> None:
    """Refuse an image of ``width x height`` pixels above :func:`max_image_pixels` (``name`` is the file)."""
    limit = max_image_pixels()
    if limit is not None and width * height > limit:
        raise DecompressionBombError(
            f"{name} claims {width}x{height} = {width * height} pixels, more than the limit of {limit} pixels "
            f"(a decompression bomb?); to read it, raise PIL.Image.MAX_IMAGE_PIXELS (None disables the limit)")


def min_scan_bytes(frame: FrameHeader) -> int:
    """The fewest bytes of entropy-coded data an image of ``frame``'s size can have: one bit per block."""
    return math.ceil(frame.blocks() / 8)


def check_jpeg(data: bytes, name: str) -> FrameHeader | None:
    """Refuse JPEG ``data`` that claims too many pixels or more than its length can hold.

    Args:
        data: the whole file.
        name: the file's name, for the message.

    Returns:
        the :class:`FrameHeader`, or ``None`` when none can be read (not a JPEG, truncated headers:
        the caller's own checks say what is wrong).

    Raises:
        DecompressionBombError: above the pixel limit, or fewer than :func:`min_scan_bytes` bytes
            after the headers.
        ValueError: a progressive file with scans missing (:func:`incomplete_components`).
    """
    frame = read_frame_header(data)
    if frame is None:
        return None
    check_pixels(frame.width, frame.height, name)
    have, need = len(data) - frame.header_bytes, min_scan_bytes(frame)
    if have < need:
        raise DecompressionBombError(
            f"{name} is truncated or forged: it claims {frame.width}x{frame.height} pixels "
            f"({frame.blocks()} blocks of 8x8), which need at least {need} bytes of image data, but only {have} "
            f"bytes follow its headers")
    missing = incomplete_components(data, frame)
    if missing:
        raise ValueError(
            f"{name} is truncated: its progressive scans leave coefficients of component(s) {missing} incomplete "
            f"(scans are missing)")
    return frame
