"""diffjpeg: JPEG (and other input-transformation defenses) real in the forward pass and
differentiable in the backward pass, for adaptive attacks.

The public names load on first use, so ``import diffjpeg.jpeg`` loads the codec alone and
``import diffjpeg`` costs nothing until a name is asked for.
"""
import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_HOMES = {
    "Defense": ".contract", "DiffJPEG": ".jpeg", "diff_jpeg": ".jpeg", "JPEG": ".jpeg.real",
    "real_jpeg": ".jpeg.real", "RandomJPEG": ".defenses", "DefendedModel": ".wrappers", "BPDA": ".wrappers",
    "EOT": ".wrappers", "RNGSnapshot": ".wrappers", "compile": ".compiled", "set_threads": ".threads",
}
_SUBPACKAGES = ("attacks", "defenses", "functional", "learn")

__all__ = list(_HOMES) + list(_SUBPACKAGES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
