"""Device-clean and compilable: every differentiable layer runs forward and backward on ``meta``
tensors (no value is ever read back to the host), the input checks keep their errors in eager mode
and are skipped only where no values exist, and ``torch.compile(fullgraph=True)`` of ``DiffJPEG``
matches eager mode without recompiling when only values change (the compile tests are slow: a
minute or more of compilation per graph on a small CPU).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import diffjpeg
from diffjpeg import BPDA, EOT, JPEG, DefendedModel, DiffJPEG
from diffjpeg.defenses import (FeatureDistillation, KMeansColors, MedianSmoothing, RandomJPEG, RandomResizePad,
                               SaliencyJPEG)
from diffjpeg.jpeg import validate
from diffjpeg.jpeg.rounding import ROUNDINGS


def _classifier() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


META_LAYERS = {
    **{f"DiffJPEG-{r}": (lambda r=r: DiffJPEG(50, rounding=r)) for r in ROUNDINGS},
    "DiffJPEG-exact-soft": lambda: DiffJPEG(50, rounding="soft", exact=True),
    "DiffJPEG-per-image-q": lambda: DiffJPEG(torch.tensor([30.0, 80.0])),
    "DiffJPEG-tables": lambda: DiffJPEG(qtables=torch.full((2, 8, 8), 7.0)),
    "DiffJPEG-learnable": lambda: DiffJPEG(50, learnable=True),
    "JPEG.surrogate": lambda: JPEG(50).surrogate(),
    "RandomJPEG": lambda: RandomJPEG(),
    "MedianSmoothing": lambda: MedianSmoothing(),
    "KMeansColors": lambda: KMeansColors(k=4),
    "FeatureDistillation": lambda: FeatureDistillation(),
    "RandomResizePad": lambda: RandomResizePad(),
    "SaliencyJPEG": lambda: SaliencyJPEG(_classifier()),
    "BPDA(DiffJPEG)": lambda: BPDA(DiffJPEG(50)),
    "BPDA(RandomJPEG)": lambda: BPDA(RandomJPEG()),
    "EOT(RandomJPEG)": lambda: EOT(RandomJPEG(), n=3),
    "DefendedModel(DiffJPEG)": lambda: DefendedModel(_classifier(), DiffJPEG(50), mean=(0.5,) * 3, std=(0.25,) * 3),
    "DefendedModel(EOT)": lambda: DefendedModel(_classifier(), EOT(RandomJPEG(), n=2)),
    "EOT(DefendedModel)": lambda: EOT(DefendedModel(_classifier(), RandomJPEG()), n=2, reduce="grad"),
}


@pytest.mark.parametrize("name", list(META_LAYERS))
def test_meta_forward_backward(name):
    layer = META_LAYERS[name]().to("meta")
    x = torch.empty(2, 3, 24, 16, device="meta", requires_grad=True)
    y = layer(x)
    assert y.device.type == "meta"
    if isinstance(layer, (DefendedModel, EOT)) and y.ndim == 2:
        assert y.shape == (2, 5)
    elif name != "RandomResizePad":  # random resize and pad changes the image size
        assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.device.type == "meta"


def test_meta_skips_only_value_checks():
    """On meta the shape and dtype checks still raise; values (which do not exist) are not read."""
    layer = DiffJPEG(50)
    with pytest.raises(ValueError, match="C = 1 .* or 3"):
        layer(torch.empty(1, 2, 8, 8, device="meta"))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.empty(1, 3, 8, 8, device="meta", dtype=torch.int64))
    with pytest.raises(ValueError, match="batch"):
        DiffJPEG(torch.tensor([50.0, 60.0]))(torch.empty(3, 3, 8, 8, device="meta"))


def test_value_check_modes():
    bad = torch.full((1, 3, 8, 8), 2.0)
    for mode in ("auto", "sync"):
        with validate.value_checks(mode):
            assert validate.value_check_mode(bad) == "sync"
            assert validate.value_check_mode(bad.to("meta")) is None
            with pytest.raises(ValueError, match=r"values in \[0, 1\], got values in \[2, 2\]"):
                DiffJPEG(50)(bad)
    with validate.value_checks("off"):
        assert validate.value_check_mode(bad) is None
        DiffJPEG(50)(bad)  # the user asked for no value checks
    assert validate.value_check_mode(bad) == "sync"  # the context manager restored "auto"
    with pytest.raises(ValueError, match="mode must be one of"):
        validate.set_value_checks("never")


def test_async_check_message():
    """The asynchronous assertion (what a GPU gets) carries the argument's name and expected range;
    on the CPU it fires at once, so it is testable here."""
    with pytest.raises(RuntimeError, match=r"x must be finite with values in \[0, 1\]"):
        torch._assert_async(torch.tensor(False), "x must be finite with values in [0, 1] (diffjpeg input check)")
    x = torch.full((1, 3, 8, 8), float("nan"))
    lo, hi = torch.aminmax(x)
    assert not bool((lo >= -validate.RANGE_TOLERANCE) & (hi <= 1 + validate.RANGE_TOLERANCE))  # NaN fails


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_checks_do_not_synchronise():
    x = torch.rand(2, 3, 16, 16, device="cuda")
    assert validate.value_check_mode(x) == "async"
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host synchronisation raises
    try:
        DiffJPEG(50)(x.requires_grad_()).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with validate.value_checks("sync"):  # the host-side check on request (an async failure would end the context)
        with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
            DiffJPEG(50)(torch.full((1, 3, 8, 8), 2.0, device="cuda"))
