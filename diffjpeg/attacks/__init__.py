"""Attacks beyond torchattacks, and one registry that builds any attack by name.

``build("pgd:eps=8/255,steps=50", model)`` builds torchattacks' PGD; ``build("onepixel:pixels=1,
targeted=true", model)`` diffjpeg's batched one-pixel attack; ``available()`` lists every name with
its parameters. Attacks here subclass torchattacks' ``Attack`` (see :mod:`.base`), so they are
called and switched to targeted modes exactly as torchattacks' attacks are.
"""
from .base import Attack
from .dct import DCTAttack, DCTAttackResult
from .gradient import GA, LBFGS
from .onepixel import OnePixel
from .registry import ATTACKS, available, build, register
from .topa import TopaResult, topa

__all__ = ["Attack", "OnePixel", "GA", "LBFGS", "DCTAttack", "DCTAttackResult", "topa", "TopaResult", "build",
           "available", "register", "ATTACKS"]
from .ensemble import Ensemble, EnsembleResult  # noqa: E402

__all__ += ["Ensemble", "EnsembleResult"]
