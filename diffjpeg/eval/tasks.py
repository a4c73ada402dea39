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
``attack`` (the configured attack), ``fgsm``, ``attack_2x_steps`` (check S), ``attack_4x_budget`` (4x
steps and 4x restarts at every eps, check B), ``attack_large_eps`` and ``attack_fixed_randomness``.

Every run is an :class:`~diffjpeg.attacks.Ensemble` (the configured attack list or named ensemble,
each member on the examples still robust, the worst case per example), judged through the real
defense: a randomized defense ``eot_samples`` times per adversarial example, robust only if correct on
all draws. A gradient pass holds at most ``batch_size`` images: an EOT graph of ``n`` draws is attacked
``batch_size // n`` examples at a time.
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

from ..attacks.ensemble import Ensemble, from_specs, judge
from ..attacks.registry import ATTACKS
from ..compiled import compile as compile_per_shape
from ..defenses.registry import DEFENSES
from ..metrics import psnr, ssim
from ..wrappers import EOT, DefendedModel, predict
from . import threats
from .config import NO_DEFENSE, BenchConfig, Parsed, Spec
from .threats import ThreatModel

__all__ = [
    "ATTACK",
    "ATTACK_2X_STEPS",
    "ATTACK_4X_BUDGET",
    "ATTACK_FIXED_RANDOMNESS",
    "ATTACK_LARGE_EPS",
    "FGSM",
    "Context",
    "Row",
    "plan_rows",
    "plan_tasks",
    "row_task",
]

#: roles of a record's ``attack`` field
ATTACK, FGSM = "attack", "fgsm"
ATTACK_2X_STEPS, ATTACK_LARGE_EPS, ATTACK_FIXED_RANDOMNESS = "attack_2x_steps", "attack_large_eps", \
    "attack_fixed_randomness"
ATTACK_4X_BUDGET = "attack_4x_budget"
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

    def attacked(self, graph: nn.Module | None) -> nn.Module:
        """The model an attack differentiates: ``graph`` before the classifier, compiled per input shape
        when the config asks for it (the same verdicts as eager mode, see ``tests/test_bench.py``)."""
        model = self.model(graph)
        return compile_per_shape(model) if self.cfg.compile else model

    def defense(self, spec: Spec, batch: int) -> nn.Module:
        """The defense for ``batch``, its randomness seeded by (seed, batch, defense) alone."""
        index = self.cfg.defenses.index(spec.text)
        g = torch.Generator(self.device).manual_seed(seed(self.cfg.seed, batch, 1000 + index))
        return build_defense(spec, g, self.model()).to(self.device)

    def draws(self, defense: nn.Module | None) -> int:
        """Judgements per adversarial example: ``eot_samples`` for a randomized defense, else 1."""
        return self.cfg.eot_samples if defense is not None and defense.randomized else 1

    def attack(self, model: nn.Module, evaluate: nn.Module, eps: float, draws: int = 1, per_call: int | None = None,
               steps: int | None = None, restarts: int | None = None,
               specs: tuple[Spec, ...] | None = None) -> Ensemble:
        """The configured attack (or ``specs``) on ``model`` at ``eps`` as an :class:`Ensemble` judged by
        ``evaluate`` (``draws`` calls per example), ``per_call`` examples per attack call; ``steps`` and
        ``restarts`` default to the config's, PGD-style step sizes are 2.5 eps / steps."""
        steps, restarts = steps or self.cfg.steps, restarts or self.cfg.restarts
        return from_specs(specs or self.parsed.attacks, model, eps, evaluate=evaluate, draws=draws,
                          batch_size=per_call, restarts=restarts, steps=steps, alpha=2.5 * eps / steps,
                          seed=self.cfg.seed)


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


def per_call(ctx: Context, graph: nn.Module | None) -> int:
    """Examples per attack call so that a gradient pass holds at most ``batch_size`` images
    (an EOT graph evaluates ``n`` draws of every example in one pass)."""
    n = graph.n if isinstance(graph, EOT) else 1
    return max(1, ctx.cfg.batch_size // n)


def run(ctx: Context, attacked: nn.Module, evaluate: nn.Module, x: Tensor, y: Tensor, active: Tensor, eps: float,
        draws: int = 1, per_call: int | None = None, **options: Any) -> tuple[Tensor, Tensor]:
    """The configured attack (``options``: see :meth:`Context.attack`) on the ``active`` examples.

    Returns the adversarial images (clean where not attacked) and ``evaluate``'s labels of them under
    the all-draws rule (-1 where not attacked).
    """
    result = ctx.attack(attacked, evaluate, eps, draws, per_call, **options).run(x, y, active=active)
    return result.adversarial, result.predictions


def _worst(robust: Tensor, adv: Tensor, pred: Tensor, prev_adv: Tensor, prev_pred: Tensor) -> tuple[Tensor, Tensor]:
    """The new attack's example where the example was still ``robust``; elsewhere the earlier one's."""
    adv, pred = adv.clone(), pred.clone()
    adv[~robust], pred[~robust] = prev_adv[~robust], prev_pred[~robust]
    return adv, pred


def zero_gradient_share(model: nn.Module, x: Tensor, y: Tensor, per_call: int | None = None) -> Tensor:
    """Per example, the share of input-gradient entries of the cross-entropy that are exactly 0
    (``per_call`` examples per gradient pass; ``None``: all)."""
    shares = []
    for xs, ys in zip(x.split(per_call or max(len(x), 1)), y.split(per_call or max(len(x), 1))):
        xs = xs.clone().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(F.cross_entropy(model(xs), ys, reduction="sum"), xs)
        shares.append((grad == 0).flatten(1).float().mean(1))
    return torch.cat(shares)


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
    source = ctx.attacked(threat.graph(None, ctx.cfg))
    everything = torch.ones_like(y, dtype=torch.bool)
    advs = {}
    for eps in ctx.cfg.eps:  # attacked on every example (an example the source gets wrong may transfer)
        advs[ATTACK, eps] = run(ctx, source, source, x, y, everything, eps)[0]
        advs[FGSM, eps] = run(ctx, source, source, x, y, everything, eps, specs=(_FGSM_SPEC,))[0]
    recs = []
    for row in rows:
        defense = ctx.defense(row.spec, b)
        evaluate = ctx.model(defense)
        defended = labels_of(evaluate, x)  # first draw of a randomized defense: the same as in task_clean
        for (role, eps), a in advs.items():
            recs += _records(ctx, sl, row, role, eps, y, defended, x, a, judge(evaluate, a, y, ctx.draws(defense))[1])
    return recs


def task_adaptive(ctx: Context, b: int, sl: slice, row: Row) -> list[dict]:
    """The attack on the row's graph, eps by eps on the survivors, then the runs its masking checks need."""
    cfg, threat = ctx.cfg, row.threat_model
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    defense = None if row.defense == NO_DEFENSE else ctx.defense(row.spec, b)
    evaluate = ctx.model(defense)
    defended = labels_of(evaluate, x)
    graph = threat.graph(defense, cfg)
    attacked, chunk = ctx.attacked(graph), per_call(ctx, graph)
    attack = partial(run, ctx, attacked, evaluate, x, y, draws=ctx.draws(defense), per_call=chunk)
    zero = {"zero_grad": zero_gradient_share(attacked, x, y, chunk)} if "Z" in threat.checks else {}
    iterative = any("steps" in ATTACKS.parameters(spec.name) for spec in ctx.parsed.attacks)  # S and B apply
    recs, robust = [], defended == y
    adv, pred = x, defended  # the examples the defense gets wrong need no attack
    for k, eps in enumerate(cfg.eps):  # examples broken at a smaller eps keep that adversarial example
        adv, pred = _worst(robust, *attack(robust, eps), adv, pred)
        recs += _records(ctx, sl, row, ATTACK, eps, y, defended, x, adv, pred, **(zero if k == 0 else {}))
        robust = robust & (pred == y)
        if "B" in threat.checks and iterative:  # the same attack, 4x steps and 4x restarts, on what it left robust
            stronger = attack(robust, eps, steps=4 * cfg.steps, restarts=4 * cfg.restarts)
            recs += _records(ctx, sl, row, ATTACK_4X_BUDGET, eps, y, defended, x, *_worst(robust, *stronger, adv, pred))
        if "F" in threat.checks:
            fgsm = attack(defended == y, eps, specs=(_FGSM_SPEC,))
            recs += _records(ctx, sl, row, FGSM, eps, y, defended, x, *_worst(defended == y, *fgsm, x, defended))
    top = cfg.eps[-1]
    if "S" in threat.checks and iterative:
        more = attack(robust, top, steps=2 * cfg.steps)
        recs += _records(ctx, sl, row, ATTACK_2X_STEPS, top, y, defended, x, *_worst(robust, *more, adv, pred))
    if "E" in threat.checks:
        large = attack(robust, cfg.large_eps)
        recs += _records(ctx, sl, row, ATTACK_LARGE_EPS, cfg.large_eps, y, defended, x,
                         *_worst(robust, *large, adv, pred))
    if "R" in threat.checks and defense is not None and defense.randomized:  # attacked and judged, same draws
        fixed = ctx.model(threat.fixed_graph(defense))
        frozen = run(ctx, fixed, fixed, x, y, defended == y, top)
        recs += _records(ctx, sl, row, ATTACK_FIXED_RANDOMNESS, top, y, defended, x,
                         *_worst(defended == y, *frozen, x, defended))
    return recs
