"""Pixel-space defenses: BitDepth, MedianSmoothing, TVM, KMeansColors, RandomResizePad.

References are independent of the implementations: numpy bit shifts, scipy.ndimage's median
filter, scikit-image's Chambolle TV denoiser and a scipy L-BFGS-B solve of the TVM objective,
a per-image numpy Lloyd loop, and F.interpolate plus slicing for resize-and-pad.
"""
from __future__ import annotations


import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import nn

from diffjpeg import BPDA, EOT, DefendedModel, RNGSnapshot
from diffjpeg.defenses import build
from diffjpeg.defenses.bit_depth import BitDepth, bit_depth
from diffjpeg.defenses.kmeans import KMeansColors, kmeans_colors
from diffjpeg.defenses.median import MedianSmoothing, median_smoothing
from diffjpeg.defenses.resize_pad import RandomResizePad, resize_pad
from diffjpeg.defenses.tvm import TVM, tv_objective, tv_reconstruct

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------ BitDepth


def test_bit_depth_bits_equals_numpy_shifts():
    x = torch.cat([rand(2, 3, 8, 8).flatten(), torch.arange(256) / 255.0, (torch.arange(255) + 0.5) / 255.0])
    x = x.view(1, 1, 1, -1)
    v = np.floor(255.0 * x.double().numpy() + 0.5).astype(np.uint8)
    for bits in range(1, 9):
        r = 8 - bits
        ref = ((v >> r) << r).astype(np.float64) / 255.0
        np.testing.assert_array_equal(bit_depth(x.double(), bits=bits).numpy(), ref)
        assert torch.equal(BitDepth(bits=bits)(x), torch.from_numpy(ref).float())
    assert BitDepth(bits=1)(torch.tensor([0.6]).view(1, 1, 1, 1)).item() == pytest.approx(128 / 255)


def test_bit_depth_levels():
    x = rand(2, 3, 9, 7, dtype=torch.float64)
    for k in (2, 3, 4, 16, 256, 1000):
        y = bit_depth(x, levels=k)
        j = y * (k - 1)
        assert torch.allclose(j, j.round(), atol=1e-9)            # on the k-level grid
        assert (y - x).abs().max() <= 0.5 / (k - 1) + 1e-12       # the nearest level
    # ties round up: 0.25 * 2 = 0.5 -> level 1 of {0, 0.5, 1}
    ties = torch.tensor([0.25, 0.2499, 0.75]).view(1, 1, 1, 3)
    assert bit_depth(ties, levels=3).flatten().tolist() == [0.5, 0.0, 1.0]


def test_bit_depth_contract_and_errors():
    x = rand(2, 1, 5, 5, dtype=torch.float64)
    y = BitDepth(bits=4)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and not BitDepth.differentiable
    xg = x.clone().requires_grad_(True)
    w = rand(*x.shape, seed=3, dtype=torch.float64)
    (BPDA(BitDepth(levels=4))(xg) * w).sum().backward()
    assert torch.equal(xg.grad, w)                                 # straight-through
    for kwargs in ({}, {"bits": 4, "levels": 4}, {"bits": 0}, {"bits": 9}, {"levels": 1}):
        with pytest.raises(ValueError):
            BitDepth(**kwargs)
    for kwargs in ({"bits": 2.5}, {"bits": True}, {"levels": "8"}):
        with pytest.raises(TypeError):
            BitDepth(**kwargs)
    assert build("bit_depth:bits=4").bits == 4 and build("bit_depth:levels=8").levels == 8


# ------------------------------------------------------------------------------ MedianSmoothing


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest"])
def test_median_equals_scipy(mode):
    seed = 0
    for h, w in ((1, 1), (2, 3), (7, 9), (12, 5)):
        for kernel in ((1, 3), (3, 1), (3, 3), (5, 5), (3, 7), (9, 9)):
            seed += 1
            x = rand(2, 3, h, w, seed=seed, dtype=torch.float64)
            ref = ndi.median_filter(x.numpy(), size=(1, 1) + kernel, mode=mode)
            np.testing.assert_array_equal(median_smoothing(x, kernel, mode).numpy(), ref)


def test_median_kernel_forms_and_errors():
    x = rand(1, 3, 10, 11)
    assert MedianSmoothing("1x3").kernel == (1, 3) and MedianSmoothing((3, 1)).kernel == (3, 1)
    assert MedianSmoothing(5).kernel == (5, 5) and MedianSmoothing("5").kernel == (5, 5)
    ref = ndi.median_filter(x.numpy(), size=(1, 1, 1, 3), mode="reflect")
    np.testing.assert_array_equal(build("median:kernel=1x3")(x).numpy(), ref)
    assert build("median:kernel=(3, 5),mode=nearest").kernel == (3, 5)
    for bad in ("2x2", (3, 4), 0, "3x", "axb"):
        with pytest.raises(ValueError):
            MedianSmoothing(bad)
    for bad in (True, (3,), 3.0, None):
        with pytest.raises(TypeError):
            MedianSmoothing(bad)
    with pytest.raises(ValueError, match="mode"):
        MedianSmoothing(3, mode="wrap")


def test_median_gradient_is_exact():
    x = rand(1, 1, 5, 6, dtype=torch.float64).requires_grad_(True)
    assert MedianSmoothing.differentiable
    assert torch.autograd.gradcheck(lambda t: median_smoothing(t, "3x3"), (x,))


# ------------------------------------------------------------------------------------------ TVM


def _mask(shape, p, seed):
    return rand(*shape, seed=seed) < p


def test_tvm_objective_decreases_and_matches_skimage_denoiser():
    from skimage.restoration import denoise_tv_chambolle
    x = rand(1, 3, 16, 16, seed=1, dtype=torch.float64)
    ones = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    lam = 0.1
    z = tv_reconstruct(x, ones, lam=lam, max_iter=3000, tol=0)
    ref = denoise_tv_chambolle(x[0].permute(1, 2, 0).numpy(), weight=lam, eps=1e-12, max_num_iter=20000,
                               channel_axis=-1)
    ref = torch.from_numpy(ref).permute(2, 0, 1)[None]
    e, e_ref = tv_objective(z, x, ones, lam).item(), tv_objective(ref, x, ones, lam).item()
    assert e <= e_ref * (1 + 1e-5)
    assert (z - ref).abs().max() < 5e-3
    assert e < tv_objective(x, x, ones, lam).item()                # better than the input itself


@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
def test_tvm_masked_objective_matches_lbfgs(tv):
    """A scipy L-BFGS-B solve of a slightly smoothed objective on a small masked image."""
    x = rand(1, 1, 6, 6, seed=2, dtype=torch.float64)
    mask = _mask((1, 1, 6, 6), 0.5, seed=3)
    lam = 0.05

    def smooth(z):
        dh = torch.zeros_like(z)
        dv = torch.zeros_like(z)
        dh[..., :, :-1] = z[..., :, 1:] - z[..., :, :-1]
        dv[..., :-1, :] = z[..., 1:, :] - z[..., :-1, :]
        if tv == "isotropic":
            tvz = (dh ** 2 + dv ** 2 + 1e-12).sqrt()
        else:
            tvz = (dh ** 2 + 1e-12).sqrt() + (dv ** 2 + 1e-12).sqrt()
        return 0.5 * ((mask * (z - x)) ** 2).sum() + lam * tvz.sum()

    def fun(v):
        z = torch.from_numpy(v).view(x.shape).requires_grad_(True)
        e = smooth(z)
        (g,) = torch.autograd.grad(e, z)
        return e.item(), g.flatten().numpy()

    res = scipy.optimize.minimize(fun, x.flatten().numpy(), jac=True, method="L-BFGS-B",
                                  bounds=[(0, 1)] * x.numel(), options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12})
    z = tv_reconstruct(x, mask, lam=lam, tv=tv, max_iter=5000, tol=0)
    e = tv_objective(z, x, mask, lam, tv).item()
    e_ref = tv_objective(torch.from_numpy(res.x).view(x.shape), x, mask, lam, tv).item()
    start = tv_objective(torch.where(mask, x, (x * mask).sum() / mask.sum()), x, mask, lam, tv).item()
    assert e <= e_ref + 1e-5 * start
    assert e < start


def test_tvm_respects_kept_pixels_and_is_near_identity():
    x = rand(2, 3, 20, 20, seed=4)
    mask = _mask((2, 1, 20, 20), 0.25, seed=5)
    lam = 1e-3  # at the optimum |z - x| <= 4 lam on kept pixels (the dual is bounded by lam)
    z = tv_reconstruct(x, mask, lam=lam, max_iter=2000, tol=1e-7)
    assert ((z - x).abs() * mask).max() < 4 * lam + 2e-3
    ident = TVM(p=1.0, lam=1e-4, max_iter=100)(x)
    assert (ident - x).abs().max() < 1e-3


def test_tvm_uses_only_kept_pixels_and_images_are_independent():
    x = rand(3, 3, 12, 12, seed=6)
    mask = _mask((3, 1, 12, 12), 0.3, seed=7)
    other = torch.where(mask, x, rand(3, 3, 12, 12, seed=8))
    z = tv_reconstruct(x, mask, lam=0.05)
    assert torch.equal(z, tv_reconstruct(other, mask, lam=0.05))
    assert torch.allclose(tv_reconstruct(x[1:2], mask[1:2], lam=0.05), z[1:2], atol=1e-6)


def test_tvm_randomness_and_replay():
    x = rand(2, 3, 24, 24, seed=9)
    a = TVM(p=0.25, max_iter=30, generator=torch.Generator().manual_seed(3))
    b = TVM(p=0.25, max_iter=30, generator=torch.Generator().manual_seed(3))
    ya = a(x)
    assert torch.equal(ya, b(x)) and torch.equal(a.last_mask, b.last_mask)
    assert not torch.equal(a.last_mask[0], a.last_mask[1])         # per-image masks
    frac = a.last_mask.float().mean().item()
    assert 0.18 < frac < 0.32
    snap = RNGSnapshot(a)
    y1 = a(x)
    assert not torch.equal(y1, ya)                                 # fresh draw each call
    with snap.replay():
        assert torch.equal(a(x), y1)
    a.eval()
    assert not torch.equal(a(x), y1)                               # eval mode draws too
    torch.manual_seed(11)
    g1 = TVM(p=0.5, max_iter=30)(x)
    torch.manual_seed(11)
    assert torch.equal(TVM(p=0.5, max_iter=30)(x), g1)                         # global RNG when generator=None


def test_tvm_contract_and_errors():
    x = rand(2, 1, 8, 8).requires_grad_(True)
    t = build("tvm:p=0.25,lam=0.05,max_iter=50")
    assert (t.p, t.lam, t.max_iter, t.randomized, t.differentiable) == (0.25, 0.05, 50, True, False)
    w = rand(2, 1, 8, 8, seed=1)
    (BPDA(t)(x) * w).sum().backward()
    assert torch.equal(x.grad, w)
    with pytest.warns(UserWarning, match="BPDA"):
        DefendedModel(nn.Flatten(), t)
    for p in (0, 0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="p must"):
            TVM(p=p)
    with pytest.raises(TypeError):
        TVM(p="0.5")
    for kwargs in ({"lam": 0}, {"lam": -1}, {"tv": "l2"}, {"max_iter": 0}, {"tol": -1}):
        with pytest.raises(ValueError):
            TVM(**kwargs)
    with pytest.raises(ValueError, match="mask"):
        tv_reconstruct(rand(1, 1, 4, 4), torch.ones(1, 1, 4, 5))


# ------------------------------------------------------------------------------------ K-means


def numpy_kmeans(img: np.ndarray, k: int, iters: int) -> np.ndarray:
    """Straightforward per-image farthest-point init + Lloyd, (C, H, W) float64."""
    c = img.shape[0]
    pts = img.reshape(c, -1).T
    mean = pts.mean(0)
    centres = [pts[np.argmin(((pts - mean) ** 2).sum(1))]]
    for _ in range(1, k):
        dist = np.min([((pts - cc) ** 2).sum(1) for cc in centres], axis=0)
        centres.append(pts[np.argmax(dist)])
    centres = np.array(centres)
    assign = None
    for _ in range(iters):
        new = np.argmin(((pts[:, None, :] - centres[None]) ** 2).sum(2), axis=1)
        if assign is not None and (new == assign).all():
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                centres[j] = pts[assign == j].mean(0)
    return centres[assign].T.reshape(img.shape)


def test_kmeans_equals_numpy_lloyd():
    x = rand(3, 3, 10, 9, seed=12, dtype=torch.float64)
    x[1] = x[1] ** 3                                               # a different colour distribution
    for k, iters in ((2, 5), (5, 10), (12, 3)):
        y = kmeans_colors(x, k=k, iters=iters)
        for i in range(3):
            np.testing.assert_allclose(y[i].numpy(), numpy_kmeans(x[i].numpy(), k, iters), rtol=0, atol=1e-12)
        assert all(len(torch.unique(y[i].flatten(1), dim=1).T) <= k for i in range(3))
    g = rand(2, 1, 6, 6, seed=13, dtype=torch.float64)            # grayscale
    np.testing.assert_allclose(KMeansColors(k=3)(g)[1].numpy(), numpy_kmeans(g[1].numpy(), 3, 10), atol=1e-12)


def test_kmeans_reproduces_few_colours():
    palette = rand(5, 3, seed=14)
    idx = torch.tensor([0] * 80 + [1] * 10 + [2] * 5 + [3] * 3 + [4] * 2)   # unbalanced counts
    idx = idx[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    x = palette[idx].T.reshape(1, 3, 10, 10)
    for k in (5, 8):
        assert torch.allclose(KMeansColors(k=k)(x), x, atol=1e-6, rtol=0)


def test_kmeans_gradient_and_randomised_init():
    x = rand(1, 3, 6, 6, seed=15, dtype=torch.float64).requires_grad_(True)
    m = KMeansColors(k=3)
    y = m(x)
    v = rand(*y.shape, seed=16, dtype=torch.float64)
    (y * v).sum().backward()
    labels = torch.unique(y[0].detach().flatten(1), dim=1, return_inverse=True)[1]
    vs = v[0].flatten(1)
    want = torch.stack([vs[:, labels == labels[j]].mean(1) for j in range(36)], 1)  # mean of v over j's cluster
    assert len(labels.unique()) == 3 and torch.allclose(x.grad[0].flatten(1), want, atol=1e-12)
    assert not m.randomized and KMeansColors(init="kmeans++").randomized
    z = rand(2, 3, 16, 16, seed=17)
    a = KMeansColors(k=4, iters=1, init="kmeans++", generator=torch.Generator().manual_seed(5))
    b = KMeansColors(k=4, iters=1, init="kmeans++", generator=torch.Generator().manual_seed(5))
    ya = a(z)
    assert torch.equal(ya, b(z)) and not torch.equal(ya, a(z))


def test_kmeans_errors_and_build():
    for kwargs in ({"k": 0}, {"iters": 0}, {"init": "random"}):
        with pytest.raises(ValueError):
            KMeansColors(**kwargs)
    with pytest.raises(TypeError):
        KMeansColors(k=2.5)
    with pytest.raises(ValueError, match="H \\* W"):
        KMeansColors(k=17)(rand(1, 3, 4, 4))
    m = build("kmeans:k=4,iters=5,init=kmeans++")
    assert (m.k, m.iters, m.init, m.randomized) == (4, 5, "kmeans++", True)


# ---------------------------------------------------------------------------- RandomResizePad


def reference_resize_pad(x, draw, pad, mode, fill):
    b, c, h, w = x.shape
    out = torch.full((b, c, h + pad, w + pad), fill, dtype=x.dtype)
    for i in range(b):
        d, t, l = (int(draw[k][i]) for k in ("d", "top", "left"))
        kw = {} if mode == "nearest" else {"align_corners": False}
        out[i, :, t:t + h + d, l:l + w + d] = F.interpolate(x[i:i + 1], size=(h + d, w + d), mode=mode, **kw)[0]
    return out


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_pad_places_resized_image(mode):
    x = rand(8, 3, 21, 17, seed=18)
    m = RandomResizePad(pad=12, mode=mode, fill=0.25, generator=torch.Generator().manual_seed(0))
    y = m(x)
    assert y.shape == (8, 3, 33, 29) and y.dtype == x.dtype
    ref = reference_resize_pad(x, m.last_draw, 12, mode, 0.25)
    if mode == "nearest":
        assert torch.equal(y, ref)
    else:
        assert torch.allclose(y, ref, atol=1e-5, rtol=0)
    d = m.last_draw
    assert ((d["d"] >= 0) & (d["d"] < 12)).all()
    assert ((d["top"] <= 12 - d["d"]) & (d["left"] <= 12 - d["d"])).all()


def test_resize_pad_draws():
    x = rand(4, 3, 8, 8, seed=19)
    a = RandomResizePad(pad=5, generator=torch.Generator().manual_seed(1))
    b = RandomResizePad(pad=5, generator=torch.Generator().manual_seed(1))
    ya = a(x)
    assert torch.equal(ya, b(x))
    snap = RNGSnapshot(a)
    y1 = a(x)
    with snap.replay():
        assert torch.equal(a(x), y1)
    seen_d, seen_off = set(), set()
    for _ in range(60):
        a(x)
        seen_d.update(a.last_draw["d"].tolist())
        seen_off.update(zip(a.last_draw["d"].tolist(), a.last_draw["top"].tolist()))
    assert seen_d == set(range(5))                                 # d uniform in {0..pad-1}
    assert {(0, 0), (0, 5), (4, 0), (4, 1)} <= seen_off            # offsets reach both ends of [0, pad - d]


def test_resize_pad_gradients_and_wrappers():
    x = rand(2, 1, 5, 4, seed=20, dtype=torch.float64).requires_grad_(True)
    d, top, left = torch.tensor([2, 0]), torch.tensor([1, 3]), torch.tensor([0, 2])
    for mode in ("nearest", "bilinear"):
        assert torch.autograd.gradcheck(lambda t: resize_pad(t, d, top, left, 3, mode, 0.5), (x,))
    clf = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = DefendedModel(clf, EOT(build("resize_pad:pad=6,mode=bilinear"), n=4))
    xi = rand(3, 3, 10, 10, seed=21).requires_grad_(True)
    out = model(xi)
    out.sum().backward()
    assert out.shape == (3, 4) and xi.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):                 # BPDA needs same-shape defenses
        BPDA(RandomResizePad(pad=4))(xi)


def test_resize_pad_errors():
    for kwargs in ({"pad": 0}, {"mode": "bicubic"}, {"fill": 1.5}):
        with pytest.raises(ValueError):
            RandomResizePad(**kwargs)
    x = rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="top and left"):
        resize_pad(x, torch.tensor([1, 1]), torch.tensor([0, 3]), torch.tensor([0, 0]), 3)


# ------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@CUDA
def test_pixel_defenses_on_cuda_match_cpu():
    x = rand(2, 3, 20, 20, seed=22)
    xc = x.cuda()
    for m in (BitDepth(bits=3), MedianSmoothing("3x5"), KMeansColors(k=4)):
        y = m(xc)
        assert y.device == xc.device and torch.allclose(y.cpu(), m(x), atol=1e-5)
    mask = _mask((2, 1, 20, 20), 0.5, seed=23)
    assert torch.allclose(tv_reconstruct(xc, mask.cuda()).cpu(), tv_reconstruct(x, mask), atol=1e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    for m in (TVM(p=0.5, generator=g), RandomResizePad(pad=8, generator=g)):
        assert m(xc).device == xc.device


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("spec", ["bit_depth:bits=3", "median:kernel=3x5", "tvm:p=0.5,max_iter=20", "kmeans:k=4",
                                  "resize_pad:pad=4"])
def test_shape_dtype_device_kept(spec, dtype):
    x = rand(2, 3, 9, 10, seed=24).to(dtype)
    y = build(spec)(x)
    grow = 4 if spec.startswith("resize_pad") else 0
    assert y.shape == (2, 3, 9 + grow, 10 + grow) and y.dtype == dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="x must have values in"):
        build(spec)(x * 2)
