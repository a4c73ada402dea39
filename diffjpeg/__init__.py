"""diffjpeg: JPEG (and other input-transformation defenses) real in the forward pass and
differentiable in the backward pass, for adaptive attacks."""
from . import attacks, defenses, functional, learn
from .contract import Defense
from .defenses import RandomJPEG
from .jpeg import DiffJPEG, diff_jpeg
from .jpeg.real import JPEG, real_jpeg
from .wrappers import BPDA, EOT, DefendedModel, RNGSnapshot

__version__ = "0.1.0"
__all__ = ["Defense", "DiffJPEG", "diff_jpeg", "JPEG", "real_jpeg", "RandomJPEG", "DefendedModel", "BPDA",
           "EOT", "RNGSnapshot", "attacks", "defenses", "functional", "learn"]
