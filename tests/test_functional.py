"""diffjpeg.functional: the functional form of every operation, each checking its arguments."""
from __future__ import annotations

import re

import pytest
import torch

import diffjpeg.functional as F
from diffjpeg import defenses
from diffjpeg.jpeg import chroma, codec, color, dct, rounding


def test_docstring_lists_every_export_and_every_export_exists():
    doc = F.__doc__
    for name in F.__all__:
        assert callable(getattr(F, name)), name
        assert f":func:`{name}`" in doc, name
    documented = set(re.findall(r":func:`(\w+)`", doc))
    assert documented <= set(F.__all__), documented - set(F.__all__)


def test_every_defense_is_named_in_the_docstring():
    for cls in (defenses.BitDepth, defenses.MedianSmoothing, defenses.KMeansColors, defenses.FeatureDistillation,
                defenses.RandomResizePad, defenses.TVM, defenses.SaliencyJPEG, defenses.RandomJPEG,
                defenses.PixelDepthReconstruction):
        assert f"``{cls.__name__}``" in F.__doc__, cls.__name__


def test_defense_functions_are_the_defenses_own():
    from diffjpeg.defenses import bit_depth, feature_distillation, kmeans, median, resize_pad, saliency_jpeg, tvm

    assert F.bit_depth is bit_depth.bit_depth and F.median_smoothing is median.median_smoothing
    assert F.kmeans_colors is kmeans.kmeans_colors and F.tv_reconstruct is tvm.tv_reconstruct
    assert F.feature_distillation is feature_distillation.feature_distillation
    assert F.resize_pad is resize_pad.resize_pad
    assert F.saliency_jpeg_coefficients is saliency_jpeg.saliency_jpeg_coefficients
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(F.bit_depth(x, bits=3), defenses.BitDepth(bits=3)(x))
    assert torch.equal(F.median_smoothing(x, "1x3"), defenses.MedianSmoothing("1x3")(x))
    bad = torch.rand(1, 2, 8, 8)
    for f, kwargs in ((F.bit_depth, {"bits": 4}), (F.median_smoothing, {}), (F.kmeans_colors, {}),
                      (F.feature_distillation, {"tables": torch.full((2, 8, 8), 10.0)})):
        with pytest.raises(ValueError, match="C = 1"):
            f(bad, **kwargs)


def test_codec_stages_equal_the_stage_modules():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 40, generator=g)
    tables = F.quality_tables(60)
    assert tables.shape == (2, 8, 8)
    assert torch.equal(tables, codec.resolve_qtables(60, None, 1, "cpu", torch.float32)[0])
    assert F.quality_tables(torch.tensor([60.0, 10.0])).shape == (2, 2, 8, 8)
    coefficients = F.encode_coefficients(x, tables, "422")
    assert torch.equal(F.decode_coefficients(coefficients, tables, "422", size=(24, 40)), F.diff_jpeg(x, 60, "422"))
    samples = x * 255
    assert torch.equal(F.rgb_to_ycbcr(samples), color.rgb_to_ycbcr(samples, True))
    assert torch.equal(F.ycbcr_to_rgb(samples, integer=False), color.ycbcr_to_rgb(samples, False))
    planes = samples[:, 1:]
    assert torch.equal(F.chroma_downsample(planes, "420"), chroma.chroma_downsample(planes, "420", True))
    assert torch.equal(F.chroma_upsample(planes, "422", False), chroma.chroma_upsample(planes, "422", False))
    blocks = samples - 128
    assert torch.equal(F.dct_8x8(blocks), dct.dct_8x8(blocks))
    assert torch.allclose(F.idct_8x8(F.dct_8x8(blocks)), blocks, atol=1e-3)
    u = torch.linspace(-3, 3, 50)
    assert torch.equal(F.round_ste(u), rounding.round_ste(u))
    assert torch.equal(F.round_noise(u, False), rounding.round_ste(u))
    noisy = F.round_noise(u, True, torch.Generator().manual_seed(1))
    assert ((noisy - u).abs() <= 0.5).all() and not torch.equal(noisy, u)
    assert torch.equal(F.real_jpeg(x, 60), F.diff_jpeg(x, 60))


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.dct_8x8(torch.rand(1, 1, 16, 12)), ValueError, r"multiples of 8.*W = 12"),
    (lambda: F.idct_8x8(torch.rand(4, 8)), ValueError, r"multiples of 8.*H = 4"),
    (lambda: F.dct_8x8(torch.zeros(8, 8, dtype=torch.int64)), TypeError, "x must be a floating-point tensor"),
    (lambda: F.dct_8x8(torch.full((8, 8), float("nan"))), ValueError, "x must be finite"),
    (lambda: F.dct_8x8([[0.0] * 8] * 8), TypeError, "x must be a torch.Tensor"),
    (lambda: F.rgb_to_ycbcr(torch.rand(1, 1, 4, 4)), ValueError, r"rgb must have shape \(B, 3, H, W\)"),
    (lambda: F.rgb_to_ycbcr(torch.rand(1, 3, 4, 4) * 300), ValueError, r"rgb must hold samples in \[0, 255\]"),
    (lambda: F.ycbcr_to_rgb(torch.rand(1, 3, 4, 4), integer="yes"), TypeError, "integer must be True or False"),
    (lambda: F.chroma_downsample(torch.rand(1, 2, 7, 8), "420"), ValueError, "h a multiple of 2"),
    (lambda: F.chroma_downsample(torch.rand(1, 2, 8, 8), "411"), ValueError, "subsampling must be one of"),
    (lambda: F.chroma_upsample(torch.rand(2, 4, 4), "420"), ValueError, r"planes must have shape \(B, n, H, W\)"),
    (lambda: F.quality_tables(0), ValueError, r"q must be finite and in \[1, 100\]"),
    (lambda: F.encode_coefficients(torch.rand(2, 3, 8, 8), torch.ones(3, 2, 8, 8)), ValueError,
     "qtables has 3 entries but the batch has 2"),
    (lambda: F.encode_coefficients(torch.rand(1, 3, 8, 8), torch.ones(8, 8), quantize=3), TypeError, "quantize"),
    (lambda: F.decode_coefficients(torch.zeros(1, 1, 1, 8, 8), torch.ones(8, 8)), TypeError, "list of 1"),
    (lambda: F.decode_coefficients([torch.zeros(1, 1, 1, 8, 8)] * 2, torch.ones(8, 8)), ValueError, "got 2"),
    (lambda: F.decode_coefficients([torch.zeros(1, 2, 2, 8, 8)], torch.ones(8, 8), size=(8, 8)), ValueError,
     "needs 1x1"),
    (lambda: F.decode_coefficients([torch.zeros(1, 2, 2, 8)], torch.ones(8, 8)), ValueError,
     r"coefficients\[0\] must have shape"),
    (lambda: F.decode_coefficients([torch.zeros(1, 1, 1, 8, 8)], torch.ones(8, 8), size=(0, 8)), ValueError, "size"),
    (lambda: F.round_soft(torch.rand(3), 0), ValueError, "temperature"),
    (lambda: F.round_fourier(torch.rand(3), 0), ValueError, "terms"),
    (lambda: F.round_noise(torch.rand(3), "no"), TypeError, "training must be True or False"),
    (lambda: F.round_noise(torch.rand(3), True, generator=1), TypeError, "generator"),
    (lambda: F.round_cubic(torch.arange(3)), TypeError, "floating-point"),
    (lambda: F.real_jpeg(torch.rand(1, 3, 8, 8), q=0), ValueError, "q must be"),
])
def test_bad_arguments_are_refused_with_their_name(call, error, match):
    with pytest.raises(error, match=match):
        call()
