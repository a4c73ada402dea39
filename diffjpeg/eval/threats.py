"""Threat models of the benchmark: how the attacker sees a defense, one class each, in one registry.

A threat model says which model the attack differentiates (:meth:`ThreatModel.graph`), for which
defenses it is a distinct attack (:meth:`ThreatModel.applies`), which masking checks its rows get
(``checks``, codes of :data:`diffjpeg.eval.checks.CHECKS`) and what it is in one line
(``definition``, printed in ``table.md``'s legend and in ``diffjpeg bench --help``). The adversarial
examples are always judged through the real defense; only the attacker's graph changes.

Adding a threat model is one class here under ``@register(name)``, its docstring the one-line
definition (plus its test and a line in ``docs/benchmark.md``)::

    @register("bpda_noisy")
    class NoisyBackward(ThreatModel):
        "BPDA: the defense forward, the identity plus Gaussian noise backward"

        def graph(self, defense, cfg):
            return BPDA(defense, backward=AddNoise(0.1))

``adaptive`` is a selector, not a threat model: :func:`adaptive` picks one threat model per defense.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from torch import nn

from ..jpeg.codec import DiffJPEG
from ..wrappers import BPDA, EOT
from .checks import CHECKS

if TYPE_CHECKING:
    from .config import BenchConfig

__all__ = [
    "ADAPTIVE",
    "THREAT_MODELS",
    "ThreatModel",
    "adaptive",
    "check_names",
    "get",
    "names",
    "register",
    "select",
    "smooth_surrogate",
]

#: the selector that picks one adaptive threat model per defense (see :func:`adaptive`)
ADAPTIVE = "adaptive"


class ThreatModel:
    """One way for the attacker to see a defense. Subclasses override :meth:`graph` (and
    :meth:`applies` where the threat model fits only some defenses) and :func:`register` them.

    Attributes:
        name: the registry name (the ``threat`` of records and table rows), set by :func:`register`.
        definition: one line saying what the attacker differentiates: the subclass's docstring.
        checks: codes of the masking checks this threat model's rows get (default: all of
            :data:`~diffjpeg.eval.checks.CHECKS`); the tasks run only the attacks these checks need.
        transfer: the attacked graph does not hold the defense, so one attack per batch serves every
            defense (and the rows are not attacked on the survivors of each eps).
        selectable: listed in configs' ``threat_models`` (``whitebox`` is the undefended model's own row).
    """

    name: str = ""
    checks: tuple[str, ...] = tuple(CHECKS)
    transfer: bool = False
    selectable: bool = True

    def applies(self, defense: nn.Module) -> bool:
        """Whether this is a distinct attack on ``defense`` (a duplicate of another row is skipped)."""
        return True

    def graph(self, defense: nn.Module | None, cfg: BenchConfig) -> nn.Module | None:
        """The module the attacker puts between the input and the classifier (``None``: nothing)."""
        raise NotImplementedError

    def fixed_graph(self, defense: nn.Module) -> nn.Module:
        """The randomized ``defense`` with one recorded draw replayed on every call (check R)."""
        return EOT(BPDA(defense), n=1, fixed=True)

    @property
    def definition(self) -> str:
        return " ".join((type(self).__doc__ or "").split())

    def __repr__(self) -> str:
        return f"<threat model {self.name}>"


#: name -> threat model, in registration order (the order of help texts and error messages)
THREAT_MODELS: dict[str, ThreatModel] = {}


def register(name: str) -> Callable[[type[ThreatModel]], type[ThreatModel]]:
    """Class decorator: register one instance of the class under ``name`` (its docstring: the definition)."""
    def add(cls: type[ThreatModel]) -> type[ThreatModel]:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"threat model name must be an identifier such as 'bpda', got {name!r}")
        if not cls.__doc__:
            raise ValueError(f"threat model {name!r} ({cls.__name__}) needs a docstring: its one-line definition")
        if name in THREAT_MODELS or name == ADAPTIVE:
            raise ValueError(f"threat model {name!r} is registered twice")
        cls.name = name
        THREAT_MODELS[name] = cls()
        return cls
    return add


def get(name: str) -> ThreatModel:
    """The threat model ``name`` (a ``ValueError`` listing the valid names if unknown)."""
    if name not in THREAT_MODELS:
        raise ValueError(f"unknown threat model {name!r}; available: {', '.join(THREAT_MODELS)}")
    return THREAT_MODELS[name]


def names() -> tuple[str, ...]:
    """What a config's ``threat_models`` may list: the selectable threat models, then ``adaptive``."""
    return tuple(n for n, t in THREAT_MODELS.items() if t.selectable) + (ADAPTIVE,)


def check_names(chosen: list[str]) -> None:
    """Raise a one-line ``ValueError`` unless ``chosen`` is a non-empty sequence of :func:`names`."""
    valid = names()
    if not chosen or any(t not in valid for t in chosen):
        bad = [t for t in chosen if t not in valid] or "an empty list"
        raise ValueError(f"unknown threat model(s) {bad}; valid: {', '.join(valid)}")


def adaptive(defense: nn.Module) -> ThreatModel:
    """The one threat model ``adaptive`` selects: EOT for randomness, the gradient if there is one."""
    if defense.randomized:
        return THREAT_MODELS["bpda_eot"]
    return THREAT_MODELS["surrogate" if defense.differentiable else "bpda"]


def select(chosen: Iterable[str], defense: nn.Module) -> list[ThreatModel]:
    """The threat models of ``chosen`` (``adaptive`` resolved) that apply to ``defense``, without repeats."""
    picked = [adaptive(defense) if name == ADAPTIVE else THREAT_MODELS[name] for name in chosen]
    return [t for t in dict.fromkeys(picked) if t.applies(defense)]


def _identity_surrogate(defense: nn.Module) -> bool:
    return isinstance(defense.surrogate(), nn.Identity)


def smooth_surrogate(defense: nn.Module) -> nn.Module | None:
    """A smooth stand-in for ``defense``'s gradient, ``None`` where the project has none.

    The JPEG family (a deterministic defense whose surrogate is a :class:`~diffjpeg.DiffJPEG`:
    ``JPEG``, ``DiffJPEG``): the same codec with Shin & Song's (2017) cubic rounding estimator.
    """
    if defense.randomized:
        return None
    twin = defense.surrogate()
    if not isinstance(twin, DiffJPEG):
        return None
    tables = None if twin.qtables is None else twin.qtables.detach()
    return DiffJPEG(q=twin.q, subsampling=twin.subsampling, rounding="cubic", qtables=tables)


# ------------------------------------------------------------------------------------------ registry


@register("whitebox")
class WhiteBox(ThreatModel):
    """the undefended model attacked directly (the row of defense none)"""

    selectable = False

    def applies(self, defense):
        return defense is None

    def graph(self, defense, cfg):
        return None


@register("graybox")
class GrayBox(ThreatModel):
    """transfer: the attack on the undefended model, judged through the defense (the defense is not in the
    attacker's graph)"""

    checks = ()  # FGSM often transfers better than an iterative attack, which is no sign of masking
    transfer = True

    def graph(self, defense, cfg):
        return None


@register("bpda")
class StraightThrough(ThreatModel):
    """BPDA: the defense forward, the identity backward (straight-through; Athalye et al. 2018)"""

    def graph(self, defense, cfg):
        return BPDA(defense, backward=nn.Identity())


@register("bpda_surrogate")
class SurrogateBackward(ThreatModel):
    """BPDA: the defense forward, its differentiable surrogate's gradient backward"""

    def applies(self, defense):  # for differentiable defenses this is the surrogate row
        return not _identity_surrogate(defense) and not defense.differentiable

    def graph(self, defense, cfg):
        return BPDA(defense)


@register("surrogate")
class Surrogate(ThreatModel):
    """the defense's surrogate forward and backward (a differentiable defense is its own surrogate: plain
    white-box)"""

    def applies(self, defense):  # an identity surrogate in the graph is the gray-box attack
        return not _identity_surrogate(defense)

    def graph(self, defense, cfg):
        return defense.surrogate()


@register("bpda_eot")
class ExpectationOverTransformation(ThreatModel):
    """EOT: the gradient averaged over eot_samples draws of a randomized defense (through BPDA when it is not
    differentiable; Athalye et al. 2018)"""

    def applies(self, defense):
        return defense.randomized

    def graph(self, defense, cfg):
        return EOT(defense if defense.differentiable else BPDA(defense), n=cfg.eot_samples)


@register("bpda_smooth")
class SmoothBackward(ThreatModel):
    """BPDA: the defense forward, a smooth estimator's gradient backward (JPEG family: DiffJPEG with cubic
    rounding, Shin & Song 2017)"""

    def applies(self, defense):
        return smooth_surrogate(defense) is not None

    def graph(self, defense, cfg):
        return BPDA(defense, backward=smooth_surrogate(defense))
