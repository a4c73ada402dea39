"""SaliencyJPEG: one standard file decoded exactly by Pillow, finer quantisation where salient,
reproducible jitter, errors, registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

import diffjpeg.defenses
from diffjpeg.defenses.saliency_jpeg import SaliencyJPEG, gradient_saliency, saliency_jpeg_coefficients, salient_blocks
from diffjpeg.wrappers import RNGSnapshot

jpeglib = pytest.importorskip("jpeglib")


def photo(h: int = 37, w: int = 45, channels: int = 3) -> torch.Tensor:
    arr = data.astronaut()[100:100 + h, 150:150 + w]
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
    if channels == 1:
        x = (x.mean(1, keepdim=True) * 255).round() / 255
    return x


def to_uint8(y: torch.Tensor) -> np.ndarray:
    arr = (y[0].detach().double() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def small_classifier(channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10)).eval()


class CenterClassifier(nn.Module):
    """Logits from a 3x3 convolution read only in the window rows/cols 16..31 of a 48x48 image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[..., 16:32, 16:32].mean((2, 3))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- one standard file


@pytest.mark.parametrize("subsampling, channels", [("420", 3), ("444", 3), ("422", 3), ("420", 1)])
def test_pillow_decodes_the_file_to_the_output(subsampling, channels, tmp_path):
    x = photo(channels=channels)
    d = SaliencyJPEG(small_classifier(channels), subsampling=subsampling, generator=gen(0))
    out = d.save(tmp_path / "s.jpg", x)
    mask = d.last_mask
    assert 0 < mask.sum() < mask.numel()  # both kinds of block present
    assert np.array_equal(to_uint8(out), np.asarray(Image.open(tmp_path / "s.jpg")))
    jpg = jpeglib.read_dct(str(tmp_path / "s.jpg"))
    assert jpg.qt[0].tolist() == d.tables[0].int().tolist()  # the file holds the q_high table only
    # the same draw through forward gives the same output
    d.generator.manual_seed(0)
    assert torch.equal(d(x), out)


def test_all_salient_is_jpeg_at_q_high_and_none_is_jpeg_with_the_coarse_table(tmp_path):
    x = photo()
    arr = to_uint8(x)
    clf = small_classifier()
    high = SaliencyJPEG(clf, q_high=85, q_low=30, fraction=1.0, generator=gen(0))(x)
    Image.fromarray(arr).save(tmp_path / "h.jpg", quality=85)
    assert np.array_equal(to_uint8(high), np.asarray(Image.open(tmp_path / "h.jpg")))
    d = SaliencyJPEG(clf, q_high=85, q_low=30, fraction=0.0, generator=gen(0))
    coarse = d.coarse
    assert coarse.max() <= 255 and torch.equal(torch.remainder(coarse, d.tables), torch.zeros_like(coarse))
    Image.fromarray(arr).save(tmp_path / "l.jpg", qtables=[t.flatten().int().tolist() for t in coarse])
    assert np.array_equal(to_uint8(d(x)), np.asarray(Image.open(tmp_path / "l.jpg")))


# ----------------------------------------------------------------------------- where it is fine


def test_salient_blocks_are_quantised_finer():
    x = torch.from_numpy(data.astronaut()[40:88, 180:228].copy()).permute(2, 0, 1)[None].float() / 255
    d = SaliencyJPEG(CenterClassifier(), q_high=90, q_low=15, n_jitter=4, jitter=2, fraction=4 / 36,
                     generator=gen(3))
    y = d(x)
    expected = torch.zeros(1, 6, 6, dtype=torch.bool)
    expected[0, 2:4, 2:4] = True  # the blocks the classifier reads
    assert torch.equal(d.last_mask, expected)
    sal = d.last_saliency[0, 0]
    assert sal[:8].sum() == 0 and sal[:, 40:].sum() == 0  # beyond the window plus the jitter: no gradient
    err = ((y - x) ** 2).mean(1)[0].reshape(6, 8, 6, 8).mean((1, 3))  # per-block MSE
    assert err[expected[0]].max() < 0.5 * err[~expected[0]].mean()


def test_threshold_mode_and_block_ranking():
    scores = torch.tensor([[[0.1, 1.0], [0.5, 0.5]]])
    assert salient_blocks(scores, threshold=0.5).tolist() == [[[False, True], [True, True]]]
    assert salient_blocks(scores, fraction=0.5).tolist() == [[[False, True], [True, False]]]  # tie: raster order
    d = SaliencyJPEG(small_classifier(), threshold=1.0, n_jitter=1, jitter=0, noise=0.0)
    assert not d.randomized
    d(photo())
    assert d.last_mask.sum() == 1  # only the block with the largest saliency reaches 1.0


# -------------------------------------------------------------------------------- randomness


def test_jitter_averaging_is_reproducible_with_a_seeded_generator():
    x = photo()
    clf = small_classifier()
    a = SaliencyJPEG(clf, generator=gen(7))
    b = SaliencyJPEG(clf, generator=gen(7))
    c = SaliencyJPEG(clf, generator=gen(8))
    assert a.randomized
    ya, yb = a(x), b(x)
    c(x)
    assert torch.equal(ya, yb) and torch.equal(a.last_saliency, b.last_saliency)
    assert not torch.allclose(a.last_saliency, c.last_saliency)
    snap = RNGSnapshot(a)
    first, first_saliency = a(x), a.last_saliency
    a(x)  # every call draws afresh
    assert not torch.allclose(a.last_saliency, first_saliency)
    with snap.replay():
        assert torch.equal(a(x), first)


def test_global_rng_when_no_generator():
    x = photo()
    d = SaliencyJPEG(small_classifier())
    torch.manual_seed(5)
    s1 = d.saliency(x)
    torch.manual_seed(5)
    assert torch.equal(d.saliency(x), s1)


def test_jitter_averaging_undoes_the_shifts():
    """A classifier with per-pixel gradient ``2 z`` (attached to the content, not to positions):
    each shifted copy's map, shifted back, lands on the original pixels, so away from the border
    (where copies see replicated edges) the jitter average equals the unjittered map."""

    class Energy(nn.Module):
        def forward(self, z):
            s = (z * z).flatten(1).sum(1)
            return torch.stack([s, s], 1)  # logsumexp = s + log 2: gradient exactly 2 z

    x = photo(32, 32)
    plain = gradient_saliency(Energy(), x, n_jitter=1, jitter=0, noise=0.0)
    assert torch.allclose(plain, 2 * x.sum(1, keepdim=True), rtol=1e-3)  # float32 logsumexp
    jittered = gradient_saliency(Energy(), x, n_jitter=6, jitter=3, noise=0.0, generator=gen(4))
    inner = (..., slice(3, -3), slice(3, -3))
    assert torch.allclose(jittered[inner], plain[inner], rtol=1e-3)
    # the copies were shifted: without the shift back the maps would not line up
    assert not torch.allclose(torch.roll(plain, (1, 2), (2, 3))[inner], plain[inner], atol=1e-2)


# -------------------------------------------------------------------- gradients, shapes, errors


def test_gradients_flow_and_shape_dtype_kept():
    clf = small_classifier().double()  # the classifier sees the input's dtype
    d = SaliencyJPEG(clf, generator=gen(0))
    assert d.differentiable and d.surrogate() is d
    x = photo(24, 24).double().requires_grad_(True)
    y = d(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in clf.parameters())
    z = torch.rand(3, 3, 17, 30, dtype=torch.float64)
    assert SaliencyJPEG(clf, generator=gen(0))(z).shape == z.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_and_matches_cpu_output_for_a_fixed_mask():
    x = photo()
    d = SaliencyJPEG(small_classifier(), jitter=0, noise=0.0, n_jitter=1)
    cpu = d(x)
    assert torch.equal(d.to("cuda")(x.cuda()).cpu(), cpu)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"q_high": 30, "q_low": 50}, ValueError, r"q_low must be <= q_high, got q_low = 50, q_high = 30"),
    ({"q_high": 101}, ValueError, r"q_high must be finite and in \[1, 100\]"),
    ({"n_jitter": 0}, ValueError, r"n_jitter must be an integer >= 1, got 0"),
    ({"jitter": -1}, ValueError, r"jitter must be an integer >= 0, got -1"),
    ({"jitter": 1.5}, TypeError, r"jitter must be an integer"),
    ({"noise": -0.1}, ValueError, r"noise must be a finite number >= 0"),
    ({"fraction": 1.5}, ValueError, r"fraction must be a number in \[0, 1\], got 1.5"),
    ({"threshold": -0.1}, ValueError, r"threshold must be a number in \[0, 1\]"),
    ({"fraction": 0.3, "threshold": 0.5}, ValueError, "give fraction or threshold, not both"),
    ({"subsampling": "411"}, ValueError, "subsampling must be one of"),
    ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
])
def test_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        SaliencyJPEG(small_classifier(), **kwargs)


def test_bad_classifier_and_inputs():
    with pytest.raises(TypeError, match="classifier must be an nn.Module"):
        SaliencyJPEG(lambda z: z)
    d = SaliencyJPEG(nn.Identity(), generator=gen(0))
    with pytest.raises(ValueError, match=r"classifier must return logits of shape \(N, K\)"):
        d(photo())
    class Detached(nn.Module):
        def forward(self, z):
            with torch.no_grad():
                return z.flatten(1)[:, :4] * 2.0

    with pytest.raises(ValueError, match="does not depend on its input through autograd"):
        SaliencyJPEG(Detached())(photo())

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(4))

        def forward(self, z):
            return self.bias.expand(z.shape[0], 4)

    d = SaliencyJPEG(Constant(), jitter=0, noise=0.0, n_jitter=1)
    d(photo())
    assert d.last_saliency.abs().sum() == 0  # nothing salient; fraction still picks the first half
    d = SaliencyJPEG(small_classifier())
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        d(torch.full((1, 3, 8, 8), -1.0))
    with pytest.raises(ValueError, match="one image"):
        d.save("unused.jpg", torch.rand(2, 3, 8, 8))


def test_functional_checks():
    x = photo(16, 24)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(1, 2, 3\)"):
        saliency_jpeg_coefficients(x, torch.ones(1, 3, 3, dtype=torch.bool), 90, 20)
    with pytest.raises(ValueError, match="got neither"):
        salient_blocks(torch.rand(1, 2, 3))
    with pytest.raises(TypeError, match="classifier must be an nn.Module"):
        gradient_saliency(lambda z: z, x)
    coefficients, tables = saliency_jpeg_coefficients(x, torch.ones(1, 2, 3, dtype=torch.bool), 90, 20)
    assert len(coefficients) == 3 and coefficients[0].shape == (1, 2, 3, 8, 8) and tables.shape == (1, 2, 8, 8)


def test_registry_round_trip():
    clf = small_classifier()
    assert "saliency_jpeg" in diffjpeg.defenses.available()
    d = diffjpeg.defenses.build("saliency_jpeg:q_high=80,q_low=10,fraction=0.25,jitter=2", classifier=clf)
    assert isinstance(d, SaliencyJPEG) and d.classifier is clf
    assert (d.q_high, d.q_low, d.fraction, d.jitter) == (80, 10, 0.25, 2)
    with pytest.raises(TypeError, match="classifier"):
        diffjpeg.defenses.build("saliency_jpeg:q_high=80")
