"""Attacks beyond torchattacks, the attack core, and one registry that builds any attack by name.

``build("pgd:eps=8/255,steps=50", model)`` builds torchattacks' PGD; ``build("onepixel:pixels=1,
targeted=true", model)`` diffjpeg's batched one-pixel attack; ``available()`` lists every name with
its parameters. The attack classes here share a small base class (:mod:`.base`) called and switched
to targeted modes as torchattacks' attacks are; :mod:`.core` holds functional PGD (L-inf, L2) and
FGSM that use the model's own ``loss`` when it has one. Importing this package does not import
torchattacks (the registry imports it when one of its attacks is built).
"""
from .base import Attack
from .core import FGSM, PGD, attack_loss, fgsm, pgd
from .dct import DCTAttack, DCTAttackResult
from .gradient import GA, LBFGS
from .onepixel import OnePixel
from .registry import ATTACKS, available, build, register
from .topa import TopaResult, topa

__all__ = ["Attack", "OnePixel", "GA", "LBFGS", "DCTAttack", "DCTAttackResult", "topa", "TopaResult", "build",
           "available", "register", "ATTACKS", "FGSM", "PGD", "attack_loss", "fgsm", "pgd"]
from .ensemble import Ensemble, EnsembleResult  # noqa: E402

__all__ += ["Ensemble", "EnsembleResult"]
