"""Defenses: every one implements the :class:`~diffjpeg.contract.Defense` contract and is
buildable by name (``build("jpeg:q=50")``; ``available()`` lists names and parameters)."""
from ..contract import Defense
from .bit_depth import BitDepth
from .feature_distillation import FeatureDistillation
from .kmeans import KMeansColors
from .median import MedianSmoothing
from .random_jpeg import RandomJPEG
from .reconstruction import EDSR, PixelDepthReconstruction
from .registry import available, build, register
from .resize_pad import RandomResizePad
from .saliency_jpeg import SaliencyJPEG
from .tvm import TVM

__all__ = ["Defense", "BitDepth", "FeatureDistillation", "KMeansColors", "MedianSmoothing", "RandomJPEG",
           "RandomResizePad", "SaliencyJPEG", "TVM", "PixelDepthReconstruction", "EDSR",
           "available", "build", "register"]
