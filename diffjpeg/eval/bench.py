"""``diffjpeg bench`` and :func:`run_benchmark`: defenses under attacks and threat models, resumable.

The work is cut into **units**, one per (batch of examples, task), and every unit's per-example
records are written atomically to ``OUT/units/`` as soon as it finishes; a restarted run with the
same configuration skips the units on disk (so a kill loses at most the unit in flight), and a run
with a changed configuration refuses to mix results unless ``restart`` is set. Under ``torchrun``
the batches are shared out across ranks (batch ``b`` goes to rank ``b mod world_size``) and rank 0
merges everything into ``results.jsonl``, ``table.md``, ``summary.json`` and ``robust_accuracy.png``.

Tasks per batch:

* ``clean`` -- the undefended prediction, and per defense its prediction and the PSNR/SSIM of the
  defended clean image;
* ``graybox`` -- PGD (and FGSM) at every eps on the *undefended* model, evaluated through every
  defense (transfer: the defense is not in the attacker's graph);
* one task per (defense, adaptive threat model): the attack on the model with the defense in the
  graph (``bpda``: BPDA, identity backward; ``bpda_surrogate``: BPDA with the defense's surrogate;
  ``surrogate``: the surrogate forward and backward; ``bpda_eot``: EOT over the defense, through BPDA
  when it is not differentiable, for randomized defenses; ``whitebox``: the undefended model itself),
  evaluated through the real defense.

Adaptive attacks run eps in increasing order and attack only the examples still robust (an example
broken at a smaller eps is broken at every larger one), then the masking checks (FGSM, twice the
steps, a large eps, fixed randomness, zero gradients) of :mod:`diffjpeg.eval.checks`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks.registry import ATTACKS, build as build_attack
from ..defenses.registry import DEFENSES
from ..files import atomic_write
from ..spec import parse_spec
from ..wrappers import BPDA, EOT, DefendedModel
from .config import BenchConfig, load_config, validate
from ..metrics import psnr, ssim

__all__ = ["Row", "plan_rows", "run_benchmark", "main"]


@dataclass(frozen=True)
class Row:
    """One line of the table: a defense spec (``"none"`` for none) under a threat model."""

    defense: str
    threat: str


def _surrogate_is_identity(defense: nn.Module) -> bool:
    return isinstance(defense.surrogate(), nn.Identity)


def applies(threat: str, defense: nn.Module) -> bool:
    """Whether ``threat`` is a distinct attack on ``defense`` (duplicates of another row are skipped)."""
    if threat == "bpda_surrogate":  # for differentiable defenses this is the surrogate row
        return not _surrogate_is_identity(defense) and not defense.differentiable
    if threat == "surrogate":  # an identity surrogate in the graph is the gray-box attack
        return not _surrogate_is_identity(defense)
    if threat == "bpda_eot":
        return defense.randomized
    return True


def build_defense(spec: str, generator: torch.Generator | None = None, classifier: nn.Module | None = None):
    """The defense named by ``spec``, drawing from ``generator`` and given ``classifier`` if it takes them."""
    name, _ = parse_spec(spec, "defense spec")
    params = DEFENSES.parameters(name)
    extra = {}
    if "generator" in params and generator is not None:
        extra["generator"] = generator
    if "classifier" in params:
        extra["classifier"] = classifier
    return DEFENSES.build(spec, **extra)


def plan_rows(cfg: BenchConfig, classifier: nn.Module | None = None) -> list[Row]:
    """The table's rows for ``cfg``: ``none`` -> ``whitebox``; others under each threat model that applies."""
    rows = []
    for spec in cfg.defenses:
        if spec == "none":
            rows.append(Row("none", "whitebox"))
            continue
        defense = build_defense(spec, classifier=classifier)
        chosen = [adaptive(defense) if t == "adaptive" else t for t in cfg.threat_models]
        rows += [Row(spec, t) for t in dict.fromkeys(chosen) if applies(t, defense)]
    return rows


def adaptive(defense: nn.Module) -> str:
    """The one adaptive threat model ``adaptive`` selects: EOT for randomness, the gradient if there is one."""
    if defense.randomized:
        return "bpda_eot"
    return "surrogate" if defense.differentiable else "bpda"


# ------------------------------------------------------------------------------------------ helpers


class Context:
    """What every unit needs: the classifier with its normalisation, the data, the config."""

    def __init__(self, cfg: BenchConfig, classifier: nn.Module, mean, std, images: Tensor, labels: Tensor,
                 ids: list[str], device: torch.device):
        self.cfg, self.classifier, self.mean, self.std = cfg, classifier, mean, std
        self.images, self.labels, self.ids, self.device = images, labels, ids, device

    def model(self, defense=None) -> DefendedModel:
        with warnings.catch_warnings():  # evaluation models hold non-differentiable defenses on purpose
            warnings.simplefilter("ignore")
            return DefendedModel(self.classifier, defense, mean=self.mean, std=self.std).to(self.device).eval()

    def defense(self, spec: str, batch: int) -> nn.Module:
        """The defense for ``batch``, its randomness seeded by (seed, batch, defense) alone."""
        index = self.cfg.defenses.index(spec)
        g = torch.Generator(self.device).manual_seed(_seed(self.cfg.seed, batch, 1000 + index))
        return build_defense(spec, g, self.model()).to(self.device)

    def attack(self, model: nn.Module, eps: float, steps: int | None = None, spec: str | None = None):
        """The configured attack (or ``spec``) on ``model`` at ``eps``, with the step size 2.5 eps / steps."""
        spec = spec or self.cfg.attack
        name, given = parse_spec(spec, "attack spec")
        params = ATTACKS.parameters(name)
        steps = steps or self.cfg.steps
        extra: dict[str, Any] = {"eps": eps}
        if "steps" in params and "steps" not in given:
            extra["steps"] = steps
        if "alpha" in params and "alpha" not in given:
            extra["alpha"] = 2.5 * eps / steps
        return build_attack(spec, model, **extra)


def _seed(*parts: int) -> int:
    value = 0
    for p in parts:
        value = (value * 1_000_003 + int(p)) % (2 ** 62)
    return value


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1)


def _norms(adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    d = (adv - x).flatten(1)
    return d.abs().amax(1), d.norm(dim=1)


def _check_budget(adv: Tensor, x: Tensor, eps: float, attack: str) -> None:
    linf, _ = _norms(adv, x)
    if (linf > eps + 1e-5).any() or adv.min() < 0 or adv.max() > 1:
        raise ValueError(f"attack {attack!r} left the L-inf ball of eps={eps:g} or [0, 1] (max |delta| "
                           f"{float(linf.max()):g}); the benchmark's threat model is L-inf")


def attack_robust(ctx: Context, make: Callable[[], Any], evaluate: nn.Module, x: Tensor, y: Tensor,
                  active: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Attack the ``active`` examples (``restarts`` times, each on those still robust).

    Returns the adversarial images (clean where not attacked) and the defended predictions on them.
    """
    adv, pred = x.clone(), torch.full_like(y, -1)
    active = active.clone()
    for _ in range(ctx.cfg.restarts):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        a = make()(x[idx], y[idx]).detach()
        _check_budget(a, x[idx], eps, ctx.cfg.attack)
        p = predict(evaluate, a)
        adv[idx], pred[idx] = a, p
        active[idx[p != y[idx]]] = False
    return adv, pred


def zero_gradient_share(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per example, the share of input-gradient entries of the cross-entropy that are exactly 0."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (grad == 0).flatten(1).float().mean(1)


def _records(ctx: Context, batch: slice, row: Row, attack: str, eps: float, y: Tensor, defended: Tensor,
             x: Tensor, adv: Tensor, adv_pred: Tensor, **extra: Any) -> list[dict]:
    linf, l2 = _norms(adv, x)
    out = []
    for i in range(y.shape[0]):
        robust = bool(defended[i] == y[i]) and bool(adv_pred[i] == y[i])
        rec = {"defense": row.defense, "threat": row.threat, "attack": attack, "eps": eps,
               "id": ctx.ids[batch.start + i], "label": int(y[i]), "defended": int(defended[i]),
               "adversarial": int(adv_pred[i]), "robust": robust, "linf": float(linf[i]), "l2": float(l2[i])}
        rec.update({k: (float(v[i]) if isinstance(v, Tensor) else v) for k, v in extra.items()})
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------ tasks


def task_clean(ctx: Context, b: int, sl: slice) -> list[dict]:
    """Undefended predictions; per defense the defended prediction and PSNR/SSIM of its output."""
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    clean = predict(ctx.model(), x)
    recs = [{"kind": "clean", "id": ctx.ids[sl.start + i], "label": int(y[i]), "clean": int(clean[i])}
            for i in range(y.shape[0])]
    for spec in ctx.cfg.defenses:
        if spec == "none":
            continue
        defense = ctx.defense(spec, b)
        with torch.no_grad():
            xd = defense(x)
        pred = predict(ctx.model(), xd)
        for i in range(y.shape[0]):
            recs.append({"kind": "defended", "defense": spec, "id": ctx.ids[sl.start + i], "label": int(y[i]),
                         "defended": int(pred[i]), "psnr": psnr(xd[i], x[i]), "ssim": ssim(xd[i], x[i])})
    return recs


def task_graybox(ctx: Context, b: int, sl: slice, rows: list[Row]) -> list[dict]:
    """Transfer: PGD and FGSM on the undefended model at every eps, evaluated through each defense."""
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    bare = ctx.model()
    advs = {}
    for eps in ctx.cfg.eps:
        for name, make in (("pgd", lambda: ctx.attack(bare, eps)), ("fgsm", lambda: ctx.attack(bare, eps, spec="fgsm"))):
            a = make()(x, y).detach()
            _check_budget(a, x, eps, ctx.cfg.attack if name == "pgd" else "fgsm")
            advs[name, eps] = a
    recs = []
    for row in rows:
        defense = ctx.defense(row.defense, b)
        evaluate = ctx.model(defense)
        defended = predict(evaluate, x)  # first draw of a randomized defense: the same as in task_clean
        for (name, eps), a in advs.items():
            recs += _records(ctx, sl, row, name, eps, y, defended, x, a, predict(evaluate, a))
    return recs


def _attacked_model(ctx: Context, row: Row, defense: nn.Module, fixed: bool = False) -> nn.Module:
    if row.threat == "whitebox":
        return ctx.model()
    if fixed:  # the defense with its randomness frozen: one recorded draw, replayed on every call
        return ctx.model(EOT(BPDA(defense), n=1, fixed=True))
    graph = {"bpda": lambda: BPDA(defense, backward=nn.Identity()),
             "bpda_surrogate": lambda: BPDA(defense),
             "surrogate": defense.surrogate,
             "bpda_eot": lambda: EOT(defense if defense.differentiable else BPDA(defense), n=ctx.cfg.eot_samples),
             }[row.threat]()
    return ctx.model(graph)


def task_adaptive(ctx: Context, b: int, sl: slice, row: Row) -> list[dict]:
    """The attack with the defense in the graph, eps by eps on the survivors, then the masking checks."""
    cfg = ctx.cfg
    x, y = ctx.images[sl].to(ctx.device), ctx.labels[sl].to(ctx.device)
    defense = None if row.defense == "none" else ctx.defense(row.defense, b)
    evaluate = ctx.model(defense)
    defended = predict(evaluate, x)
    attacked = _attacked_model(ctx, row, defense)
    zero = zero_gradient_share(attacked, x, y)
    recs, robust = [], defended == y
    adv, pred = x, defended  # the examples the defense gets wrong need no attack
    for k, eps in enumerate(cfg.eps):  # examples broken at a smaller eps keep that adversarial example
        adv, pred = _worst(robust, *attack_robust(ctx, lambda: ctx.attack(attacked, eps), evaluate, x, y, robust, eps),
                           adv, pred)
        recs += _records(ctx, sl, row, "pgd", eps, y, defended, x, adv, pred, **({"zero_grad": zero} if k == 0 else {}))
        robust = robust & (pred == y)
        fgsm = ctx.attack(attacked, eps, spec="fgsm")(x, y).detach()
        _check_budget(fgsm, x, eps, "fgsm")
        recs += _records(ctx, sl, row, "fgsm", eps, y, defended, x, fgsm, predict(evaluate, fgsm))
    top = cfg.eps[-1]
    name, _ = parse_spec(cfg.attack, "attack spec")
    if "steps" in ATTACKS.parameters(name):
        more = attack_robust(ctx, lambda: ctx.attack(attacked, top, steps=2 * cfg.steps), evaluate, x, y, robust, top)
        recs += _records(ctx, sl, row, "pgd_2x", top, y, defended, x, *_worst(robust, *more, adv, pred))
    large = attack_robust(ctx, lambda: ctx.attack(attacked, cfg.large_eps), evaluate, x, y, robust, cfg.large_eps)
    recs += _records(ctx, sl, row, "pgd_large", cfg.large_eps, y, defended, x, *_worst(robust, *large, adv, pred))
    if defense is not None and defense.randomized:  # attacked and judged under the same frozen draws
        fixed = _attacked_model(ctx, row, defense, fixed=True)
        frozen = attack_robust(ctx, lambda: ctx.attack(fixed, top), fixed, x, y, defended == y, top)
        recs += _records(ctx, sl, row, "pgd_fixed", top, y, defended, x, *_worst(defended == y, *frozen, x, defended))
    return recs


def _worst(robust: Tensor, adv: Tensor, pred: Tensor, prev_adv: Tensor, prev_pred: Tensor) -> tuple[Tensor, Tensor]:
    """The new attack's example where the example was still ``robust``; elsewhere the earlier one's."""
    adv, pred = adv.clone(), pred.clone()
    adv[~robust], pred[~robust] = prev_adv[~robust], prev_pred[~robust]
    return adv, pred


# ------------------------------------------------------------------------------------------ runner


def _as_config(config: BenchConfig | dict | str | os.PathLike | None) -> BenchConfig:
    if config is None:
        return BenchConfig()
    if isinstance(config, BenchConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return BenchConfig.from_dict(load_config(config))
    if isinstance(config, dict):
        return BenchConfig.from_dict(config)
    raise TypeError(f"config must be a BenchConfig, a dict or a TOML file path, got {type(config).__name__}")


#: errors that mean "bad configuration or data": one line on the command line, no traceback
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError)


def _distributed(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """``(rank, world_size, device, joined)``; joins the process group when started by torchrun
    (``joined``: this call created it, so the run must destroy it)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device, joined
    return 0, 1, device, joined


def _on_all_ranks(fn: Callable[[], Any], rank: int, world: int) -> Any:
    """Run ``fn`` on rank 0 only; every rank gets its result or raises its error (no rank left waiting)."""
    if world == 1:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # re-raised on every rank below
            box[0] = (type(e), str(e))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind != "ok":
        raise (kind if kind in _USER_ERRORS else RuntimeError)(value)
    return value


def prepare_out(out: Path, cfg: BenchConfig) -> None:
    """Create ``out``; refuse a folder holding another configuration's results unless ``cfg.restart``."""
    stored = out / "config.json"
    if cfg.restart and out.exists():
        shutil.rmtree(out / "units", ignore_errors=True)
        stored.unlink(missing_ok=True)
    (out / "units").mkdir(parents=True, exist_ok=True)
    for stale in (out / "units").glob(".*.tmp"):  # left by a killed run's write in flight
        stale.unlink(missing_ok=True)
    if stored.is_file():
        old = json.loads(stored.read_text())
        if old.get("fingerprint") != cfg.fingerprint():
            new = cfg.identity()
            changed = sorted(k for k in set(old.get("config", {})) | set(new) if old.get("config", {}).get(k) != new.get(k))
            raise ValueError(f"{str(out)!r} holds results of a different configuration (changed: {', '.join(changed)}); "
                             f"pass --restart (restart = true) to discard them, or choose another --out")
        return
    atomic_write(stored, lambda f: f.write(json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.identity()},
                                                      indent=1)), mode="w")


def _unit_path(out: Path, batch: int, task: str) -> Path:
    return out / "units" / f"b{batch:05d}-{task}.json"


def run_benchmark(config: BenchConfig | dict | str | os.PathLike | None = None) -> dict:
    """Run the benchmark described by ``config`` (a :class:`BenchConfig`, a dict of its keys, or a
    TOML file; ``None``: the embedded default) and return the summary (also written to ``out``).

    Resumable: units already in ``out/units`` are skipped. Under ``torchrun`` each rank takes every
    ``world_size``-th batch and rank 0 writes the merged report (other ranks return it too).
    """
    cfg = _as_config(config)
    validate(cfg)
    rank, world, device, joined = _distributed(torch.device(cfg.device))
    try:
        return _run(cfg, rank, world, device)
    finally:
        if joined:  # a process group left alive can abort the interpreter at exit
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(cfg: BenchConfig, rank: int, world: int, device: torch.device) -> dict:
    from .datasets import load_dataset
    from .tables import merge, write_report
    from .zoo import load_model

    loaded = load_model(cfg.model, checkpoint=cfg.checkpoint, download=cfg.download, device=device)
    data = load_dataset(cfg.data, n=cfg.n, image_size=cfg.image_size or loaded.image_size, download=cfg.download)
    if data.images.shape[1] != loaded.channels:
        raise ValueError(f"data {cfg.data!r} has {data.images.shape[1]} channel(s) but model {cfg.model!r} expects "
                         f"{loaded.channels}")
    ctx = Context(cfg, loaded.model, loaded.mean, loaded.std, data.images, data.labels, data.ids, device)
    if data.labels is None:  # unlabelled photos: the undefended model's own predictions are the labels
        ctx.labels = torch.cat([predict(ctx.model(), data.images[i:i + cfg.batch_size].to(device)).cpu()
                                for i in range(0, len(data.ids), cfg.batch_size)])
    rows = plan_rows(cfg, ctx.model())
    out = Path(cfg.out)
    _on_all_ranks(lambda: prepare_out(out, cfg), rank, world)
    tasks = ["clean"] + (["graybox"] if any(r.threat == "graybox" for r in rows) else [])
    tasks += [f"row{i}" for i, r in enumerate(rows) if r.threat != "graybox"]
    batches = range(0, (len(data.ids) + cfg.batch_size - 1) // cfg.batch_size)
    todo = [(b, t) for b in batches if b % world == rank for t in tasks if not _unit_path(out, b, t).is_file()]
    for b, task in tqdm(todo, desc=f"bench (rank {rank})" if world > 1 else "bench", disable=not cfg.progress,
                        unit="unit", dynamic_ncols=True):
        sl = slice(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(data.ids)))
        start = time.perf_counter()
        torch.manual_seed(_seed(cfg.seed, b, tasks.index(task)))  # torchattacks' random starts use the global RNG
        if task == "clean":
            recs = task_clean(ctx, b, sl)
        elif task == "graybox":
            recs = task_graybox(ctx, b, sl, [r for r in rows if r.threat == "graybox"])
        else:
            recs = task_adaptive(ctx, b, sl, rows[int(task[3:])])
        unit = {"batch": b, "task": task, "fingerprint": cfg.fingerprint(), "examples": sl.stop - sl.start,
                "seconds": time.perf_counter() - start, "records": recs}
        atomic_write(_unit_path(out, b, task), lambda f: f.write(json.dumps(unit)), mode="w")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    summary = _on_all_ranks(lambda: write_report(out, cfg, rows, merge(out, cfg, rows, tasks, batches)), rank, world)
    if world > 1:
        dist.barrier()  # every rank has its summary before any rank tears the group down
    return summary


# ------------------------------------------------------------------------------------------ CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffjpeg bench", description="White-box robustness benchmark: defenses under attacks and threat models. "
        "With no arguments: the embedded default (EfficientNet-Lite0 on foolbox's ImageNet samples), offline.")
    p.add_argument("--config", help="TOML file with any of the keys below (flags win over it)")
    p.add_argument("--grid", choices=["default", "full"], help="start from this grid (full: all threat models, "
                   "five eps, 50 steps, 2 restarts, more defenses)")
    p.add_argument("--model", help="efficientnet_lite0 | small_cnn | torchvision:NAME | MODULE:FACTORY")
    p.add_argument("--checkpoint", help="state-dict file for the model (loaded with weights_only=True)")
    p.add_argument("--data", help="foolbox:imagenet|cifar10|... | imagefolder:PATH | cifar10:PATH | "
                   "fashion_mnist[:PATH] | skimage")
    # not "--n": torchrun's parser would take it for an abbreviation of its own --nnodes/--nproc-per-node
    p.add_argument("--examples", dest="n", type=int, help="number of examples, config key n (default: all)")
    p.add_argument("--image-size", type=int, help="resize+crop to this size (default: the model's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--defenses", nargs="+", metavar="SPEC", help="defense specs, e.g. none jpeg:q=75 median:kernel=3")
    p.add_argument("--threat-models", nargs="+", metavar="NAME", help="graybox bpda bpda_surrogate surrogate bpda_eot")
    p.add_argument("--attack", help="attack spec without eps, e.g. pgd, apgd:loss=ce, mifgsm:decay=1.0")
    p.add_argument("--eps", nargs="+", metavar="EPS", help="L-inf budgets, e.g. 2/255 8/255")
    p.add_argument("--steps", type=int)
    p.add_argument("--restarts", type=int)
    p.add_argument("--eot-samples", type=int)
    p.add_argument("--large-eps", help="eps of the 'accuracy reaches ~0' check (default 64/255)")
    p.add_argument("--tolerance", type=float, help="slack of the masking checks (fraction, default 0.05)")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output folder (default bench-results); rerunning resumes it")
    p.add_argument("--device", help="cpu | cuda | cuda:N")
    p.add_argument("--restart", action="store_true", default=None, help="discard results in --out and start over")
    p.add_argument("--download", action="store_true", default=None,
                   help="allow torchvision to download data/weights (needs internet)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    values = load_config(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return BenchConfig.from_dict({**values, **flags})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        summary = run_benchmark(cfg)
    except _USER_ERRORS as e:
        print(f"diffjpeg bench: error: {e}", file=sys.stderr)
        return 2
    if summary is not None:
        print(Path(cfg.out, "table.md").read_text())
        print(f"results in {cfg.out}/: results.jsonl, table.md, summary.json, robust_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
