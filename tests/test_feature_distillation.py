"""FeatureDistillation: tables, calibration, exactness against jpeglib + Pillow, gradients, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.fft import idctn
from skimage import data

import diffjpeg.defenses
from diffjpeg.defenses.feature_distillation import (
    FeatureDistillation,
    band_std,
    fd_tables,
    feature_distillation,
    select_bands,
    zigzag_order,
)
from diffjpeg.wrappers import BPDA

jpeglib = pytest.importorskip("jpeglib")


def photo(h: int = 61, w: int = 77) -> torch.Tensor:
    """A crop of scikit-image's astronaut, ``(1, 3, h, w)`` in [0, 1] on the 8-bit grid."""
    arr = data.astronaut()[100:100 + h, 150:150 + w]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


def to_uint8(y: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] -> ``(H, W, C)`` or ``(H, W)`` uint8 as Pillow returns it."""
    arr = (y[0].detach().double() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def pillow_file(x: torch.Tensor, path, **kwargs) -> None:
    arr = to_uint8(x)  # x is on the 8-bit grid, so this is floor(255 x + 1/2)
    Image.fromarray(arr).save(path, **kwargs)


def requantize(c: np.ndarray, tq: np.ndarray, tf: np.ndarray) -> np.ndarray:
    """``round(c * tq / tf)``, ties away from zero, in integer arithmetic."""
    v = c.astype(np.int64) * tq.astype(np.int64)
    tf = tf.astype(np.int64)
    return (np.sign(v) * ((2 * np.abs(v) + tf) // (2 * tf))).astype(np.int16)


def one_pass_reference(x: torch.Tensor, q: int, fd_table: np.ndarray, subsampling: str, tmp_path) -> np.ndarray:
    """FD one-pass built from independent parts: Pillow encodes, jpeglib reads the coefficients,
    numpy re-quantises with the FD table, jpeglib writes the file, Pillow decodes it."""
    sub = {"444": 0, "422": 1, "420": 2}[subsampling]
    pillow_file(x, tmp_path / "std.jpg", quality=q, subsampling=sub)
    jpg = jpeglib.read_dct(str(tmp_path / "std.jpg"))
    luma_t, chroma_t = jpg.qt[0], jpg.qt[-1]
    planes = {"Y": requantize(jpg.Y, luma_t, fd_table)}
    if jpg.Cb is not None:
        planes["Cb"] = requantize(jpg.Cb, chroma_t, fd_table)
        planes["Cr"] = requantize(jpg.Cr, chroma_t, fd_table)
    ntab = 2 if jpg.Cb is not None else 1
    out = jpeglib.from_dct(**planes, qt=np.stack([fd_table] * ntab).astype(np.uint16),
                           quant_tbl_no=np.array([0, 1, 1][:len(planes)], dtype=np.int16))
    out.height, out.width = jpg.height, jpg.width
    out.samp_factor, out.block_dims = jpg.samp_factor, jpg.block_dims
    out.write_dct(str(tmp_path / "fd.jpg"))
    return np.asarray(Image.open(tmp_path / "fd.jpg"))


# ------------------------------------------------------------------------------------------ tables


def test_zigzag_order_starts_as_jpeg():
    assert zigzag_order()[:10] == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0)]
    assert sorted(zigzag_order()) == [(r, c) for r in range(8) for c in range(8)]


def test_default_tables_structure_and_scaling():
    fd = FeatureDistillation()
    t = fd.tables
    assert t.shape == (2, 8, 8) and torch.equal(t[0], t[1])
    r, c = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    low = (r + c) <= 4  # default AS band: the first 15 zigzag bands
    assert low.sum() == 15 and torch.equal(fd.sensitive, low)
    assert torch.equal(t[0], torch.where(low, 20.0, 30.0))
    for scale in (2, 3):
        assert torch.equal(FeatureDistillation(scale=scale).tables, t * scale)
    t6 = FeatureDistillation(qs=(8, 50), band_size=6).tables[0]
    assert (t6 == 8).sum() == 6 and (t6 == 50).sum() == 58 and t6[0, 2] == 8 and t6[1, 2] == 50
    assert FeatureDistillation(band_size=0).tables.unique().tolist() == [30.0]
    assert FeatureDistillation(band_size=64).tables.unique().tolist() == [20.0]
    q = fd.export_qtables()
    assert len(q) == 2 and q[0] == t[0].flatten().int().tolist() and all(isinstance(v, int) for v in q[0])


# ------------------------------------------------------------------------------------- calibration


def synthetic_blocks(n_blocks_side: int, stds: np.ndarray, seed: int) -> torch.Tensor:
    """A grayscale image whose 8x8 blocks have independent Gaussian DCT coefficients with the given
    per-band deviations (orthonormal DCT of 0..255 samples, as JPEG's), built with scipy."""
    rng = np.random.default_rng(seed)
    coefs = rng.standard_normal((n_blocks_side, n_blocks_side, 8, 8)) * stds
    blocks = idctn(coefs, axes=(2, 3), norm="ortho") + 128.0
    img = blocks.transpose(0, 2, 1, 3).reshape(n_blocks_side * 8, n_blocks_side * 8) / 255.0
    assert 0 <= img.min() and img.max() <= 1
    return torch.from_numpy(img)[None, None].float()


def test_calibration_picks_the_bands_with_largest_deviation():
    stds = np.full((8, 8), 1.5)
    chosen = [(7, 7), (0, 5), (3, 3), (6, 1), (2, 7)]  # not a zigzag prefix
    for k, (r, c) in enumerate(chosen):
        stds[r, c] = 9.0 + k
    imgs = torch.cat([synthetic_blocks(16, stds, seed) for seed in range(4)])  # 1024 blocks
    fd = FeatureDistillation(band_size=5)
    assert not fd.calibrated
    measured = fd.calibrate(imgs)
    assert fd.calibrated
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for r, c in chosen:
        expected[r, c] = True
    assert torch.equal(fd.sensitive, expected)
    assert torch.equal(fd.tables[0], torch.where(expected, 20.0, 30.0))
    rel = (measured / torch.from_numpy(stds) - 1).abs().max()
    assert rel < 0.12, rel  # 1024 samples per band: sampling error of a deviation ~ 2-3 %
    # a loader of (images, labels) gives the same deviations as one tensor
    loader = [(imgs[i:i + 2], torch.zeros(2)) for i in range(0, 4, 2)]
    assert torch.allclose(band_std(loader), measured)
    # the calibration travels with the state dict
    fresh = FeatureDistillation(band_size=5)
    fresh.load_state_dict(fd.state_dict())
    assert fresh.calibrated and torch.equal(fresh.tables, fd.tables)


def test_calibration_on_photos_keeps_dc_in_the_sensitive_band():
    fd = FeatureDistillation(band_size=10)
    std = fd.calibrate(photo(64, 64))
    assert fd.sensitive[0, 0] and fd.sensitive.sum() == 10
    assert std[0, 0] == std.max() and std[7, 7] < std[0, 1]


# ----------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("subsampling", ["420", "444"])
def test_one_pass_equals_independent_reference(subsampling, tmp_path):
    x = photo()
    fd = FeatureDistillation(mode="1pass", q=90, subsampling=subsampling)
    y = fd(x)
    ref = one_pass_reference(x, 90, fd.tables[0].numpy().astype(np.int64), subsampling, tmp_path)
    assert np.array_equal(to_uint8(y), ref)
    pillow_file(x, tmp_path / "plain.jpg", quality=90, subsampling={"444": 0, "420": 2}[subsampling])
    plain = np.asarray(Image.open(tmp_path / "plain.jpg"))
    assert np.abs(plain.astype(int) - ref.astype(int)).mean() > 0.5  # FD is not plain JPEG


def test_one_pass_grayscale_and_scale(tmp_path):
    x = photo(40, 53).mean(1, keepdim=True)
    x = (x * 255).round() / 255
    fd = FeatureDistillation(q=75, scale=2)
    ref = one_pass_reference(x, 75, fd.tables[0].numpy().astype(np.int64), "420", tmp_path)
    assert np.array_equal(to_uint8(fd(x)), ref)


@pytest.mark.parametrize("subsampling, scale", [("420", 1), ("444", 3)])
def test_two_pass_equals_pillow_with_fd_tables(subsampling, scale, tmp_path):
    x = photo()
    fd = FeatureDistillation(mode="2pass", scale=scale, subsampling=subsampling)
    pillow_file(x, tmp_path / "fd.jpg", qtables=fd.export_qtables(), subsampling={"444": 0, "420": 2}[subsampling])
    assert np.array_equal(to_uint8(fd(x)), np.asarray(Image.open(tmp_path / "fd.jpg")))


@pytest.mark.parametrize("mode", ["1pass", "2pass"])
def test_saved_file_decodes_to_the_output(mode, tmp_path):
    x = photo(33, 45)
    fd = FeatureDistillation(mode=mode)
    out = fd.save(tmp_path / "out.jpg", x)
    assert torch.equal(out, fd(x))
    assert np.array_equal(to_uint8(out), np.asarray(Image.open(tmp_path / "out.jpg")))
    assert jpeglib.read_dct(str(tmp_path / "out.jpg")).qt[0].tolist() == fd.tables[0].int().tolist()


# ------------------------------------------------------------------------ gradients and shapes


def test_gradients_flow_and_bpda_matches():
    fd = FeatureDistillation()
    assert fd.differentiable and not fd.randomized and fd.surrogate() is fd
    x = photo(24, 24).requires_grad_(True)
    w = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    (fd(x) * w).sum().backward()
    g = x.grad.clone()
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    x.grad = None
    (BPDA(fd)(x) * w).sum().backward()
    assert torch.allclose(x.grad, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_preserved(dtype):
    x = torch.rand(3, 3, 13, 21, dtype=dtype)
    for mode in ("1pass", "2pass"):
        y = FeatureDistillation(mode=mode)(x)
        assert y.shape == x.shape and y.dtype == dtype and 0 <= y.min() and y.max() <= 1
    g = torch.rand(2, 1, 9, 9, dtype=dtype)
    assert FeatureDistillation()(g).shape == g.shape


def test_batch_is_per_image():
    x = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    fd = FeatureDistillation()
    y = fd(x)
    assert torch.equal(y[1:2], fd(x[1:2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = photo()
    fd = FeatureDistillation()
    assert torch.equal(fd.to("cuda")(x.cuda()).cpu(), FeatureDistillation()(x))


# --------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mode": "3pass"}, ValueError, r"mode must be one of \('1pass', '2pass'\), got '3pass'"),
    ({"scale": 0}, ValueError, r"scale must be an integer in \[1, 8\]"),
    ({"scale": 9}, ValueError, r"scale must be an integer in \[1, 8\].*got 9"),
    ({"scale": 1.5}, TypeError, r"scale must be a positive int.*float 1.5"),
    ({"band_size": 65}, ValueError, r"band_size must be an integer in \[0, 64\], got 65"),
    ({"band_size": -1}, ValueError, r"band_size must be an integer in \[0, 64\], got -1"),
    ({"band_size": "4"}, TypeError, r"band_size must be an integer"),
    ({"qs": (0, 30)}, ValueError, r"qs entries must be in \[1, 255\]"),
    ({"qs": 20}, TypeError, r"qs must be a pair of ints"),
    ({"q": 0}, ValueError, r"q must be finite and in \[1, 100\]"),
    ({"subsampling": "411"}, ValueError, r"subsampling must be one of"),
])
def test_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        FeatureDistillation(**kwargs)


def test_bad_inputs():
    fd = FeatureDistillation()
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        fd(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="data batch 0 must have shape"):
        fd.calibrate(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="at least two 8x8 luma blocks"):
        fd.calibrate(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one image"):
        fd.save("unused.jpg", torch.rand(2, 3, 8, 8))


def test_functional_form_and_its_checks():
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    fd = FeatureDistillation(q=80, scale=2)
    assert torch.equal(feature_distillation(x, fd.tables, "1pass", 80), fd(x))
    assert torch.equal(feature_distillation(x, fd.tables, "1pass", torch.tensor([80, 80])), fd(x))
    assert torch.equal(fd_tables(fd.sensitive, (20, 30), 2), fd.tables)
    with pytest.raises(ValueError, match=r"tables entries must be in \[1, 255\]"):
        feature_distillation(x, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="tables has 3 entries but the batch has 2 images"):
        feature_distillation(x, fd.tables.expand(3, 2, 8, 8))
    with pytest.raises(ValueError, match="q has 3 entries"):
        feature_distillation(x, fd.tables, "1pass", torch.tensor([80, 80, 80]))
    with pytest.raises(TypeError, match="sensitive must be a bool mask"):
        fd_tables(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"std must have shape \(8, 8\)"):
        select_bands(torch.zeros(64), 4)
    with pytest.raises(TypeError, match="data must be a"):
        band_std(3)


def test_registry_round_trip():
    assert "fd" in diffjpeg.defenses.available()
    fd = diffjpeg.defenses.build("fd:mode=2pass,scale=2,qs=(10, 40),band_size=6")
    assert isinstance(fd, FeatureDistillation)
    assert (fd.mode, fd.scale, fd.qs, fd.band_size) == ("2pass", 2, (10, 40), 6)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(diffjpeg.defenses.build("fd")(x), FeatureDistillation()(x))
    with pytest.raises(ValueError, match="mode must be one of"):
        diffjpeg.defenses.build("fd:mode=3pass")
