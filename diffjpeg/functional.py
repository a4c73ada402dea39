"""Functional forms of the project's operations (kornia style): ``diffjpeg.functional.diff_jpeg`` etc."""
from .jpeg.chroma import chroma_downsample, chroma_upsample
from .jpeg.codec import decode_coefficients, diff_jpeg, encode_coefficients
from .jpeg.color import rgb_to_ycbcr, ycbcr_to_rgb
from .jpeg.dct import dct_8x8, idct_8x8
from .jpeg.rounding import round_cubic, round_fourier, round_noise, round_soft, round_ste
from .jpeg.tables import quality_tables

__all__ = [
    "diff_jpeg", "encode_coefficients", "decode_coefficients", "quality_tables", "rgb_to_ycbcr", "ycbcr_to_rgb",
    "chroma_downsample", "chroma_upsample", "dct_8x8", "idct_8x8",
    "round_ste", "round_cubic", "round_soft", "round_fourier", "round_noise",
]
