"""The codec's argument checks: images, qualities, quantisation tables, subsampling and the
rounding estimators' options (generic int/real/choice checks are :mod:`diffjpeg.arguments`).

Each check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong
content) with a message that names the argument, what was expected and what came in. They run
once, at the public boundary; inside the pipeline nothing is checked again.

Checks without synchronisation: the kind, dtype and shape checks are Python on metadata and always
run. Checks of *values* (finite, in range) need the values, so where they run is chosen by
:func:`value_check_mode` (see :func:`set_value_checks`): read back to the host on the CPU (free of any
device synchronisation there, and the message shows the offending values), an asynchronous device
assertion (``torch._assert_async``) on accelerators, nothing on ``meta`` tensors and under
``torch.compile`` (the compiled module's own boundary, :func:`diffjpeg.compile`, checks eagerly). The
codec's C round trip checks an image's values in its own pass over them (``check_image(x, values=False)``
at the boundary, then :func:`diffjpeg.jpeg.native.integer_round_trip`), with the same errors.
"""
from __future__ import annotations

import contextlib
import math
import os
from numbers import Integral, Real
from typing import Callable

import torch
from torch import Tensor

from ..arguments import check_batch, check_choice

SUBSAMPLINGS = ("444", "422", "420")
#: float rounding slack allowed outside [0, 1] (e.g. from a normalise/denormalise round trip)
RANGE_TOLERANCE = 1e-5
#: how value checks run (:func:`set_value_checks`); default from ``$DIFFJPEG_VALUE_CHECKS``
VALUE_CHECKS = ("auto", "sync", "off")
_value_checks = os.environ.get("DIFFJPEG_VALUE_CHECKS", "auto")
if _value_checks not in VALUE_CHECKS:
    raise ValueError(f"DIFFJPEG_VALUE_CHECKS must be one of {VALUE_CHECKS}, got {_value_checks!r}")


def set_value_checks(mode: str) -> str:
    """Choose how the checks of input *values* (finite, in range) run; returns the previous mode.

    * ``"auto"`` (default): on the CPU, read back and raise ``ValueError`` with the offending values
      (a CPU tensor costs no device synchronisation); on CUDA and other devices an asynchronous
      device assertion (``torch._assert_async``: no host synchronisation, the error -- with the same
      text, without the values -- surfaces at the next synchronisation); skipped on ``meta`` tensors
      and while ``torch.compile`` traces.
    * ``"sync"``: read back on every device (clear errors at the call, one synchronisation per check
      on a GPU); still skipped on ``meta`` and under compilation, which have no values to read.
    * ``"off"``: no value checks anywhere (kind, dtype and shape are still checked).

    The environment variable ``DIFFJPEG_VALUE_CHECKS`` sets the default. Also a context manager
    form: :func:`value_checks`.

    Example::

        import diffjpeg.jpeg.validate as validate
        validate.set_value_checks("sync")   # debugging a GPU attack: errors at the faulty call
    """
    global _value_checks
    if mode not in VALUE_CHECKS:
        raise ValueError(f"mode must be one of {VALUE_CHECKS}, got {mode!r}")
    previous, _value_checks = _value_checks, mode
    return previous


@contextlib.contextmanager
def value_checks(mode: str):
    """``with value_checks("off"): ...`` runs the block under :func:`set_value_checks` ``(mode)``."""
    previous = set_value_checks(mode)
    try:
        yield
    finally:
        set_value_checks(previous)


def value_checks_on() -> bool:
    """Whether values are checked at all (any mode but ``"off"``): code that reads the values anyway, on
    the CPU, at run time (the C round trip), checks them under ``torch.compile`` too."""
    return _value_checks != "off"


def value_check_mode(t: Tensor) -> str | None:
    """How the value checks of ``t`` run now: ``"sync"``, ``"async"`` or ``None`` (skipped)."""
    if not value_checks_on() or t.device.type == "meta" or torch.compiler.is_compiling():
        return None
    return "sync" if t.device.type == "cpu" or _value_checks == "sync" else "async"


def require(ok: Callable[[], Tensor], message: Callable[[], str], like: Tensor,
            async_message: str | None = None) -> None:
    """Raise ``ValueError(message())`` unless the 0-d bool tensor ``ok()`` is true, as
    :func:`value_check_mode` of ``like`` says (``async_message``: the text of the device assertion,
    default ``message()``, which must then not read values back)."""
    mode = value_check_mode(like)
    if mode == "sync":
        if not bool(ok()):
            raise ValueError(message())
    elif mode == "async":
        torch._assert_async(ok(), async_message if async_message is not None else message())


def _dense_view(x: Tensor) -> Tensor:
    """``x``'s dimensions permuted into memory order, when that makes it contiguous, so that a reduction
    over all its values reads it in place (a channels-last batch, for one, would otherwise be copied)."""
    if x.is_contiguous():
        return x
    permuted = x.permute(sorted(range(x.ndim), key=lambda d: -x.stride(d)))
    return permuted if permuted.is_contiguous() else x


def check_image(x: object, name: str = "x", values: bool = True) -> Tensor:
    """``x`` must be a floating ``(B, C, H, W)`` tensor, C in {1, 3}, finite, values in [0, 1].

    ``values=False`` checks kind, dtype and shape only: the caller checks the values in its own first
    pass over them (the codec's C round trip does, :func:`diffjpeg.jpeg.native.integer_round_trip`), or
    with :func:`check_image_values`.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}; "
            f"convert integer images with x.float() / 255"
        )
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {x.ndim} dimensions {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have C = 1 (grayscale) or 3 (RGB) channels, got C = {x.shape[1]}")
    if min(x.shape) < 1:
        raise ValueError(f"{name} must have B, H, W >= 1, got shape {tuple(x.shape)}")
    return check_image_values(x, name) if values else x


def check_image_values(x: Tensor, name: str = "x") -> Tensor:
    """``x`` (a tensor) must be finite with values in [0, 1] (up to ``RANGE_TOLERANCE``), checked as
    :func:`value_check_mode` says."""
    mode = value_check_mode(x)
    values = _dense_view(x.detach()) if mode else None
    if mode == "sync":
        lo, hi = torch.stack(torch.aminmax(values)).tolist()  # NaN propagates, Inf is out of range
        if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
            raise ValueError(f"{name} must be finite, got NaN or Inf values")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(f"{name} must have values in [0, 1], got values in [{lo:.6g}, {hi:.6g}]")
    elif mode == "async":  # NaN fails both comparisons
        lo, hi = torch.aminmax(values)
        torch._assert_async((lo >= -RANGE_TOLERANCE) & (hi <= 1 + RANGE_TOLERANCE),
                            f"{name} must be finite with values in [0, 1] (diffjpeg input check)")
    return x


def check_subsampling(subsampling: object) -> str:
    """``subsampling`` must be one of "444", "422", "420" (the ints 444, 422, 420 are taken as those)."""
    if isinstance(subsampling, int) and not isinstance(subsampling, bool) and str(subsampling) in SUBSAMPLINGS:
        return str(subsampling)
    return check_choice(subsampling, SUBSAMPLINGS, "subsampling")


def check_quality(q: object, name: str = "q", batch: int | None = None) -> Tensor | float:
    """``q`` must be a real number or a 1-D tensor, finite, in [1, 100]; a ``(B,)`` tensor must have
    ``batch`` entries when ``batch`` is given."""
    if isinstance(q, bool) or not isinstance(q, (Real, Tensor)):
        raise TypeError(f"{name} must be an int, a float or a (B,) tensor in [1, 100], got {type(q).__name__}")
    if isinstance(q, Tensor):
        if q.ndim > 1:
            raise ValueError(f"{name} must be a scalar or a (B,) tensor, got shape {tuple(q.shape)}")
        if not (q.is_floating_point() or q.dtype in (torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise TypeError(f"{name} must be a real-valued tensor, got dtype {q.dtype}")
        def bad() -> Tensor:
            return ~torch.isfinite(q.double()) | (q < 1) | (q > 100)
        require(lambda: ~bad().any(), lambda: f"{name} must be finite and in [1, 100], got "
                f"{q.detach().flatten()[bad().flatten()][:4].tolist()}", q,
                f"{name} must be finite and in [1, 100] (diffjpeg input check)")
        if batch is not None and q.ndim == 1:
            check_batch(q.shape[0], batch, name)
        return q
    if not math.isfinite(q) or not 1 <= q <= 100:
        raise ValueError(f"{name} must be finite and in [1, 100], got {q}")
    return q


def check_qtables(qtables: object, name: str = "qtables", batch: int | None = None) -> Tensor:
    """``qtables`` must be ``(8, 8)``, ``(2|3, 8, 8)`` or ``(B, 2|3, 8, 8)``, finite, entries in [1, 255];
    per-image tables must have ``batch`` entries when ``batch`` is given.

    Returns a ``(2, 8, 8)`` or ``(B, 2, 8, 8)`` tensor (an ``(8, 8)`` table is used for luma and
    chroma; of three tables the third, Cr's, must equal the second, as in baseline libjpeg files).
    """
    if not isinstance(qtables, Tensor):
        try:
            qtables = torch.as_tensor(qtables)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a tensor or nested sequence of shape (2, 8, 8) or (B, 2, 8, 8), "
                            f"got {type(qtables).__name__}") from None
    shape = tuple(qtables.shape)
    ok = (shape == (8, 8) or (len(shape) == 3 and shape[0] in (2, 3) and shape[1:] == (8, 8))
          or (len(shape) == 4 and shape[1] in (2, 3) and shape[2:] == (8, 8)))
    if not ok:
        raise ValueError(f"{name} must have shape (8, 8), (2, 8, 8) or (B, 2, 8, 8) in natural row-major "
                         f"order, got shape {shape}")
    if qtables.dtype == torch.bool or qtables.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {qtables.dtype}")
    values = qtables.detach().double()
    require(lambda: torch.isfinite(values).all(), lambda: f"{name} must be finite, got NaN or Inf entries", values)
    require(lambda: ((values >= 1) & (values <= 255)).all(),
            lambda: f"{name} entries must be in [1, 255] (baseline JPEG stores 8-bit tables), "
                    f"got values in [{values.min().item():.6g}, {values.max().item():.6g}]", values,
            f"{name} entries must be in [1, 255] (diffjpeg input check)")
    if qtables.ndim == 2:
        qtables = torch.stack((qtables, qtables))
    if qtables.shape[-3] == 3:
        require(lambda: (values[..., 1, :, :] == values[..., 2, :, :]).all(),
                lambda: f"{name} with three tables must use the same table for Cb and Cr "
                        f"(index 1 and 2), as baseline JPEG from libjpeg does", values)
        qtables = qtables[..., :2, :, :]
    if batch is not None and qtables.ndim == 4:
        check_batch(qtables.shape[0], batch, name)
    return qtables




def check_estimator_options(temperature: object, terms: object) -> None:
    """``temperature`` > 0 (the "soft" estimator), ``terms`` a positive int (the "fourier" estimator)."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise TypeError(f"temperature must be a positive finite number, got {type(temperature).__name__} "
                        f"{temperature!r}")
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if isinstance(terms, bool) or not isinstance(terms, Integral):
        raise TypeError(f"terms must be a positive int, got {type(terms).__name__} {terms!r}")
    if terms < 1:
        raise ValueError(f"terms must be a positive int, got {terms!r}")
