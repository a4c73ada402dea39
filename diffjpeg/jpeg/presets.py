"""Which JPEG library the codec reproduces: one set of options, and named presets for common stacks.

JPEG libraries differ in a handful of arithmetic choices, all within the standard:

* ``fdct`` / ``idct``: libjpeg's forward / inverse DCT, ``"islow"`` (accurate integer, the default of
  every libjpeg), ``"ifast"`` (the AAN integer DCT, what TurboJPEG's FASTDCT flag selects) or
  ``"float"`` (the AAN DCT in single precision); see :mod:`.dct` and :mod:`.aan`.
* ``upsampling``: decoder chroma upsampling, ``"fancy"`` (triangle filter, libjpeg's default),
  ``"simple"`` (replication, ``do_fancy_upsampling = FALSE``, TurboJPEG's FASTUPSAMPLE) or ``"dct"``
  (IJG libjpeg 7 and later: the chroma blocks go through a 16x16 / 16x8 inverse DCT that outputs
  full resolution directly, its default).
* ``downsampling``: encoder chroma subsampling, ``"box"`` (2x2 / 2x1 averages, libjpeg 6b and
  libjpeg-turbo) or ``"dct"`` (IJG libjpeg 7 and later: full-resolution chroma through a 16x16 /
  16x8 forward DCT that keeps the 8x8 lowest frequencies, its default ``do_fancy_downsampling``).
* ``color``: the RGB <-> YCbCr constants, ``"jfif5"`` (five decimals, every library until IJG 9)
  or ``"jfif9"`` (nine decimals, IJG 9a and later; see :mod:`.color`).
* ``tables``: the base tables that quality scales, ``"annex-k"`` (ITU-T T.81 Annex K, every library
  until IJG 9d) or ``"libjpeg9e"`` (IJG 9e and 9f: chroma DC entry 16 instead of 17).

The options change the integer ("exact") pipeline; the smooth estimators keep the real-valued DCT
and the same sampling structure (``"simple"`` replication, ``"dct"`` scaling), so their gradients
stay those of a smooth surrogate of the chosen library.

Example:
    >>> from diffjpeg.jpeg.presets import resolve_preset
    >>> resolve_preset("turbo-fast").idct
    'ifast'
"""
from __future__ import annotations

import dataclasses

from torch import Tensor

from . import aan, scaled
from .color import COLOR_CONSTANTS
from .dct import DC_GAIN, islow_dct_8x8, islow_idct_8x8
from .tables import BASE_TABLES

DCTS = ("islow", "ifast", "float")
#: inverse DCTs: the three methods, plus the versions of IJG libjpeg whose ifast / float IDCT
#: rounds differently ("ifast-9b", "float-9b": IJG 9b-9f; "float-6b": IJG 6b-8, libjpeg-turbo < 1.4,
#: mozjpeg 1.x)
IDCTS = DCTS + ("ifast-9b", "float-6b", "float-9b")
UPSAMPLINGS = ("fancy", "simple", "dct")
DOWNSAMPLINGS = ("box", "dct")


@dataclasses.dataclass(frozen=True)
class CodecOptions:
    """The arithmetic of one JPEG library (see the module docstring for the choices)."""

    fdct: str = "islow"
    idct: str = "islow"
    upsampling: str = "fancy"
    downsampling: str = "box"
    tables: str = "annex-k"
    color: str = "jfif5"

    def __post_init__(self):
        for field, choices in (("fdct", DCTS), ("idct", IDCTS), ("upsampling", UPSAMPLINGS),
                               ("downsampling", DOWNSAMPLINGS), ("tables", BASE_TABLES),
                               ("color", COLOR_CONSTANTS)):
            value = getattr(self, field)
            if value not in choices:
                raise ValueError(f"{field} must be one of {', '.join(map(repr, choices))}, got {value!r}")


PILLOW = CodecOptions()

#: named presets -> (options, the jpeglib library version the preset is tested against, what it is)
PRESETS: dict[str, tuple[CodecOptions, str, str]] = {
    "pillow": (PILLOW, "turbo210", "libjpeg-turbo defaults: Pillow, torchvision (CPU), OpenCV, libjpeg 6b"),
    "libjpeg6b": (PILLOW, "6b", "IJG libjpeg 6b (same arithmetic as libjpeg-turbo's defaults)"),
    "turbo-fast": (CodecOptions(fdct="ifast", idct="ifast", upsampling="simple"), "turbo210",
                   "libjpeg-turbo with TurboJPEG's FASTDCT and FASTUPSAMPLE (PyTurboJPEG, simplejpeg)"),
    "turbo-ifast": (CodecOptions(fdct="ifast", idct="ifast"), "turbo210",
                    "libjpeg-turbo with JDCT_IFAST both ways, fancy upsampling"),
    "turbo-float": (CodecOptions(fdct="float", idct="float"), "turbo210",
                    "libjpeg-turbo with JDCT_FLOAT both ways (C code, x86-64)"),
    "turbo-simple": (CodecOptions(upsampling="simple"), "turbo210",
                     "libjpeg-turbo decoding without fancy upsampling"),
    "libjpeg9": (CodecOptions(upsampling="dct", downsampling="dct", tables="libjpeg9e", color="jfif9"), "9f",
                 ("IJG libjpeg 9e / 9f defaults: DCT-scaled chroma both ways, 9-digit colour constants, "
                  "chroma DC table entry 16")),
    "libjpeg9a": (CodecOptions(upsampling="dct", downsampling="dct", color="jfif9"), "9d",
                  "IJG libjpeg 9a to 9d defaults: DCT-scaled chroma both ways, 9-digit colour constants"),
    "libjpeg7": (CodecOptions(upsampling="dct", downsampling="dct"), "7",
                 "IJG libjpeg 7 to 9 defaults: DCT-scaled chroma both ways"),
    "libjpeg9-fast": (CodecOptions(fdct="ifast", idct="ifast-9b", upsampling="dct", downsampling="dct",
                                   tables="libjpeg9e", color="jfif9"), "9f",
                      "IJG libjpeg 9e / 9f with JDCT_IFAST both ways"),
}


def resolve_preset(preset: str | CodecOptions, name: str = "preset") -> CodecOptions:
    """A preset name (one of :data:`PRESETS`) or :class:`CodecOptions` -> :class:`CodecOptions`."""
    if isinstance(preset, CodecOptions):
        return preset
    if isinstance(preset, str) and preset in PRESETS:
        return PRESETS[preset][0]
    raise ValueError(f"{name} must be one of {', '.join(map(repr, PRESETS))} or a CodecOptions, got {preset!r}")


def preset_name(options: CodecOptions) -> str:
    """The first preset name with these options, else the options' repr (for ``extra_repr``)."""
    for name, (value, _, _) in PRESETS.items():
        if value == options:
            return repr(name)
    return repr(options)


# ---------------------------------------------------------------------------------------------
# the DCT stages the codec dispatches to (integer mode)


def _blockwise_divide(coef: Tensor, tables: Tensor) -> Tensor:
    """``coef`` ``(B, n, h, w)`` divided block-wise by ``tables`` ``(B, n, 8, 8)``."""
    b, n, h, w = coef.shape
    blocks = coef.reshape(b, n, h // 8, 8, w // 8, 8)
    return (blocks / tables[:, :, None, :, None, :]).reshape(coef.shape)


def _blockwise_multiply(coef: Tensor, tables: Tensor) -> Tensor:
    b, n, h, w = coef.shape
    blocks = coef.reshape(b, n, h // 8, 8, w // 8, 8)
    return (blocks * tables[:, :, None, :, None, :]).reshape(coef.shape)


def quantizer_input(samples: Tensor, tables: Tensor, fdct: str) -> Tensor:
    """Integer samples ``(B, n, h, w)`` in [0, 255] -> the values libjpeg rounds to quantised coefficients.

    ``round_half_away(result)`` is libjpeg's quantised coefficient for DCT ``fdct`` ("islow": the
    islow output over ``8 Q``; "ifast": over ifast's AAN-scaled divisors; "float": times the float
    reciprocals, as the float quantiser rounds it). Plane layout, ``samples``' dtype.
    """
    if fdct == "islow":
        coef = islow_dct_8x8(samples)
        coef[..., ::8, ::8] -= 128.0 * DC_GAIN
        return _blockwise_divide(coef, tables)
    if fdct == "ifast":
        return _blockwise_divide(aan.ifast_fdct(samples), aan.ifast_divisors(tables.double())).to(samples.dtype)
    scaled = _blockwise_multiply(aan.float_fdct(samples), aan.float_divisors(tables))
    return aan.float_quantize_value(scaled).to(samples.dtype)


def inverse_dct(coefficients: Tensor, tables: Tensor, idct: str) -> Tensor:
    """Quantised coefficients ``(B, n, h, w)`` and tables ``(B, n, 8, 8)`` -> 8-bit samples, libjpeg's ``idct``.

    "islow" is :func:`~.dct.islow_idct_8x8` after dequantisation and the level shift; "ifast" and
    "float" dequantise with their AAN-scaled multipliers.
    """
    if idct == "islow":
        coef = _blockwise_multiply(coefficients, tables)
        coef[..., ::8, ::8] += 128.0 * DC_GAIN
        return islow_idct_8x8(coef)
    if idct.startswith("ifast"):
        dq = _blockwise_multiply(coefficients.double(), aan.ifast_multipliers(tables.double()))
        return aan.ifast_idct(dq, ijg9b=idct == "ifast-9b").to(coefficients.dtype)
    dq = _blockwise_multiply(coefficients.float(), aan.float_multipliers(tables))
    return aan.float_idct(dq, idct).to(coefficients.dtype)


def scaled_quantizer_input(chroma: Tensor, tables: Tensor, subsampling: str, integer: bool) -> Tensor:
    """Full-resolution chroma ``(B, 2, H, W)`` -> the values libjpeg 7+ rounds to its chroma coefficients
    (the 16x16 / 16x8 scaled islow DCT over ``8 Q``, see :mod:`.scaled`), plane layout."""
    return _blockwise_divide(scaled.scaled_fdct(chroma, subsampling, integer), tables)


def scaled_chroma(coefficients: Tensor, tables: Tensor, subsampling: str, integer: bool) -> Tensor:
    """Quantised chroma coefficients ``(B, 2, h, w)`` -> full-resolution chroma samples (libjpeg 7+'s
    scaled inverse DCT, before the range limit)."""
    return scaled.scaled_idct(_blockwise_multiply(coefficients, tables), subsampling, integer)
