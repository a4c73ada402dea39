"""Build any attack by name: ``build("pgd:eps=8/255,steps=50", model)``; ``available()`` lists them.

One registry holds diffjpeg's own attacks and torchattacks' attacks side by side:

* diffjpeg: ``onepixel`` (batched DE, :class:`~.onepixel.OnePixel`), ``ga``, ``lbfgs``
  (:mod:`.gradient`), ``dct_pgd`` (:class:`~.dct.DCTAttack`), ``diffjpeg.pgd`` and ``diffjpeg.fgsm``
  (the attack core, :mod:`.core`, on the model's own ``loss``);
* torchattacks 3.5.1, through an adapter: every attack class that takes a model, under its
  lower-case class name (``fgsm``, ``bim``, ``pgd``, ``pgdl2``, ``cw``, ``deepfool``, ``apgd``,
  ``apgdt``, ``square``, ``eotpgd``, ``fab``, ``mifgsm``, ...) with its own parameters;
  torchattacks' ``OnePixel``, whose name ours takes, is ``torchattacks.onepixel``. (``multiattack``
  and ``lgv``, which need other attacks or a data loader, are not registered.)

torchattacks is imported only when one of its entries is built or its parameters are asked for
(``available()``, ``ATTACKS.parameters(name)``): ``import diffjpeg.attacks`` does not import it.

Every entry takes the model first (``build(spec, model)`` or ``build(spec, model=model)``) and a
``targeted`` flag: ``targeted=true`` switches the attack to its "targeted by label" mode, so
``attack(images, target_labels)`` attacks towards ``target_labels``. Values in specs are parsed by
:func:`diffjpeg.spec.parse_value` (``8/255`` is a float). For torchattacks' attacks the usual budget
parameters are checked before construction (``eps``, ``alpha``, ``c``, ... >= 0; ``steps``, ... >= 1),
since torchattacks itself does not check them.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..spec import Registry
from ..arguments import check_int, check_real
from .core import FGSM, PGD
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
#: torchattacks 3.5.1's attack classes that take a model (``MultiAttack``, ``LGV`` and ``OnePixel`` are
#: handled apart); a test checks this list against the installed torchattacks
TORCHATTACKS_CLASSES = (
    "VANILA", "GN", "FGSM", "BIM", "RFGSM", "PGD", "EOTPGD", "FFGSM", "TPGD", "MIFGSM", "UPGD", "APGD", "APGDT",
    "DIFGSM", "TIFGSM", "Jitter", "NIFGSM", "PGDRS", "SINIFGSM", "VMIFGSM", "VNIFGSM", "SPSA", "JSMA", "EADL1",
    "EADEN", "PIFGSM", "PIFGSMPP", "CW", "PGDL2", "DeepFool", "PGDRSL2", "SparseFool", "Pixle", "FAB",
    "AutoAttack", "Square")


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


class TorchattacksEntry:
    """Registry adapter for torchattacks' class ``name``: its signature plus ``targeted``, checked values.

    torchattacks is imported on first use (building the attack or reading its signature).
    """

    def __init__(self, name: str):
        self.name = self.__name__ = self.__qualname__ = name

    def _class(self):
        return getattr(importlib.import_module("torchattacks"), self.name)

    @property
    def __signature__(self) -> inspect.Signature:
        sig = inspect.signature(self._class())
        params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        rest = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
        targeted = inspect.Parameter("targeted", inspect.Parameter.KEYWORD_ONLY, default=False)
        return sig.replace(parameters=params + [targeted] + rest)

    def __call__(self, model, targeted: bool = False, **kwargs):
        for key, value in kwargs.items():
            if key in _NONNEGATIVE and value is not None and not isinstance(value, (tuple, list)):
                check_real(value, key, 0.0)
            if key in _POSITIVE_INT and value is not None:
                check_int(value, key, 1)
        if not isinstance(targeted, bool):
            raise TypeError(f"targeted must be True or False, got {targeted!r}")
        cls = self._class()
        attack = cls(model, **kwargs)
        if targeted:
            if "targeted" not in attack.supported_mode:
                raise ValueError(f"torchattacks' {cls.__name__} has no targeted mode; use targeted=false")
            attack.set_mode_targeted_by_label(quiet=True)
        return attack


register("onepixel", OnePixel)
register("ga", GA)
register("lbfgs", LBFGS)
register("dct_pgd", DCTAttack)
register("diffjpeg.pgd", PGD)
register("diffjpeg.fgsm", FGSM)
for _name in TORCHATTACKS_CLASSES:  # torchattacks' re-implementation of AutoAttack keeps its long name
    register("torchattacks.autoattack" if _name == "AutoAttack" else _name.lower(), TorchattacksEntry(_name))
register("torchattacks.onepixel", TorchattacksEntry("OnePixel"))

# attack ensembles (diffjpeg.attacks.ensemble): torchattacks / pyautoattack are imported when one is built
from .ensemble import autoattack as _autoattack, standard as _standard  # noqa: E402

register("standard", _standard)
register("autoattack", _autoattack)  # pyautoattack's AutoAttack itself
