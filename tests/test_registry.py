"""Spec parsing and the defense registry."""
from __future__ import annotations

import pytest
import torch

from diffjpeg import JPEG, DiffJPEG, RandomJPEG
from diffjpeg.defenses import available, build
from diffjpeg.spec import parse_spec


def test_parse_spec_values():
    name, kw = parse_spec("PGD:eps=8/255,steps=50,targeted=true,q=(50, 90),kernel=3x3,x=none,y=0.5")
    assert name == "pgd"
    assert kw == {"eps": 8 / 255, "steps": 50, "targeted": True, "q": (50, 90), "kernel": "3x3", "x": None,
                  "y": 0.5}
    assert parse_spec("jpeg") == ("jpeg", {})


@pytest.mark.parametrize("spec, error, message", [
    ("", TypeError, "non-empty string"),
    ("jpeg:q", ValueError, "expected key=value"),
    ("jpeg:=3", ValueError, "expected key=value"),
    ("nosuch", ValueError, "unknown defense 'nosuch'; available:"),
    ("jpeg:quality=3", ValueError, r"has no parameter\(s\) \['quality'\]"),
    ("jpeg:q=0", ValueError, r"q must be finite and in \[1, 100\]"),
])
def test_bad_specs(spec, error, message):
    with pytest.raises(error, match=message):
        build(spec)


def test_round_trip_builds_the_named_defense():
    assert {"jpeg", "diffjpeg", "random_jpeg"} <= set(available())
    assert isinstance(build("jpeg:q=50,subsampling=444"), JPEG)
    layer = build("diffjpeg:q=30,rounding=cubic")
    assert isinstance(layer, DiffJPEG) and layer.rounding == "cubic"
    rj = build("random_jpeg:q=(40, 60)")
    assert isinstance(rj, RandomJPEG) and (rj.lo, rj.hi) == (40, 60)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(build("diffjpeg:q=30")(x), DiffJPEG(q=30)(x))
    assert "q:" in available()["jpeg"] and "subsampling" in available()["jpeg"]
