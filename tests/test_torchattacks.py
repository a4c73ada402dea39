"""torchattacks 3.5.1, called as users call it, on defended models built with diffjpeg.wrappers.

Three defended models around the session's small classifier (see conftest.py):
``DiffJPEG`` (differentiable layer), ``BPDA(JPEG)`` (real Pillow codec forward, DiffJPEG backward)
and ``EOT(RandomJPEG)`` (four draws per image, seeded; on the CPU EOT groups them into passes of
128 images, see ``EOT.max_batch``). Every attack must run
and return valid adversarial images; PGD's robust accuracy must fall as eps grows.
"""
from __future__ import annotations

import pytest
import torch

torchattacks = pytest.importorskip("torchattacks")

from conftest import MEAN, NUM_CLASSES, STD  # noqa: E402
from diffjpeg.defenses import RandomJPEG  # noqa: E402
from diffjpeg.jpeg.codec import DiffJPEG  # noqa: E402
from diffjpeg.wrappers import BPDA, EOT, DefendedModel  # noqa: E402

try:
    from diffjpeg.jpeg.real import JPEG
except ImportError as exc:  # pragma: no cover
    JPEG, JPEG_MISSING = None, f"diffjpeg.jpeg.real.JPEG unavailable: {exc}"

EPS = 16 / 255
#: name -> (factory, norm, number of images); small budgets keep the file around a minute on CPU
ATTACKS = {
    "FGSM": (lambda m: torchattacks.FGSM(m, eps=EPS), "Linf", 32),
    "BIM": (lambda m: torchattacks.BIM(m, eps=EPS, alpha=EPS / 4, steps=5), "Linf", 32),
    "PGD": (lambda m: torchattacks.PGD(m, eps=EPS, alpha=EPS / 4, steps=5), "Linf", 32),
    "PGDL2": (lambda m: torchattacks.PGDL2(m, eps=1.0, alpha=0.25, steps=5), "L2", 32),
    "CW": (lambda m: torchattacks.CW(m, c=1, kappa=0, steps=10, lr=0.05), None, 16),
    "DeepFool": (lambda m: torchattacks.DeepFool(m, steps=5, overshoot=0.02), None, 8),
    "APGD": (lambda m: torchattacks.APGD(m, eps=EPS, steps=5), "Linf", 32),
    "APGDT": (lambda m: torchattacks.APGDT(m, eps=EPS, steps=5, n_classes=NUM_CLASSES), "Linf", 16),
    "Square": (lambda m: torchattacks.Square(m, eps=EPS, n_queries=20), "Linf", 16),
    "EOTPGD": (lambda m: torchattacks.EOTPGD(m, eps=EPS, alpha=EPS / 4, steps=3, eot_iter=2), "Linf", 32),
    "OnePixel": (lambda m: torchattacks.OnePixel(m, pixels=1, steps=2, popsize=4), None, 8),
    "FAB": (lambda m: torchattacks.FAB(m, eps=EPS, steps=5, n_classes=NUM_CLASSES), "Linf", 8),
    "MIFGSM": (lambda m: torchattacks.MIFGSM(m, eps=EPS, alpha=EPS / 4, steps=5), "Linf", 32),
}
DEFENSES = ("DiffJPEG", "BPDA(JPEG)", "EOT(RandomJPEG)")


def build(classifier, name: str) -> DefendedModel:
    if name == "DiffJPEG":
        defense = DiffJPEG(q=60)
    elif name == "BPDA(JPEG)":
        if JPEG is None:
            pytest.skip(JPEG_MISSING)
        defense = BPDA(JPEG(q=60))
    elif name == "EOT(RandomJPEG)":
        defense = EOT(RandomJPEG((50, 90), generator=torch.Generator().manual_seed(0)), n=4)
    else:
        defense = None
    return DefendedModel(classifier, defense, MEAN, STD)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("defense", DEFENSES)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_runs_on_defended_model(classifier, grating_data, attack, defense):
    factory, norm, k = ATTACKS[attack]
    x, y = grating_data[0][:k], grating_data[1][:k]
    model = build(classifier, defense)
    adv = factory(model)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and torch.isfinite(adv).all()
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    if norm == "Linf":
        assert delta.abs().max() <= EPS + 1e-5
    elif norm == "L2":
        assert delta.norm(dim=1).max() <= 1.0 + 1e-4
    assert not model.training  # torchattacks restores the mode it found (eval)
    if defense != "EOT(RandomJPEG)" and attack in ("PGD", "APGD", "MIFGSM", "BIM", "CW", "DeepFool", "FAB"):
        assert accuracy(model, adv, y) <= accuracy(model, x, y)


@pytest.mark.parametrize("defense", DEFENSES)
def test_pgd_robust_accuracy_falls_with_eps(classifier, grating_data, defense):
    x, y = grating_data
    model = build(classifier, defense)
    clean = accuracy(model, x, y)
    assert clean >= 0.9
    robust = []
    for eps in (4 / 255, 16 / 255, 32 / 255):
        torch.manual_seed(0)
        adv = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10)(x, y)
        robust.append(accuracy(model, adv, y))
    slack = 3 / 64 if defense.startswith("EOT") else 0.0  # randomised predictions
    assert robust[0] <= clean + slack and robust[1] <= robust[0] + slack and robust[2] <= robust[1] + slack, robust
    assert robust[2] < clean - 0.5 and robust[1] < clean, (clean, robust)


@pytest.mark.parametrize("attack, eps, bound", [("FGSM", 0.15, 0.10), ("PGD", 0.3, 0.0)])
def test_undefended_large_eps_reaches_zero(classifier, grating_data, attack, eps, bound):
    """Sanity of the task: without a defense, a large eps breaks the classifier.

    One FGSM step overshoots on this smooth task (accuracy rises again past eps ~ 0.15), so its
    bound is ~0 rather than 0; PGD reaches 0 exactly.
    """
    x, y = grating_data
    model = build(classifier, "none")
    assert accuracy(model, x, y) >= 0.95
    if attack == "FGSM":
        atk = torchattacks.FGSM(model, eps=eps)
    else:
        atk = torchattacks.PGD(model, eps=eps, alpha=eps / 6, steps=10)
    assert accuracy(model, atk(x, y), y) <= bound
