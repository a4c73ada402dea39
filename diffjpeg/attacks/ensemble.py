"""Attack ensembles: the worst case per example over several attacks, each run only on the survivors.

An :class:`Ensemble` holds named **members** (callables ``(images, labels) -> adversarial images``,
e.g. torchattacks attacks on a :class:`~diffjpeg.wrappers.DefendedModel`) and a separate
``evaluate`` model, the real defense the robust accuracy is about. :meth:`Ensemble.run` works as
AutoAttack does (Croce & Hein, 2020):

1. the examples to attack are those ``evaluate`` classifies correctly (or those given as ``active``);
2. members run in order, each **only on the examples still robust**;
3. every member's output is checked to lie in the L-inf ball of radius ``eps`` around the clean
   image and in ``[0, 1]`` (a ``ValueError`` naming the member otherwise), then judged by ``evaluate``;
4. an example broken by a member keeps that member's adversarial example and is not attacked again;
   an example that survives every member keeps the last member's output. The result is one
   adversarial example per example: the worst case over the members.

**Robustness rule for randomized defenses.** ``evaluate`` is called ``draws`` times on every
adversarial example (fresh randomness each call); an example counts as robust only if it is
classified correctly on *all* ``draws`` calls -- one wrong draw breaks it. With ``draws=1`` (the
default, right for deterministic defenses) this is the ordinary single prediction.

Named ensembles (registered in :mod:`diffjpeg.attacks.registry`, built by spec)::

    build("standard:steps=20", model, eps=8/255)            # APGD-CE, then APGD-T (DLR, top 9)
    build("standard:square=true,queries=1000", model, eps=8/255)   # ... then Square
    build("autoattack:version=standard", model, eps=8/255)  # pyautoattack's AutoAttack itself

``standard`` uses torchattacks' own ``APGD`` (cross-entropy) and ``APGDT`` (targeted, DLR loss,
``targets`` highest-scoring other classes; AutoAttack uses 9) and, with ``square=true``, its
gradient-free ``Square``. ``autoattack`` runs ``pyautoattack.AutoAttack`` (the package RobustBench
depends on) with its fixed schedule; ``steps``/``queries`` override its iteration counts.
torchattacks and pyautoattack are imported only when such an ensemble is built.

Example::

    from diffjpeg.attacks.ensemble import standard
    ens = standard(model, eps=8/255, steps=10, evaluate=DefendedModel(clf, JPEG(q=75)))
    result = ens.run(images, labels)
    result.robust.float().mean()          # robust accuracy under the worst case of the members
    adv = ens(images, labels)             # torchattacks style: the adversarial images alone
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..arguments import check_int, check_real
from ..wrappers import predict

__all__ = [
    "AUTOATTACK_VERSIONS",
    "Ensemble",
    "EnsembleResult",
    "autoattack",
    "check_linf",
    "from_specs",
    "judge",
    "standard",
]

AUTOATTACK_VERSIONS = ("standard", "rand", "plus", "custom")
_AUTOATTACK_MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
#: slack of the L-inf check for float rounding in the attacks' projections
_LINF_SLACK = 1e-5


@dataclass
class EnsembleResult:
    """What :meth:`Ensemble.run` found, per example (``B`` examples).

    Attributes:
        adversarial: ``(B, C, H, W)`` the one adversarial example kept per example (clean where not attacked).
        robust: ``(B,)`` bool, robust under the rule of the module docstring.
        predictions: ``(B,)`` ``evaluate``'s label for ``adversarial`` (the first wrong draw where broken).
        broken_by: ``(B,)`` long, index of the member that broke the example; ``-1``: not broken by a
            member (still robust, or not attacked).
        attacked: ``(B,)`` long, how many members ran on each example.
        remaining: member name -> number of examples still robust after it ran (AutoAttack's log).
    """

    adversarial: Tensor
    robust: Tensor
    predictions: Tensor
    broken_by: Tensor
    attacked: Tensor
    remaining: dict[str, int]


@torch.no_grad()
def judge(evaluate: nn.Module, images: Tensor, labels: Tensor, draws: int = 1) -> tuple[Tensor, Tensor]:
    """``(robust, predictions)`` of ``images`` under ``evaluate``, ``draws`` calls per image.

    ``robust[i]`` is True iff every one of the ``draws`` calls predicts ``labels[i]``;
    ``predictions[i]`` is the first wrong prediction, or the label where all are right.
    Shapes: images ``(B, C, H, W)``, labels ``(B,)``; both outputs ``(B,)`` on ``labels``' device.
    """
    draws = check_int(draws, "draws", 1)
    robust = torch.ones_like(labels, dtype=torch.bool)
    pred = labels.clone()
    for _ in range(draws):
        p = predict(evaluate, images).to(labels.device)
        wrong = robust & (p != labels)
        pred[wrong] = p[wrong]
        robust &= ~wrong
    return robust, pred


def check_linf(adversarial: Tensor, images: Tensor, eps: float, name: str) -> None:
    """Raise a ``ValueError`` naming attack ``name`` if ``adversarial`` leaves the eps-ball or [0, 1]."""
    if adversarial.shape != images.shape:
        raise ValueError(f"attack {name!r} returned shape {tuple(adversarial.shape)} for images of shape "
                         f"{tuple(images.shape)}")
    if adversarial.numel() == 0:
        return
    linf = (adversarial - images).flatten(1).abs().amax(1)
    if (linf > eps + _LINF_SLACK).any() or adversarial.min() < 0 or adversarial.max() > 1:
        raise ValueError(f"attack {name!r} left the L-inf ball of eps={eps:g} or [0, 1] (max |delta| "
                         f"{float(linf.max()):g}, range [{float(adversarial.min()):g}, {float(adversarial.max()):g}])")


class Ensemble:
    """Members run in order on the survivors; the worst case per example (module docstring).

    Args:
        members: ``(name, attack)`` pairs; ``attack(images, labels)`` returns adversarial images of
            the same shape (torchattacks' calling convention).
        eps: the L-inf budget every member's output is checked against, in [0, 1].
        evaluate: the model that judges robustness (the real defense); ``None``: ``model``.
        draws: calls of ``evaluate`` per example in the final judgement (>= 1; see the rule above).
        model: the attacked model (only used as the default ``evaluate``).
        batch_size: most examples per member call (``None``: all survivors in one call). The
            memory of a gradient pass grows with the images in it, so an attacked model that
            evaluates ``n`` draws per image (EOT) is best attacked ``batch_size = budget // n``
            examples at a time; results do not depend on it beyond the attacks' random starts.

    Calling ``ensemble(images, labels)`` returns ``run(images, labels).adversarial``.
    """

    def __init__(self, members: Sequence[tuple[str, Callable[[Tensor, Tensor], Tensor]]], eps: float,
                 evaluate: nn.Module | None = None, draws: int = 1, model: nn.Module | None = None,
                 batch_size: int | None = None):
        members = list(members)
        if not members:
            raise ValueError("Ensemble: members must hold at least one (name, attack) pair, got none")
        for m in members:
            if not (isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and callable(m[1])):
                raise TypeError(f"Ensemble: every member must be a (name, attack) pair with a callable attack, "
                                f"got {m!r}")
        if evaluate is None and model is None:
            raise TypeError("Ensemble: give evaluate (the model that judges robustness) or model")
        self.members = members
        self.eps = check_real(eps, "eps", 0.0, 1.0)
        self.evaluate = evaluate if evaluate is not None else model
        self.draws = check_int(draws, "draws", 1)
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", 1)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.members]

    def __repr__(self) -> str:
        return f"Ensemble({' -> '.join(self.names)}, eps={self.eps:g}, draws={self.draws})"

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.run(images, labels).adversarial

    def run(self, images: Tensor, labels: Tensor, active: Tensor | None = None) -> EnsembleResult:
        """Attack ``images`` ``(B, C, H, W)`` in [0, 1] with true ``labels`` ``(B,)``.

        ``active``: ``(B,)`` bool, the examples to attack (e.g. those still robust at a smaller eps);
        the others are reported as not robust, keep their clean image and get the prediction ``-1``
        (not judged). ``None``: the examples ``evaluate`` classifies correctly on all ``draws`` calls
        (the others keep their clean image and its wrong prediction).
        """
        images, labels = images.detach(), labels.detach()
        if images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(f"Ensemble.run: images must be (B, C, H, W) and labels (B,), got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        if active is None:
            active, pred = judge(self.evaluate, images, labels, self.draws)
        elif isinstance(active, Tensor) and active.dtype == torch.bool and active.shape == labels.shape:
            pred = torch.where(active.to(labels.device), labels, torch.full_like(labels, -1))
        else:
            raise ValueError(f"Ensemble.run: active must be a bool tensor of shape {tuple(labels.shape)}, "
                             f"got {active!r}")
        robust = active.to(labels.device).clone()
        adv = images.clone()
        broken_by = torch.full_like(labels, -1)
        attacked = torch.zeros_like(labels)
        remaining = {}
        for k, (name, attack) in enumerate(self.members):
            idx = robust.nonzero().flatten()
            if idx.numel() > 0:
                step = idx.numel() if self.batch_size is None else self.batch_size
                a = torch.cat([attack(images[part], labels[part]).detach() for part in idx.split(step)])
                check_linf(a, images[idx], self.eps, name)
                ok, p = judge(self.evaluate, a, labels[idx], self.draws)
                adv[idx], pred[idx] = a, p
                attacked[idx] += 1
                broken_by[idx[~ok]] = k
                robust[idx[~ok]] = False
            remaining[name] = int(robust.sum())
        return EnsembleResult(adv, robust, pred, broken_by, attacked, remaining)


def _num_classes(model: nn.Module, images: Tensor) -> int:
    with torch.no_grad():
        return int(model(images[:1]).shape[1])


class _Targeted:
    """torchattacks' APGDT with ``targets`` checked against the model's number of classes at call time."""

    def __init__(self, model: nn.Module, attack, targets: int):
        self.model, self.attack, self.targets = model, attack, targets

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        k = _num_classes(self.model, images)
        if self.targets > k - 1:
            raise ValueError(f"standard ensemble: targets={self.targets} target classes need a model with at least "
                             f"{self.targets + 1} classes, this one has {k}; pass targets={k - 1} or fewer")
        return self.attack(images, labels)


def standard(model: nn.Module, eps: float = 8 / 255, steps: int = 100, restarts: int = 1, targets: int = 9,
             square: bool = False, queries: int = 5000, evaluate: nn.Module | None = None, draws: int = 1,
             seed: int = 0, batch_size: int | None = None) -> Ensemble:
    """AutoAttack's gradient members from torchattacks: APGD-CE, then APGD-T with the DLR loss.

    Args:
        model: the attacked model (logits out; a DefendedModel with BPDA/EOT in its graph).
        eps: L-inf budget in [0, 1].
        steps: iterations of each APGD run (AutoAttack: 100); restarts: random restarts of APGD-CE
            (and Square). APGD-T runs once per target class whatever ``restarts`` is: its target
            classes are its restarts, as in every version of AutoAttack (``apgd_targeted.n_restarts
            = 1`` even in its stronger ``plus`` version, which raises only APGD-CE's restarts).
        targets: number of target classes of APGD-T, the highest-scoring classes other than the
            true one (AutoAttack: 9; torchattacks' ``n_classes = targets + 1``).
        square: also run torchattacks' Square (margin loss, ``queries`` queries per restart) last,
            as a gradient-free cross-check.
        evaluate, draws, batch_size: the judging model, the draws per example and the most
            examples per member call (see :class:`Ensemble`).
        seed: the seed torchattacks' APGD/APGDT/Square set before their random starts.
    """
    import torchattacks

    eps = check_real(eps, "eps", 0.0, 1.0)
    steps, restarts = check_int(steps, "steps", 1), check_int(restarts, "restarts", 1)
    targets, queries = check_int(targets, "targets", 1), check_int(queries, "queries", 1)
    seed = check_int(seed, "seed", 0)
    if not isinstance(square, bool):
        raise TypeError(f"square must be True or False, got {square!r}")
    members = [
        ("apgd-ce", torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=restarts, loss="ce",
                                      seed=seed)),
        ("apgd-t", _Targeted(model, torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                                                       n_classes=targets + 1, seed=seed), targets)),
    ]
    if square:
        members.append(("square", torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries,
                                                      n_restarts=restarts, seed=seed)))
    return Ensemble(members, eps, evaluate=evaluate, draws=draws, model=model, batch_size=batch_size)


def _attack_list(attacks) -> list[str]:
    if isinstance(attacks, str):
        attacks = [a for a in attacks.replace("+", " ").split() if a]
    if not isinstance(attacks, (list, tuple)) or not attacks or any(a not in _AUTOATTACK_MEMBERS for a in attacks):
        raise ValueError(f"attacks must be a non-empty list (or a '+'-joined string) of {_AUTOATTACK_MEMBERS}, "
                         f"got {attacks!r}")
    return list(attacks)


class _AutoAttackRun:
    """One call of ``pyautoattack.AutoAttack.run_standard_evaluation`` on a batch."""

    def __init__(self, adversary):
        self.adversary = adversary

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        x_adv, _ = self.adversary.run_standard_evaluation(images, labels, batch_size=max(1, images.shape[0]))
        return x_adv


def autoattack(model: nn.Module, eps: float = 8 / 255, version: str = "standard", attacks=None,
               steps: int | None = None, queries: int | None = None, restarts: int | None = None,
               targets: int | None = None, evaluate: nn.Module | None = None, draws: int = 1, seed: int = 0,
               batch_size: int | None = None) -> Ensemble:
    """pyautoattack's ``AutoAttack`` (Croce & Hein, 2020) on ``model``, as a one-member :class:`Ensemble`.

    Args:
        model: the attacked model (logits out); ``eps``: L-inf budget.
        version: AutoAttack's ``standard`` (APGD-CE, APGD-T, FAB-T, Square), ``rand`` (APGD-CE and
            APGD-DLR with EOT over 20 draws, for randomized defenses), ``plus`` or ``custom``
            (then ``attacks``: a list or ``"apgd-ce+apgd-t"``).
        steps: iterations of its APGD and FAB runs (``None``: AutoAttack's 100); queries: Square's
            queries (``None``: 5000); restarts: restarts of APGD-CE (``None``: the version's);
            targets: target classes of APGD-T and FAB-T (``None``: AutoAttack's 9; at most the
            model's number of classes minus one).
        evaluate, draws, batch_size: the judging model, the draws per example and the most
            examples per call (see :class:`Ensemble`); AutoAttack's own bookkeeping judges by ``model``.
        seed: AutoAttack's seed.
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the autoattack entry needs the pyautoattack package: pip install pyautoattack") from e
    import logging

    eps = check_real(eps, "eps", 0.0, 1.0)
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"version must be one of {AUTOATTACK_VERSIONS}, got {version!r}")
    if (attacks is None) != (version != "custom"):
        raise ValueError(f"attacks is given exactly when version='custom' (got version={version!r}, "
                         f"attacks={attacks!r})")
    chosen = _attack_list(attacks) if attacks is not None else None
    seed = check_int(seed, "seed", 0)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    adversary = AutoAttack(model, attacks=chosen, device=device, eps=eps, norm="Linf", seed=seed, version=version)
    adversary.logger = logging.getLogger("diffjpeg.autoattack")  # its progress lines at DEBUG, not on stdout
    for sub in (adversary.apgd, adversary.apgd_targeted):
        sub.logger = adversary.logger
    if steps is not None:
        steps = check_int(steps, "steps", 1)
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = adversary.fab.n_iter = steps
    if queries is not None:
        adversary.square.n_queries = check_int(queries, "queries", 1)
    if restarts is not None:
        adversary.apgd.n_restarts = check_int(restarts, "restarts", 1)
    if targets is not None:
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = check_int(targets, "targets", 1)
    name = f"autoattack-{version}" + (f"({'+'.join(chosen)})" if chosen else "")
    return Ensemble([(name, _AutoAttackRun(adversary))], eps, evaluate=evaluate, draws=draws, model=model,
                    batch_size=batch_size)


def from_specs(specs: Sequence, model: nn.Module, eps: float, evaluate: nn.Module | None = None,
               draws: int = 1, batch_size: int | None = None, restarts: int = 1, **shared) -> Ensemble:
    """An :class:`Ensemble` of registry attacks, e.g. ``["apgd:loss=ce", "apgdt:n_classes=10", "square"]``.

    Args:
        specs: attack specs, as strings or parsed (objects with ``text``, ``name`` and ``kwargs``,
            such as the benchmark's ``Spec``); each is built with :func:`diffjpeg.attacks.build` on
            ``model`` at ``eps``. A spec naming an ensemble (``standard``, ``autoattack``) contributes
            all its members.
        restarts: runs of each member, each on the examples still robust: passed as ``restarts``
            or ``n_restarts`` to a member that has such a parameter, otherwise the member is
            listed ``restarts`` times.
        shared: values (e.g. ``steps=20``) for every member that has that parameter and does not
            set it itself.
        evaluate, draws, batch_size: see :class:`Ensemble`.
    """
    from ..spec import parse_spec
    from .registry import ATTACKS, build

    if isinstance(specs, str) or not specs:
        raise ValueError(f"specs must be a non-empty list of attack specs, got {specs!r}")
    restarts = check_int(restarts, "restarts", 1)
    members = []
    for spec in specs:
        if isinstance(spec, str):
            text, (name, given) = spec, parse_spec(spec, "attack spec")
        else:
            text, name, given = spec.text, spec.name, dict(spec.kwargs)
        params = ATTACKS.parameters(name)
        if "eps" not in params:
            raise ValueError(f"attack {name!r} has no eps parameter; an ensemble needs L-inf attacks with a budget eps")
        extra = {k: v for k, v in shared.items() if k in params and k not in given}
        runs = next((k for k in ("restarts", "n_restarts") if k in params), None)
        if runs is not None and runs not in given:
            extra[runs] = restarts
        attack = build(name, model, **{**given, **extra, "eps": eps})
        if isinstance(attack, Ensemble):
            members += attack.members
        else:
            members += [(text, attack)] * (1 if runs is not None else restarts)
    return Ensemble(members, eps, evaluate=evaluate, draws=draws, model=model, batch_size=batch_size)
