"""The benchmark runner: outputs, resume after a kill, config refusal, bad configs, checks, torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffjpeg.eval import (
    BenchConfig,
    checks,
    load_dataset,
    run_benchmark,
    train_small_cnn,
)
from diffjpeg.eval.bench import main
from diffjpeg.eval.config import DEFAULT_DEFENSES, GRIDS, validate
from diffjpeg.eval.tasks import plan_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A small CNN fitted to foolbox's 20 CIFAR-10 samples (a second), saved as a `diffjpeg train` checkpoint.

    Trained briefly on purpose: 95 % on its 20 images without saturated softmax outputs (a model
    trained to ~1.0 confidence on 20 images keeps large margins that a few PGD steps do not cross).
    """
    data = load_dataset("foolbox:cifar10")
    path = tmp_path_factory.mktemp("model") / "cnn.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_small_cnn(data.images, data.labels, classes=10, epochs=10, batch_size=20, lr=3e-3, out=path)
    finally:
        torch.set_num_threads(threads)
    return str(path)


def small_config(checkpoint: str, out: Path, **changes) -> dict:
    cfg = {"model": "small_cnn", "checkpoint": checkpoint, "data": "foolbox:cifar10", "n": 8, "batch_size": 4,
           "defenses": ["none", "jpeg:q=50", "random_jpeg:q=(40, 90)", "median:kernel=3"],
           # 10 steps: the ensemble has converged on the undefended model (checks S and B allow no flip at n = 8)
           "threat_models": ["graybox", "bpda", "surrogate", "bpda_eot"], "eps": [4 / 255, 32 / 255], "steps": 10,
           "eot_samples": 2, "large_eps": 64 / 255, "out": str(out), "progress": False}
    cfg.update(changes)
    return cfg


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return run_benchmark(small_config(checkpoint, out)), out


def test_outputs(reference):
    summary, out = reference
    for name in ("results.jsonl", "table.md", "summary.json", "robust_accuracy.png", "config.json"):
        assert (out / name).is_file(), name
    rows = {(r["defense"], r["threat"]) for r in summary["rows"]}
    assert rows == {("none", "whitebox"), ("jpeg:q=50", "graybox"), ("jpeg:q=50", "bpda"), ("jpeg:q=50", "surrogate"),
                    ("random_jpeg:q=(40, 90)", "graybox"), ("random_jpeg:q=(40, 90)", "bpda"),
                    ("random_jpeg:q=(40, 90)", "surrogate"), ("random_jpeg:q=(40, 90)", "bpda_eot"),
                    ("median:kernel=3", "graybox"), ("median:kernel=3", "bpda"), ("median:kernel=3", "surrogate")}
    recs = records(out)
    attacks = [r for r in recs if "attack" in r]
    assert {r["attack"] for r in attacks} == {"attack", "fgsm", "attack_2x_steps", "attack_large_eps",
                                              "attack_fixed_randomness", "attack_4x_budget"}
    for r in attacks:
        assert set(r) >= {"id", "label", "clean", "defended", "adversarial", "robust", "linf", "l2", "eps"}
        assert r["linf"] <= r["eps"] + 1e-5
        assert r["robust"] == (r["defended"] == r["label"] == r["adversarial"])
    pgd = [r for r in attacks if r["attack"] == "attack" and r["threat"] != "graybox"]
    for r in pgd:  # the cascade: robust at the larger eps implies robust at the smaller one
        if r["eps"] > 4 / 255 and r["robust"]:
            twin = next(s for s in pgd if s["id"] == r["id"] and s["defense"] == r["defense"]
                        and s["threat"] == r["threat"] and s["eps"] == 4 / 255)
            assert twin["robust"]
    table = (out / "table.md").read_text()
    assert "| none | whitebox |" in table and "ε=32/255" in table
    assert json.loads((out / "summary.json").read_text())["rows"][0]["robust"] == summary["rows"][0]["robust"]


def test_undefended_model_breaks(reference):
    summary, _ = reference
    bare = next(r for r in summary["rows"] if r["threat"] == "whitebox")
    assert bare["clean"] >= 0.75
    assert bare["robust"][-1] < bare["robust"][0] <= bare["clean"]
    assert bare["attack_large_eps"] == 0.0  # a large eps breaks everything: check E passes
    assert all(c["passed"] for c in bare["checks"])


def test_median_surrogate_flags_zero_gradients(reference):
    summary, out = reference
    row = next(r for r in summary["rows"] if r["defense"] == "median:kernel=3" and r["threat"] == "surrogate")
    z = next(c for c in row["checks"] if c["code"] == "Z")
    assert row["zero_grad"] > 0.1 and not z["passed"]  # a 3x3 median passes gradient to one pixel in nine
    assert "⚠" in next(line for line in (out / "table.md").read_text().splitlines()
                       if line.startswith("| median:kernel=3 | surrogate |"))


def test_rerun_skips_finished_work_and_changed_config_is_refused(checkpoint, reference, tmp_path):
    _, ref_out = reference
    out = tmp_path / "run"
    run_benchmark(small_config(checkpoint, out, n=4, defenses=["none", "jpeg:q=50"]))
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "units").iterdir()}
    run_benchmark(small_config(checkpoint, out, n=4, defenses=["none", "jpeg:q=50"]))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").iterdir()} == stamp
    with pytest.raises(ValueError, match=r"different configuration \(changed: steps\)"):
        run_benchmark(small_config(checkpoint, out, n=4, defenses=["none", "jpeg:q=50"], steps=4))
    run_benchmark(small_config(checkpoint, out, n=4, defenses=["none", "jpeg:q=50"], steps=4, restart=True))
    assert json.loads((out / "config.json").read_text())["config"]["steps"] == 4


def _cli(checkpoint: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffjpeg.eval", "--model", "small_cnn", "--checkpoint", checkpoint,
            "--data", "foolbox:cifar10", "--examples", "8", "--batch-size", "4", "--defenses", "none", "jpeg:q=50",
            "random_jpeg:q=(40, 90)", "median:kernel=3", "--threat-models", "graybox", "bpda", "surrogate",
            "bpda_eot", "--eps", "4/255", "32/255", "--steps", "3", "--eot-samples", "2", "--large-eps", "64/255",
            "--out", str(out), "--no-progress", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_killed_run_resumes_to_identical_results(checkpoint, tmp_path):
    """SIGKILL mid-run, rerun the same command: the final results equal an uninterrupted run's."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(_cli(checkpoint, whole), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_cli(checkpoint, broken), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def done() -> int:
        return len(list((broken / "units").glob("*.json"))) if (broken / "units").is_dir() else 0

    deadline = time.time() + 120
    while time.time() < deadline and done() < 3 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = done()
    assert 3 <= done < len(list((whole / "units").glob("*.json"))), "the kill must land mid-run"
    assert not (broken / "results.jsonl").exists()
    subprocess.run(_cli(checkpoint, broken), env=_env(), check=True, capture_output=True)
    assert records(broken) == records(whole)


def test_compiled_attacks_give_the_eager_records(checkpoint, tmp_path, eager_compile, capsys):
    """``--compile`` (``compile = true``): every attacked graph goes through ``torch.compile`` per input
    shape and the records equal eager mode's (dynamo's graph capture on its "eager" backend, see
    conftest; inductor is tested in test_meta_compile)."""
    flags = ["--model", "small_cnn", "--checkpoint", checkpoint, "--data", "foolbox:cifar10", "--examples", "4",
             "--batch-size", "4", "--defenses", "none", "diffjpeg:q=50", "jpeg:q=50", "--threat-models", "adaptive",
             "--eps", "8/255", "--steps", "3", "--no-progress"]
    assert main([*flags, "--out", str(tmp_path / "eager")]) == 0
    assert not eager_compile
    assert main([*flags, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    assert len(eager_compile) >= 3  # the forward or loss of each row's attacked model
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["config"]["compile"] is True
    assert records(tmp_path / "compiled") == records(tmp_path / "eager")


def test_torchrun_two_processes_match_one(checkpoint, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_cli(checkpoint, one), env=_env(), check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "diffjpeg.eval", *_cli(checkpoint, two)[3:]], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = {json.loads(p.read_text())["batch"] % 2 for p in (two / "units").glob("*.json")}
    assert ranks == {0, 1}
    assert records(two) == records(one)
    rows = [[{k: v for k, v in r.items() if k != "seconds_per_image"} for r in json.loads((d / "summary.json")
             .read_text())["rows"]] for d in (one, two)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("flags, message", [
    (["--defenses", "none", "jpge:q=75"], "unknown defense 'jpge'; available: bit_depth, diffjpeg"),
    (["--attack", "pgdd"], "unknown attack 'pgdd'; available:"),
    (["--attack", "cw"], "attack 'cw' has no eps parameter"),
    (["--model", "resnet"], "efficientnet_lite0"),
    (["--eps=-1/255"], "eps values must be numbers in [0, 1]"),
    (["--data", "imagefolder:/no/such/folder"], "/no/such/folder"),
    (["--data", "mnist"], "foolbox"),
    (["--threat-models", "blackbox"], "unknown threat model(s) ['blackbox']; valid: graybox, bpda"),
    (["--steps", "0"], "steps must be an integer >= 1"),
])
def test_bad_config_is_one_line_error(flags, message, capsys, tmp_path):
    assert main(["--out", str(tmp_path / "o"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("diffjpeg bench: error:")
    assert message in err


def test_toml_config_and_flags(tmp_path):
    from diffjpeg.eval.bench import config_from_args, parser

    path = tmp_path / "b.toml"
    path.write_text('[bench]\nmodel = "small_cnn"\neps = ["1/255", 0.0313725]\nsteps = 7\ngrid = "full"\n')
    cfg = config_from_args(parser().parse_args(["--config", str(path), "--steps", "9"]))
    assert cfg.model == "small_cnn" and cfg.eps == [1 / 255, 0.0313725] and cfg.steps == 9
    assert cfg.restarts == 2 and "bpda_surrogate" in cfg.threat_models  # from the full grid
    path.write_text('stepz = 3\n')
    with pytest.raises(ValueError, match="unknown config key.*'stepz'.*valid keys: model"):
        config_from_args(parser().parse_args(["--config", str(path)]))


def test_default_plan_has_one_adaptive_row_per_defense_and_bpda_surrogate_for_jpeg():
    cfg = BenchConfig()
    assert cfg.attack == ["pgd", "standard:targets=3"] and "bit_depth:levels=16" in cfg.defenses  # the field's bit-depth reduction
    rows = plan_rows(validate(cfg), cfg.threat_models)
    adaptive = [(r.defense, r.threat) for r in rows if r.threat not in ("graybox", "bpda_surrogate")]
    assert adaptive == [("none", "whitebox"), ("jpeg:q=75", "bpda"), ("jpeg:q=50", "bpda"), ("jpeg:q=20", "bpda"),
                        ("diffjpeg:q=75", "surrogate"), ("fd", "surrogate"), ("bit_depth:levels=16", "bpda"),
                        ("median:kernel=3", "surrogate"), ("random_jpeg:q=(50, 90)", "bpda_eot")]
    assert not any(d.startswith("tvm") for d in cfg.defenses)  # too slow for the default (anchors.py runs it)
    assert "tvm:p=0.5" in GRIDS["full"]["defenses"]
    assert [r.defense for r in rows if r.threat == "bpda_surrogate"] == ["jpeg:q=75", "jpeg:q=50", "jpeg:q=20"]
    assert sum(r.threat == "graybox" for r in rows) == len(DEFAULT_DEFENSES) - 1


@pytest.mark.parametrize("check, args, passed", [
    (checks.single_step, (0.3, 0.2, 0.05), False), (checks.single_step, (0.2, 0.3, 0.05), True),
    (checks.large_eps, (0.2, 0.25, 0.1), False), (checks.large_eps, (0.0, 0.25, 0.1), True),
    (checks.more_steps, (0.5, 0.3, 0.05), False), (checks.more_steps, (0.5, 0.48, 0.05), True),
    (checks.white_below_gray, (0.6, 0.4, 0.05), False), (checks.white_below_gray, (0.1, 0.4, 0.05), True),
    (checks.fixed_randomness, (0.5, 0.2, 0.05), False), (checks.fixed_randomness, (0.0, 0.2, 0.05), True),
    (checks.zero_gradients, (0.5, 0.1), False), (checks.zero_gradients, (0.0, 0.1), True),
])
def test_checks(check, args, passed):
    result = check(*args)
    assert result.passed is passed and result.code in checks.CHECKS and result.message


def test_every_row_of_the_full_grid_builds_and_differentiates():
    """Each (defense, threat model) of `--grid full` gives an attackable model with a finite gradient."""
    from diffjpeg.eval.tasks import Context

    cfg = BenchConfig.from_dict({"grid": "full", "eot_samples": 2})
    parsed = validate(cfg)
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 5)).eval()
    x, y = torch.rand(2, 3, 24, 24), torch.tensor([0, 3])
    ctx = Context(cfg, parsed, clf, (0.5,) * 3, (0.5,) * 3, x, y, ["a", "b"], torch.device("cpu"))
    rows = plan_rows(parsed, cfg.threat_models, ctx.model())
    assert {r.threat for r in rows} == {"whitebox", "graybox", "bpda", "bpda_surrogate", "surrogate", "bpda_eot"}
    for row in rows:
        if row.threat == "graybox":
            continue
        defense = None if row.defense == "none" else ctx.defense(row.spec, 0)
        xg = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(ctx.model(row.threat_model.graph(defense, cfg))(xg), y).backward()
        assert xg.grad is not None and torch.isfinite(xg.grad).all(), row


def test_budget_check_rejects_examples_outside_the_ball():
    from diffjpeg.attacks.ensemble import check_linf

    x = torch.full((2, 3, 4, 4), 0.5)
    check_linf(x + 8 / 255, x, 8 / 255, "pgd")
    with pytest.raises(ValueError, match="left the L-inf ball of eps=0.0313725"):
        check_linf(x + 9 / 255, x, 8 / 255, "pgd")
    with pytest.raises(ValueError, match=r"or \[0, 1\]"):
        check_linf(x * 2.1, x, 1.0, "pgd")
