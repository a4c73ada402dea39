"""Threat models: the registry, which threat models apply to which defense, and bpda_smooth end to end."""
from __future__ import annotations

import json

import pytest
import torch
from test_bench import checkpoint, records, small_config  # noqa: F401  (checkpoint is a fixture)

from diffjpeg import JPEG, DiffJPEG
from diffjpeg.defenses.bit_depth import BitDepth
from diffjpeg.defenses.median import MedianSmoothing
from diffjpeg.defenses.random_jpeg import RandomJPEG
from diffjpeg.eval import BenchConfig, checks, run_benchmark, threats
from diffjpeg.wrappers import BPDA

SELECTABLE = ["graybox", "bpda", "bpda_surrogate", "surrogate", "bpda_eot", "bpda_smooth"]


def test_registry_lists_threat_models_in_order_with_definitions():
    assert threats.names() == (*SELECTABLE, "adaptive")
    assert "whitebox" in threats.THREAT_MODELS and "whitebox" not in threats.names()
    for t in threats.THREAT_MODELS.values():
        assert t.definition and "\n" not in t.definition, t.name
        assert set(t.checks) <= set(checks.CHECKS), t.name
    assert threats.get("graybox").transfer and threats.get("graybox").checks == ()


@pytest.mark.parametrize("chosen, message", [
    (["blackbox"], "unknown threat model(s) ['blackbox']; valid: graybox, bpda, bpda_surrogate"),
    (["bpda", "whitebox"], "unknown threat model(s) ['whitebox']"),
    ([], "unknown threat model(s) an empty list; valid: graybox"),
])
def test_unknown_threat_models_are_named(chosen, message):
    with pytest.raises(ValueError) as info:
        threats.check_names(chosen)
    assert message in str(info.value) and str(info.value).endswith("bpda_smooth, adaptive")


def test_registering_needs_a_new_name_and_a_definition():
    class Again(threats.ThreatModel):
        """a second bpda"""

    class Undefined(threats.ThreatModel):
        pass

    with pytest.raises(ValueError, match="'bpda' is registered twice"):
        threats.register("bpda")(Again)
    with pytest.raises(ValueError, match="'adaptive' is registered twice"):
        threats.register("adaptive")(Again)
    with pytest.raises(ValueError, match="needs a docstring: its one-line definition"):
        threats.register("undefined")(Undefined)
    with pytest.raises(ValueError, match="must be an identifier"):
        threats.register("two words")(Again)
    assert "undefined" not in threats.THREAT_MODELS
    with pytest.raises(ValueError, match="unknown threat model 'nope'; available: whitebox, graybox"):
        threats.get("nope")


@pytest.mark.parametrize("defense, applies, chosen", [
    (JPEG(q=50), ["graybox", "bpda", "bpda_surrogate", "surrogate", "bpda_smooth"], "bpda"),
    (DiffJPEG(q=75), ["graybox", "bpda", "surrogate", "bpda_smooth"], "surrogate"),
    (MedianSmoothing(3), ["graybox", "bpda", "surrogate"], "surrogate"),
    (BitDepth(bits=4), ["graybox", "bpda"], "bpda"),
    (RandomJPEG((50, 90)), ["graybox", "bpda", "surrogate", "bpda_eot"], "bpda_eot"),
])
def test_which_threat_models_apply(defense, applies, chosen):
    assert [t.name for t in threats.select(SELECTABLE, defense)] == applies
    assert threats.adaptive(defense).name == chosen
    assert [t.name for t in threats.select([chosen, "adaptive", "graybox"], defense)] == [chosen, "graybox"]


def test_smooth_surrogate_is_the_cubic_codec_with_the_same_settings():
    smooth = threats.smooth_surrogate(JPEG(q=30, subsampling="444"))
    assert isinstance(smooth, DiffJPEG)
    assert (smooth.q, smooth.subsampling, smooth.rounding) == (30, "444", "cubic")
    assert threats.smooth_surrogate(DiffJPEG(q=75)).rounding == "cubic"
    for none in (MedianSmoothing(3), BitDepth(bits=4), RandomJPEG((50, 90))):
        assert threats.smooth_surrogate(none) is None


def test_bpda_smooth_is_the_exact_defense_forward_and_the_cubic_gradient_backward():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 24)
    w = torch.randn(2, 3, 24, 24)
    defense = JPEG(q=50)
    graph = threats.get("bpda_smooth").graph(defense, BenchConfig())

    def grad(module):
        xg = x.clone().requires_grad_(True)
        out = module(xg)
        (out * w).sum().backward()
        return out.detach(), xg.grad

    out, smooth = grad(graph)
    assert torch.equal(out, defense(x))  # Pillow's JPEG, bit for bit
    _, cubic = grad(DiffJPEG(q=50, rounding="cubic"))
    torch.testing.assert_close(smooth, cubic)
    _, ste = grad(BPDA(defense))  # the default surrogate: straight-through rounding
    assert torch.isfinite(smooth).all() and not torch.allclose(smooth, ste, atol=1e-3)


def test_bpda_smooth_runs_in_the_benchmark(checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "smooth"
    summary = run_benchmark(small_config(checkpoint, out, n=4, defenses=["none", "jpeg:q=50", "median:kernel=3"],
                                         threat_models=["bpda_smooth"], eps=[8 / 255]))
    rows = [(r["defense"], r["threat"]) for r in summary["rows"]]
    assert rows == [("none", "whitebox"), ("jpeg:q=50", "bpda_smooth")]
    row = summary["rows"][1]
    assert {c["code"] for c in row["checks"]} == {"F", "S", "E", "Z", "B"}
    assert row["attack_2x_steps"] is not None and row["attack_large_eps"] is not None
    smooth = [r for r in records(out) if r.get("threat") == "bpda_smooth"]
    roles = {"attack", "fgsm", "attack_2x_steps", "attack_large_eps", "attack_4x_budget"}
    assert {r["attack"] for r in smooth} == roles
    assert all(r["linf"] <= r["eps"] + 1e-5 for r in smooth) and len(smooth) == 4 * 5
    table = (out / "table.md").read_text()
    assert f"- bpda_smooth: {threats.get('bpda_smooth').definition}" in table
    assert "| jpeg:q=50 | bpda_smooth |" in table
    assert json.loads((out / "summary.json").read_text())["config"]["threat_models"] == ["bpda_smooth"]
