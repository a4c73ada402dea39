"""bench/anchors.py: its tables put each benchmark row beside the paper's number, with intervals and flags."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from diffjpeg.eval.stats import proportion_interval

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def anchors():
    spec = importlib.util.spec_from_file_location("anchors", ROOT / "bench" / "anchors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(defense, threat, robust, failed=()):
    n = 20
    return {"defense": defense, "threat": threat, "defended": 0.85, "defended_ci": list(proportion_interval(17, n)),
            "robust": robust, "robust_ci": [list(proportion_interval(round(r * n), n)) for r in robust],
            "checks": [{"code": c, "passed": False, "eps": e} for c, e in failed]}


def test_bench_table_rows_intervals_flags_and_paper_column(anchors):
    eps = [2 / 255, 8 / 255]
    summary = {"eps": eps, "examples": 20,
               "config": {"model": "m", "data": "d", "attack": ["pgd", "standard:targets=3"], "steps": 5},
               "rows": [_row("fd", "graybox", [0.5, 0.1]), _row("fd", "bpda", [0.1, 0.0], [("B", eps[0])]),
                        _row("median:kernel=3", "surrogate", [0.0, 0.0], [("Z", None)]),
                        _row("jpeg:q=20", "bpda", [0.25, 0.0])]}
    table = anchors.bench_table(summary, anchors.FD_PAPER, "paper")
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| defense | threat model | defended | ε=2/255 | ε=8/255 | paper |"
    assert len(lines) == 3  # header, fd / bpda, jpeg:q=20 / bpda: no gray-box row, no row the paper lacks
    assert lines[1] == "| fd | bpda | 85.0 [62.1, 96.8] | 10.0 [1.2, 31.7] ⚠B | 0.0 [0.0, 16.8] | 10 % (77 % clean) |"
    assert lines[2].startswith("| jpeg:q=20 | bpda |") and lines[2].endswith("| 34 % |") and "⚠" not in lines[2]
    assert "attack pgd + standard:targets=3, 5 steps" in table and "n=20" in table


def test_topa_paper_columns_follow_the_stages(anchors):
    # TopaResult.stages with an attack: clean, after attack, after JPEG, after TOPA (Table I of seed 000)
    assert all(len(stages) == 4 for stages in anchors.TOPA_PAPER.values())
    assert anchors.TOPA_PAPER[20][2] == "48.5" and anchors.TOPA_PAPER[40][3] == "16.8"
