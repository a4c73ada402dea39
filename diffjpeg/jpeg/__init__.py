"""The JPEG codec, one file per stage; ``codec`` assembles them into ``diff_jpeg`` / ``DiffJPEG``."""
from .codec import DiffJPEG, decode_coefficients, diff_jpeg, encode_coefficients
from .tables import quality_tables

__all__ = ["DiffJPEG", "diff_jpeg", "encode_coefficients", "decode_coefficients", "quality_tables"]
