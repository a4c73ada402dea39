"""The benchmark's outputs: merged per-example results, the summary, the markdown table and the plot.

``merge`` reads every unit file of a run into one list of per-example records (``results.jsonl``),
``summarize`` turns them into one summary line per table row with its masking checks, and
``write_report`` writes ``table.md``, ``summary.json`` and ``robust_accuracy.png``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from ..files import atomic_write
from . import checks, threats
from .config import BenchConfig
from .tasks import (
    ATTACK,
    ATTACK_2X_STEPS,
    ATTACK_FIXED_RANDOMNESS,
    ATTACK_LARGE_EPS,
    FGSM,
    Row,
    row_task,
)

__all__ = ["markdown", "merge", "plot", "summarize", "write_report"]


def merge(out: Path, cfg: BenchConfig, rows: list[Row], tasks: list[str], batches) -> dict:
    """All unit files of the run -> ``{"records": [...], "seconds": {task: s}, "examples": n}``.

    Every attack record gains the undefended (``clean``) prediction of its example. Writes
    ``results.jsonl`` (one record per line, in batch and task order).
    """
    records, seconds, examples, missing = [], defaultdict(float), 0, []
    for b in batches:
        for task in tasks:
            path = out / "units" / f"b{b:05d}-{task}.json"
            if not path.is_file():
                missing.append(path.name)
                continue
            unit = json.loads(path.read_text())
            records += unit["records"]
            seconds[task] += unit["seconds"]
            examples += unit["examples"] if task == "clean" else 0
    if missing:
        raise RuntimeError(f"{len(missing)} unit(s) missing in {str(out / 'units')!r} (e.g. {missing[0]}); "
                           f"rerun the same command to finish them")
    clean = {r["id"]: r["clean"] for r in records if r.get("kind") == "clean"}
    for r in records:
        r.setdefault("clean", clean[r["id"]])
    atomic_write(out / "results.jsonl", lambda f: f.writelines(json.dumps(r) + "\n" for r in records), mode="w")
    return {"records": records, "seconds": dict(seconds), "examples": examples}


def _accuracy(recs: list[dict]) -> float | None:
    return fmean(r["robust"] for r in recs) if recs else None


def summarize(cfg: BenchConfig, rows: list[Row], merged: dict) -> list[dict]:
    """One dict per row: accuracies (fractions), quality, time per image, and its masking checks.

    ``robust`` and ``fgsm`` hold one accuracy per eps (the configured attack's, FGSM's);
    ``attack_2x_steps``, ``attack_large_eps`` and ``attack_fixed_randomness`` the checks' runs
    (``None`` where the row has none).
    """
    recs, n = merged["records"], merged["examples"]
    clean = fmean(r["clean"] == r["label"] for r in recs if r.get("kind") == "clean")
    by = defaultdict(list)
    for r in recs:
        if "threat" in r:
            by[r["defense"], r["threat"], r["attack"], r["eps"]].append(r)
    defended = defaultdict(list)
    for r in recs:
        if r.get("kind") == "defended":
            defended[r["defense"]].append(r)
    lines = []
    for i, row in enumerate(rows):
        def get(role: str, eps: float, row: Row = row) -> float | None:
            return _accuracy(by[row.defense, row.threat, role, eps])

        d = defended.get(row.defense, [])
        line = {
            "defense": row.defense, "threat": row.threat, "clean": clean,
            "defended": fmean(r["defended"] == r["label"] for r in d) if d else clean,
            "robust": [get(ATTACK, e) for e in cfg.eps], "fgsm": [get(FGSM, e) for e in cfg.eps],
            "psnr": fmean(r["psnr"] for r in d) if d else None,
            "ssim": fmean(r["ssim"] for r in d if r["ssim"] is not None) if d and d[0]["ssim"] is not None else None,
            "seconds_per_image": merged["seconds"].get(row_task(i, row), 0.0) / max(n, 1),
            ATTACK_2X_STEPS: get(ATTACK_2X_STEPS, cfg.eps[-1]), ATTACK_LARGE_EPS: get(ATTACK_LARGE_EPS, cfg.large_eps),
            ATTACK_FIXED_RANDOMNESS: get(ATTACK_FIXED_RANDOMNESS, cfg.eps[-1]),
        }
        zero = [r["zero_grad"] for r in by[row.defense, row.threat, ATTACK, cfg.eps[0]] if "zero_grad" in r]
        line["zero_grad"] = fmean(zero) if zero else None
        lines.append(line)
    gray = {ln["defense"]: ln for ln in lines if ln["threat"] == "graybox"}
    for row, ln in zip(rows, lines):
        ln["checks"] = [c.__dict__ for c in _checks(cfg, row, ln, gray.get(ln["defense"]))]
    return lines


def _checks(cfg: BenchConfig, row: Row, ln: dict, gray: dict | None) -> list[checks.Check]:
    """The masking checks of one summary line: those its threat model names, where the run measured them."""
    tol, out, needs, name = cfg.tolerance, [], row.threat_model.checks, cfg.attack
    for k, e in enumerate(cfg.eps):
        if "F" in needs:
            out.append(checks.single_step(ln["robust"][k], ln["fgsm"][k], tol, e, attack=name))
        if "G" in needs and gray is not None:
            out.append(checks.white_below_gray(ln["robust"][k], gray["robust"][k], tol, e))
    if "S" in needs and ln[ATTACK_2X_STEPS] is not None:
        out.append(checks.more_steps(ln["robust"][-1], ln[ATTACK_2X_STEPS], tol, cfg.eps[-1]))
    if "E" in needs:
        out.append(checks.large_eps(ln[ATTACK_LARGE_EPS], cfg.large_eps, cfg.max_large_eps_accuracy))
    if "R" in needs and ln[ATTACK_FIXED_RANDOMNESS] is not None:
        out.append(checks.fixed_randomness(ln[ATTACK_FIXED_RANDOMNESS], ln["robust"][-1], tol, cfg.eps[-1]))
    if "Z" in needs and ln["zero_grad"] is not None:
        out.append(checks.zero_gradients(ln["zero_grad"], cfg.max_zero_gradients))
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _columns(cfg: BenchConfig) -> list[str]:
    """One line per column of the table, for its legend."""
    return [
        "clean: accuracy of the undefended model on the clean images",
        "defended: accuracy of the defended model on the clean images",
        (f"ε=E: robust accuracy under the attack {cfg.attack} with L-inf budget E: an example counts when the "
         "defended model classifies its clean and its adversarial image correctly; adaptive rows attack eps in "
         "increasing order, each on the examples still robust"),
        "PSNR (dB), SSIM (1: identical): of the defended clean images against the clean images",
        "s/img: seconds per image of the row's attacks (the gray-box rows share one attack and show its time)",
        "checks: the masking checks that failed (ok: none)",
    ]


def markdown(cfg: BenchConfig, lines: list[dict], n: int) -> str:
    """The table (robust accuracy in %, failed check codes beside each number) and its legend."""
    head = ["defense", "threat model", "clean", "defended"] + [f"ε={checks.eps_name(e)}" for e in cfg.eps]
    head += ["PSNR", "SSIM", "s/img", "checks"]
    title = (f"{cfg.model} on {cfg.data} (n={n}), attack {cfg.attack}, {cfg.steps} steps, {cfg.restarts} restart(s), "
             f"EOT {cfg.eot_samples}; accuracy in %")
    out = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        failed = {c["code"] for c in ln["checks"] if not c["passed"]}
        cells = []
        for k, e in enumerate(cfg.eps):  # a check about this eps, or about the whole row, is flagged beside the number
            here = {c["code"] for c in ln["checks"] if not c["passed"] and c["eps"] in (e, None)}
            cells.append(_pct(ln["robust"][k]) + (f" ⚠{''.join(sorted(here))}" if here else ""))
        ssim = "–" if ln["ssim"] is None else f"{ln['ssim']:.3f}"
        psnr = "–" if ln["psnr"] is None else f"{min(ln['psnr'], 99):.1f}"
        status = "⚠ " + "".join(sorted(failed)) if failed else "ok"
        out.append("| " + " | ".join([ln["defense"], ln["threat"], _pct(ln["clean"]), _pct(ln["defended"]), *cells,
                                      psnr, ssim, f"{ln['seconds_per_image']:.2f}", status]) + " |")
    out += ["", "Columns:"] + [f"- {text}" for text in _columns(cfg)]
    out += ["", "Threat models:"]
    out += [f"- {t.name}: {t.definition}" for t in dict.fromkeys(threats.get(ln["threat"]) for ln in lines)]
    out += ["", (f"Checks (⚠X: check X failed; the attack is {cfg.attack}; gray-box rows are transfer attacks from "
                 "the undefended model, checked through its whitebox row):")]
    out += [f"- {code}: {text}" for code, text in checks.CHECKS.items()]
    failures = [(ln, c) for ln in lines for c in ln["checks"] if not c["passed"]]
    if failures:
        out += ["", "Failed checks:"]
        out += [f"- {ln['defense']} / {ln['threat']}: {c['code']} ({c['message']})" for ln, c in failures]
    return "\n".join(out) + "\n"


def plot(cfg: BenchConfig, lines: list[dict], path: Path) -> None:
    """Robust accuracy under the configured attack vs eps: one panel per threat model, one line per
    defense (eps 0: defended clean).

    Each defense keeps its colour in every panel; the undefended model is the dashed line in all of them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threats = list(dict.fromkeys(ln["threat"] for ln in lines if ln["threat"] != "whitebox")) or ["whitebox"]
    colour = {d: plt.get_cmap("tab20")(i % 20) for i, d in enumerate(cfg.defenses)}
    fig, axes = plt.subplots(1, len(threats), figsize=(3.6 * len(threats) + 2.2, 3.4), squeeze=False)
    xs = [0.0] + [e * 255 for e in cfg.eps]  # in 1/255 units
    for ax, threat in zip(axes[0], threats):
        for ln in lines:
            if ln["threat"] in (threat, "whitebox"):
                ax.plot(xs, [100 * ln["defended"]] + [100 * a for a in ln["robust"]], marker="o", ms=3,
                        color=colour[ln["defense"]], linestyle="--" if ln["threat"] == "whitebox" else "-",
                        label=ln["defense"])
        ax.set(title=threat, xlabel="eps (/255)", ylim=(-3, 103))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"accuracy under {cfg.attack} (%)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend([handles[d] for d in cfg.defenses if d in handles], [d for d in cfg.defenses if d in handles],
               loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (3.6 * len(threats) + 2.2), 1))
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(out: Path, cfg: BenchConfig, rows, merged: dict) -> dict:
    """Write ``table.md``, ``summary.json`` and ``robust_accuracy.png``; return the summary."""
    lines = summarize(cfg, rows, merged)
    summary = {"config": cfg.identity(), "examples": merged["examples"], "eps": cfg.eps, "rows": lines}
    atomic_write(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=1)), mode="w")
    atomic_write(out / "table.md", lambda f: f.write(markdown(cfg, lines, merged["examples"])), mode="w")
    plot(cfg, lines, out / "robust_accuracy.png")
    return summary
