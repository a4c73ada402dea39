"""Attack ensembles (diffjpeg.attacks.ensemble): worst case per example, survivors-only scheduling,
the all-draws rule, the L-inf check, the registry entries, and the budget check on the grating
classifier of conftest.py.

The scheduling tests use a toy task whose outcome is known exactly: 1x1 grey images whose class is
"bright" (1) when the pixel exceeds 0.5 and "dark" (0) otherwise; example ``i`` starts at
``0.5 - 0.01 (i + 1)`` (dark), and a member that adds ``d`` to the pixel breaks exactly the examples
with ``0.01 (i + 1) < d``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchattacks")

from conftest import MEAN, STD, make_gratings

from diffjpeg.attacks import Ensemble, build
from diffjpeg.attacks.ensemble import from_specs, judge
from diffjpeg.eval import checks
from diffjpeg.wrappers import DefendedModel

EPS = 0.06


class Threshold(nn.Module):
    """Class 1 iff the first pixel is > 0.5: logits ``(s, -s) -> (-s, s)`` with ``s = x - 0.5``."""

    def forward(self, x):
        s = x.flatten(1)[:, 0] - 0.5
        return torch.stack([-s, s], 1)


class Shift:
    """A member adding ``d`` to every pixel; records which examples (by index) it was given."""

    def __init__(self, d: float):
        self.d, self.seen = d, []

    def __call__(self, images, labels):
        self.seen.append(sorted(round((0.5 - float(v)) / 0.01) - 1 for v in images.flatten(1)[:, 0]))
        return (images + self.d).clamp(0, 1)


def toy(n: int = 8):
    x = torch.tensor([0.5 - 0.01 * (i + 1) for i in range(n)]).view(n, 1, 1, 1)
    return x, torch.zeros(n, dtype=torch.long)


def test_worst_case_is_the_per_example_minimum_over_members():
    x, y = toy()
    members = [("a", Shift(0.025)), ("b", Shift(0.045)), ("c", Shift(0.015))]
    result = Ensemble(members, EPS, evaluate=Threshold()).run(x, y)
    alone = torch.stack([judge(Threshold(), Shift(m.d)(x, y), y)[0] for _, m in members])  # each member on all
    assert torch.equal(result.robust, alone.all(0))  # robust iff robust under every member
    assert result.robust.tolist() == [False] * 4 + [True] * 4
    assert result.broken_by.tolist() == [0, 0, 1, 1, -1, -1, -1, -1]  # the first member that broke it
    # the kept example is the breaking member's, and it is adversarial under evaluate
    assert torch.allclose(result.adversarial[:2], x[:2] + 0.025)
    assert torch.allclose(result.adversarial[2:4], x[2:4] + 0.045)
    assert (result.predictions[:4] == 1).all() and (result.predictions[4:] == 0).all()
    assert result.remaining == {"a": 6, "b": 4, "c": 4}


def test_survivors_only_scheduling_attacks_nothing_already_broken():
    x, y = toy()
    a, b, c = Shift(0.025), Shift(0.045), Shift(0.015)
    result = Ensemble([("a", a), ("b", b), ("c", c)], EPS, evaluate=Threshold()).run(x, y)
    assert a.seen == [list(range(8))]
    assert b.seen == [[2, 3, 4, 5, 6, 7]]  # a broke 0 and 1
    assert c.seen == [[4, 5, 6, 7]]  # b broke 2 and 3
    assert result.attacked.tolist() == [1, 1, 2, 2, 3, 3, 3, 3]
    # examples outside ``active`` are never attacked and count as not robust
    d = Shift(0.0)
    active = torch.tensor([True, False] * 4)
    out = Ensemble([("d", d)], EPS, evaluate=Threshold()).run(x, y, active=active)
    assert d.seen == [[0, 2, 4, 6]] and out.robust.tolist() == active.tolist()
    assert out.predictions.tolist() == [0, -1] * 4  # not attacked: not judged
    # a member that breaks everything leaves nothing to the next one, which is then not called
    e, f = Shift(0.055), Shift(0.01)
    Ensemble([("e", e), ("f", f)], EPS, evaluate=Threshold()).run(x[:4], y[:4])
    assert f.seen == []


def test_batch_size_splits_member_calls_without_changing_the_result():
    x, y = toy()
    a, b = Shift(0.025), Shift(0.045)
    whole = Ensemble([("a", Shift(0.025)), ("b", Shift(0.045))], EPS, evaluate=Threshold()).run(x, y)
    parts = Ensemble([("a", a), ("b", b)], EPS, evaluate=Threshold(), batch_size=3).run(x, y)
    assert a.seen == [[0, 1, 2], [3, 4, 5], [6, 7]] and b.seen == [[2, 3, 4], [5, 6, 7]]
    assert torch.equal(whole.robust, parts.robust) and torch.equal(whole.adversarial, parts.adversarial)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        Ensemble([("a", a)], EPS, evaluate=Threshold(), batch_size=0)


def test_clean_errors_are_not_attacked():
    x, y = toy(4)
    y[1] = 1  # the model says 0: wrong without any attack
    a = Shift(0.0)
    result = Ensemble([("a", a)], EPS, evaluate=Threshold()).run(x, y)
    assert a.seen == [[0, 2, 3]] and result.robust.tolist() == [True, False, True, True]


class Flaky(nn.Module):
    """Right on every call but the ``wrong_call``-th (1-based), where it predicts class 1 for all."""

    def __init__(self, wrong_call: int):
        super().__init__()
        self.calls, self.wrong_call = 0, wrong_call

    def forward(self, x):
        self.calls += 1
        logits = torch.zeros(x.shape[0], 2)
        logits[:, 1 if self.calls == self.wrong_call else 0] = 1.0
        return logits


def test_robust_only_if_robust_on_all_draws():
    x, y = toy(4)
    robust, pred = judge(Flaky(wrong_call=2), x, y, draws=1)
    assert robust.all()
    robust, pred = judge(Flaky(wrong_call=2), x, y, draws=3)  # one wrong draw of three breaks every example
    assert not robust.any() and (pred == 1).all()
    # in an ensemble: 3 draws on the clean images, then 3 on the member's output (the 5th call is wrong)
    result = Ensemble([("a", Shift(0.0))], EPS, evaluate=Flaky(wrong_call=5), draws=3).run(x, y)
    assert not result.robust.any() and result.broken_by.tolist() == [0] * 4


def test_members_outside_the_ball_are_refused():
    x, y = toy(4)
    with pytest.raises(ValueError, match=r"attack 'far' left the L-inf ball of eps=0.06"):
        Ensemble([("far", Shift(0.1))], EPS, evaluate=Threshold()).run(x, y)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([], EPS, evaluate=Threshold())
    with pytest.raises(TypeError, match="evaluate"):
        Ensemble([("a", Shift(0.0))], EPS)


# ------------------------------------------------------------------------- registry entries, real attacks


@pytest.fixture(scope="module")
def model(classifier):
    return DefendedModel(classifier, None, MEAN, STD).eval()


@pytest.fixture(scope="module")
def data():
    return make_gratings(32, seed=1)


def test_standard_is_apgd_ce_then_targeted_apgd_dlr(model, data):
    import torchattacks

    x, y = data
    ens = build("standard:steps=5,targets=3", model, eps=16 / 255)
    assert ens.names == ["apgd-ce", "apgd-t"]
    assert isinstance(ens.members[0][1], torchattacks.APGD) and ens.members[0][1].loss == "ce"
    assert ens.members[1][1].attack.n_target_classes == 3
    more = build("standard:steps=5,targets=3,restarts=4", model, eps=16 / 255)  # AutoAttack's schedule:
    assert more.members[0][1].n_restarts == 4 and more.members[1][1].attack.n_restarts == 1  # one run per target
    built = build("standard:square=true,queries=10,targets=3", model, eps=16 / 255)
    assert built.names == ["apgd-ce", "apgd-t", "square"]
    result = ens.run(x, y)
    apgd = torchattacks.APGD(model, eps=16 / 255, steps=5, loss="ce", seed=0)
    alone = judge(model, apgd(x, y), y)[0]
    assert (result.robust <= alone).all()  # the ensemble is at least as strong as its first member, per example
    assert 0 < int(result.robust.sum()) < 32 and result.remaining["apgd-t"] <= result.remaining["apgd-ce"]
    linf = (result.adversarial - x).flatten(1).abs().amax(1)
    assert (linf <= 16 / 255 + 1e-5).all()


def test_standard_refuses_more_targets_than_classes(model, data):
    x, y = data
    with pytest.raises(ValueError,
                       match=r"targets=9 target classes need a model with at least 10 classes, this one has 4"):
        build("standard:steps=1", model, eps=16 / 255).run(x, y)


def test_autoattack_runs_pyautoattack(model, data):
    pytest.importorskip("pyautoattack")
    x, y = data
    ens = build("autoattack:version=custom,attacks=apgd-ce+apgd-t,steps=5,targets=3", model, eps=16 / 255)
    assert ens.names == ["autoattack-custom(apgd-ce+apgd-t)"]
    result = ens.run(x, y)
    assert int(result.robust.sum()) < 32
    with pytest.raises(ValueError, match="version must be one of"):
        build("autoattack:version=fast", model, eps=16 / 255)
    with pytest.raises(ValueError, match="attacks is given exactly when version='custom'"):
        build("autoattack:attacks=apgd-ce", model, eps=16 / 255)


def test_from_specs_lists_members_and_expands_named_ensembles(model):
    ens = from_specs(["fgsm", "standard:targets=3", "square:n_queries=5"], model, 8 / 255, steps=2)
    assert ens.names == ["fgsm", "apgd-ce", "apgd-t", "square:n_queries=5"]
    assert ens.members[1][1].steps == 2
    twice = from_specs(["fgsm", "apgd:loss=ce"], model, 8 / 255, restarts=2)  # repeated, or n_restarts where it has one
    assert twice.names == ["fgsm", "fgsm", "apgd:loss=ce"] and twice.members[2][1].n_restarts == 2
    with pytest.raises(ValueError, match="no eps parameter"):
        from_specs(["deepfool"], model, 8 / 255)


# ------------------------------------------------------------------------- the budget check


def _budget_check(model, x, y, eps, steps):
    base = build(f"standard:steps={steps},targets=3", model, eps=eps).run(x, y)
    strong = build(f"standard:steps={4 * steps},restarts=4,targets=3", model, eps=eps).run(x, y, active=base.robust)
    return checks.budget(int(base.robust.sum()), int(strong.robust.sum()), x.shape[0], 0.05, eps)


def test_budget_check_fires_on_a_one_step_attack(model, data):
    x, y = data
    check = _budget_check(model, x, y, 16 / 255, steps=1)
    assert not check.passed and check.code == "B" and "4x steps" in check.message


def test_budget_check_is_silent_on_a_converged_attack(model, data):
    x, y = data
    assert _budget_check(model, x, y, 4 / 255, steps=3).passed  # nothing left to find at this eps
    assert _budget_check(model, x, y, 32 / 255, steps=5).passed  # nothing left robust


def test_allowed_flips_is_zero_on_small_samples():
    assert checks.allowed_flips(20, 0.05) == 0 and checks.allowed_flips(99, 0.5) == 0
    assert checks.allowed_flips(100, 0.05) == 5 and checks.allowed_flips(10_000, 0.01) == 100
    assert checks.budget(5, 5, 20, 0.05).passed and not checks.budget(5, 4, 20, 0.05).passed
    assert checks.budget(50, 45, 200, 0.05).passed and not checks.budget(50, 39, 200, 0.05).passed
