"""Row by row, two ``diffjpeg bench`` result folders on the same examples: robust accuracy with its 95 %
interval in each, and the exact McNemar test of the difference (paired on the examples).

    python bench/compare_bench_runs.py OLD_DIR NEW_DIR [--role attack] [--old-role pgd]

Prints a markdown table: one line per (defense, threat model, eps) present in both runs; ``only old`` /
``only new`` count the examples robust in one run but not the other; ``p`` is the two-sided exact
McNemar p-value (:func:`diffjpeg.eval.stats.paired_test`).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from diffjpeg.eval.checks import eps_name
from diffjpeg.eval.stats import paired_test, proportion_interval


def outcomes(folder: Path, role: str) -> dict[tuple, dict[str, bool]]:
    """``(defense, threat, eps) -> {example id: robust}`` of the records with ``attack == role``."""
    out: dict[tuple, dict[str, bool]] = defaultdict(dict)
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("attack") == role:
            out[r["defense"], r["threat"], r["eps"]][r["id"]] = bool(r["robust"])
    return out


def _cell(values: list[bool]) -> str:
    k, n = sum(values), len(values)
    lo, hi = proportion_interval(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--role", default="attack", help="records' attack role to compare (default: attack)")
    p.add_argument("--old-role", help="the role in OLD_DIR if it differs (runs before the role names: pgd)")
    args = p.parse_args(argv)
    old, new = outcomes(args.old, args.old_role or args.role), outcomes(args.new, args.role)
    print("| defense | threat model | ε | old | new | only old | only new | p (McNemar) |")
    print("|---|---|---|---|---|---|---|---|")
    for key in [k for k in old if k in new]:
        ids = sorted(set(old[key]) & set(new[key]))
        a, b = [old[key][i] for i in ids], [new[key][i] for i in ids]
        t = paired_test(a, b)
        print(f"| {key[0]} | {key[1]} | {eps_name(key[2])} | {_cell(a)} | {_cell(b)} | {t.only_a} | {t.only_b} "
              f"| {t.p_value:.3g} |")


if __name__ == "__main__":
    main()
