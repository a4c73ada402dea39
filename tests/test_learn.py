"""Q-table learning (diffjpeg.learn): objective, integer export, Pillow round trip, save/load, rate proxy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffjpeg import JPEG, DefendedModel, DiffJPEG
from diffjpeg.eval.datasets import gratings
from diffjpeg.eval.models import fragile_grating_classifier
from diffjpeg.learn.classifier import accuracy
from diffjpeg.jpeg.tables import quality_tables
from diffjpeg.learn import (export_jpeg, learn_qtables, load_tables, objective, rate_correlation, rate_proxy,
                            real_bpp, save_tables, tables_tensor)


@pytest.fixture(scope="module")
def task():
    clf = fragile_grating_classifier()
    x, y = gratings(192, seed=3)
    xt, yt = gratings(256, seed=4)
    return clf, x, y, xt, yt


@pytest.fixture(scope="module")
def learned(task):
    clf, x, y, _, _ = task
    return learn_qtables(clf, x, y, init_quality=50, lam=0.5, steps=12, batch_size=64, progress=False,
                         generator=torch.Generator().manual_seed(1))


def _ijg(q: float) -> torch.Tensor:
    return quality_tables(torch.tensor([float(q)]))[0]


def test_steps_lower_the_objective(task, learned):
    clf, x, y, _, _ = task
    before = objective(clf, DiffJPEG(qtables=_ijg(50)), x, y, 0.5)["total"].item()
    after = objective(clf, DiffJPEG(qtables=learned.qtables()), x, y, 0.5)["total"].item()
    assert after < before - 0.01
    assert len(learned.history["total"]) == 12 and set(learned.history) == {"ce", "ce_adv", "rate", "total"}


def test_tables_are_integers_in_range(task, learned):
    clf, x, y, _, _ = task
    wild = learn_qtables(clf, x, y, init_quality=95, lam=50.0, steps=2, lr=400.0, batch_size=32, progress=False)
    for result in (learned, wild):
        t = np.asarray(result.tables)
        assert t.shape == (2, 64) and t.dtype.kind == "i"
        assert t.min() >= 1 and t.max() <= 255
    assert np.asarray(wild.tables).max() == 255  # the huge step hit the clamp and stayed in range


def test_exported_tables_round_trip_through_pillow(tmp_path, learned):
    x, _ = gratings(1, seed=0)
    path = export_jpeg(tmp_path / "colour.jpg", x[0], learned.tables, subsampling="420")
    with Image.open(path) as im:
        q = im.quantization
    assert [list(q[0]), list(q[1])] == learned.tables
    gray = export_jpeg(tmp_path / "gray.jpg", x[:1, :1], learned.tables)
    with Image.open(gray) as im:
        assert im.mode == "L" and list(im.quantization[0]) == learned.tables[0]


def test_learned_state_survives_save_and_load(tmp_path, learned):
    torch.save(learned.layer.state_dict(), tmp_path / "layer.pt")
    fresh = DiffJPEG(q=90, learnable=True)
    fresh.load_state_dict(torch.load(tmp_path / "layer.pt", weights_only=True))
    assert fresh.export_qtables() == learned.tables
    save_tables(tmp_path / "t.json", learned.tables, lam=0.5)
    assert torch.equal(load_tables(tmp_path / "t.json"), learned.qtables())


def test_real_codec_accuracy_within_one_point(task, learned):
    clf, _, _, xt, yt = task
    layer = learned.layer.eval()
    differentiable = accuracy(DefendedModel(clf, layer), xt, yt)
    with pytest.warns(UserWarning, match="BPDA"):
        real_model = DefendedModel(clf, JPEG(qtables=learned.qtables()))
    real = accuracy(real_model, xt, yt)
    assert differentiable > 0.5
    assert abs(real - differentiable) <= 0.01


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path, task):
    clf, x, y, _, _ = task
    kwargs = dict(lam=0.5, steps=4, batch_size=32, progress=False, adversarial={"eps": 4 / 255, "steps": 1})
    full = learn_qtables(clf, x, y, generator=torch.Generator().manual_seed(2), **kwargs)
    ckpt = tmp_path / "ckpt.pt"
    learn_qtables(clf, x, y, generator=torch.Generator().manual_seed(2), checkpoint=ckpt, checkpoint_every=2,
                  **{**kwargs, "steps": 2})
    resumed = learn_qtables(clf, x, y, generator=torch.Generator().manual_seed(99), checkpoint=ckpt, **kwargs)
    assert resumed.tables == full.tables
    for key, values in full.history.items():
        assert resumed.history[key] == pytest.approx(values, rel=1e-5, abs=1e-7)
    assert min(full.history["ce_adv"]) > 0
    assert all(not p.requires_grad for p in clf.parameters())  # frozen flags restored as they were


def test_checkpoint_refuses_another_classifier_or_start(tmp_path, task):
    clf, x, y, _, _ = task
    ckpt = tmp_path / "ckpt.pt"
    kwargs = dict(lam=0.5, steps=1, batch_size=32, progress=False, checkpoint=ckpt)
    learn_qtables(clf, x, y, **kwargs)
    other = fragile_grating_classifier()
    with torch.no_grad():
        other[1][0].weight.add_(0.01)
    with pytest.raises(ValueError, match="other settings"):
        learn_qtables(other, x, y, **kwargs)
    with pytest.raises(ValueError, match="other settings"):
        learn_qtables(clf, x, y, init_quality=60, **kwargs)
    learn_qtables(clf, x, y, **{**kwargs, "steps": 2})  # same classifier and start: resumes


def test_rate_proxy_ranks_like_real_files():
    x, _ = gratings(12, seed=5)
    g = torch.Generator().manual_seed(0)
    tables = [_ijg(q) for q in (10, 25, 50, 75, 90)]
    tables += [(_ijg(50) * torch.exp(torch.randn(2, 8, 8, generator=g) * 0.5) * s).round().clamp(1, 255)
               for s in (0.3, 0.6, 1.0, 1.5, 2.5)]
    result = rate_correlation(x, tables)
    assert result["spearman"] >= 0.9
    assert result["real_bpp"][0] < result["real_bpp"][-6]  # q=10 writes fewer bits than q=90
    assert real_bpp(x, _ijg(90)) > real_bpp(x, _ijg(10))


def test_rate_proxy_gradient_and_shape():
    x, _ = gratings(3, seed=6)
    t = _ijg(50).clone().requires_grad_(True)
    per_image = rate_proxy(x, t, reduction="none")
    assert per_image.shape == (3,) and (per_image > 0).all()
    per_image.sum().backward()
    assert t.grad is not None and t.grad.sum() < 0  # coarser tables, fewer bits


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lam=-1.0), ValueError, "lam"),
    (dict(steps=0), ValueError, "steps"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(batch_size=1.5), TypeError, "batch_size"),
    (dict(init_quality=0), ValueError, "init_quality"),
    (dict(adversarial={"epsilon": 0.1}), ValueError, "adversarial"),
    (dict(adversarial=0.1), TypeError, "adversarial"),
    (dict(subsampling="411"), ValueError, "subsampling"),
    (dict(generator=0), TypeError, "generator"),
])
def test_bad_arguments_raise_clear_errors(task, kwargs, error, match):
    clf, x, y, _, _ = task
    with pytest.raises(error, match=match):
        learn_qtables(clf, x[:8], y[:8], progress=False, **kwargs)


def test_bad_data_and_tables_raise_clear_errors(tmp_path, task):
    clf, x, y, _, _ = task
    with pytest.raises(ValueError, match="labels"):
        learn_qtables(clf, x[:8], y[:7], progress=False)
    with pytest.raises(TypeError, match="classifier"):
        learn_qtables("net", x[:8], y[:8], progress=False)
    with pytest.raises(ValueError, match="64"):
        tables_tensor([[1] * 64])
    with pytest.raises(ValueError, match="integers"):
        tables_tensor([[1.5] * 64, [2] * 64])
    with pytest.raises(ValueError, match=r"\[1, 255\]"):
        tables_tensor([[0] * 64, [2] * 64])
    with pytest.raises(ValueError, match="one image"):
        export_jpeg(tmp_path / "a.jpg", x[:2], [[1] * 64, [1] * 64])
    with pytest.raises(ValueError, match="tables_list"):
        rate_correlation(x[:2], [_ijg(50)])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="luma"):
        load_tables(tmp_path / "bad.json")


def test_cli_writes_tables_and_checks_real_codec(tmp_path, capsys):
    from diffjpeg.eval.learn_qtables import main

    out = tmp_path / "tables.json"
    argv = ["--data", "gratings", "--steps", "6", "--limit", "128", "--test-limit", "128", "--batch-size", "32",
            "--lam", "0.5", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| learned |" in text and "bpp" in text
    tables = load_tables(out)
    assert tables.shape == (2, 8, 8) and (tables >= 1).all() and (tables <= 255).all()
    assert main(argv[:-3] + ["--out", str(tmp_path / "missing" / "t.json")]) == 2
    assert main(argv[:3] + ["0"] + argv[4:]) == 2  # --steps 0
