"""The attack core (diffjpeg.attacks.core), the attacks' own base class and the lazy torchattacks adapter."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import MEAN, NUM_CLASSES, STD
from diffjpeg.attacks import GA
from diffjpeg.attacks.core import attack_loss, fgsm, pgd
from diffjpeg.defenses import RandomJPEG
from diffjpeg.learn.classifier import accuracy
from diffjpeg.wrappers import EOT, DefendedModel


@pytest.fixture(scope="module")
def model(classifier):
    return DefendedModel(classifier, None, MEAN, STD).eval()


def reference_pgd_linf(model, x, y, eps, steps, alpha, generator):
    """The L-inf PGD loop the table learner had before the core existed (its results must not change)."""
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def reference_fgsm(classifier, x, y, eps):
    """The per-image FGSM the reconstruction training had before the core existed."""
    xa = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(classifier(xa), y), xa)
    return (x + eps.view(-1, 1, 1, 1) * grad.sign()).clamp(0, 1).detach()


def test_linf_pgd_matches_the_loop_it_replaced_and_is_seedable(model, grating_data):
    x, y = grating_data[0][:16], grating_data[1][:16]
    ours = pgd(model, x, y, 16 / 255, 5, 4 / 255, generator=torch.Generator().manual_seed(3))
    ref = reference_pgd_linf(model, x, y, 16 / 255, 5, 4 / 255, torch.Generator().manual_seed(3))
    assert torch.equal(ours, ref)
    assert (ours - x).abs().max() <= 16 / 255 + 1e-6 and ours.min() >= 0 and ours.max() <= 1
    assert accuracy(model, ours, y) < accuracy(model, x, y)
    other = pgd(model, x, y, 16 / 255, 5, 4 / 255, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(ours, other)
    assert torch.equal(pgd(model, x, y, 0.0, 3), x)  # eps 0: nowhere to go


def test_fgsm_matches_the_per_image_step_it_replaced(model, grating_data):
    x, y = grating_data[0][:16], grating_data[1][:16]
    eps = torch.linspace(0, 0.2, 16)
    assert torch.equal(fgsm(model, x, y, eps), reference_fgsm(model, x, y, eps))
    one = fgsm(model, x, y, 0.1)
    assert torch.equal(one, reference_fgsm(model, x, y, torch.full((16,), 0.1)))
    assert accuracy(model, one, y) < accuracy(model, x, y)


def test_l2_pgd_stays_in_the_ball_and_lowers_accuracy(model, grating_data):
    x, y = grating_data[0][:16], grating_data[1][:16]
    adv = pgd(model, x, y, 2.0, 10, 0.5, norm="l2", generator=torch.Generator().manual_seed(0))
    assert (adv - x).flatten(1).norm(dim=1).max() <= 2.0 + 1e-4 and adv.min() >= 0 and adv.max() <= 1
    assert accuracy(model, adv, y) < accuracy(model, x, y)
    start = pgd(model, x, y, 2.0, 1, 0.0, norm="l2", generator=torch.Generator().manual_seed(0))
    assert 0 < (start - x).flatten(1).norm(dim=1).max() <= 2.0 + 1e-4  # alpha 0: the random start alone


def test_targeted_attacks_reach_their_targets(model, grating_data):
    x, y = grating_data[0][:16], grating_data[1][:16]
    target = (y + 1) % NUM_CLASSES
    adv = pgd(model, x, target, 32 / 255, 10, 8 / 255, targeted=True, generator=torch.Generator().manual_seed(0))
    assert accuracy(model, adv, target) > 1 / NUM_CLASSES >= accuracy(model, x, target)
    assert accuracy(model, fgsm(model, x, target, 0.1, targeted=True), target) > accuracy(model, x, target)


def test_the_core_uses_the_models_own_loss(classifier, grating_data):
    """EOT(reduce="grad")'s loss is what the core ascends: the mean of per-draw losses, not CE of mean logits."""
    x, y = grating_data[0][:8], grating_data[1][:8]
    d = RandomJPEG((20, 90), generator=torch.Generator().manual_seed(1))
    grad_model = DefendedModel(classifier, EOT(d, n=4, reduce="grad", fixed=True), MEAN, STD)
    torch.testing.assert_close(attack_loss(grad_model, x, y), grad_model.loss(x, y))
    mean_logits_ce = F.cross_entropy(grad_model(x), y)
    assert not torch.allclose(attack_loss(grad_model, x, y), mean_logits_ce)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    torch.testing.assert_close(attack_loss(plain, x, y), F.cross_entropy(plain(x), y))
    adv = pgd(grad_model, x, y, 16 / 255, 3, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 16 / 255 + 1e-6


@pytest.mark.parametrize("call, error, message", [
    (lambda m, x, y: pgd(m, x, y, -0.1, 3), ValueError, r"eps must be a finite number in \[0, inf\), got -0.1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, 0), ValueError, r"steps must be an integer >= 1, got 0"),
    (lambda m, x, y: pgd(m, x, y, 0.1, 2, norm="l1"), ValueError, r"norm must be one of \('linf', 'l2'\)"),
    (lambda m, x, y: pgd(m, x, y, torch.ones(4), 2), TypeError, r"pgd: eps must be one number"),
    (lambda m, x, y: pgd(m, x, y.float(), 0.1, 2), TypeError, r"labels must be an integer tensor"),
    (lambda m, x, y: pgd(m, x, y, 0.1, 2, generator=0), TypeError, r"generator must be a torch.Generator"),
    (lambda m, x, y: fgsm(m, x, y, torch.ones(3)), ValueError, r"eps must be a number >= 0 or a float tensor "
                                                                r"of shape \(4,\)"),
    (lambda m, x, y: fgsm(m, x * 2, y, 0.1), ValueError, r"images must have values in \[0, 1\]"),
])
def test_core_argument_errors(model, grating_data, call, error, message):
    x, y = grating_data[0][:4], grating_data[1][:4]
    with pytest.raises(error, match=message):
        call(model, x, y)


def test_attack_base_class_modes(model, grating_data):
    x, y = grating_data[0][:16], grating_data[1][:16]
    attack = GA(model, eps=2.0, generator=torch.Generator().manual_seed(0))
    assert attack.attack_mode == "default" and not attack.targeted
    attack.set_mode_targeted_random(quiet=True)
    goal = attack.get_target_label(x, y)
    assert attack.attack_mode == "targeted(random)" and (goal != y).all() and len(goal.unique()) > 1
    attack.set_mode_targeted_least_likely(quiet=True)
    with torch.no_grad():
        logits = model(x)
    least = logits.scatter(1, y[:, None], float("inf")).argmin(1)
    assert torch.equal(attack.get_target_label(x, y), least)
    attack.set_mode_targeted_by_function(lambda images, labels: (labels + 2) % NUM_CLASSES, quiet=True)
    assert attack.attack_mode == "targeted(custom)" and torch.equal(attack.get_target_label(x, y), (y + 2) % 4)
    attack.set_mode_default(quiet=True)
    assert not attack.targeted and torch.equal(attack.get_target_label(x, y), y)
    with pytest.raises(TypeError, match="target_map_function must be callable"):
        attack.set_mode_targeted_by_function(3)
    with pytest.raises(ValueError, match=r"kth_min must be below the number of classes \(4\), got 4"):
        attack.set_mode_targeted_least_likely(kth_min=4, quiet=True)
        attack.get_target_label(x, y)
    attack.set_mode_default(quiet=True)
    model.train()
    attack(x, y)
    assert model.training  # the mode it found comes back
    model.eval()
    assert "GA(" in repr(attack) and "eps=2.0" in repr(attack)


def test_importing_attacks_does_not_import_torchattacks():
    code = ("import sys, diffjpeg.attacks as a; assert 'torchattacks' not in sys.modules; "
            "import diffjpeg.learn; assert 'torchattacks' not in sys.modules; "
            "names = a.available(); assert 'pgd' in names and 'eps' in names['pgd'] and 'targeted' in names['pgd']")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_attacks_by_name(model, grating_data):
    from diffjpeg.attacks import FGSM, PGD, build

    x, y = grating_data[0][:16], grating_data[1][:16]
    attack = build("diffjpeg.pgd:eps=16/255,steps=5,alpha=4/255", model, generator=torch.Generator().manual_seed(3))
    assert isinstance(attack, PGD) and attack.eps == 16 / 255
    assert torch.equal(attack(x, y), pgd(model, x, y, 16 / 255, 5, 4 / 255, generator=torch.Generator().manual_seed(3)))
    target = (y + 1) % NUM_CLASSES
    tfgsm = build("diffjpeg.fgsm:eps=0.1,targeted=true", model)
    assert isinstance(tfgsm, FGSM) and tfgsm.attack_mode == "targeted(label)"
    assert torch.equal(tfgsm(x, target), fgsm(model, x, target, 0.1, targeted=True))
    with pytest.raises(ValueError, match=r"norm must be one of"):
        build("diffjpeg.pgd:norm=l1", model)
