"""Rounding and its gradient estimators.

JPEG rounds in two places: quantised DCT coefficients (the lossy step) and 8-bit pixel storage
between stages. This module holds the exact roundings libjpeg uses (half away from zero for
coefficients, ``floor(x + 0.5)`` for pixels) and the estimators users choose for the coefficient
rounding:

=========  ===========================================  =====================================
name       forward value                                gradient
=========  ===========================================  =====================================
ste        exact rounding                               1 (straight-through)
cubic      ``round(x) + (x - round(x))**3``             ``3 (x - round(x))**2`` (Shin & Song 2017)
soft       soft-round with ``temperature`` T            smooth; -> exact rounding as T -> 0
fourier    ``x - sum_k (-1)^(k+1) sin(2 pi k x)/(pi k)``  derivative of the truncated series
noise      ``x + U(-1/2, 1/2)`` in training mode,        1
           exact rounding in eval mode
=========  ===========================================  =====================================
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

ROUNDINGS = ("ste", "cubic", "soft", "fourier", "noise")
#: defaults of the "soft" estimator's temperature and the "fourier" estimator's number of terms
TEMPERATURE = 0.2
TERMS = 10


def round_half_away(x: Tensor) -> Tensor:
    """Round to nearest, ties away from zero (libjpeg's quantiser; ``torch.round`` ties to even).

    ``floor(|x| + 1/2)`` with ``x``'s sign: the same values, signed zeros included, as
    ``trunc(x + copysign(1/2, x))``, without ``trunc`` (several times slower than ``floor`` on the CPU).
    """
    return torch.abs(x).add_(0.5).floor_().copysign_(x)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(x: Tensor, value: Tensor) -> Tensor:
    """Exactly ``value`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return _StraightThrough.apply(x, value.detach())


def _with_identity_gradient(op: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``op`` in the forward pass, identity in the backward pass, as one autograd node (cheaper than
    ``x + (op(x) - x).detach()``, which costs two extra full-size operations)."""

    class _Op(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return op(x)

        @staticmethod
        def backward(ctx, grad):
            return grad

    return _Op.apply


_round_ste = _with_identity_gradient(round_half_away)
_floor_ste = _with_identity_gradient(torch.floor)
_sample_ste = _with_identity_gradient(lambda x: torch.floor(x).clamp_(0.0, 255.0))


def round_ste(x: Tensor) -> Tensor:
    """Exact rounding (ties away from zero) with an identity gradient."""
    return _round_ste(x)


def floor_ste(x: Tensor) -> Tensor:
    """``floor`` with an identity gradient (libjpeg's integer divisions and right shifts)."""
    return _floor_ste(x)


def sample_ste(x: Tensor) -> Tensor:
    """An 8-bit sample: ``clamp(floor(x), 0, 255)``, with an identity gradient.

    Treating libjpeg's range limit like its roundings (straight through) keeps gradients for
    saturated pixels, e.g. black or white areas, whose decoded value sits at a bound.
    """
    return _sample_ste(x)


def store_ste(x: Tensor) -> Tensor:
    """libjpeg's 8-bit sample storage ``clamp(floor(x + 1/2), 0, 255)``, with an identity gradient."""
    return sample_ste(x + 0.5)


def _in_place_unless_recorded(ste: Callable[[Tensor], Tensor],
                              in_place: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``ste`` for a temporary its caller drops: computed in the temporary's own storage (no new
    buffer) when autograd does not record it, i.e. in a no-grad forward pass."""

    def apply(x: Tensor) -> Tensor:
        return ste(x) if torch.is_grad_enabled() and x.requires_grad else in_place(x)

    return apply


#: in-place forms of the straight-through roundings, for temporaries (the trailing ``_`` as in torch)
floor_ste_ = _in_place_unless_recorded(floor_ste, torch.Tensor.floor_)
sample_ste_ = _in_place_unless_recorded(sample_ste, lambda x: x.floor_().clamp_(0.0, 255.0))
store_ste_ = _in_place_unless_recorded(store_ste, lambda x: x.add_(0.5).floor_().clamp_(0.0, 255.0))


def round_cubic(x: Tensor) -> Tensor:
    """Shin & Song (2017): ``round(x) + (x - round(x))**3``."""
    r = round_half_away(x).detach()
    return r + (x - r) ** 3


def round_soft(x: Tensor, temperature: float) -> Tensor:
    """Soft-round (Agustsson & Theis 2020) with sharpness ``1 / temperature``.

    ``m + tanh(r / T) / (2 tanh(1 / (2 T)))`` with ``m = floor(x) + 1/2``, ``r = x - m``: continuous,
    equal to ``x`` as ``T -> inf`` and to exact rounding as ``T -> 0``.
    """
    alpha = 1.0 / temperature
    m = torch.floor(x).detach() + 0.5
    return m + 0.5 * torch.tanh(alpha * (x - m)) / math.tanh(alpha / 2)


def round_fourier(x: Tensor, terms: int) -> Tensor:
    """``x`` minus the first ``terms`` terms of the Fourier series of the sawtooth ``x - round(x)``."""
    k = torch.arange(1, terms + 1, device=x.device, dtype=x.dtype)
    signs = torch.where(k % 2 == 1, 1.0, -1.0).to(x.dtype)
    series = (signs * torch.sin(2 * math.pi * k * x.unsqueeze(-1)) / (math.pi * k)).sum(-1)
    return x - series


def round_noise(x: Tensor, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Additive ``U(-1/2, 1/2)`` noise in training mode (identity gradient), exact rounding otherwise."""
    if not training:
        return round_ste(x)
    # draw where the generator lives (a CPU generator may serve a CUDA input), then move
    device = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device) - 0.5
    return x + noise


def rounding_function(name: str, *, temperature: float = TEMPERATURE, terms: int = TERMS, training: bool = False,
                      generator: torch.Generator | None = None) -> Callable[[Tensor], Tensor]:
    """The coefficient rounding for estimator ``name`` (one of :data:`ROUNDINGS`) as a one-argument function."""
    return {
        "ste": round_ste,
        "cubic": round_cubic,
        "soft": lambda x: round_soft(x, temperature),
        "fourier": lambda x: round_fourier(x, terms),
        "noise": lambda x: round_noise(x, training, generator),
    }[name]
