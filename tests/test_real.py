"""The real codec as a defense (diffjpeg.jpeg.real): Pillow/torchvision round trips."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffjpeg.contract import Defense
from diffjpeg.jpeg.real import JPEG, real_jpeg, to_uint8

SUBSAMPLINGS = {"444": 0, "422": 1, "420": 2}


def images(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images with a few hard edges, float in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, max(1, h // 6), max(1, w // 6), generator=g)
    x = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.15 * (torch.rand(b, c, h, w, generator=g) - 0.5)
    x[..., : h // 2, : w // 3] *= 0.3
    return x.clamp(0, 1)


def pillow_reference(x: torch.Tensor, q=None, subsampling="420", tables=None) -> torch.Tensor:
    """Independent reference: Pillow save/open of round(x * 255), per image."""
    out = []
    for i in range(x.shape[0]):
        a = torch.floor(x[i] * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        a = a[..., 0] if a.shape[-1] == 1 else a
        kw = {"format": "JPEG"}
        if tables is not None:
            t = tables[i] if tables.ndim == 4 else tables
            kw["qtables"] = [t[k].flatten().int().tolist() for k in range(2)]
        else:
            kw["quality"] = int(q[i]) if isinstance(q, (list, torch.Tensor)) else int(q)
        if a.ndim == 3:
            kw["subsampling"] = SUBSAMPLINGS[subsampling]
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, **kw)
        d = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        d = d[..., None] if d.ndim == 2 else d
        out.append(torch.from_numpy(d.copy()).permute(2, 0, 1))
    return torch.stack(out).to(x.dtype) / 255


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
@pytest.mark.parametrize("q", [1, 23, 75, 100])
def test_equals_pillow(c, subsampling, q):
    x = images(2, c, 37, 50, seed=q)
    assert torch.equal(real_jpeg(x, q, subsampling), pillow_reference(x, q, subsampling))


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (8, 8), (17, 3), (16, 31)])
def test_any_size(size):
    x = images(2, 3, *size)
    y = real_jpeg(x, 50)
    assert y.shape == x.shape
    assert torch.equal(y, pillow_reference(x, 50))


def test_uint8_conversion_rounds_half_up():
    x = torch.tensor([0.0, 0.49 / 255, 0.5 / 255, 1.49 / 255, 254.5 / 255, 1.0, 1.0 + 1e-6])
    assert to_uint8(x).tolist() == [0, 0, 1, 1, 255, 255, 255]
    k = torch.arange(256, dtype=torch.float64) / 255  # k / 255 maps back to k exactly
    assert torch.equal(to_uint8(k), torch.arange(256).to(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtype_and_range_kept(dtype):
    x = images(2, 3, 16, 16).to(dtype)
    y = real_jpeg(x, 60)
    assert y.dtype == dtype and y.device == x.device and y.shape == x.shape
    assert not y.requires_grad
    k = y.double() * 255
    assert torch.allclose(k, k.round(), atol=0.2)  # values k / 255 (up to the dtype's precision)


def test_per_image_quality_and_rounding():
    x = images(3, 3, 24, 20)
    q = torch.tensor([10.0, 55.0, 90.0])
    y = real_jpeg(x, q)
    for i in range(3):
        assert torch.equal(y[i : i + 1], real_jpeg(x[i : i + 1], int(q[i])))
    assert torch.equal(real_jpeg(x, 74.6), real_jpeg(x, 75))
    assert torch.equal(real_jpeg(x, torch.tensor(40)), real_jpeg(x, 40))  # 0-d and integer tensors


def test_qtables_are_written_unscaled_in_natural_order():
    from diffjpeg.jpeg.tables import quality_tables

    x = images(2, 3, 40, 40)
    for q in (10, 50, 90):
        tables = quality_tables(torch.tensor([float(q)]))[0]
        assert torch.equal(real_jpeg(x, qtables=tables), real_jpeg(x, q))
    # a deliberately asymmetric table: a transposed table would give different pixels
    t = torch.arange(1, 65, dtype=torch.float32).reshape(8, 8)
    tables = torch.stack((t, t.T + 3))
    y = real_jpeg(x, qtables=tables, subsampling="444")
    assert torch.equal(y, pillow_reference(x, subsampling="444", tables=tables))
    assert not torch.equal(y, real_jpeg(x, qtables=tables.transpose(-1, -2), subsampling="444"))
    # what Pillow writes and reads back for these tables: natural order (also checked with jpeglib in test_io)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", qtables=[t.flatten().int().tolist()] * 2)
    assert Image.open(io.BytesIO(buf.getvalue())).quantization[0] == t.flatten().int().tolist()


def test_per_image_qtables():
    from diffjpeg.jpeg.tables import quality_tables

    x = images(3, 3, 20, 28)
    q = torch.tensor([15.0, 50.0, 95.0])
    tables = quality_tables(q)
    assert torch.equal(real_jpeg(x, qtables=tables), real_jpeg(x, q))
    assert torch.equal(real_jpeg(x, qtables=tables), pillow_reference(x, tables=tables))


def test_grayscale_uses_luma_table_only():
    x = images(1, 1, 24, 24)
    t = torch.full((8, 8), 12.0)
    assert torch.equal(real_jpeg(x, qtables=torch.stack((t, t * 5))), real_jpeg(x, qtables=torch.stack((t, t))))


def test_threads_do_not_change_results():
    x = images(4, 3, 130, 129)
    assert torch.equal(real_jpeg(x, 30, threads=1), real_jpeg(x, 30, threads=2))
    assert torch.equal(real_jpeg(x, 30, threads=1), real_jpeg(x, 30))


@pytest.mark.parametrize("c", [1, 3])
def test_torchvision_cpu_backend_equals_pillow(c):
    x = images(2, c, 33, 45)
    for q in (5, 75, 97):
        assert torch.equal(real_jpeg(x, q, "420", backend="torchvision"), real_jpeg(x, q, "420", backend="pillow"))


def test_torchvision_backend_falls_back_to_pillow_with_warning():
    x = images(2, 3, 16, 24)
    with pytest.warns(UserWarning, match="using Pillow"):
        y = real_jpeg(x, 50, "444", backend="torchvision")
    assert torch.equal(y, real_jpeg(x, 50, "444", backend="pillow"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        real_jpeg(x, 50, "444")  # "auto" falls back silently


def test_module_contract_and_surrogate():
    from diffjpeg.jpeg.codec import DiffJPEG

    x = images(2, 3, 32, 32)
    layer = JPEG(q=torch.tensor([30.4, 70.0]), subsampling="422")
    assert isinstance(layer, Defense) and not layer.differentiable and not layer.randomized
    y = layer(x)
    assert torch.equal(y, real_jpeg(x, torch.tensor([30.0, 70.0]), "422"))
    s = layer.surrogate()
    assert isinstance(s, DiffJPEG) and s.differentiable
    assert s.subsampling == "422" and torch.equal(s.q, torch.tensor([30.0, 70.0]))
    xs = x.clone().requires_grad_(True)
    ys = s(xs)
    ys.sum().backward()
    assert xs.grad is not None and torch.isfinite(xs.grad).all()
    assert (ys.detach() - y).abs().mean() < 1.0 / 255  # same codec, float pipeline
    t = torch.full((2, 8, 8), 7.0)
    s2 = JPEG(qtables=t, subsampling="444").surrogate()
    assert torch.equal(s2.qtables, t) and s2.subsampling == "444"
    assert "subsampling='422'" in repr(layer)


def test_module_follows_device_and_state_dict():
    layer = JPEG(q=torch.tensor([50.0]))
    assert layer.state_dict() == {}  # settings are not learnt state
    layer.to(torch.float64)
    assert torch.equal(layer(images(1, 3, 8, 8)), real_jpeg(images(1, 3, 8, 8), 50))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x": torch.zeros(1, 3, 8, 8, dtype=torch.uint8)}, TypeError, "x must be a floating"),
        ({"x": torch.zeros(1, 2, 8, 8)}, ValueError, "C = 1"),
        ({"x": torch.full((1, 3, 8, 8), 1.5)}, ValueError, r"\[0, 1\]"),
        ({"q": 0}, ValueError, "q must be"),
        ({"q": 101.0}, ValueError, "q must be"),
        ({"q": torch.tensor([50.0, 60.0, 70.0])}, ValueError, "q has 3 entries but the batch has 2"),
        ({"subsampling": "411"}, ValueError, "subsampling must be one of"),
        ({"backend": "opencv"}, ValueError, "backend must be one of"),
        ({"qtables": torch.ones(3, 2, 8, 8)}, ValueError, "qtables has 3 entries"),
        ({"qtables": torch.ones(7, 7)}, ValueError, "qtables must have shape"),
        ({"qtables": torch.zeros(8, 8)}, ValueError, r"qtables entries must be in \[1, 255\]"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    args = {"x": images(2, 3, 8, 8), "q": 50}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        real_jpeg(**args)


def test_module_validates_at_construction():
    with pytest.raises(ValueError, match="subsampling"):
        JPEG(subsampling="4:2:0")
    with pytest.raises(ValueError, match="backend"):
        JPEG(backend="nvjpeg")
    with pytest.raises(ValueError, match="q must be"):
        JPEG(q=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_paths_against_cpu():
    x = images(4, 3, 64, 48)
    xc = x.cuda()
    # nvJPEG (auto on CUDA for 4:4:4 colour images) is a different implementation: close, not bit-exact
    y_gpu = real_jpeg(xc, 75, "444")
    assert y_gpu.device == xc.device and y_gpu.shape == x.shape and y_gpu.dtype == x.dtype
    y_cpu = real_jpeg(x, 75, "444", backend="pillow")
    diff = (y_gpu.cpu() - y_cpu).abs() * 255
    # a loose bound: nvJPEG's quality tables and arithmetic are its own (not measured without a GPU)
    assert diff.mean() < 2.0, (diff.mean().item(), diff.max().item())
    # per-image qualities are grouped into nvJPEG calls
    q = torch.tensor([20.0, 90.0, 20.0, 60.0])
    y_q = real_jpeg(xc, q, "444")
    for i in range(4):
        assert torch.equal(y_q[i : i + 1], real_jpeg(xc[i : i + 1], int(q[i]), "444"))
    # what nvJPEG cannot do runs through Pillow and is then exact
    for kwargs in ({"subsampling": "420"}, {"subsampling": "444", "backend": "pillow"}):
        y = real_jpeg(xc, 40, **kwargs)
        assert y.device == xc.device
        assert torch.equal(y.cpu(), real_jpeg(x, 40, kwargs["subsampling"], backend="pillow"))
    assert torch.equal(real_jpeg(xc[:, :1], 40, "444").cpu(), real_jpeg(x[:, :1], 40, "444"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_quantised_in_float32_as_diffjpeg_does(dtype):
    """JPEG on a half-precision image codes the 8-bit image float32 gives, like its DiffJPEG surrogate."""
    from diffjpeg.jpeg.codec import DiffJPEG
    from diffjpeg.wrappers import BPDA

    x = images(3, 3, 37, 45, seed=5).to(dtype)
    assert torch.equal(to_uint8(x), to_uint8(x.float()))
    for q in (20, 75):
        y = BPDA(JPEG(q))(x)
        assert y.dtype == dtype
        assert torch.equal(y, DiffJPEG(q)(x))
        assert torch.equal(y, real_jpeg(x.float(), q).to(dtype))


def test_real_valued_quality_is_the_nearest_integer_in_both_codecs():
    """One rule: the forward pass uses round-half-up(q), a JPEG Pillow writes; the gradient is the formula's."""
    from diffjpeg.jpeg.codec import DiffJPEG, diff_jpeg

    x = images(2, 3, 24, 24, seed=9)
    for q, integer in ((50.5, 51), (49.5, 50), (30.4, 30), (74.6, 75), (1.4, 1), (99.5, 100)):
        expected = real_jpeg(x, integer)
        assert torch.equal(JPEG(q)(x), expected), q
        assert torch.equal(DiffJPEG(q)(x), expected), q
    q = torch.tensor([50.5, 20.2], requires_grad=True)
    y = diff_jpeg(x, q)
    assert torch.equal(y.detach(), real_jpeg(x, torch.tensor([51.0, 20.0])))
    y.sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad != 0).all()
    assert DiffJPEG(q=50.5).export_qtables() == DiffJPEG(q=51).export_qtables()


def test_one_default_quality():
    import inspect

    from diffjpeg.jpeg.codec import DEFAULT_QUALITY, DiffJPEG, diff_jpeg

    assert DEFAULT_QUALITY == 75
    for f in (JPEG, DiffJPEG, real_jpeg, diff_jpeg):
        assert inspect.signature(f).parameters["q"].default == DEFAULT_QUALITY, f
    x = images(1, 3, 16, 16)
    assert torch.equal(JPEG()(x), DiffJPEG()(x))
