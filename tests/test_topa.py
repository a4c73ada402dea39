"""TOPA (JPEG + targeted one-pixel class recovery): the API, the saved results and the CLI.

Uses test_onepixel's fragile classifier on low-contrast gratings, attacked with FGSM first (the
paper's pipeline on a tiny synthetic set).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_onepixel import low_contrast  # noqa: E402
from diffjpeg.eval.models import fragile_grating_classifier  # noqa: E402
from diffjpeg.attacks import topa  # noqa: E402
from diffjpeg.eval.topa import main  # noqa: E402
from diffjpeg.jpeg.real import real_jpeg  # noqa: E402


@pytest.fixture(scope="module")
def fragile():
    return fragile_grating_classifier()


@pytest.fixture(scope="module")
def result(fragile):
    x, y = low_contrast(32)
    return topa(fragile, x, y, q=20, steps=10, popsize=50, attack="fgsm:eps=0.02",
                generator=torch.Generator().manual_seed(0))


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_stages_like_table_one(fragile, result):
    x, y = low_contrast(32)
    s = result.stages
    assert list(s) == ["clean", "after attack", "after JPEG", "after TOPA"]
    assert s["after attack"] > s["clean"]          # the attack works
    assert s["after JPEG"] < s["after attack"]     # JPEG removes part of it
    assert s["after TOPA"] < s["after JPEG"]       # TOPA recovers some of the rest
    assert result.attempted.sum() == round(s["after JPEG"] * 32)
    assert result.recovered.any() and not (result.recovered & ~result.attempted).any()
    # each stage's rate is the rate of its predictions; the JPEG stage is the real codec
    for name, rate in s.items():
        assert rate == pytest.approx((result.predictions[name] != y).float().mean().item())
    assert torch.equal(predict(fragile, result.images) == y, result.predictions["after TOPA"] == y)
    changed = (result.images != result.compressed).any(1).flatten(1).sum(1)
    assert changed.max() <= 1 and torch.equal(changed > 0, result.recovered)
    table = result.table()
    assert "after TOPA" in table and f"{100 * s['after TOPA']:.1f} %" in table


def test_input_stage_and_exact_codec(fragile):
    x, y = low_contrast(16)
    adv = torch.clamp(x + 0.02 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0))), 0, 1)
    r = topa(fragile, adv, y, q=40, steps=3, popsize=20, codec="exact", generator=torch.Generator().manual_seed(0))
    assert list(r.stages) == ["input", "after JPEG", "after TOPA"]
    assert torch.equal(r.compressed, real_jpeg(adv, 40, backend="pillow"))  # exact mode is Pillow's codec
    assert r.stages["after TOPA"] <= r.stages["after JPEG"]


def test_save_writes_lossless_pngs_csv_json(fragile, result, tmp_path):
    from PIL import Image

    result.save(tmp_path)
    files = sorted((tmp_path / "images").glob("*.png"))
    assert len(files) == 32
    loaded = torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in files]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(loaded, result.images)  # the PNGs are exactly the cleaned images
    assert torch.equal(predict(fragile, loaded), result.predictions["after TOPA"])
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 32 and sum(int(r["recovered"]) for r in rows) == int(result.recovered.sum())
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["misclassification_rate"] == result.stages and summary["q"] == 20


def test_cli(fragile, tmp_path, capsys):
    x, y = low_contrast(16)
    torch.save({"images": (x * 255).round().to(torch.uint8), "labels": y}, tmp_path / "data.pt")
    model = ["--model", "diffjpeg.eval.models:fragile_grating_classifier"]  # MODULE:FACTORY, trains in a second
    out = tmp_path / "out"
    code = main(["--data", str(tmp_path / "data.pt"), *model, "--out", str(out),
                 "--attack", "fgsm:eps=0.02", "--q", "20", "--steps", "5", "--popsize", "20"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "after TOPA" in printed and "recovered" in printed
    assert (out / "results.csv").exists() and (out / "summary.json").exists() and (out / "table.md").exists()
    assert len(list((out / "images").glob("*.png"))) == 16
    code = main(["--data", str(tmp_path / "data.pt"), *model, "--out", str(out),
                 "--q", "0"])
    assert code == 2 and "q must be" in capsys.readouterr().err
    torch.save({"pictures": x}, tmp_path / "bad.pt")
    code = main(["--data", str(tmp_path / "bad.pt"), *model, "--out", str(out)])
    assert code == 2 and "needs keys 'images' and 'labels'" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, error, message", [
    ({"q": 0}, ValueError, r"q must be"),
    ({"pixels": 0}, ValueError, r"pixels must be an integer >= 1, got 0"),
    ({"codec": "libjpeg"}, ValueError, r"codec must be one of \('pillow', 'exact'\), got 'libjpeg'"),
    ({"attack": "nosuch"}, ValueError, r"unknown attack 'nosuch'"),
])
def test_bad_arguments(fragile, kwargs, error, message):
    x, y = low_contrast(4)
    with pytest.raises(error, match=message):
        topa(fragile, x, y, steps=1, popsize=5, **kwargs)
