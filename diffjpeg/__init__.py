"""diffjpeg: JPEG (and other input-transformation defenses) real in the forward pass and
differentiable in the backward pass, for adaptive attacks."""
from . import functional
from .contract import Defense
from .jpeg import DiffJPEG, diff_jpeg

__version__ = "0.1.0"
__all__ = ["Defense", "DiffJPEG", "diff_jpeg", "functional"]
