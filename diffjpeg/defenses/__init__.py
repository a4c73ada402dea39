"""Defenses: every one implements the :class:`~diffjpeg.contract.Defense` contract."""
from ..contract import Defense
from .random_jpeg import RandomJPEG

__all__ = ["Defense", "RandomJPEG"]
