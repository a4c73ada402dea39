"""load_model("timm:NAME") and load_model("robustbench:NAME[:dataset:threat]"), offline, with weights the
tests write; and their errors when a file or the package is missing."""
from __future__ import annotations

import sys

import pytest
import torch

from diffjpeg.eval.zoo import _import_robustbench, load_model

timm = pytest.importorskip("timm", reason="the zoo extra (pip install 'diffjpeg[zoo]') is not installed")


def test_timm_model_with_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "te.pt")
    loaded = load_model("timm:test_efficientnet", checkpoint=tmp_path / "te.pt", classes=10)
    assert (loaded.image_size, loaded.channels, loaded.classes) == (160, 3, 10)
    assert loaded.mean == pytest.approx((0.485, 0.456, 0.406)) and loaded.std == pytest.approx((0.229, 0.224, 0.225))
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded.model(x), net(x))
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    with pytest.raises(ValueError, match=r"checkpoint '.*te.pt' does not fit model 'timm:test_efficientnet'.*size "
                                         r"mismatch"):
        load_model("timm:test_efficientnet", checkpoint=tmp_path / "te.pt")  # 1000 classes by default


def test_timm_weights_from_timms_cache(tmp_path, monkeypatch):
    """Weights found in the torch hub cache (where timm keeps URL-hosted weights) load without a download."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # empty: not there
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        cfg = timm.models.get_pretrained_cfg("resnet10t")
        with pytest.raises(FileNotFoundError, match=r"model 'timm:resnet10t': timm's pretrained weights "
                                                    r"\(timm/resnet10t.c3_in1k\) are not in the Hugging Face or torch "
                                                    r"hub cache; pass download=True"):
            load_model("timm:resnet10t")
        torch.manual_seed(1)
        net = timm.create_model("resnet10t").eval()
        cached = tmp_path / "hub" / "checkpoints" / cfg.url.rsplit("/", 1)[1]
        cached.parent.mkdir(parents=True)
        torch.save(net.state_dict(), cached)
        loaded = load_model("timm:resnet10t")
        assert loaded.image_size == 176 and loaded.classes == 1000
        x = torch.rand(1, 3, 64, 64)
        assert torch.allclose(loaded.model(x), net(x))
        with pytest.raises(ValueError, match="cached pretrained weights have 1000 classes, not 10"):
            load_model("timm:resnet10t", classes=10)
    finally:
        torch.hub.set_dir(previous)


def test_timm_errors():
    with pytest.raises(ValueError, match=r"unknown timm model 'no_such_net' in model spec 'timm:no_such_net'"):
        load_model("timm:no_such_net")


# ------------------------------------------------------------------------------------ RobustBench

NAME, DATASET, THREAT = "Hendrycks2020AugMix_WRN", "cifar10", "corruptions"  # a 2.2M-parameter WideResNet


def _architecture():
    _, zoo = _import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    return zoo[BenchmarkDataset(DATASET)][ThreatModel(THREAT)][NAME]["model"]().eval()


def test_robustbench_model_from_its_cache_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RobustBench's cache folder is ./models
    spec = f"robustbench:{NAME}:{DATASET}:{THREAT}"
    with pytest.raises(FileNotFoundError, match=rf"model '{spec}': its checkpoint is not in RobustBench's cache folder "
                                                rf"\(models/{DATASET}/{THREAT}/{NAME}.pt missing.*download=True"):
        load_model(spec)
    net = _architecture()
    folder = tmp_path / "models" / DATASET / THREAT
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / f"{NAME}.pt")
    loaded = load_model(spec)
    assert (loaded.mean, loaded.std, loaded.image_size, loaded.classes, loaded.dataset) == (None, None, 32, 10, DATASET)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.model(x), net(x))
    assert "autoattack" not in sys.modules or sys.modules["autoattack"].__name__ != "pyautoattack"


def test_robustbench_model_from_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = _architecture()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "mine.pt")
    loaded = load_model(f"robustbench:{NAME}:{DATASET}:{THREAT}", checkpoint=tmp_path / "mine.pt")
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(loaded.model(x), net(x))
    assert not (tmp_path / "models").exists()  # nothing written to the cache folder


def test_robustbench_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'robustbench:Standard': its checkpoint is not in RobustBench's "
                                                r"cache folder \(models/cifar10/Linf/Standard.pt"):
        load_model("robustbench:Standard")  # cifar10 and Linf by default
    for spec, match in [("robustbench:Nope", "RobustBench has no cifar10 Linf model 'Nope'"),
                        ("robustbench:Standard:mnist:Linf", "unknown RobustBench dataset 'mnist'; valid: cifar10"),
                        ("robustbench:Standard:cifar10:L3", "unknown threat model 'L3' for cifar10; valid: Linf"),
                        ("robustbench:Standard:cifar10",
                         "expected robustbench:NAME or robustbench:NAME:DATASET:THREAT")]:
        with pytest.raises(ValueError, match=match):
            load_model(spec)
    net = _architecture()
    torch.save(net.state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"checkpoint '.*wrong.pt' does not fit model 'robustbench:Standard'"):
        load_model("robustbench:Standard", checkpoint=tmp_path / "wrong.pt")
    (tmp_path / "damaged.pt").write_bytes((tmp_path / "wrong.pt").read_bytes()[:-5000])
    with pytest.raises(ValueError, match=r"'.*damaged.pt' is not a PyTorch checkpoint, or is truncated"):
        load_model("robustbench:Standard", checkpoint=tmp_path / "damaged.pt")


def test_missing_packages_are_named_with_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ImportError, match=r"timm: models need the timm package .*pip install 'diffjpeg\[zoo\]'"):
        load_model("timm:resnet18")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "robustbench" else real(name, *a))
    with pytest.raises(ImportError, match=r"robustbench: models need the robustbench package; pip install "
                                          r"'diffjpeg\[zoo\]'"):
        load_model("robustbench:Standard")
