"""Build any defense by name: ``build("median:kernel=3x3")``, ``available()`` lists them.

Besides the registered names, ``build("MODULE:FACTORY")`` and ``build("MODULE:FACTORY:key=value,...")``
import ``FACTORY`` from ``MODULE`` and call it with the values (so ``diffjpeg bench --defenses
mypkg.defs:make_blur:sigma=1.5`` benchmarks a defense of your own); it must return an ``nn.Module``
with the :class:`~diffjpeg.contract.Defense` facts (``differentiable``, ``randomized``,
``surrogate()``), most simply a ``Defense`` subclass. ``register(name, factory)`` adds a name.

Example:
    >>> import diffjpeg
    >>> from diffjpeg.defenses import Defense, register
    >>> class Blur(Defense):
    ...     differentiable = True
    ...     def __init__(self, k: int = 3):
    ...         super().__init__()
    ...         self.k = k
    ...     def forward(self, x):
    ...         return torch.nn.functional.avg_pool2d(x, self.k, 1, self.k // 2, count_include_pad=False)
    >>> register("blur", Blur)  # doctest: +SKIP
    >>> diffjpeg.defenses.build("blur:k=5")  # doctest: +SKIP
"""
from __future__ import annotations

from torch import nn

from ..jpeg.codec import DiffJPEG
from ..jpeg.real import JPEG
from ..spec import Registry
from .random_jpeg import RandomJPEG


def check_defense(obj: object, spec: str) -> None:
    """``obj`` (built from ``spec``) must be an ``nn.Module`` with the Defense facts, else a ``TypeError``."""
    missing = [a for a in ("differentiable", "randomized", "surrogate") if not hasattr(obj, a)]
    if not isinstance(obj, nn.Module) or missing or not callable(obj.surrogate):
        what = type(obj).__name__ if isinstance(obj, nn.Module) else f"a {type(obj).__name__}, not an nn.Module"
        raise TypeError(f"defense spec {spec!r} built {what}; a defense must be an nn.Module with the attributes "
                        f"differentiable, randomized and a surrogate() method (subclass diffjpeg.defenses.Defense)"
                        + (f"; missing: {', '.join(missing)}" if isinstance(obj, nn.Module) and missing else ""))


DEFENSES = Registry("defense", imports=True, check=check_defense)
register = DEFENSES.register
available = DEFENSES.available
build = DEFENSES.build

register("jpeg", JPEG)
register("diffjpeg", DiffJPEG)
register("random_jpeg", RandomJPEG)
