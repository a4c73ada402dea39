"""Bit-exactness of diffjpeg.jpeg.exact against Pillow's libjpeg-turbo (encode, decode, both).

Every comparison is pixel-for-pixel (or coefficient-for-coefficient) equality with what Pillow
writes and reads on this machine; the reference tables are the ones Pillow reports it used.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from PIL import Image, features

from diffjpeg.jpeg import native
from diffjpeg.jpeg.exact import exact_decode, exact_encode, exact_jpeg

jpeglib = pytest.importorskip("jpeglib")

#: libjpeg-turbo version the emulation was checked against, source and behaviour.
VERIFIED_LIBJPEG_TURBO = "3.2.0"
PIL_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}
MODES = ["444", "422", "420", "L"]


# ---------------------------------------------------------------------------------- helpers
def pillow_round_trip(img: np.ndarray, mode: str, quality=None, tables=None):
    """Save ``img`` (HxWx3 or HxW uint8) with Pillow, read it back.

    Returns ``(pixels, qtables (2, 8, 8) int64 natural order, jpeg bytes)``.
    """
    kw = {}
    if quality is not None:
        kw["quality"] = quality
    if tables is not None:
        kw["qtables"] = [np.asarray(t).reshape(-1).tolist() for t in tables]
    if mode != "L":
        kw["subsampling"] = PIL_SUBSAMPLING[mode]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", **kw)
    data = buf.getvalue()
    im = Image.open(io.BytesIO(data))
    q = im.quantization
    qt = np.stack([np.asarray(q[k]).reshape(8, 8) for k in sorted(q)]).astype(np.int64)
    if qt.shape[0] == 1:
        qt = np.concatenate([qt, qt])
    return np.asarray(im), qt, data


def make_image(kind: str, h: int, w: int, seed: int = 0, gray: bool = False) -> np.ndarray:
    """Test content: natural photo crops, noise, hard edges, flat areas."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((h, w))
    if kind in ("astronaut", "chelsea", "coffee"):
        from skimage import data
        photo = getattr(data, kind)()
        reps = (-(-h // photo.shape[0]), -(-w // photo.shape[1]), 1)
        photo = np.tile(photo, reps)
        y0 = rng.integers(0, photo.shape[0] - h + 1)
        x0 = rng.integers(0, photo.shape[1] - w + 1)
        img = photo[y0:y0 + h, x0:x0 + w]
    elif kind == "noise":
        img = rng.integers(0, 256, (h, w, 3))
    elif kind == "checker":
        img = np.repeat((((yy + xx) % 2) * 255)[..., None], 3, axis=2)
    elif kind == "checker3":  # coloured 3-pixel checkerboard: edges off the block grid
        board = ((yy // 3 + xx // 3) % 2).astype(bool)
        img = np.where(board[..., None], [255, 0, 200], [0, 255, 30])
    elif kind == "stripes":
        img = np.stack([(xx % 5 < 2) * 255, (yy % 7 < 3) * 255, ((xx + yy) % 4 < 2) * 255], -1)
    elif kind == "flat":
        img = np.broadcast_to(np.array([200, 30, 90]), (h, w, 3))
    elif kind == "extremes":  # saturated colours next to each other
        img = rng.choice([0, 255], size=(h, w, 3))
    else:
        raise ValueError(kind)
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if gray:
        img = np.ascontiguousarray(img[..., 1])
    return img


def to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    a = np.stack(imgs)
    t = torch.from_numpy(a)
    return t[:, None] if a.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def from_tensor(t: torch.Tensor) -> np.ndarray:
    a = t.numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def check_batch(imgs: list[np.ndarray], mode: str, qualities=None, tables=None, label=""):
    """exact_jpeg on the whole batch must equal Pillow image by image, in C and in the tensor code."""
    refs, qts = [], []
    for i, img in enumerate(imgs):
        ref, qt, _ = pillow_round_trip(img, mode, None if qualities is None else qualities[i],
                                       None if tables is None else tables[i])
        refs.append(ref)
        qts.append(qt)
    ss = "420" if mode == "L" else mode
    for path in ("native", "tensor"):  # the CPU's compiled round trip, and the code every other device runs
        with native.disabled() if path == "tensor" else contextlib.nullcontext():
            got = from_tensor(exact_jpeg(to_tensor(imgs), torch.from_numpy(np.stack(qts)), ss))
        for i, ref in enumerate(refs):
            diff = got[i].astype(int) - ref.astype(int)
            assert not diff.any(), (
                f"{label} image {i} (q={None if qualities is None else qualities[i]}, {path}): "
                f"{np.count_nonzero(diff)}/{diff.size} pixels differ, max |diff| {np.abs(diff).max()}")


# ---------------------------------------------------------------------------------- tests
def test_libjpeg_turbo_version():
    found = features.version("libjpeg_turbo")
    assert found == VERIFIED_LIBJPEG_TURBO, (
        f"Pillow ships libjpeg-turbo {found}, but diffjpeg.jpeg.exact was verified against "
        f"{VERIFIED_LIBJPEG_TURBO}; re-run tests/test_exact.py and re-check the emulation "
        f"before updating VERIFIED_LIBJPEG_TURBO")


@pytest.mark.parametrize("mode", MODES)
def test_all_qualities(mode):
    """q = 1..100 in one batch (one table pair per image) on a small odd-sized image."""
    gray = mode == "L"
    imgs = [make_image("astronaut" if q % 2 else "noise", 13, 21, seed=q, gray=gray)
            for q in range(1, 101)]
    check_batch(imgs, mode, qualities=list(range(1, 101)), label=f"{mode} all-q")


SIZES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (8, 8), (9, 17), (16, 16), (17, 33), (31, 30),
         (4, 6), (5, 4), (2, 9), (33, 16)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", MODES)
def test_sizes(size, mode):
    h, w = size
    qualities = [3, 30, 50, 75, 90, 97, 100, 60]
    kinds = ["noise", "coffee", "checker", "stripes", "flat", "chelsea", "checker3", "extremes"]
    imgs = [make_image(k, h, w, seed=i, gray=mode == "L") for i, k in enumerate(kinds)]
    check_batch(imgs, mode, qualities=qualities, label=f"{mode} {h}x{w}")


CONTENT = ["astronaut", "chelsea", "coffee", "noise", "checker", "checker3", "stripes", "flat",
           "extremes"]


@pytest.mark.parametrize("kind", CONTENT)
@pytest.mark.parametrize("mode", MODES)
def test_content(kind, mode):
    qualities = [1, 10, 25, 50, 75, 90, 95, 100]
    imgs = [make_image(kind, 45, 61, seed=i, gray=mode == "L") for i in range(len(qualities))]
    check_batch(imgs, mode, qualities=qualities, label=f"{mode} {kind}")


@pytest.mark.parametrize("case", [("astronaut", 509, 507, "420", 75), ("coffee", 600, 600, "444", 90),
                                  ("chelsea", 301, 451, "422", 35), ("astronaut", 257, 255, "L", 60)],
                         ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-{c[3]}-q{c[4]}")
def test_large(case):
    kind, h, w, mode, q = case
    check_batch([make_image(kind, h, w, gray=mode == "L")], mode, qualities=[q],
                label=f"{mode} {kind} {h}x{w}")


def _custom_tables():
    rng = np.random.default_rng(7)
    return {
        "ones": [np.ones((8, 8), int)] * 2,
        "all255": [np.full((8, 8), 255)] * 2,
        "random": [rng.integers(1, 256, (8, 8)), rng.integers(1, 256, (8, 8))],
        "random_small": [rng.integers(1, 9, (8, 8)), rng.integers(1, 5, (8, 8))],
        "mixed": [np.where(np.indices((8, 8)).sum(0) % 2, 255, 1)] * 2,
    }


@pytest.mark.parametrize("name", list(_custom_tables()))
@pytest.mark.parametrize("mode", MODES)
def test_custom_tables(name, mode):
    tabs = _custom_tables()[name]
    tabs = tabs[:1] if mode == "L" else tabs
    kinds = ["noise", "astronaut", "checker3", "extremes"]
    imgs = [make_image(k, 37, 43, seed=i, gray=mode == "L") for i, k in enumerate(kinds)]
    # Pillow reports back the very tables it was given (natural order round trip)
    _, qt, _ = pillow_round_trip(imgs[0], mode, tables=tabs)
    np.testing.assert_array_equal(qt[0], np.asarray(tabs[0]).reshape(8, 8))
    check_batch(imgs, mode, tables=[tabs] * len(imgs), label=f"{mode} tables={name}")


@pytest.mark.parametrize("case", [("420", 17, 33, 75), ("422", 9, 17, 20), ("444", 31, 30, 95),
                                  ("420", 1, 1, 50), ("L", 23, 19, 85), ("420", 64, 48, 100)],
                         ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-q{c[3]}")
def test_coefficients_match_jpeglib(case, tmp_path):
    mode, h, w, q = case
    img = make_image("coffee", h, w, gray=mode == "L")
    _, qt, data = pillow_round_trip(img, mode, quality=q)
    path = tmp_path / "img.jpg"
    path.write_bytes(data)
    ref = jpeglib.read_dct(str(path))
    np.testing.assert_array_equal(np.asarray(ref.qt[0]), qt[0])
    coefs = exact_encode(to_tensor([img]), torch.from_numpy(qt)[None], "420" if mode == "L" else mode)
    names = ["Y"] if mode == "L" else ["Y", "Cb", "Cr"]
    assert len(coefs) == len(names)
    for c, name in zip(coefs, names):
        want = np.asarray(getattr(ref, name))
        assert c.dtype == torch.int32
        assert tuple(c.shape[1:]) == want.shape, f"{name}: grid {tuple(c.shape[1:])} vs {want.shape}"
        np.testing.assert_array_equal(c[0].numpy(), want, err_msg=f"{name} coefficients differ")


@pytest.mark.parametrize("case", [("444", 24, "dense", 10), ("420", 30, "dense", 1023),
                                  ("422", 6, "dense", 200), ("420", 255, "sparse", 1023),
                                  ("444", 2, "sparse", 1023)],
                         ids=lambda c: f"{c[0]}-q{c[1]}-{c[2]}{c[3]}")
def test_decode_arbitrary_coefficients(case, tmp_path):
    """exact_decode of coefficients no encoder makes (overflowing libjpeg-turbo's 16-bit SIMD
    arithmetic, rows 1..7 empty) still matches Pillow reading the file jpeglib writes."""
    mode, qmax, layout, amp = case
    h, w = 29, 35
    rng = np.random.default_rng(qmax + amp)
    base, _, data = pillow_round_trip(make_image("noise", h, w), mode, quality=50)
    src = tmp_path / "base.jpg"
    src.write_bytes(data)
    jpg = jpeglib.read_dct(str(src))
    comps = []
    for name in ["Y", "Cb", "Cr"]:
        shape = np.asarray(getattr(jpg, name)).shape
        c = rng.integers(-amp, amp + 1, shape)
        if layout == "sparse":
            c[..., 1:, :] = 0
            c[..., 1:, :][rng.random(c[..., 1:, :].shape) < 0.002] = 1
        c[..., 0, 0] = rng.integers(-1000, 1001, shape[:2])
        c = c.astype(np.int16)
        setattr(jpg, name, c)
        comps.append(c)
    jpg.qt = rng.integers(1, qmax + 1, np.asarray(jpg.qt).shape).astype(np.uint16)
    out = tmp_path / "mod.jpg"
    jpg.write_dct(str(out))
    ref = np.asarray(Image.open(out))
    back = jpeglib.read_dct(str(out))
    qt = torch.from_numpy(np.asarray(back.qt, dtype=np.int64))[None]
    coef = [torch.from_numpy(np.asarray(getattr(back, n), dtype=np.int32))[None] for n in ["Y", "Cb", "Cr"]]
    got = exact_decode(coef, qt, mode, h, w)
    assert got.dtype == torch.uint8 and got.shape == (1, 3, h, w)
    diff = got[0].permute(1, 2, 0).numpy().astype(int) - ref.astype(int)
    assert not diff.any(), f"{np.count_nonzero(diff)}/{diff.size} pixels differ"


def test_api_shapes_dtypes_and_batching():
    imgs = [make_image("chelsea", 19, 27, seed=i) for i in range(3)]
    x = to_tensor(imgs)
    qts = torch.stack([torch.from_numpy(pillow_round_trip(imgs[0], "420", quality=q)[1]) for q in (20, 50, 80)])
    coefs = exact_encode(x.to(torch.int64), qts.to(torch.float32), "420")
    assert [tuple(c.shape) for c in coefs] == [(3, 3, 4, 8, 8), (3, 2, 2, 8, 8), (3, 2, 2, 8, 8)]
    y = exact_decode(coefs, qts, "420", 19, 27)
    assert y.dtype == torch.uint8 and y.shape == x.shape and y.device == x.device
    assert torch.equal(y, exact_jpeg(x, qts, "420"))
    # batching does not mix images
    for i in range(3):
        assert torch.equal(y[i:i + 1], exact_jpeg(x[i:i + 1], qts[i:i + 1], "420"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    imgs = [make_image(k, 45, 61, seed=i) for i, k in enumerate(["astronaut", "noise", "checker3"])]
    x = to_tensor(imgs)
    qts = torch.stack([torch.from_numpy(pillow_round_trip(imgs[0], "420", quality=q)[1]) for q in (5, 50, 95)])
    for ss in ("444", "422", "420"):
        cpu = exact_jpeg(x, qts, ss)
        gpu = exact_jpeg(x.cuda(), qts.cuda(), ss)
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu, gpu.cpu()), ss
        coefs = [c.cuda() for c in exact_encode(x, qts, ss)]
        assert torch.equal(exact_decode(coefs, qts.cuda(), ss, 45, 61).cpu(), cpu), ss
