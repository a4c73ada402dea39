"""Codec presets and options against the JPEG libraries jpeglib bundles (pixels and coefficients),
the jpeglib backend of ``JPEG``, and gradients of every option.

Each preset is checked against its reference library (``PRESETS[name][1]``) by running that library's
encoder and decoder through jpeglib with the matching switches. Qualities are sampled (1, 50, 95 and
100 always, plus a few drawn per case), sizes range from 1x1 to 600x600.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import jpeglib
import torch

from diffjpeg.jpeg import aan, jpeglib_codec
from diffjpeg.jpeg.codec import DiffJPEG, diff_jpeg
from diffjpeg.jpeg.exact import exact_decode, exact_encode, exact_jpeg
from diffjpeg.jpeg.presets import PRESETS, CodecOptions, resolve_preset
from diffjpeg.jpeg.real import JPEG, real_jpeg
from diffjpeg.jpeg.tables import quality_tables

#: the jpeglib release the emulations were checked against, and the libraries it must ship
VERIFIED_JPEGLIB = "1.0.2"
MODES = ["420", "422", "444", "L"]
FIXED_QUALITIES = (1, 50, 95, 100)
SIZES = [(1, 1), (7, 9), (17, 33), (40, 24), (64, 83)]

#: single options beyond the presets, each with the libraries it reproduces exactly
OPTION_LIBRARIES = {
    CodecOptions(fdct="ifast"): ("turbo210", "6b"),
    CodecOptions(fdct="float"): ("turbo210", "9"),
    CodecOptions(idct="ifast"): ("turbo210", "6b", "9"),
    CodecOptions(idct="float"): ("turbo150", "8d"),
    CodecOptions(idct="float-6b"): ("6b", "turbo130", "mozjpeg101"),
    CodecOptions(idct="ifast", color="jfif9"): ("9a",),
    CodecOptions(idct="ifast-9b", color="jfif9"): ("9b",),
    CodecOptions(fdct="float", idct="float-9b", color="jfif9"): ("9c",),
    CodecOptions(upsampling="simple"): ("turbo210", "8"),
    CodecOptions(upsampling="dct", downsampling="dct"): ("8d",),
    CodecOptions(color="jfif9"): ("9a",),
}


def test_versions_pinned():
    assert jpeglib.__version__ == VERIFIED_JPEGLIB, "re-verify the presets against this jpeglib release"
    needed = {v for _, v, _ in PRESETS.values()} | {v for vs in OPTION_LIBRARIES.values() for v in vs}
    assert needed <= set(jpeglib_codec.versions())


def _image(kind: str, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "photo":
        from skimage import data
        photo = np.tile(data.astronaut(), (-(-h // 512), -(-w // 512), 1))
        y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        return np.ascontiguousarray(photo[y:y + h, x:x + w])
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _case(img: np.ndarray, mode: str):
    """(pixels for the library, (1, C, H, W) uint8 tensor, subsampling)."""
    if mode == "L":
        img = np.ascontiguousarray(img[..., 1])
        return img, torch.from_numpy(img)[None, None], "444"
    return img, torch.from_numpy(img).permute(2, 0, 1)[None].contiguous(), mode


def _tables(q: int, options: CodecOptions) -> torch.Tensor:
    return quality_tables(torch.tensor([float(q)]), options.tables)


def _ours(pixels: torch.Tensor, q: int, subsampling: str, options: CodecOptions) -> np.ndarray:
    out = exact_jpeg(pixels, _tables(q, options), subsampling, preset=options)[0]
    return out.permute(1, 2, 0).numpy()[..., 0] if out.shape[0] == 1 else out.permute(1, 2, 0).numpy()


def _qualities(seed: int, extra: int = 2) -> list[int]:
    rng = np.random.default_rng(seed)
    return list(FIXED_QUALITIES) + [int(v) for v in rng.integers(2, 100, extra)]


def _assert_identical(options: CodecOptions, version: str, img: np.ndarray, mode: str, q: int):
    lib_pixels, pixels, subsampling = _case(img, mode)
    ours = _ours(pixels, q, subsampling, options)
    theirs = jpeglib_codec.jpeglib_roundtrip(lib_pixels, version, q, subsampling, options=options)
    diff = np.abs(ours.astype(int) - theirs)
    assert diff.max() == 0, (f"{options} vs {version}, mode {mode}, q {q}, size {img.shape[:2]}: "
                             f"{100 * (diff == 0).mean():.3f} % identical, max diff {diff.max()}")


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("mode", MODES)
def test_preset_matches_its_library(name, mode):
    options, version, _ = PRESETS[name]
    seed = sum(map(ord, name + mode))
    for i, (h, w) in enumerate(SIZES):
        for kind in ("photo", "noise"):
            img = _image(kind, h, w, seed + i)
            large = (h, w) == SIZES[-1]
            for q in (_qualities(seed + i, extra=1) if large and kind == "photo" else (FIXED_QUALITIES[i % 4],)):
                _assert_identical(options, version, img, mode, q)


@pytest.mark.parametrize("name", ["pillow", "libjpeg9"])
def test_preset_large_odd_image(name):
    options, version, _ = PRESETS[name]
    _assert_identical(options, version, _image("photo", 600, 600, 3), "420", 75)
    _assert_identical(options, version, _image("photo", 599, 301, 4), "422", 100)


@pytest.mark.parametrize("options", list(OPTION_LIBRARIES), ids=str)
def test_option_matches_libraries(options):
    for version in OPTION_LIBRARIES[options]:
        # IJG libjpeg 7+ upsamples in the DCT domain where the options say "fancy": colour-only there
        subsampled = options.upsampling != "fancy" or not jpeglib_codec.is_ijg7plus(version)
        img = _image("photo", 45, 67, 1)
        for mode, q in zip(("420", "444", "L", "422") if subsampled else ("444", "L", "444", "L"), FIXED_QUALITIES):
            _assert_identical(options, version, img, mode, q)
        _assert_identical(options, version, _image("noise", 33, 17, 2), "422" if subsampled else "444", 90)


# ------------------------------------------------------------------------------ coefficients
def _library_coefficients(img: np.ndarray, version: str, q: int, subsampling: str, options: CodecOptions):
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "c.jpg")
    try:
        flags = ["+FORCE_BASELINE"]
        if jpeglib_codec.is_ijg7plus(version):
            flags.append("+DO_FANCY_UPSAMPLING" if options.downsampling == "dct" else "-DO_FANCY_UPSAMPLING")
        with jpeglib.version(version):
            im = jpeglib.from_spatial(img if img.ndim == 3 else img[..., None])
            if img.ndim == 3:
                fv, fh = {"444": (1, 1), "422": (1, 2), "420": (2, 2)}[subsampling]
                im.samp_factor = ((fv, fh), (1, 1), (1, 1))
            im.write_spatial(path, qt=q, dct_method=jpeglib_codec._dct_method(options.fdct), flags=flags)
        with jpeglib.version("turbo210"):
            d = jpeglib.read_dct(path)
            planes = [d.Y] if img.ndim == 2 else [d.Y, d.Cb, d.Cr]
            return [np.asarray(p) for p in planes], np.asarray(d.qt)
    finally:
        os.remove(path)
        os.rmdir(folder)


@pytest.mark.parametrize("name,version", [("pillow", "turbo210"), ("turbo-fast", "turbo210"),
                                          ("turbo-float", "turbo210"), ("libjpeg9", "9f"), ("libjpeg7", "8")])
@pytest.mark.parametrize("mode", MODES)
def test_coefficients_equal_library(name, version, mode):
    options = resolve_preset(name)
    for img, q in ((_image("photo", 53, 71, 5), 50), (_image("noise", 16, 16, 6), 95), (_image("photo", 9, 30, 7), 1)):
        lib_pixels, pixels, subsampling = _case(img, mode)
        theirs, qt = _library_coefficients(lib_pixels, version, q, subsampling, options)
        ours = exact_encode(pixels, _tables(q, options), subsampling, preset=options)
        assert np.array_equal(qt[0], _tables(q, options)[0, 0].numpy())
        for a, b in zip(ours, theirs):
            assert np.array_equal(a[0].numpy(), b), (name, mode, q)


@pytest.mark.parametrize("name,version", [("turbo-fast", "turbo210"), ("turbo-float", "turbo210"), ("libjpeg9", "9f")])
def test_exact_decode_with_preset(name, version):
    """Coefficients written by the library, decoded by exact_decode(preset) == the library's decode."""
    options = resolve_preset(name)
    img = _image("photo", 37, 50, 8)
    coefficients, qt = _library_coefficients(img, version, 60, "420", options)
    tables = torch.from_numpy(qt[:2].astype(np.int64))[None]
    ours = exact_decode([torch.from_numpy(c)[None] for c in coefficients], tables, "420", 37, 50, preset=options)
    theirs = jpeglib_codec.jpeglib_roundtrip(img, version, 60, "420", options=options)
    assert np.array_equal(ours[0].permute(1, 2, 0).numpy(), theirs)


# ------------------------------------------------------------------------------ gradients
ALL_OPTIONS = list(dict.fromkeys([resolve_preset(n) for n in PRESETS] + list(OPTION_LIBRARIES)))


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=str)
def test_gradients_finite(options):
    x = torch.rand(2, 3, 19, 21, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for mode, xi, rounding, exact in (("420", x, "ste", False), ("422", x, "cubic", False),
                                      ("444", x[:, :1], "soft", True), ("420", x, "fourier", True)):
        xr = xi.clone().requires_grad_(True)
        q = torch.tensor([30.0, 80.0], dtype=torch.float64, requires_grad=True)
        y = diff_jpeg(xr, q, mode, rounding, exact=exact, preset=options)
        (y * torch.linspace(0, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        assert torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0, (options, mode, rounding)
        assert torch.isfinite(q.grad).all(), (options, mode, rounding)


def test_diffjpeg_module_and_exact_mode_agree():
    """DiffJPEG(preset) forward (ste) equals exact mode with a smooth estimator and exact_jpeg."""
    x = torch.from_numpy(_image("photo", 30, 44, 9)).permute(2, 0, 1)[None].double() / 255
    for name in ("turbo-fast", "libjpeg9", "turbo-float"):
        layer = DiffJPEG(q=40, preset=name)
        a = layer(x)
        b = DiffJPEG(q=40, rounding="cubic", exact=True, preset=name)(x)
        c = exact_jpeg((x * 255).round().to(torch.uint8), _tables(40, resolve_preset(name)), "420", preset=name)
        assert torch.equal(a, b) and torch.equal((a * 255).round().to(torch.uint8), c)
        assert f"preset='{name}'" in repr(layer)


# ------------------------------------------------------------------------------ JPEG(backend="jpeglib")
def test_jpeg_jpeglib_backend_and_surrogate():
    x = torch.from_numpy(_image("photo", 40, 56, 10)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1) / 255
    q = torch.tensor([30.0, 90.0])
    for name in ("libjpeg9", "turbo-fast", "pillow"):
        defense = JPEG(q=q, backend="jpeglib", preset=name)
        y = defense(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.equal(y, defense.surrogate()(x)), name
    moz = JPEG(q=50, backend="jpeglib", version="mozjpeg403")
    y = moz(x)
    u8 = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    lib = jpeglib_codec.jpeglib_roundtrip(u8, "mozjpeg403", 50)
    assert np.array_equal((y[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), lib)
    surrogate = moz.surrogate()
    assert surrogate.qtables is not None  # mozjpeg's own tables, not the Annex K ones
    assert torch.equal(surrogate.qtables, torch.from_numpy(jpeglib_codec.library_tables("mozjpeg403", 50)).float())


def test_bpda_through_mozjpeg_has_gradients():
    from diffjpeg.wrappers import BPDA

    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = BPDA(JPEG(q=50, backend="jpeglib", version="mozjpeg403"))(x)
    (y * torch.arange(y.numel()).view_as(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_real_jpeg_auto_picks_jpeglib_for_presets():
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(real_jpeg(x, 60, preset="turbo-fast"), real_jpeg(x, 60, backend="jpeglib", preset="turbo-fast"))
    assert torch.equal(real_jpeg(x, 60, backend="jpeglib"), real_jpeg(x, 60, backend="pillow"))


def test_bad_arguments():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="preset"):
        diff_jpeg(x, 50, preset="libjpeg10")
    with pytest.raises(ValueError, match="preset must be one of"):
        DiffJPEG(preset=3)
    with pytest.raises(ValueError, match="idct must be one of"):
        CodecOptions(idct="fast")
    with pytest.raises(ValueError, match="version must be one of"):
        JPEG(q=50, backend="jpeglib", version="9z")
    with pytest.raises(ValueError, match="backend='jpeglib'"):
        JPEG(q=50, backend="pillow", preset="libjpeg9")
    with pytest.raises(ValueError, match="backend='jpeglib'"):
        real_jpeg(x, 50, backend="torchvision", version="9f")


def test_registry_specs():
    from diffjpeg.defenses.registry import build

    defense = build("jpeg:q=50,preset=libjpeg9")
    assert defense.library == ("9f", resolve_preset("libjpeg9"))
    assert build("diffjpeg:q=50,preset=turbo-fast").options == resolve_preset("turbo-fast")
    assert build("jpeg:q=50,backend=jpeglib,version=mozjpeg403").library[0] == "mozjpeg403"


def test_aan_tables():
    """The AAN scale table is libjpeg's ``aanscales`` (spot values from its source)."""
    table = aan._AAN_INT
    assert table[0, 0] == 16384 and table[0, 1] == 22725 and table[1, 1] == 31521 and table[7, 7] == 1247
    assert aan.ifast_divisors(torch.full((8, 8), 16.0))[0, 0] == 128  # (16 * 16384 + 1024) >> 11


def test_report_preset_columns():
    from diffjpeg.eval.report import markdown, preset_fidelity

    image = _image("photo", 37, 45, 11)
    rows = preset_fidelity([("crop", image)], qualities=(50,), settings=("420", "gray"))
    assert {r.preset for r in rows} == set(PRESETS) and all(r.identical == 1.0 for r in rows)
    text = markdown([], [], "test", rows)
    assert "| setting | q | " + " | ".join(PRESETS) + " |" in text


@pytest.mark.parametrize("name,version", [("pillow", "turbo210"), ("libjpeg9", "9f"), ("turbo-fast", "turbo210")])
def test_decode_file_with_preset(name, version, tmp_path):
    """A file the library wrote, decoded by io.decode_file(preset) == the library's own decoder."""
    from diffjpeg.jpeg.io import decode_file

    options = resolve_preset(name)
    img = _image("photo", 37, 50, 9)
    path = str(tmp_path / "f.jpg")
    flags = ["+FORCE_BASELINE"]
    if jpeglib_codec.is_ijg7plus(version):
        flags.append("+DO_FANCY_UPSAMPLING" if options.downsampling == "dct" else "-DO_FANCY_UPSAMPLING")
    with jpeglib.version(version):
        im = jpeglib.from_spatial(img)
        im.samp_factor = ((2, 2), (1, 1), (1, 1))
        im.write_spatial(path, qt=60, dct_method=jpeglib_codec._dct_method(options.fdct), flags=flags)
        upsampling = "-DO_FANCY_UPSAMPLING" if options.upsampling == "simple" else "+DO_FANCY_UPSAMPLING"
        theirs = jpeglib.read_spatial(path, dct_method=jpeglib_codec._dct_method(options.idct),
                                      flags=[upsampling]).spatial
    ours = decode_file(path, dtype=torch.float64, preset=name)
    assert np.array_equal((ours[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), theirs)
