"""Booleans that must be booleans, spec-parser limits, and defenses built from MODULE:FACTORY specs."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

import diffjpeg
from diffjpeg import DiffJPEG, RandomJPEG
from diffjpeg.arguments import check_bool
from diffjpeg.defenses import build
from diffjpeg.functional import diff_jpeg
from diffjpeg.spec import MAX_SPEC_LENGTH, parse_spec, parse_value

# ------------------------------------------------------------------------------------ booleans

def test_check_bool_takes_bools_only():
    assert check_bool(True, "flag") is True and check_bool(np.bool_(False), "flag") is False
    for bad in ("no", "false", "False", 0, 1, None, 1.0, torch.tensor(True)):
        with pytest.raises(TypeError, match=r"flag must be True or False, got"):
            check_bool(bad, "flag")


@pytest.mark.parametrize("make, name", [
    (lambda v: DiffJPEG(q=50, exact=v), "exact"),
    (lambda v: DiffJPEG(q=50, learnable=v), "learnable"),
    (lambda v: RandomJPEG(exact=v), "exact"),
    (lambda v: diff_jpeg(torch.rand(1, 3, 8, 8), 50, exact=v), "exact"),
    (lambda v: diff_jpeg(torch.rand(1, 3, 8, 8), 50, training=v), "training"),
])
def test_truthy_strings_are_not_booleans(make, name):
    for bad in ("no", "false", 0):
        with pytest.raises(TypeError, match=rf"{name} must be True or False, got"):
            make(bad)
    make(False)
    make(True)


def test_learnable_false_string_no_longer_makes_a_parameter():
    with pytest.raises(TypeError, match="learnable must be True or False, got str 'false'"):
        build("diffjpeg:q=50,learnable='false'")
    assert list(build("diffjpeg:q=50,learnable=false").parameters()) == []
    assert len(list(build("diffjpeg:q=50,learnable=true").parameters())) == 1
    with pytest.raises(TypeError, match="exact must be True or False, got str 'no'"):
        build("random_jpeg:exact=no")


# ------------------------------------------------------------------------------------ spec parser limits

def test_duplicate_keys_are_an_error():
    with pytest.raises(ValueError, match=r"defense spec 'jpeg:q=50,q=60': 'q' is given twice"):
        build("jpeg:q=50,q=60")
    with pytest.raises(ValueError, match="'eps' is given twice"):
        parse_spec("pgd:eps=8/255,steps=3,eps = 4/255", "attack spec")


@pytest.mark.parametrize("value", ["-" * 100_000 + "1", "+".join(["1"] * 200_000), "(" * 100_000 + ")" * 100_000])
def test_pathological_values_raise_the_parsers_value_error(value):
    with pytest.raises(ValueError, match=rf"defense spec is {len(value) + 7} characters long; specs are limited to "
                                         rf"{MAX_SPEC_LENGTH} characters"):
        build("jpeg:q=" + value)
    with pytest.raises(ValueError, match=rf"spec value of {len(value)} characters; values are limited to"):
        parse_value(value)


def test_a_value_too_deep_for_pythons_parser_is_a_value_error(monkeypatch):
    import diffjpeg.spec as spec

    def exhausted(text):
        raise RecursionError("maximum recursion depth exceeded during ast construction")

    monkeypatch.setattr(spec.ast, "literal_eval", exhausted)
    with pytest.raises(ValueError, match=r"spec value '-----1' is nested too deeply to parse"):
        parse_spec("jpeg:q=-----1")
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_value("1/2")


def test_short_odd_values_stay_strings_or_literals():
    assert parse_value("-" * 50 + "1") == "-" * 50 + "1"  # not a literal: kept as text, refused later by type
    assert parse_value("(" * 300 + "1" + ")" * 300) == "(" * 300 + "1" + ")" * 300
    assert parse_spec("jpeg:q=" + "9" * 900)[1]["q"] == int("9" * 900)


# ------------------------------------------------------------------------------------ MODULE:FACTORY defenses

@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_defenses.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from diffjpeg.defenses import Defense

        class Blur(Defense):
            differentiable = True

            def __init__(self, k: int = 3, generator=None):
                super().__init__()
                self.k, self.generator = k, generator

            def forward(self, x):
                return torch.nn.functional.avg_pool2d(x, self.k, 1, self.k // 2, count_include_pad=False)

        def make_blur(k: int = 3):
            return Blur(k)

        def not_a_defense():
            return nn.Identity()

        def a_number():
            return 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_defenses"
    sys.modules.pop("my_defenses", None)


def test_module_factory_specs_build_user_defenses(user_module):
    blur = build(f"{user_module}:make_blur:k=5")
    assert type(blur).__name__ == "Blur" and blur.k == 5
    assert build(f"{user_module}:Blur").k == 3
    name, kwargs = parse_spec(f"{user_module}:Blur:k=7")
    assert (name, kwargs) == (f"{user_module}:Blur", {"k": 7})
    assert "generator" in diffjpeg.defenses.registry.DEFENSES.parameters(name)
    x = torch.rand(1, 3, 9, 9)
    assert torch.allclose(build(f"{user_module}:Blur:k=1")(x), x)


def test_module_factory_errors_name_the_spec(user_module):
    with pytest.raises(ValueError, match=rf"defense spec '{user_module}:nope': module '{user_module}' has no callable"):
        build(f"{user_module}:nope")
    with pytest.raises(ValueError, match=r"defense spec 'no_such_mod:f': cannot import module 'no_such_mod'.*"
                                         r"MODULE:FACTORY\[:key=value,...\]"):
        build("no_such_mod:f")
    with pytest.raises(TypeError, match=rf"defense spec '{user_module}:not_a_defense' built Identity; a defense "
                                        r"must be an nn.Module with the attributes differentiable, randomized "
                                        r"and a surrogate"):
        build(f"{user_module}:not_a_defense")
    with pytest.raises(TypeError, match="built a int, not an nn.Module"):
        build(f"{user_module}:a_number")
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['sigma'\]"):
        build(f"{user_module}:make_blur:sigma=2")
    with pytest.raises(ValueError, match="expected key=value after ':', got 'q'"):  # a registered name first
        build("jpeg:q")


def test_attack_specs_do_not_import_modules():
    from diffjpeg.attacks.registry import ATTACKS

    with pytest.raises(ValueError, match="attack spec 'os:system': expected key=value after ':', got 'system'"):
        ATTACKS.parameters(parse_spec("os:system")[0])


def test_register_adds_a_name(user_module):
    import importlib

    from diffjpeg.defenses import available, register
    from diffjpeg.defenses.registry import DEFENSES

    module = importlib.import_module(user_module)
    register("test_blur_h5", module.Blur)
    try:
        assert "test_blur_h5" in available() and build("test_blur_h5:k=5").k == 5
        with pytest.raises(ValueError, match="registered twice"):
            register("test_blur_h5", module.Blur)
    finally:
        DEFENSES._entries.pop("test_blur_h5")


def test_the_benchmark_takes_module_factory_defenses(user_module):
    """The runner's own path (config validation, rows, build with a generator) accepts MODULE:FACTORY specs."""
    from diffjpeg.eval.config import BenchConfig, Spec, validate
    from diffjpeg.eval.tasks import build_defense, plan_rows

    spec = f"{user_module}:Blur:k=3"
    cfg = BenchConfig(defenses=["none", spec])
    parsed = validate(cfg)
    rows = plan_rows(parsed, cfg.threat_models)
    assert any(r.defense == spec for r in rows)
    g = torch.Generator().manual_seed(0)
    defense = build_defense(Spec.parse(spec, "defense spec"), generator=g)
    assert defense.k == 3 and defense.generator is g
