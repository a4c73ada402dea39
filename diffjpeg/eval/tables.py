"""The benchmark's outputs: merged per-example results, the summary, the markdown table and the plot.

``merge`` reads every unit file of a run into one list of per-example records (``results.jsonl``),
``summarize`` turns them into one summary line per table row with its masking checks, and
``write_report`` writes ``table.md``, ``summary.json`` and ``robust_accuracy.png``.

Every accuracy carries its 95 % Clopper-Pearson interval (:func:`diffjpeg.eval.stats.proportion_interval`):
``summary.json`` holds it beside the accuracy (``robust_ci``, ``clean_ci``, ...), ``table.md`` prints
it in brackets, the plot draws it as error bars.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import torch

from ..files import atomic_write, strict_json
from . import checks, threats
from .config import BenchConfig, attack_name
from .stats import proportion_interval
from .tasks import (
    ATTACK,
    ATTACK_2X_STEPS,
    ATTACK_4X_BUDGET,
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
    atomic_write(out / "results.jsonl", lambda f: f.writelines(strict_json(r) + "\n" for r in records), mode="w")
    return {"records": records, "seconds": dict(seconds), "examples": examples}


def _accuracy(recs: list[dict]) -> float | None:
    return fmean(r["robust"] for r in recs) if recs else None


def _interval(outcomes: list[bool]) -> list[float] | None:
    """The 95 % Clopper-Pearson interval of the share of True in ``outcomes`` (``None`` if empty)."""
    return list(proportion_interval(sum(outcomes), len(outcomes))) if outcomes else None


def summarize(cfg: BenchConfig, rows: list[Row], merged: dict) -> list[dict]:
    """One dict per row: accuracies (fractions) with their 95 % intervals, quality, time per image,
    and its masking checks.

    ``robust``, ``fgsm`` and ``attack_4x_budget`` hold one accuracy per eps (the configured attack's,
    FGSM's, check B's run); ``attack_2x_steps``, ``attack_large_eps`` and ``attack_fixed_randomness``
    the other checks' runs (``None`` where the row has none). Each
    accuracy ``key`` has its interval ``[lo, hi]`` under ``key_ci`` (a list per eps for the lists);
    ``examples`` is the number of examples ``n`` behind every accuracy.
    """
    recs, n = merged["records"], merged["examples"]
    clean_outcomes = [r["clean"] == r["label"] for r in recs if r.get("kind") == "clean"]
    clean = fmean(clean_outcomes)
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

        def ci(role: str, eps: float, row: Row = row) -> list[float] | None:
            return _interval([r["robust"] for r in by[row.defense, row.threat, role, eps]])

        d = defended.get(row.defense, [])
        defended_outcomes = [r["defended"] == r["label"] for r in d] if d else clean_outcomes
        line = {
            "defense": row.defense, "threat": row.threat, "examples": n,
            "clean": clean, "clean_ci": _interval(clean_outcomes),
            "defended": fmean(defended_outcomes), "defended_ci": _interval(defended_outcomes),
            "robust": [get(ATTACK, e) for e in cfg.eps], "robust_ci": [ci(ATTACK, e) for e in cfg.eps],
            "fgsm": [get(FGSM, e) for e in cfg.eps], "fgsm_ci": [ci(FGSM, e) for e in cfg.eps],
            ATTACK_4X_BUDGET: [get(ATTACK_4X_BUDGET, e) for e in cfg.eps],
            ATTACK_4X_BUDGET + "_ci": [ci(ATTACK_4X_BUDGET, e) for e in cfg.eps],
            "psnr": fmean(math.inf if r["psnr"] is None else r["psnr"] for r in d) if d else None,  # None: identical
            "ssim": fmean(r["ssim"] for r in d if r["ssim"] is not None) if d and d[0]["ssim"] is not None else None,
            "seconds_per_image": merged["seconds"].get(row_task(i, row), 0.0) / max(n, 1),
        }
        for role, eps in ((ATTACK_2X_STEPS, cfg.eps[-1]), (ATTACK_LARGE_EPS, cfg.large_eps),
                          (ATTACK_FIXED_RANDOMNESS, cfg.eps[-1])):
            line[role], line[role + "_ci"] = get(role, eps), ci(role, eps)
        zero = [r["zero_grad"] for r in by[row.defense, row.threat, ATTACK, cfg.eps[0]] if "zero_grad" in r]
        line["zero_grad"] = fmean(zero) if zero else None
        lines.append(line)
    gray = {ln["defense"]: ln for ln in lines if ln["threat"] == "graybox"}
    for row, ln in zip(rows, lines):
        ln["checks"] = [c.__dict__ for c in _checks(cfg, row, ln, gray.get(ln["defense"]))]
    return lines


def _checks(cfg: BenchConfig, row: Row, ln: dict, gray: dict | None) -> list[checks.Check]:
    """The masking checks of one summary line: those its threat model names, where the run measured them."""
    tol, out, needs, name, n = cfg.tolerance, [], row.threat_model.checks, attack_name(cfg), ln["examples"]
    for k, e in enumerate(cfg.eps):
        if "F" in needs and ln["fgsm"][k] is not None:
            out.append(checks.single_step(ln["robust"][k], ln["fgsm"][k], tol, e, attack=name))
        if "G" in needs and gray is not None:
            out.append(checks.white_below_gray(ln["robust"][k], gray["robust"][k], tol, e))
        if "B" in needs and ln[ATTACK_4X_BUDGET][k] is not None:
            out.append(checks.budget(round(ln["robust"][k] * n), round(ln[ATTACK_4X_BUDGET][k] * n), n, tol, e))
    if "S" in needs and ln[ATTACK_2X_STEPS] is not None:
        out.append(checks.more_steps(ln["robust"][-1], ln[ATTACK_2X_STEPS], tol, cfg.eps[-1], n=n))
    if "E" in needs:
        out.append(checks.large_eps(ln[ATTACK_LARGE_EPS], cfg.large_eps, cfg.max_large_eps_accuracy))
    if "R" in needs and ln[ATTACK_FIXED_RANDOMNESS] is not None:
        out.append(checks.fixed_randomness(ln[ATTACK_FIXED_RANDOMNESS], ln["robust"][-1], tol, cfg.eps[-1]))
    if "Z" in needs and ln["zero_grad"] is not None:
        out.append(checks.zero_gradients(ln["zero_grad"], cfg.max_zero_gradients))
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _with_ci(v: float | None, ci: list[float] | None) -> str:
    """``"10.0 [1.2, 31.7]"``: the accuracy and its 95 % interval, in %."""
    return _pct(v) if v is None or ci is None else f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _columns(cfg: BenchConfig) -> list[str]:
    """One line per column of the table, for its legend."""
    return [
        "clean: accuracy of the undefended model on the clean images",
        "defended: accuracy of the defended model on the clean images",
        (f"ε=E: robust accuracy under the attack {attack_name(cfg)} with L-inf budget E: an example counts when the "
         "defended model classifies its clean and its adversarial image correctly (a randomized defense: on every "
         f"one of {cfg.eot_samples} draws); an ensemble runs each member on the examples still robust and keeps "
         "the worst case per example; adaptive rows attack eps in increasing order, each on the examples still "
         "robust"),
        "[lo, hi]: the 95 % Clopper-Pearson interval of every accuracy (n examples, binomial)",
        "PSNR (dB), SSIM (1: identical): of the defended clean images against the clean images",
        "s/img: seconds per image of the row's attacks (the gray-box rows share one attack and show its time)",
        "checks: the masking checks that failed (ok: none)",
    ]


def markdown(cfg: BenchConfig, lines: list[dict], n: int) -> str:
    """The table (robust accuracy in %, failed check codes beside each number) and its legend."""
    head = ["defense", "threat model", "clean", "defended"] + [f"ε={checks.eps_name(e)}" for e in cfg.eps]
    head += ["PSNR", "SSIM", "s/img", "checks"]
    title = _title(cfg, n) + "; accuracy in % [95 % interval]"
    versions = (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) "
                "(both can change a few verdicts)")
    out = [title, versions, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        failed = {c["code"] for c in ln["checks"] if not c["passed"]}
        cells = []
        for k, e in enumerate(cfg.eps):  # a check about this eps, or about the whole row, is flagged beside the number
            here = {c["code"] for c in ln["checks"] if not c["passed"] and c["eps"] in (e, None)}
            cells.append(_with_ci(ln["robust"][k], ln["robust_ci"][k]) + (f" ⚠{''.join(sorted(here))}" if here else ""))
        ssim = "–" if ln["ssim"] is None else f"{ln['ssim']:.3f}"
        psnr = "–" if ln["psnr"] is None else f"{min(ln['psnr'], 99):.1f}"
        status = "⚠ " + "".join(sorted(failed)) if failed else "ok"
        out.append("| " + " | ".join([ln["defense"], ln["threat"], _pct(ln["clean"]),
                                      _with_ci(ln["defended"], ln["defended_ci"]), *cells,
                                      psnr, ssim, f"{ln['seconds_per_image']:.2f}", status]) + " |")
    out += ["", "Columns:"] + [f"- {text}" for text in _columns(cfg)]
    out += ["", "Threat models:"]
    out += [f"- {t.name}: {t.definition}" for t in dict.fromkeys(threats.get(ln["threat"]) for ln in lines)]
    out += ["", (f"Checks (⚠X: check X failed; the attack is {attack_name(cfg)}; gray-box rows are transfer "
                 "attacks from the undefended model, checked through its whitebox row):")]
    out += [f"- {code}: {text}" for code, text in checks.CHECKS.items()]
    failures = [(ln, c) for ln in lines for c in ln["checks"] if not c["passed"]]
    if failures:
        out += ["", "Failed checks:"]
        out += [f"- {ln['defense']} / {ln['threat']}: {c['code']} ({c['message']})" for ln, c in failures]
    return "\n".join(out) + "\n"


def _title(cfg: BenchConfig, n: int) -> str:
    return (f"{cfg.model} on {cfg.data} (n={n}), attack {attack_name(cfg)}, {cfg.steps} steps, "
            f"{cfg.restarts} restart(s), EOT {cfg.eot_samples}")


#: line styles cycled with the colours, so that neighbouring defenses differ in two ways
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")


def plot(cfg: BenchConfig, lines: list[dict], path: Path) -> None:
    """Robust accuracy vs eps with 95 % intervals: one panel per threat model, one line per defense
    (eps 0: defended clean), the undefended model (black) in every panel.

    Each defense keeps its colour, marker and line style in every panel (tab10 colours, so no two
    lines share a light pair) and a small sideways offset, so equal numbers do not hide each other;
    an accuracy whose masking check failed is drawn as a red cross over its marker. The title names
    the model, data, n, attack and steps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threats = list(dict.fromkeys(ln["threat"] for ln in lines if ln["threat"] != "whitebox")) or ["whitebox"]
    others = [d for d in cfg.defenses if d != "none"]
    look = {d: dict(color=plt.get_cmap("tab10")(i % 10), marker=_MARKERS[i % len(_MARKERS)],
                    linestyle=_STYLES[(i // 10 + i) % len(_STYLES)]) for i, d in enumerate(others)}
    look["none"] = dict(color="black", marker="o", linestyle="-")
    width = 3.8 * len(threats) + 2.6
    fig, axes = plt.subplots(1, len(threats), figsize=(width, 4.0), squeeze=False, sharey=True)
    xs = [0.0] + [e * 255 for e in cfg.eps]  # in 1/255 units
    order = {d: i for i, d in enumerate(cfg.defenses)}
    dodge = 0.012 * xs[-1]  # lines with equal numbers are shifted sideways instead of hiding each other
    flagged_any = False
    for ax, threat in zip(axes[0], threats):
        for ln in lines:
            if ln["threat"] not in (threat, "whitebox"):
                continue
            shift = dodge * (order[ln["defense"]] - (len(order) - 1) / 2)
            xd = [x + shift for x in xs]
            ys = [ln["defended"]] + ln["robust"]
            cis = [ln["defended_ci"]] + ln["robust_ci"]
            lo = [100 * (y - c[0]) for y, c in zip(ys, cis)]
            hi = [100 * (c[1] - y) for y, c in zip(ys, cis)]
            ax.errorbar(xd, [100 * y for y in ys], yerr=[lo, hi], capsize=2, ms=4, lw=1.3, elinewidth=0.8,
                        alpha=0.9, label=ln["defense"], **look[ln["defense"]])
            for k, e in enumerate(cfg.eps):  # a failed check about this eps or the whole row
                if any(not c["passed"] and c["eps"] in (e, None) for c in ln["checks"]):
                    ax.plot(xd[k + 1], 100 * ln["robust"][k], marker="x", ms=10, mew=2, color="red", zorder=5)
                    flagged_any = True
        ax.set(title=threat, xlabel="eps (/255)", ylim=(-3, 103))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%), 95 % interval")
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    names = [d for d in cfg.defenses if d in handles]
    legend_h, legend_l = [handles[d] for d in names], names
    if flagged_any:
        legend_h.append(plt.Line2D([], [], marker="x", color="red", linestyle="", ms=8, mew=2))
        legend_l.append("masking check failed")
    fig.legend(legend_h, legend_l, loc="center right", fontsize=7)
    fig.suptitle(_title(cfg, lines[0]["examples"] if lines else 0), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / width, 0.95))
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(out: Path, cfg: BenchConfig, rows, merged: dict) -> dict:
    """Write ``table.md``, ``summary.json`` and ``robust_accuracy.png``; return the summary."""
    lines = summarize(cfg, rows, merged)
    summary = {"config": cfg.identity(), "examples": merged["examples"], "eps": cfg.eps, "rows": lines}
    atomic_write(out / "summary.json", lambda f: f.write(strict_json(summary, indent=1)), mode="w")
    atomic_write(out / "table.md", lambda f: f.write(markdown(cfg, lines, merged["examples"])), mode="w")
    plot(cfg, lines, out / "robust_accuracy.png")
    return summary
