"""The batched one-pixel attack (diffjpeg.attacks.OnePixel) against torchattacks' OnePixel.

The session's grating classifier (conftest) is too robust for single pixels, so this file trains a
deliberately fragile one: a one-layer CNN on the same gratings, attacked on low-contrast copies of the
test images (contrast 0.3 around mid-grey), where about half of the images fall to one pixel.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import NUM_CLASSES, make_gratings  # noqa: E402
from diffjpeg.attacks import OnePixel  # noqa: E402
from diffjpeg.eval.models import fragile_grating_classifier  # noqa: E402

torchattacks = pytest.importorskip("torchattacks")


def low_contrast(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_gratings(n, seed=seed)
    return 0.5 + 0.3 * (x - 0.5), y


@pytest.fixture(scope="module")
def fragile():
    return fragile_grating_classifier(NUM_CLASSES)


def changed_pixels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a != b).any(1).flatten(1).sum(1)


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_untargeted_lowers_accuracy_and_changes_few_pixels(fragile):
    x, y = low_contrast(32)
    assert (predict(fragile, x) == y).float().mean() >= 0.9
    for pixels in (1, 3):
        attack = OnePixel(fragile, pixels=pixels, steps=10, popsize=20, generator=torch.Generator().manual_seed(0))
        adv = attack(x, y)
        assert adv.shape == x.shape and adv.dtype == x.dtype and adv.min() >= 0 and adv.max() <= 1
        assert changed_pixels(adv, x).max() <= pixels
        fooled = predict(fragile, adv) != y
        assert torch.equal(fooled, attack.last_success)  # the reported success is the model's verdict
        assert fooled.float().mean() >= 0.3
    # more pixels -> at least as strong (same seed, same budget)
    assert attack.last_success.float().mean() >= 0.3


def test_targeted_hits_targets_more_often_than_chance(fragile):
    x, y = low_contrast(32)
    target = (y + 1) % NUM_CLASSES
    assert (predict(fragile, x) == target).sum() == 0
    attack = OnePixel(fragile, pixels=3, steps=10, popsize=30, targeted=True,
                      generator=torch.Generator().manual_seed(1))
    adv = attack(x, target)
    hit = predict(fragile, adv) == target
    assert hit.float().mean() > 1 / NUM_CLASSES  # more often than a random guess (clean images: never)
    assert torch.equal(hit, attack.last_success)
    # torchattacks-style mode switching works too
    attack2 = OnePixel(fragile, pixels=3, steps=10, popsize=30, generator=torch.Generator().manual_seed(1))
    attack2.set_mode_targeted_by_label(quiet=True)
    assert torch.equal(attack2(x, target), adv)


def test_agrees_with_torchattacks(fragile):
    """Same images, pixels, population and generations: success rates within 0.2 (ours not worse by > 0.1)."""
    import numpy as np

    x, y = low_contrast(32, seed=2)
    ours = OnePixel(fragile, pixels=1, steps=8, popsize=20, generator=torch.Generator().manual_seed(0))
    rate_ours = (predict(fragile, ours(x, y)) != y).float().mean().item()
    torch.manual_seed(0)
    np.random.seed(0)  # torchattacks' DE draws from numpy's global RNG
    reference = torchattacks.OnePixel(fragile, pixels=1, steps=8, popsize=20)
    rate_ta = (predict(fragile, reference(x, y)) != y).float().mean().item()
    assert abs(rate_ours - rate_ta) <= 0.2, (rate_ours, rate_ta)
    assert rate_ours >= rate_ta - 0.1
    assert 0.2 <= rate_ours <= 0.9  # neither trivial nor impossible on this set


def test_seeded_and_chunking_invariant(fragile):
    x, y = low_contrast(16)
    run = lambda seed, mb: OnePixel(fragile, steps=5, popsize=20, max_batch=mb,  # noqa: E731
                                    generator=torch.Generator().manual_seed(seed))(x, y)
    a = run(3, None)
    assert torch.equal(a, run(3, 7))  # chunks of 7 candidates: the same search
    assert not torch.equal(a, run(4, None))


def test_early_stop_and_quantize(fragile):
    x, y = low_contrast(32)
    attack = OnePixel(fragile, steps=10, popsize=20, quantize=True, generator=torch.Generator().manual_seed(0))
    adv = attack(x, y)
    per_gen = 20  # popsize 20 // 5 parameters * 5
    assert attack.last_queries.max() <= 11 * per_gen
    ok = attack.last_success
    assert ok.any() and (attack.last_queries[ok] < 11 * per_gen).any()  # successful images stopped early
    moved = (adv != x).any(1, keepdim=True).expand_as(adv)
    values = adv[moved] * 255
    assert torch.allclose(values, values.round(), atol=1e-4)


def test_steps_zero_is_random_search(fragile):
    x, y = low_contrast(8)
    attack = OnePixel(fragile, steps=0, popsize=10, generator=torch.Generator().manual_seed(0))
    adv = attack(x, y)
    assert (attack.last_queries == 10).all() and changed_pixels(adv, x).max() <= 1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"pixels": 0}, ValueError, r"pixels must be an integer >= 1, got 0"),
    ({"pixels": 1.5}, TypeError, r"pixels must be an integer >= 1, got float"),
    ({"steps": -1}, ValueError, r"steps must be an integer >= 0, got -1"),
    ({"popsize": 0}, ValueError, r"popsize must be an integer >= 1"),
    ({"mutation": (0.5, 2.5)}, ValueError, r"mutation must be a finite number in \[0, 2\)"),
    ({"mutation": (1.0, 0.5)}, ValueError, r"lo <= hi"),
    ({"recombination": 1.5}, ValueError, r"recombination must be a finite number in \[0, 1\]"),
    ({"max_batch": 0}, ValueError, r"max_batch must be an integer >= 1"),
    ({"generator": 3}, TypeError, r"generator must be a torch.Generator"),
    ({"targeted": "yes"}, TypeError, r"targeted must be True or False"),
])
def test_bad_arguments(fragile, kwargs, error, message):
    with pytest.raises(error, match=message):
        OnePixel(fragile, **kwargs)


def test_bad_inputs(fragile):
    attack = OnePixel(fragile, steps=1)
    x, y = low_contrast(4)
    with pytest.raises(ValueError, match=r"images must have values in \[0, 1\]"):
        attack(x * 3, y)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        attack(x, y[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_success_semantics(fragile):
    model = fragile.to("cuda")
    x, y = low_contrast(16)
    attack = OnePixel(model, steps=5, popsize=20, generator=torch.Generator("cuda").manual_seed(0))
    adv = attack(x.cuda(), y.cuda())
    assert adv.device.type == "cuda" and changed_pixels(adv.cpu(), x).max() <= 1
    assert torch.equal(predict(model, adv) != y.cuda(), attack.last_success)
    fragile.to("cpu")
