"""Defenses: every one implements the :class:`~diffjpeg.contract.Defense` contract and is
buildable by name (``build("jpeg:q=50")``; ``available()`` lists names and parameters)."""
from ..contract import Defense
from .random_jpeg import RandomJPEG
from .registry import available, build, register

__all__ = ["Defense", "RandomJPEG", "available", "build", "register"]
