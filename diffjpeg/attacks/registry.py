"""Build any attack by name: ``build("pgd:eps=8/255,steps=50", model)``; ``available()`` lists them.

One registry holds diffjpeg's own attacks and torchattacks' attacks side by side:

* diffjpeg: ``onepixel`` (batched DE, :class:`~.onepixel.OnePixel`), ``ga``, ``lbfgs``
  (:mod:`.gradient`), ``dct_pgd`` (:class:`~.dct.DCTAttack`);
* torchattacks 3.5.1: every attack class that takes a model, under its lower-case class name
  (``fgsm``, ``bim``, ``pgd``, ``pgdl2``, ``cw``, ``deepfool``, ``apgd``, ``apgdt``, ``square``,
  ``eotpgd``, ``fab``, ``mifgsm``, ...) with its own parameters; torchattacks' ``OnePixel``, whose
  name ours takes, is ``torchattacks.onepixel``. (``multiattack`` and ``lgv``, which need other
  attacks or a data loader, are not registered.)

Every entry takes the model first (``build(spec, model)`` or ``build(spec, model=model)``) and a
``targeted`` flag: ``targeted=true`` switches the attack to torchattacks' "targeted by label" mode,
so ``attack(images, target_labels)`` attacks towards ``target_labels``. Values in specs are
parsed by :func:`diffjpeg.spec.parse_value` (``8/255`` is a float). For torchattacks' attacks the
usual budget parameters are checked before construction (``eps``, ``alpha``, ``c``, ... >= 0;
``steps``, ... >= 1), since torchattacks itself does not check them.
"""
from __future__ import annotations

import inspect
from typing import Any

import torchattacks
from torchattacks.attack import Attack as _TorchattacksAttack

from ..spec import Registry
from ..arguments import check_int, check_real
from .dct import DCTAttack
from .gradient import GA, LBFGS
from .onepixel import OnePixel

ATTACKS = Registry("attack")
register = ATTACKS.register
available = ATTACKS.available

#: torchattacks parameters checked before construction: name -> smallest allowed value
_NONNEGATIVE = ("eps", "alpha", "c", "kappa", "lr", "overshoot", "decay", "gamma", "eta", "beta", "delta",
                "theta", "noise_std", "sigma", "std")
_POSITIVE_INT = ("steps", "n_restarts", "n_queries", "eot_iter", "n_classes", "n_iter", "pixels", "popsize",
                 "max_iter", "restarts")
_SKIPPED = {"MultiAttack", "LGV", "OnePixel", "AutoAttack"}


def build(spec: str, model=None, **overrides: Any):
    """Construct the attack named by ``spec`` on ``model``.

    Args:
        spec: ``"name"`` or ``"name:key=value,..."`` (see :mod:`diffjpeg.spec`), e.g.
            ``"pgd:eps=8/255,alpha=2/255,steps=50"`` or ``"onepixel:pixels=1,targeted=true"``.
        model: the classifier to attack (logits out, images in [0, 1] in).
        overrides: keyword arguments that win over the spec's values.

    Raises:
        ValueError: unknown name (the message lists the available ones), unknown parameter, or a
            value out of range (naming the parameter).
        TypeError: no model given.
    """
    if model is None and "model" not in overrides:
        raise TypeError(f"build({spec!r}) needs the model to attack: build(spec, model) or build(spec, model=model)")
    if model is not None:
        overrides["model"] = model
    return ATTACKS.build(spec, **overrides)


def _torchattacks_factory(cls):
    """A factory for torchattacks' ``cls`` with its signature plus ``targeted``, checking values."""
    sig = inspect.signature(cls)

    def factory(model, targeted: bool = False, **kwargs):
        for key, value in kwargs.items():
            if key in _NONNEGATIVE and value is not None and not isinstance(value, (tuple, list)):
                check_real(value, key, 0.0)
            if key in _POSITIVE_INT and value is not None:
                check_int(value, key, 1)
        if not isinstance(targeted, bool):
            raise TypeError(f"targeted must be True or False, got {targeted!r}")
        attack = cls(model, **kwargs)
        if targeted:
            if "targeted" not in attack.supported_mode:
                raise ValueError(f"torchattacks' {cls.__name__} has no targeted mode; use targeted=false")
            attack.set_mode_targeted_by_label(quiet=True)
        return attack

    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    targeted = inspect.Parameter("targeted", inspect.Parameter.KEYWORD_ONLY, default=False)
    factory.__signature__ = sig.replace(parameters=params + [targeted] + rest)
    factory.__name__ = factory.__qualname__ = cls.__name__
    factory.__doc__ = cls.__doc__
    return factory


register("onepixel", OnePixel)
register("ga", GA)
register("lbfgs", LBFGS)
register("dct_pgd", DCTAttack)
for _name in torchattacks.__all__:
    _cls = getattr(torchattacks, _name)
    if not (isinstance(_cls, type) and issubclass(_cls, _TorchattacksAttack)) or _name in _SKIPPED:
        continue
    register(_name.lower(), _torchattacks_factory(_cls))
register("torchattacks.onepixel", _torchattacks_factory(torchattacks.OnePixel))

# attack ensembles (diffjpeg.attacks.ensemble): torchattacks / pyautoattack are imported when one is built
from .ensemble import autoattack as _autoattack, standard as _standard  # noqa: E402

register("standard", _standard)
register("autoattack", _autoattack)  # pyautoattack's AutoAttack; torchattacks' re-implementation keeps its long name
register("torchattacks.autoattack", _torchattacks_factory(torchattacks.AutoAttack))
