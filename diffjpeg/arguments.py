"""Generic argument checks for every public boundary of the package (ints, reals, ranges, choices,
generators, per-image batch sizes).

Each check raises ``TypeError`` when the object is of the wrong kind (a bool or a string where a
number is due, a non-generator) and ``ValueError`` when it is of the right kind with the wrong
content (out of range, not a listed choice), with a message that names the argument, what was
expected and what came in. The codec's own checks (images, qualities, tables, subsampling) live in
:mod:`diffjpeg.jpeg.validate`; the benchmark's gradient-masking checks are :mod:`diffjpeg.eval.checks`.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

__all__ = ["check_batch", "check_bool", "check_choice", "check_generator", "check_int", "check_range", "check_real"]


def check_int(value: object, name: str, lo: int, hi: int | None = None) -> int:
    """``value`` must be an integer (not a bool) in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer {bound}, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer {bound}, got {value}")
    return value

def check_bool(value: object, name: str) -> bool:
    """``value`` must be a ``bool`` (or a numpy bool): no truthy strings or numbers.

    ``"false"``, ``"no"``, ``0`` and ``1`` are refused rather than read by truthiness (``bool("no")`` is True).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_real(value: object, name: str, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
               hi_open: bool = False) -> float:
    """``value`` must be a finite real number (not a bool) in the interval from ``lo`` to ``hi``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open or lo == -math.inf else "["
        right = ")" if hi_open or hi == math.inf else "]"
        raise ValueError(f"{name} must be a finite number in {left}{lo:g}, {hi:g}{right}, got {value!r}")
    return value

def check_range(value: object, name: str, lo: float, hi: float, integer: bool) -> tuple:
    """``value`` must be a pair ``(a, b)`` with ``lo <= a <= b <= hi``, or one value ``a`` (read as ``(a, a)``).

    ``integer``: the entries must be ints (returned as ints), else real numbers (returned as floats).
    """
    kind, cast = (Integral, int) if integer else (Real, float)
    noun = "int" if integer else "number"

    def ok(v: object) -> bool:
        return isinstance(v, kind) and not isinstance(v, bool)

    if ok(value):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(ok(v) for v in value):
        raise TypeError(f"{name} must be a pair of {noun}s (lo, hi) in [{lo:g}, {hi:g}] or one {noun}, got {value!r}")
    a, b = cast(value[0]), cast(value[1])
    if not lo <= a <= b <= hi:
        raise ValueError(f"{name} must satisfy {lo:g} <= lo <= hi <= {hi:g}, got ({a:g}, {b:g})")
    return a, b


def check_choice(value: object, choices: tuple[str, ...], name: str) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value

def check_generator(generator: object) -> torch.Generator | None:
    """``generator`` must be a ``torch.Generator`` or ``None`` (torch's global RNG)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator

def check_batch(n: int, batch: int, name: str) -> None:
    """A per-image argument with ``n`` entries must match the batch size."""
    if n != batch:
        raise ValueError(f"{name} has {n} entries but the batch has {batch} images")
