"""DiffJPEG: fidelity to Pillow, gradients, per-image arguments, learnable tables, devices, dtypes."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import diffjpeg
from diffjpeg import DiffJPEG, diff_jpeg
from diffjpeg.jpeg.rounding import ROUNDINGS
from diffjpeg.jpeg.tables import quality_tables

PIL_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def pillow(x: torch.Tensor, q: int, subsampling: str = "420") -> torch.Tensor:
    """Pillow decode(encode(x)) of a (1, C, H, W) tensor whose values are multiples of 1/255."""
    arr = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q, subsampling=PIL_SUBSAMPLING[subsampling])
    out = np.asarray(Image.open(buf))
    out = out[..., None] if out.ndim == 2 else out
    return torch.from_numpy(out.copy()).permute(2, 0, 1)[None].float() / 255


def photo(h: int, w: int, gray: bool = False) -> torch.Tensor:
    import skimage.data

    arr = skimage.data.chelsea()[:h, :w]
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
    return x.mean(1, keepdim=True).mul(255).round().div(255) if gray else x


def psnr(a, b) -> float:
    mse = ((a - b) * 255).double().pow(2).mean().item()
    return 100.0 if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("setting", ["420", "444", "422", "gray"])
def test_fidelity_to_pillow(setting):
    """The default layer ("ste") reproduces Pillow exactly, so far above the 50 dB bar."""
    x = photo(101, 131, gray=setting == "gray")
    subsampling = "444" if setting == "gray" else setting
    scores = []
    for q in (1, 10, 30, 50, 75, 95):
        ours, reference = diff_jpeg(x, q=q, subsampling=subsampling), pillow(x, q, subsampling)
        assert torch.equal(ours, reference), (q, psnr(ours, reference))
        scores.append(psnr(ours, reference))
    assert np.mean(scores) >= 50


@pytest.mark.parametrize("rounding", ["cubic", "soft", "fourier", "noise"])
def test_exact_mode_forward_is_pillow_backward_is_the_estimator(rounding):
    x = photo(37, 45).requires_grad_(True)
    exact = DiffJPEG(q=30, rounding=rounding, exact=True, generator=torch.Generator().manual_seed(1)).train()
    y = exact(x)
    assert torch.equal(y.detach(), pillow(x.detach(), 30))
    (g_exact,) = torch.autograd.grad(y.pow(2).sum(), x)
    plain = DiffJPEG(q=30, rounding=rounding, generator=torch.Generator().manual_seed(1)).train()
    y_plain = plain(x)
    assert not torch.equal(y_plain, y)  # the estimator alone does not round exactly (train mode)
    (g_plain,) = torch.autograd.grad(y_plain.detach().sub(y_plain).neg().add(y.detach()).pow(2).sum(), x)
    assert torch.allclose(g_exact, g_plain, atol=1e-5)


def test_quality_tables_equal_pillows():
    qs = torch.arange(1, 101, dtype=torch.float32)
    ours = quality_tables(qs)
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    for q in range(1, 101):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        tables = Image.open(buf).quantization
        expected = torch.tensor([tables[0], tables[1]], dtype=torch.float32).reshape(2, 8, 8)
        assert torch.equal(ours[q - 1], expected), q


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 7, 5), (1, 1, 9, 17), (1, 3, 16, 16), (1, 3, 17, 33)])
@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
def test_shapes_preserved(shape, subsampling):
    x = torch.rand(shape)
    y = diff_jpeg(x, q=50, subsampling=subsampling)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    x = torch.rand(2, 3, 16, 24)
    y = diff_jpeg(x.to(dtype), q=75)
    assert y.dtype == dtype
    reference = diff_jpeg(x.to(dtype).float(), q=75)
    assert (y.float() - reference).abs().max() < 0.02


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_gradients_finite_and_nonzero(rounding):
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    q = torch.tensor([30.0, 70.0], requires_grad=True)
    qtables = quality_tables(torch.tensor([50.0]))[0].clone().requires_grad_(True)
    layer_kw = dict(rounding=rounding, training=True)
    diff_jpeg(x, q=q, **layer_kw).pow(2).sum().backward()
    diff_jpeg(x, qtables=qtables, **layer_kw).pow(2).sum().backward()
    for name, grad in (("x", x.grad), ("q", q.grad), ("qtables", qtables.grad)):
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("rounding", ["cubic", "soft", "fourier"])
def test_gradcheck_smooth_estimators(rounding):
    """Smooth estimators make the whole layer a smooth function: analytic == numerical gradient."""
    gen = torch.Generator().manual_seed(0)
    x = (0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=gen, dtype=torch.float64)).requires_grad_(True)
    tables = (4 + 20 * torch.rand(2, 8, 8, generator=gen, dtype=torch.float64)).round()
    kw = dict(subsampling="444", rounding=rounding, temperature=0.5, terms=4)
    assert torch.autograd.gradcheck(lambda t: diff_jpeg(t, qtables=tables, **kw), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("rounding", ["ste", "noise"])
def test_straight_through_gradient_is_the_unrounded_codec(rounding):
    """"ste" (and "noise" in eval) differentiate as if every rounding were the identity.

    Compare with the smooth layer whose roundings are all identities: a Fourier estimator with a
    huge temperature is not available, so use "soft" with a large temperature (soft-round -> x).
    """
    x = (0.2 + 0.6 * torch.rand(1, 3, 16, 16, dtype=torch.float64)).requires_grad_(True)
    (g_ste,) = torch.autograd.grad(diff_jpeg(x, q=50, rounding=rounding).sum(), x)
    (g_lin,) = torch.autograd.grad(diff_jpeg(x, q=50, rounding="soft", temperature=1e4).sum(), x)
    assert torch.allclose(g_ste, g_lin, atol=1e-3)


def test_clip_keeps_gradient_inside_range():
    x = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    diff_jpeg(x, q=90).sum().backward()
    assert (x.grad != 0).all()
    x = torch.zeros(1, 1, 8, 8, requires_grad=True)  # exactly on the boundary: still in range
    diff_jpeg(x, q=90).sum().backward()
    assert (x.grad != 0).all()


def test_per_image_quality_equals_separate_calls():
    x = torch.rand(3, 3, 20, 28)
    q = torch.tensor([5.0, 50.0, 95.0])
    batched = diff_jpeg(x, q=q)
    for i in range(3):
        assert torch.equal(batched[i : i + 1], diff_jpeg(x[i : i + 1], q=int(q[i])))


def test_per_image_tables_equal_separate_calls():
    x = torch.rand(2, 3, 16, 16)
    tables = torch.stack([quality_tables(torch.tensor([q]))[0] for q in (10.0, 80.0)])
    batched = diff_jpeg(x, qtables=tables)
    for i in range(2):
        assert torch.equal(batched[i : i + 1], diff_jpeg(x[i : i + 1], qtables=tables[i]))


def test_custom_tables_match_pillow():
    x = photo(64, 64)
    tables = torch.randint(1, 60, (2, 8, 8)).float()
    arr = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", qtables=[t.flatten().int().tolist() for t in tables], subsampling=2)
    reference = torch.from_numpy(np.asarray(Image.open(buf)).copy()).permute(2, 0, 1)[None].float() / 255
    assert psnr(diff_jpeg(x, qtables=tables), reference) > 48


def test_soft_rounding_tends_to_exact_rounding():
    x = (torch.arange(-3, 4)[:, None] + torch.linspace(-0.4, 0.4, 9)).flatten()  # away from ties
    exact = torch.round(x)
    errors = [(diffjpeg.functional.round_soft(x, t) - exact).abs().max().item() for t in (0.5, 0.1, 0.02)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


def test_fourier_rounding_converges_away_from_half_integers():
    x = (torch.arange(-3, 4)[:, None] + torch.linspace(-0.4, 0.4, 9)).flatten().double()
    exact = torch.round(x)
    errors = [(diffjpeg.functional.round_fourier(x, k) - exact).abs().max().item() for k in (2, 20, 200)]
    assert errors[0] > errors[1] > errors[2]


def test_cubic_formula():
    x = torch.tensor([-1.3, -0.2, 0.4, 1.6, 2.45])
    r = torch.round(x)
    assert torch.allclose(diffjpeg.functional.round_cubic(x), r + (x - r) ** 3)


def test_noise_estimator_train_vs_eval():
    x = torch.rand(1, 3, 16, 16)
    layer = DiffJPEG(q=50, rounding="noise", generator=torch.Generator().manual_seed(0))
    layer.train()
    assert layer.randomized
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)
    layer.eval()
    assert not layer.randomized
    assert torch.equal(layer(x), diff_jpeg(x, q=50))


def test_learnable_tables_stay_in_range_and_round_trip(tmp_path):
    layer = DiffJPEG(q=90, learnable=True)
    opt = torch.optim.SGD(layer.parameters(), lr=1e4)
    x = torch.rand(2, 3, 16, 16)
    for _ in range(3):
        opt.zero_grad()
        (-diff_jpeg(x, q=90).sub(layer(x)).pow(2).sum() - layer.qtables.sum()).backward()
        opt.step()
    assert layer.qtables.min() >= 1 and layer.qtables.max() <= 255
    assert layer.qtables.max() == 255  # the huge steps pushed entries to the bound
    tables = layer.export_qtables()
    assert len(tables) == 2 and all(len(t) == 64 and all(1 <= v <= 255 for v in t) for t in tables)
    clone = DiffJPEG(q=20, learnable=True)
    clone.load_state_dict(layer.state_dict())
    assert torch.equal(clone(x), layer(x))
    path = tmp_path / "t.jpg"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path, qtables=tables)
    stored = Image.open(path).quantization
    assert [list(stored[0]), list(stored[1])] == tables


def test_learnable_tables_get_gradient_and_training_lowers_loss():
    layer = DiffJPEG(q=10, learnable=True)
    x = photo(32, 32)
    opt = torch.optim.Adam(layer.parameters(), lr=2.0)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (layer(x) - x).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_module_matches_functional_and_repr():
    x = torch.rand(1, 3, 16, 16)
    layer = DiffJPEG(q=33, subsampling="422")
    assert torch.equal(layer(x), diff_jpeg(x, q=33, subsampling="422"))
    assert "q=33" in repr(layer)
    assert layer.differentiable and layer.surrogate() is layer


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 33, 47)
    cpu = diff_jpeg(x, q=40)
    gpu = diff_jpeg(x.cuda(), q=40)
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)  # integer-exact arithmetic: identical on every device
    g_cpu = torch.autograd.grad(diff_jpeg(x.requires_grad_(True), q=40, rounding="cubic").sum(), x)[0]
    xg = x.detach().cuda().requires_grad_(True)
    g_gpu = torch.autograd.grad(diff_jpeg(xg, q=40, rounding="cubic").sum(), xg)[0]
    assert torch.allclose(g_gpu.cpu(), g_cpu, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# bad input: each case raises a clear error naming the argument

BAD_CALLS = [
    (TypeError, "x must be a torch.Tensor", lambda: diff_jpeg(np.zeros((1, 3, 8, 8)))),
    (ValueError, r"x must have shape \(B, C, H, W\)", lambda: diff_jpeg(torch.rand(3, 8, 8))),
    (ValueError, "C = 1 .* or 3", lambda: diff_jpeg(torch.rand(1, 4, 8, 8))),
    (ValueError, "x must be finite", lambda: diff_jpeg(torch.full((1, 3, 8, 8), float("nan")))),
    (ValueError, "x must be finite", lambda: diff_jpeg(torch.full((1, 3, 8, 8), float("inf")))),
    (ValueError, r"x must have values in \[0, 1\]", lambda: diff_jpeg(torch.rand(1, 3, 8, 8) * 255)),
    (ValueError, r"x must have values in \[0, 1\]", lambda: diff_jpeg(torch.rand(1, 3, 8, 8) - 0.5)),
    (ValueError, r"x must have values in \[0, 1\], got values in \[0, 2\]",  # a channels-last batch, read in place
     lambda: diff_jpeg(torch.cat([torch.zeros(1, 8, 8, 3), torch.full((1, 8, 8, 3), 2.0)]).permute(0, 3, 1, 2))),
    (TypeError, "floating-point", lambda: diff_jpeg(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))),
    (ValueError, r"q must be finite and in \[1, 100\]", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), q=0)),
    (ValueError, r"q must be finite and in \[1, 100\]", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), q=101)),
    (ValueError, r"q must be finite and in \[1, 100\]", lambda: diff_jpeg(torch.rand(2, 3, 8, 8), q=torch.tensor([50.0, 0.0]))),
    (ValueError, "q has 3 entries but the batch has 2", lambda: diff_jpeg(torch.rand(2, 3, 8, 8), q=torch.tensor([5.0, 6, 7]))),
    (TypeError, "q must be an int, a float", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), q="high")),
    (ValueError, "qtables must have shape", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), qtables=torch.ones(2, 4, 4))),
    (ValueError, r"qtables entries must be in \[1, 255\]", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), qtables=torch.zeros(2, 8, 8))),
    (ValueError, r"qtables entries must be in \[1, 255\]", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), qtables=torch.full((2, 8, 8), 300.0))),
    (ValueError, "qtables must be finite", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), qtables=torch.full((2, 8, 8), float("nan")))),
    (ValueError, "qtables has 3 entries but the batch has 1", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), qtables=torch.ones(3, 2, 8, 8))),
    (ValueError, "subsampling must be one of", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), subsampling="411")),
    (ValueError, "rounding must be one of", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), rounding="nearest")),
    (ValueError, "temperature must be a positive", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), rounding="soft", temperature=0)),
    (ValueError, "terms must be a positive int", lambda: diff_jpeg(torch.rand(1, 3, 8, 8), rounding="fourier", terms=0)),
    (ValueError, "subsampling must be one of", lambda: DiffJPEG(subsampling="4:2:0")),
    (ValueError, "rounding must be one of", lambda: DiffJPEG(rounding="exact")),
    (ValueError, r"q must be finite and in \[1, 100\]", lambda: DiffJPEG(q=-3)),
    (ValueError, "q must be a single quality when learnable", lambda: DiffJPEG(q=torch.tensor([5.0, 6.0]), learnable=True)),
]


@pytest.mark.parametrize("error, message, call", BAD_CALLS, ids=[m for _, m, _ in BAD_CALLS])
def test_bad_input(error, message, call):
    with pytest.raises(error, match=message):
        call()
