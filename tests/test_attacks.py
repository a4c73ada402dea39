"""The attack registry and diffjpeg's gradient and DCT-domain attacks (GA, L-BFGS, DCTAttack).

Uses the session's grating classifier (conftest.py) behind ``DefendedModel(clf, None, mean, std)``
(normalisation only), 100 % accurate on the clean test gratings.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

torchattacks = pytest.importorskip("torchattacks")

from conftest import MEAN, NUM_CLASSES, STD  # noqa: E402
from diffjpeg.attacks import GA, LBFGS, DCTAttack, OnePixel, available, build  # noqa: E402
from diffjpeg.jpeg.io import read_coefficients  # noqa: E402
from diffjpeg.jpeg.real import JPEG  # noqa: E402
from diffjpeg.wrappers import BPDA, DefendedModel  # noqa: E402

TORCHATTACKS_NAMES = ("fgsm", "bim", "pgd", "pgdl2", "cw", "deepfool", "apgd", "apgdt", "square", "eotpgd",
                      "fab", "mifgsm")


@pytest.fixture(scope="module")
def model(classifier):
    return DefendedModel(classifier, None, MEAN, STD).eval()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ----------------------------------------------------------------------------------------------
# registry


def test_registry_round_trip(model):
    names = set(available())
    assert set(TORCHATTACKS_NAMES) | {"onepixel", "torchattacks.onepixel", "ga", "lbfgs", "dct_pgd"} <= names
    pgd = build("pgd:eps=8/255,alpha=2/255,steps=5", model)
    assert isinstance(pgd, torchattacks.PGD) and pgd.eps == 8 / 255 and pgd.alpha == 2 / 255 and pgd.steps == 5
    assert not pgd.targeted
    same = build("PGD:eps=8/255,steps=5", model=model, alpha=1 / 255)  # keyword model; overrides win
    assert same.alpha == 1 / 255 and same.model is model
    op = build("onepixel:pixels=2,targeted=true", model)
    assert isinstance(op, OnePixel) and op.pixels == 2 and op.targeted and op.attack_mode == "targeted(label)"
    ta = build("torchattacks.onepixel:pixels=1,steps=3", model)
    assert isinstance(ta, torchattacks.OnePixel) and ta.steps == 3
    tpgd = build("pgd:eps=8/255,targeted=true", model)
    assert tpgd.targeted and tpgd.attack_mode == "targeted(label)"
    assert isinstance(build("ga:eps=2.0", model), GA) and isinstance(build("lbfgs:c=0.5", model), LBFGS)
    assert isinstance(build("dct_pgd:q=50,eps=1", model), DCTAttack)
    assert "eps" in available()["pgd"] and "targeted" in available()["pgd"] and "pixels" in available()["onepixel"]
    for name in TORCHATTACKS_NAMES:
        kwargs = {"n_classes": NUM_CLASSES} if name in ("apgdt", "fab") else {}
        assert isinstance(build(name, model, **kwargs), torchattacks.attack.Attack)


def test_registry_built_attacks_run(model, grating_data):
    x, y = grating_data[0][:16], grating_data[1][:16]
    torch.manual_seed(0)  # PGD's random start
    for spec in ("fgsm:eps=64/255", "pgd:eps=32/255,alpha=8/255,steps=10", "ga:eps=4.0"):
        adv = build(spec, model)(x, y)
        assert adv.shape == x.shape and accuracy(model, adv, y) < accuracy(model, x, y)


@pytest.mark.parametrize("spec, kwargs, error, message", [
    ("nosuch", {}, ValueError, r"unknown attack 'nosuch'; available: .*pgd"),
    ("pgd:eps=-1", {}, ValueError, r"eps must be a finite number in \[0, inf\), got -1"),
    ("pgd:steps=0", {}, ValueError, r"steps must be an integer >= 1, got 0"),
    ("pgd:epsilon=1", {}, ValueError, r"attack 'pgd' has no parameter\(s\) \['epsilon'\]"),
    ("onepixel:pixels=0", {}, ValueError, r"pixels must be an integer >= 1, got 0"),
    ("ga:eps=-0.5", {}, ValueError, r"eps must be a finite number in \[0, inf\), got -0.5"),
    ("lbfgs:c=0", {}, ValueError, r"c must be a finite number in \(0, inf\), got 0"),
    ("dct_pgd:q=0", {}, ValueError, r"q must be"),
    ("dct_pgd:eps=-1", {}, ValueError, r"eps must be a finite number in \[0, inf\)"),
    ("deepfool:targeted=true", {}, ValueError, r"DeepFool has no targeted mode"),
    ("pgd:targeted=1", {}, TypeError, r"targeted must be True or False"),
])
def test_bad_specs(model, spec, kwargs, error, message):
    with pytest.raises(error, match=message):
        build(spec, model, **kwargs)


def test_build_needs_a_model():
    with pytest.raises(TypeError, match=r"needs the model to attack"):
        build("pgd:eps=8/255")


# ----------------------------------------------------------------------------------------------
# GA and L-BFGS


def test_ga_is_one_l2_step(model, grating_data):
    x, y = grating_data
    adv = GA(model, eps=2.0)(x, y)
    step = (adv - x).flatten(1).norm(dim=1)
    assert step.max() <= 2.0 + 1e-4 and step.min() > 1.0  # the box clip only shortens the step a little
    assert accuracy(model, adv, y) < 0.7
    assert torch.equal(GA(model, eps=0.0)(x, y), x)
    target = (y + 1) % NUM_CLASSES
    hit = accuracy(model, GA(model, eps=2.0, targeted=True)(x, target), target)
    assert hit > 1 / NUM_CLASSES  # clean images never hit the target


def test_lbfgs_untargeted_and_targeted(model, grating_data):
    x, y = grating_data[0][:24], grating_data[1][:24]
    attack = LBFGS(model, c=0.1, search_steps=3, steps=8)
    adv = attack(x, y)
    fooled = torch.no_grad()(model)(adv).argmax(1) != y
    assert fooled.float().mean() >= 0.6
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv[~fooled], x[~fooled])  # failures come back unchanged
    assert ((attack.last_c > 0) == fooled).all()
    # the search over c trades success for size: its perturbations are smaller than GA's eps=2 step
    assert (adv - x)[fooled].flatten(1).norm(dim=1).median() < 2.0
    target = (y + 2) % NUM_CLASSES
    tadv = LBFGS(model, c=0.1, search_steps=2, steps=8, targeted=True)(x, target)
    assert accuracy(model, tadv, target) > 0.5


# ----------------------------------------------------------------------------------------------
# DCT-domain attack


def test_dct_attack_file_is_as_adversarial_as_the_tensor(model, classifier, grating_data, tmp_path):
    from PIL import Image

    x, y = grating_data[0][:12], grating_data[1][:12]
    attack = DCTAttack(model, q=75, eps=1, alpha=0.5, steps=6)
    result = attack.attack_coefficients(x, y)
    assert accuracy(model, result.pixels, y) <= 0.25
    preds = torch.no_grad()(model)(result.pixels).argmax(1)
    assert torch.equal(preds != y, result.success)
    paths = [tmp_path / f"{i}.jpg" for i in range(len(x))]
    result.save(paths)
    decoded = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB")))
                           for p in paths]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(decoded, result.pixels)  # Pillow decodes exactly the pixels the attack scored
    assert torch.equal(torch.no_grad()(model)(decoded).argmax(1), preds)
    coefs = read_coefficients(paths[0])
    assert all(torch.equal(c, r[0]) for c, r in zip(coefs.coefficients, result.coefficients))  # not re-encoded
    assert torch.equal(coefs.qtables[:2], result.qtables[0])
    # integer coefficients within the budget of the clean file's
    clean = DCTAttack(model, q=75, eps=0.0, alpha=0.5, steps=1).attack_coefficients(x, y)
    diff = max((a - b).abs().max().item() for a, b in zip(result.coefficients, clean.coefficients))
    assert diff <= 1 and result.changed.min() > 0
    # the file survives the defense that re-compresses at the same quality
    defended = DefendedModel(classifier, BPDA(JPEG(q=75)), MEAN, STD)
    assert accuracy(defended, result.pixels, y) <= 0.5
    assert attack(x, y).shape == x.shape


def test_dct_attack_targeted_and_grayscale(classifier, grating_data):
    x, y = grating_data[0][:8], grating_data[1][:8]
    # gray -> three equal channels -> the colour model's normalisation and classifier
    gray_model = DefendedModel(torch.nn.Sequential(Repeat3(), DefendedModel(classifier, None, MEAN, STD)).eval())
    target = (y + 1) % NUM_CLASSES
    gray = x.mean(1, keepdim=True)
    adv = DCTAttack(gray_model, q=75, eps=3, alpha=1, steps=6, targeted=True)(gray, target)
    assert adv.shape == gray.shape
    assert accuracy(gray_model, adv, target) > 1 / NUM_CLASSES


class Repeat3(torch.nn.Module):
    def forward(self, x):
        return x.expand(-1, 3, -1, -1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_attacks_on_cuda(classifier, grating_data):
    model = DefendedModel(classifier, None, MEAN, STD).to("cuda")
    x, y = grating_data[0][:8].cuda(), grating_data[1][:8].cuda()
    for attack in (GA(model, eps=2.0), LBFGS(model, steps=3, search_steps=1), DCTAttack(model, q=75, steps=2)):
        adv = attack(x, y)
        assert adv.device.type == "cuda" and adv.shape == x.shape
    model.to("cpu")


def test_the_static_torchattacks_list_matches_the_installed_torchattacks():
    from diffjpeg.attacks.registry import TORCHATTACKS_CLASSES

    installed = {name for name in torchattacks.__all__ if isinstance(getattr(torchattacks, name), type)
                 and issubclass(getattr(torchattacks, name), torchattacks.attack.Attack)}
    assert set(TORCHATTACKS_CLASSES) == installed - {"MultiAttack", "LGV", "OnePixel"}
