"""diffjpeg: JPEG (and other input-transformation defenses) real in the forward pass and
differentiable in the backward pass, for adaptive attacks."""
from . import defenses, functional
from .contract import Defense
from .defenses import RandomJPEG
from .jpeg import DiffJPEG, diff_jpeg
from .jpeg.real import JPEG, real_jpeg
from .wrappers import BPDA, EOT, DefendedModel, RNGSnapshot

__version__ = "0.1.0"
__all__ = ["Defense", "DiffJPEG", "diff_jpeg", "JPEG", "real_jpeg", "RandomJPEG", "DefendedModel", "BPDA",
           "EOT", "RNGSnapshot", "attacks", "defenses", "functional", "learn"]


def __getattr__(name: str):
    # ``attacks`` (which imports torchattacks, ~1 s) and ``learn`` load on first use
    if name in ("attacks", "learn"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
