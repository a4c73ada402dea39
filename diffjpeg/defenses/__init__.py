"""Defenses: every one implements the :class:`~diffjpeg.contract.Defense` contract and is
buildable by name (``build("jpeg:q=50")``; ``available()`` lists names and parameters)."""
from ..contract import Defense
from .feature_distillation import FeatureDistillation
from .random_jpeg import RandomJPEG
from .registry import available, build, register
from .saliency_jpeg import SaliencyJPEG

__all__ = ["Defense", "FeatureDistillation", "RandomJPEG", "SaliencyJPEG", "available", "build", "register"]
