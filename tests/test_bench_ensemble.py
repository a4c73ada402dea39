"""The benchmark with attack ensembles: the budget check on a weakened attack, intervals in every
output, attack lists on the command line, and bounded gradient passes for EOT graphs."""
from __future__ import annotations

import json

import pytest
import torch
from test_bench import checkpoint, records, small_config  # noqa: F401  (checkpoint is a fixture)

from diffjpeg.eval import run_benchmark
from diffjpeg.eval.bench import config_from_args, parser
from diffjpeg.eval.config import attack_name, validate
from diffjpeg.eval.stats import proportion_interval


def _whitebox(checkpoint: str, out, steps: int) -> tuple[dict, dict]:  # noqa: F811
    """The undefended small CNN under the default ensemble at eps 16/255 with ``steps`` steps: its row and check B."""
    cfg = small_config(checkpoint, out, n=8, batch_size=8, defenses=["none"], threat_models=["graybox"],
                       eps=[16 / 255], steps=steps)
    row = run_benchmark(cfg)["rows"][0]
    return row, next(c for c in row["checks"] if c["code"] == "B")


def test_budget_check_flags_a_one_step_attack_and_is_silent_once_converged(checkpoint, tmp_path):  # noqa: F811
    row, b = _whitebox(checkpoint, tmp_path / "weak", steps=1)
    assert row["attack_4x_budget"][0] < row["robust"][0] and not b["passed"]
    assert "4x steps and 4x restarts" in b["message"] and "0 allowed" in b["message"]  # n = 8 < 100: no flip allowed
    line = next(ln for ln in (tmp_path / "weak" / "table.md").read_text().splitlines()
                if ln.startswith("| none | whitebox |"))
    assert "⚠B" in line
    budget = [r for r in records(tmp_path / "weak") if r.get("attack") == "attack_4x_budget"]
    assert len(budget) == 8 and all(r["linf"] <= 16 / 255 + 1e-5 for r in budget)
    row, b = _whitebox(checkpoint, tmp_path / "converged", steps=3)  # 3 steps already find all 4x steps find
    assert row["attack_4x_budget"][0] == row["robust"][0] > 0 and b["passed"]


@pytest.fixture(scope="module")
def weak(checkpoint, tmp_path_factory):  # noqa: F811
    """A small run of two defenses with a 1-step ensemble."""
    out = tmp_path_factory.mktemp("weak")
    cfg = small_config(checkpoint, out, n=8, defenses=["none", "jpeg:q=50"], threat_models=["graybox", "bpda"],
                       eps=[2 / 255, 8 / 255], steps=1)
    return run_benchmark(cfg), out


def test_every_accuracy_carries_its_interval(weak):
    summary, out = weak
    n = summary["examples"]
    for row in summary["rows"]:
        for key in ("clean", "defended", "attack_large_eps"):
            if row[key] is not None:
                k = round(row[key] * n)
                assert row[key + "_ci"] == pytest.approx(list(proportion_interval(k, n)))
        for acc, ci in zip(row["robust"], row["robust_ci"]):
            assert ci == pytest.approx(list(proportion_interval(round(acc * n), n)))
    assert json.loads((out / "summary.json").read_text())["rows"][0]["robust_ci"] == summary["rows"][0]["robust_ci"]
    table = (out / "table.md").read_text()
    lo, hi = summary["rows"][0]["robust_ci"][0]
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in table and "Clopper-Pearson" in table
    assert "attack pgd + standard:targets=3, 1 steps" in table.splitlines()[0]


def test_attack_lists_and_named_ensembles_on_the_command_line():
    cfg = config_from_args(parser().parse_args(["--attack", "apgd:loss=ce", "square:n_queries=10"]))
    assert cfg.attack == ["apgd:loss=ce", "square:n_queries=10"]
    assert attack_name(cfg) == "apgd:loss=ce + square:n_queries=10"
    assert [s.name for s in validate(cfg).attacks] == ["apgd", "square"]
    cfg = config_from_args(parser().parse_args(["--attack", "autoattack:version=rand"]))
    assert [s.kwargs for s in validate(cfg).attacks] == [{"version": "rand"}]
    assert config_from_args(parser().parse_args([])).attack == ["pgd", "standard:targets=3"]


def test_eot_graphs_are_attacked_a_few_examples_at_a_time():
    from diffjpeg.eval.config import BenchConfig
    from diffjpeg.eval.tasks import Context, per_call
    from diffjpeg.wrappers import EOT

    cfg = BenchConfig(batch_size=20, eot_samples=4)
    ctx = Context(cfg, validate(cfg), torch.nn.Identity(), None, None, torch.zeros(1, 3, 2, 2), None, ["a"], "cpu")
    assert per_call(ctx, EOT(torch.nn.Identity(), n=4)) == 5  # 5 examples x 4 draws = 20 images per pass
    assert per_call(ctx, EOT(torch.nn.Identity(), n=64)) == 1
    assert per_call(ctx, None) == 20
