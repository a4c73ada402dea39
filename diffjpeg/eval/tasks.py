"""The benchmark's rows and the tasks that fill them, one batch of examples at a time.

A **row** of the table is a defense under a threat model (:mod:`diffjpeg.eval.threats`). The tasks of
a batch, each a function ``(ctx, batch, slice) -> records`` that :mod:`diffjpeg.eval.runner` runs as
one resumable unit:

* ``clean`` -- the undefended prediction, and per defense its prediction and the PSNR/SSIM of the
  defended clean image;
* one task per transfer threat model (``graybox``): the attack (and FGSM) at every eps on the
  undefended model, judged through every defense;
* one task per other row (``row{i}``): the attack on the threat model's graph, eps by eps in
  increasing order on the examples still robust (an example broken at a smaller eps is broken at
  every larger one), then the runs the row's masking checks need.

Each record's ``attack`` field names the run by its role, whatever attack the config chose:
``attack`` (the configured attack), ``fgsm``, ``attack_2x_steps``, ``attack_large_eps`` and
``attack_fixed_randomness``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks.registry import ATTACKS
from ..attacks.registry import build as build_attack
from ..defenses.registry import DEFENSES
from ..metrics import psnr, ssim
from ..wrappers import DefendedModel, predict
from . import threats
from .config import NO_DEFENSE, BenchConfig, Parsed, Spec
from .threats import ThreatModel

__all__ = [
    "ATTACK",
    "ATTACK_2X_STEPS",
    "ATTACK_FIXED_RANDOMNESS",
    "ATTACK_LARGE_EPS",
    "FGSM",
    "Context",
    "Row",
    "attack_survivors",
    "plan_rows",
    "plan_tasks",
    "row_task",
]

#: roles of a record's ``attack`` field
ATTACK, FGSM = "attack", "fgsm"
ATTACK_2X_STEPS, ATTACK_LARGE_EPS, ATTACK_FIXED_RANDOMNESS = "attack_2x_steps", "attack_large_eps", \
    "attack_fixed_randomness"
_FGSM_SPEC = Spec("fgsm", "fgsm")


@dataclass(frozen=True)
class Row:
    """One line of the table: a defense spec under a threat model."""

    spec: Spec
    threat_model: ThreatModel

    @property
    def defense(self) -> str:
        """The defense spec as given (``"none"`` for no defense)."""
        return self.spec.text

    @property
    def threat(self) -> str:
        return self.threat_model.name


def build_defense(spec: Spec, generator: torch.Generator | None = None, classifier: nn.Module | None = None):
    """The defense ``spec`` names, drawing from ``generator`` and given ``classifier`` if it takes them."""
    params = DEFENSES.parameters(spec.name)
    extra = {}
    if "generator" in params and generator is not None:
        extra["generator"] = generator
    if "classifier" in params:
        extra["classifier"] = classifier
    return spec.build(DEFENSES.build, **extra)


def plan_rows(parsed: Parsed, threat_models: list[str], classifier: nn.Module | None = None) -> list[Row]:
    """The table's rows: ``none`` -> ``whitebox``; every other defense under each threat model that applies."""
    rows = []
    for spec in parsed.defenses:
        if spec.text == NO_DEFENSE:
            rows.append(Row(spec, threats.get("whitebox")))
            continue
        defense = build_defense(spec, classifier=classifier)
        rows += [Row(spec, t) for t in threats.select(threat_models, defense)]
    return rows


def row_task(index: int, row: Row) -> str:
    """The name of the task that fills ``row`` (the ``index``-th): its threat model's for transfer rows."""
    return row.threat if row.threat_model.transfer else f"row{index}"


def plan_tasks(rows: list[Row]) -> dict[str, Callable[[Context, int, slice], list[dict]]]:
    """Every batch's tasks in order (``clean``, the transfer tasks, one task per other row):
    name -> ``fn(ctx, batch, slice) -> records``. A task's place seeds its randomness (see the runner)."""
    tasks: dict[str, Callable[[Context, int, slice], list[dict]]] = {"clean": task_clean}
    for threat in dict.fromkeys(r.threat_model for r in rows if r.threat_model.transfer):
        tasks[threat.name] = partial(task_transfer, threat=threat, rows=[r for r in rows if r.threat_model is threat])
    for i, row in enumerate(rows):
        if not row.threat_model.transfer:
            tasks[row_task(i, row)] = partial(task_adaptive, row=row)
    return tasks


class Context:
    """What every task needs: the config and its parsed specs, the classifier with its normalisation, the data."""

    def __init__(self, cfg: BenchConfig, parsed: Parsed, classifier: nn.Module, mean, std, images: Tensor,
                 labels: Tensor, ids: list[str], device: torch.device):
        self.cfg, self.parsed, self.classifier, self.mean, self.std = cfg, parsed, classifier, mean, std
        self.images, self.labels, self.ids, self.device = images, labels, ids, device

    def model(self, defense: nn.Module | None = None) -> DefendedModel:
        with warnings.catch_warnings():  # evaluation models hold non-differentiable defenses on purpose
            warnings.simplefilter("ignore")
            return DefendedModel(self.classifier, defense, mean=self.mean, std=self.std).to(self.device).eval()

    def defense(self, spec: Spec, batch: int) -> nn.Module:
        """The defense for ``batch``, its randomness seeded by (seed, batch, defense) alone."""
        index = self.cfg.defenses.index(spec.text)
        g = torch.Generator(self.device).manual_seed(seed(self.cfg.seed, batch, 1000 + index))
        return build_defense(spec, g, self.model()).to(self.device)

    def attack(self, model: nn.Module, eps: float, steps: int | None = None, spec: Spec | None = None):
        """The configured attack (or ``spec``) on ``model`` at ``eps``, with the step size 2.5 eps / steps."""
        spec = spec or self.parsed.attack
        params = ATTACKS.parameters(spec.name)
        steps = steps or self.cfg.steps
        extra: dict[str, Any] = {"eps": eps}
        if "steps" in params and "steps" not in spec.kwargs:
            extra["steps"] = steps
        if "alpha" in params and "alpha" not in spec.kwargs:
            extra["alpha"] = 2.5 * eps / steps
        return spec.build(build_attack, model, **extra)


def seed(*parts: int) -> int:
    """One 62-bit seed from integer ``parts`` (seed, batch, task or defense index)."""
    value = 0
    for p in parts:
        value = (value * 1_000_003 + int(p)) % (2 ** 62)
    return value


def labels_of(model: nn.Module, x: Tensor) -> Tensor:
    """``model``'s labels ``(B,)`` for ``x`` in one pass: one draw of a randomized defense for the batch."""
    return predict(model, x, batch=max(len(x), 1))


# ------------------------------------------------------------------------------------------ attacking


def _norms(adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    d = (adv - x).flatten(1)
    return d.abs().amax(1), d.norm(dim=1)


def check_budget(adv: Tensor, x: Tensor, eps: float, attack: str) -> None:
    """Raise a ``ValueError`` naming ``attack`` unless ``adv`` is in [0, 1] and the L-inf ball of ``eps`` around ``x``."""
    linf, _ = _norms(adv, x)
    if (linf > eps + 1e-5).any() or adv.min() < 0 or adv.max() > 1:
        raise ValueError(f"attack {attack!r} left the L-inf ball of eps={eps:g} or [0, 1] (max |delta| "
                         f"{float(linf.max()):g}); the benchmark's threat model is L-inf")


def _run(ctx: Context, model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int | None = None,
         spec: Spec | None = None) -> Tensor:
    """One run of the configured attack (or ``spec``) on ``model``: the adversarial images, checked."""
    adv = ctx.attack(model, eps, steps, spec)(x, y).detach()
    check_budget(adv, x, eps, (spec or ctx.parsed.attack).text)
    return adv


def attack_survivors(ctx: Context, attacked: nn.Module, evaluate: nn.Module, x: Tensor, y: Tensor, active: Tensor,
                     eps: float, steps: int | None = None) -> tuple[Tensor, Tensor]:
    """The configured attack on ``attacked`` at ``eps``, on the ``active`` examples (``restarts`` times,
    each on those still robust when judged by ``evaluate``).

    Returns the adversarial images (clean where not attacked) and ``evaluate``'s labels of them
    (-1 where not attacked).
    """
    adv, pred = x.clone(), torch.full_like(y, -1)
    active = active.clone()
    for _ in range(ctx.cfg.restarts):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        a = _run(ctx, attacked, x[idx], y[idx], eps, steps)
        p = labels_of(evaluate, a)
        adv[idx], pred[idx] = a, p
        active[idx[p != y[idx]]] = False
    return adv, pred


def _worst(robust: Tensor, adv: Tensor, pred: Tensor, prev_adv: Tensor, prev_pred: Tensor) -> tuple[Tensor, Tensor]:
    """The new attack's example where the example was still ``robust``; elsewhere the earlier one's."""
    adv, pred = adv.clone(), pred.clone()
    adv[~robust], pred[~robust] = prev_adv[~robust], prev_pred[~robust]
    return adv, pred


def zero_gradient_share(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per example, the share of input-gradient entries of the cross-entropy that are exactly 0."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (grad == 0).flatten(1).float().mean(1)


def _records(ctx: Context, batch: slice, row: Row, role: str, eps: float, y: Tensor, defended: Tensor,
             x: Tensor, adv: Tensor, adv_pred: Tensor, **extra: Any) -> list[dict]:
    linf, l2 = _norms(adv, x)
    out = []
    for i in range(y.shape[0]):
        robust = bool(defended[i] == y[i]) and bool(adv_pred[i] == y[i])
        rec = {"defense": row.defense, "threat": row.threat, "attack": role, "eps": eps,
               "id": ctx.ids[batch.start + i], "label": int(y[i]), "defended": int(defended[i]),
               "adversarial": int(adv_pred[i]), "robust": robust, "linf": float(linf[i]), "l2": float(l2[i])}
        rec.update({k: (float(v[i]) if isinstance(v, Tensor) else v) for k, v in extra.items()})
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------ tasks


def task_clean(ctx: Context, b: int, sl: slice) -> list[dict]:
    """Undefended predictions; per defense the defended prediction and PSNR/SSIM of its output."""
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    clean = labels_of(ctx.model(), x)
    recs = [{"kind": "clean", "id": ctx.ids[sl.start + i], "label": int(y[i]), "clean": int(clean[i])}
            for i in range(y.shape[0])]
    for spec in ctx.parsed.defenses:
        if spec.text == NO_DEFENSE:
            continue
        defense = ctx.defense(spec, b)
        with torch.no_grad():
            xd = defense(x)
        pred = labels_of(ctx.model(), xd)
        for i in range(y.shape[0]):
            recs.append({"kind": "defended", "defense": spec.text, "id": ctx.ids[sl.start + i], "label": int(y[i]),
                         "defended": int(pred[i]), "psnr": psnr(xd[i], x[i]), "ssim": ssim(xd[i], x[i])})
    return recs


def task_transfer(ctx: Context, b: int, sl: slice, threat: ThreatModel, rows: list[Row]) -> list[dict]:
    """The attack and FGSM at every eps on ``threat``'s graph without the defense, judged through each row's."""
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    source = ctx.model(threat.graph(None, ctx.cfg))
    advs = {}
    for eps in ctx.cfg.eps:
        advs[ATTACK, eps] = _run(ctx, source, x, y, eps)
        advs[FGSM, eps] = _run(ctx, source, x, y, eps, spec=_FGSM_SPEC)
    recs = []
    for row in rows:
        evaluate = ctx.model(ctx.defense(row.spec, b))
        defended = labels_of(evaluate, x)  # first draw of a randomized defense: the same as in task_clean
        for (role, eps), a in advs.items():
            recs += _records(ctx, sl, row, role, eps, y, defended, x, a, labels_of(evaluate, a))
    return recs


def task_adaptive(ctx: Context, b: int, sl: slice, row: Row) -> list[dict]:
    """The attack on the row's graph, eps by eps on the survivors, then the runs its masking checks need."""
    cfg, threat = ctx.cfg, row.threat_model
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    defense = None if row.defense == NO_DEFENSE else ctx.defense(row.spec, b)
    evaluate = ctx.model(defense)
    defended = labels_of(evaluate, x)
    attacked = ctx.model(threat.graph(defense, cfg))
    zero = {"zero_grad": zero_gradient_share(attacked, x, y)} if "Z" in threat.checks else {}
    recs, robust = [], defended == y
    adv, pred = x, defended  # the examples the defense gets wrong need no attack
    for k, eps in enumerate(cfg.eps):  # examples broken at a smaller eps keep that adversarial example
        adv, pred = _worst(robust, *attack_survivors(ctx, attacked, evaluate, x, y, robust, eps), adv, pred)
        recs += _records(ctx, sl, row, ATTACK, eps, y, defended, x, adv, pred, **(zero if k == 0 else {}))
        robust = robust & (pred == y)
        if "F" in threat.checks:
            fgsm = _run(ctx, attacked, x, y, eps, spec=_FGSM_SPEC)
            recs += _records(ctx, sl, row, FGSM, eps, y, defended, x, fgsm, labels_of(evaluate, fgsm))
    top = cfg.eps[-1]
    if "S" in threat.checks and "steps" in ATTACKS.parameters(ctx.parsed.attack.name):
        more = attack_survivors(ctx, attacked, evaluate, x, y, robust, top, steps=2 * cfg.steps)
        recs += _records(ctx, sl, row, ATTACK_2X_STEPS, top, y, defended, x, *_worst(robust, *more, adv, pred))
    if "E" in threat.checks:
        large = attack_survivors(ctx, attacked, evaluate, x, y, robust, cfg.large_eps)
        recs += _records(ctx, sl, row, ATTACK_LARGE_EPS, cfg.large_eps, y, defended, x,
                         *_worst(robust, *large, adv, pred))
    if "R" in threat.checks and defense is not None and defense.randomized:  # attacked and judged, same draws
        fixed = ctx.model(threat.fixed_graph(defense))
        frozen = attack_survivors(ctx, fixed, fixed, x, y, defended == y, top)
        recs += _records(ctx, sl, row, ATTACK_FIXED_RANDOMNESS, top, y, defended, x,
                         *_worst(defended == y, *frozen, x, defended))
    return recs
