"""DCT-coefficient and Q-table file I/O (diffjpeg.jpeg.io) against Pillow and jpeglib."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffjpeg.jpeg.io import (
    JPEGCoefficients,
    block_grid,
    decode,
    decode_file,
    read_coefficients,
    read_qtables,
    save_jpeg,
    write_coefficients,
)

try:
    from diffjpeg.jpeg import exact
except ImportError:  # pragma: no cover - only while exact.py is being written
    exact = None
needs_exact = pytest.mark.skipif(exact is None, reason="diffjpeg.jpeg.exact (exact_encode/exact_decode) is missing")

SUBSAMPLINGS = {"444": 0, "422": 1, "420": 2}
SIZES = [(1, 1), (8, 8), (13, 29), (40, 33)]


def pixels(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth uint8 test image ``(H, W, C)`` (or ``(H, W)`` for c = 1) with a few edges."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(1, c, max(1, h // 5), max(1, w // 5), generator=g), size=(h, w), mode="bilinear")
    x = x + 0.1 * (torch.rand(1, c, h, w, generator=g) - 0.5)
    x[..., : h // 2, : w // 2] *= 0.4
    a = torch.floor(x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return a[..., 0] if c == 1 else a


def pillow_save(path, a: np.ndarray, q=75, subsampling="420", **kw) -> None:
    if a.ndim == 3:
        kw["subsampling"] = SUBSAMPLINGS[subsampling]
    if "qtables" not in kw:
        kw["quality"] = q
    Image.fromarray(a).save(path, format="JPEG", **kw)


def pillow_open(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def chw(a: np.ndarray) -> torch.Tensor:
    """``(H, W[, C])`` uint8 -> ``(1, C, H, W)`` uint8 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


def libjpeg_tables(q: int) -> torch.Tensor:
    from diffjpeg.jpeg.tables import quality_tables

    return quality_tables(torch.tensor([float(q)])).round().to(torch.int32)  # (1, 2, 8, 8)


# ------------------------------------------------------------------------------------------------
# reading


@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
def test_read_layout(tmp_path, subsampling):
    h, w = 37, 53
    path = tmp_path / "a.jpg"
    pillow_save(path, pixels(h, w), 60, subsampling)
    jc = read_coefficients(path)
    assert (jc.height, jc.width, jc.num_components, jc.color) == (h, w, 3, "ycbcr")
    assert jc.subsampling == subsampling and jc.table_index == (0, 1, 1) and not jc.progressive
    assert [tuple(c.shape) for c in jc.coefficients] == [(*g, 8, 8) for g in block_grid(h, w, jc.sampling_factors)]
    assert all(c.dtype == torch.int32 for c in jc.coefficients) and jc.qtables.dtype == torch.int32
    assert torch.equal(jc.qtables, libjpeg_tables(60)[0])
    assert torch.equal(read_qtables(path), libjpeg_tables(60)[0][[0, 1, 1]])


def test_blocks_are_in_natural_order(tmp_path):
    a = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))  # varies along the width only
    pillow_save(tmp_path / "g.jpg", a, 95)
    block = read_coefficients(tmp_path / "g.jpg").coefficients[0][0, 0]
    assert block[0, 1] != 0 and (block[1:, :] == 0).all()  # horizontal frequencies in row 0


def test_grayscale(tmp_path):
    pillow_save(tmp_path / "g.jpg", pixels(19, 23, c=1), 40)
    jc = read_coefficients(tmp_path / "g.jpg")
    assert jc.num_components == 1 and jc.color == "grayscale" and jc.subsampling == "444"
    assert jc.table_index == (0,) and tuple(jc.coefficients[0].shape) == (3, 3, 8, 8)


def test_progressive_gives_the_same_coefficients(tmp_path):
    a = pixels(30, 41)
    pillow_save(tmp_path / "s.jpg", a, 70)
    pillow_save(tmp_path / "p.jpg", a, 70, progressive=True)
    seq, prog = read_coefficients(tmp_path / "s.jpg"), read_coefficients(tmp_path / "p.jpg")
    assert prog.progressive
    assert all(torch.equal(s, p) for s, p in zip(seq.coefficients, prog.coefficients))
    assert torch.equal(seq.qtables, prog.qtables)


def test_many_markers_and_metadata(tmp_path):
    pillow_save(tmp_path / "a.jpg", pixels(16, 16), 80)
    data = (tmp_path / "a.jpg").read_bytes()
    comment = b"\xff\xfe\x00\x07hello"
    (tmp_path / "m.jpg").write_bytes(data[:2] + comment * 80 + data[2:])  # jpeglib alone stops at 50
    a, m = read_coefficients(tmp_path / "a.jpg"), read_coefficients(tmp_path / "m.jpg")
    assert all(torch.equal(x, y) for x, y in zip(a.coefficients, m.coefficients))


# ------------------------------------------------------------------------------------------------
# (a) our encoder's coefficients are the file's coefficients


@needs_exact
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
def test_exact_encode_equals_file_coefficients(tmp_path, c, subsampling):
    for (h, w), q in zip(SIZES, (10, 50, 75, 95)):
        a = pixels(h, w, c, seed=h)
        path = tmp_path / "a.jpg"
        pillow_save(path, a, q, subsampling)
        jc = read_coefficients(path)
        ours = exact.exact_encode(chw(a), libjpeg_tables(q), subsampling)
        assert len(ours) == len(jc.coefficients)
        for mine, theirs in zip(ours, jc.coefficients):
            assert torch.equal(mine[0], theirs), (h, w, q)


# ------------------------------------------------------------------------------------------------
# (b) written files decode as our decoders say


@needs_exact
@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
def test_written_file_decodes_like_our_decoders(tmp_path, subsampling):
    from diffjpeg.jpeg.codec import decode_coefficients

    g = torch.Generator().manual_seed(0)
    for (h, w), q in zip(SIZES[1:], (30, 75, 90)):
        a = pixels(h, w, seed=w)
        tables = libjpeg_tables(q)
        coefs = exact.exact_encode(chw(a), tables, subsampling)
        # perturb the coefficients so that the file is not just a re-encode of the pixels
        coefs = [c + (torch.rand(c.shape, generator=g) < 0.05).to(torch.int32) for c in coefs]
        path = tmp_path / "w.jpg"
        write_coefficients(path, coefs, tables, size=(h, w), subsampling=subsampling)
        pil = torch.from_numpy(pillow_open(path).copy()).permute(2, 0, 1)[None]
        assert torch.equal(exact.exact_decode(coefs, tables, subsampling, h, w), pil)
        assert all(torch.equal(x[0], y) for x, y in zip(coefs, read_coefficients(path).coefficients))
        float_decode = decode_coefficients([c.float() for c in coefs], tables.float(), subsampling, (h, w))
        err = float_decode * 255 - pil.float()
        psnr = 10 * torch.log10(255.0**2 / err.pow(2).mean())
        assert err.abs().mean() < 0.5 and err.abs().max() <= 3 and psnr > 45, (err.abs().max(), psnr)


def test_write_then_pillow_equals_original_file(tmp_path):
    for c in (1, 3):
        for subsampling in ("444", "422", "420"):
            for h, w in SIZES:
                src = tmp_path / "src.jpg"
                pillow_save(src, pixels(h, w, c), 50, subsampling)
                jc = read_coefficients(src)
                write_coefficients(tmp_path / "a.jpg", jc)
                kw = {} if c == 1 else {"subsampling": subsampling}
                write_coefficients(tmp_path / "b.jpg", [x[None] for x in jc.coefficients], jc.qtables[None],
                                   size=(h, w), **kw)
                for out in ("a.jpg", "b.jpg"):
                    assert np.array_equal(pillow_open(tmp_path / out), pillow_open(src)), (c, subsampling, h, w)
                    again = read_coefficients(tmp_path / out)
                    assert all(torch.equal(x, y) for x, y in zip(jc.coefficients, again.coefficients))


def test_float_coefficients_from_the_differentiable_encoder(tmp_path):
    from diffjpeg.jpeg.codec import encode_coefficients

    x = torch.from_numpy(pixels(24, 32)).permute(2, 0, 1)[None].float() / 255
    tables = libjpeg_tables(50).float()
    coefs = encode_coefficients(x, tables, "420")
    write_coefficients(tmp_path / "f.jpg", coefs, tables, size=(24, 32), subsampling="420")
    back = read_coefficients(tmp_path / "f.jpg")
    assert all(torch.equal(c[0].round().int(), b) for c, b in zip(coefs, back.coefficients))


# ------------------------------------------------------------------------------------------------
# (c) tables


def test_saved_tables_are_the_requested_ones(tmp_path):
    t = torch.arange(1, 65, dtype=torch.int32).reshape(8, 8)  # asymmetric: a transpose would show
    tables = torch.stack((t, (t.T * 3).clamp(max=255)))
    a = pixels(16, 24)
    coefs = [torch.zeros(1, *g, 8, 8, dtype=torch.int32) for g in block_grid(16, 24, ((2, 2), (1, 1), (1, 1)))]
    write_coefficients(tmp_path / "t.jpg", coefs, tables, size=(16, 24), subsampling="420")
    with Image.open(tmp_path / "t.jpg") as im:
        q = im.quantization
    assert torch.equal(torch.tensor(q[0]).reshape(8, 8), tables[0])  # Pillow reads natural order
    assert torch.equal(torch.tensor(q[1]).reshape(8, 8), tables[1])
    assert torch.equal(read_coefficients(tmp_path / "t.jpg").qtables, tables)
    # the same tables through Pillow's encoder, read back by us
    pillow_save(tmp_path / "p.jpg", a, qtables=[tables[0].flatten().tolist(), tables[1].flatten().tolist()])
    assert torch.equal(read_coefficients(tmp_path / "p.jpg").qtables, tables)


def test_extreme_coefficients_at_quality_100(tmp_path):
    """Black/white blocks next to each other at Q = 1: DC from -1024 to 1016, the largest AC values."""
    a = np.zeros((32, 48, 3), np.uint8)
    a[:, 16:32] = 255
    a[::2, 32:] = 255
    pillow_save(tmp_path / "x.jpg", a, 100, "444")
    jc = read_coefficients(tmp_path / "x.jpg")
    assert jc.coefficients[0][..., 0, 0].min() == -1024
    write_coefficients(tmp_path / "y.jpg", jc)
    assert np.array_equal(pillow_open(tmp_path / "y.jpg"), pillow_open(tmp_path / "x.jpg"))


def test_grayscale_write_uses_luma_table(tmp_path):
    t = torch.full((8, 8), 9)
    write_coefficients(tmp_path / "g.jpg", [torch.zeros(2, 3, 8, 8)], torch.stack((t, t * 2)), size=(16, 17))
    jc = read_coefficients(tmp_path / "g.jpg")
    assert jc.num_components == 1 and jc.size == (16, 17) and torch.equal(jc.qtables, t[None].int())
    assert pillow_open(tmp_path / "g.jpg").shape == (16, 17)


# ------------------------------------------------------------------------------------------------
# differentiable decoding, convenience


def test_decode_file_is_differentiable_and_close(tmp_path):
    a = pixels(33, 47)
    pillow_save(tmp_path / "a.jpg", a, 85, "420")
    y = decode_file(tmp_path / "a.jpg")
    assert y.shape == (1, 3, 33, 47) and y.dtype == torch.float32
    err = (y[0].permute(1, 2, 0) * 255 - torch.from_numpy(pillow_open(tmp_path / "a.jpg").copy()).float()).abs()
    assert err.mean() < 0.5 and err.max() <= 3
    jc = read_coefficients(tmp_path / "a.jpg")
    coefs, tables = jc.to_batch()
    for c in coefs:
        c.requires_grad_(True)
    from diffjpeg.jpeg.codec import decode_coefficients

    decode_coefficients(coefs, tables, jc.subsampling, jc.size).sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in coefs)
    assert torch.equal(decode(jc, torch.float64), decode_file(tmp_path / "a.jpg", torch.float64))


def test_save_jpeg(tmp_path):
    from diffjpeg.jpeg.real import real_jpeg

    x = torch.from_numpy(pixels(21, 30)).permute(2, 0, 1)[None].float() / 255
    save_jpeg(tmp_path / "x.jpg", x, q=45, subsampling="422")
    got = torch.from_numpy(pillow_open(tmp_path / "x.jpg").copy()).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(got, real_jpeg(x, 45, "422", backend="pillow"))
    assert read_coefficients(tmp_path / "x.jpg").subsampling == "422"
    jc = read_coefficients(tmp_path / "x.jpg")
    save_jpeg(tmp_path / "c.jpg", jc)
    assert np.array_equal(pillow_open(tmp_path / "c.jpg"), pillow_open(tmp_path / "x.jpg"))


# ------------------------------------------------------------------------------------------------
# bad input


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_coefficients(missing)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        decode_file(str(missing))


def _bad_files(tmp_path) -> dict:
    pillow_save(tmp_path / "good.jpg", pixels(40, 48), 70)
    good = (tmp_path / "good.jpg").read_bytes()
    rgb = pixels(24, 24)
    files = {
        "random": (np.random.default_rng(0).integers(0, 256, 2000).astype(np.uint8).tobytes(), "not a JPEG"),
        "empty": (b"", "not a JPEG"),
        "truncated-data": (good[: len(good) * 2 // 3], "truncated"),
        "truncated-header": (good[:100], "truncated"),
        "soi-only": (good[:2], "not a JPEG|truncated"),
        "twelve-bit": (None, "12-bit"),
        "arithmetic": (None, "arithmetic"),
    }
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    files["png"] = (buf.getvalue(), "not a JPEG")
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    files["cmyk"] = (buf.getvalue(), "CMYK")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", keep_rgb=True)
    files["adobe-rgb"] = (buf.getvalue(), "RGB")
    sof = good.index(b"\xff\xc0")
    files["twelve-bit"] = (good[: sof + 4] + bytes([12]) + good[sof + 5 :], "12-bit")
    files["arithmetic"] = (good[:sof] + b"\xff\xc9" + good[sof + 2 :], "arithmetic")
    return files


def test_bad_files_raise_value_error(tmp_path):
    for name, (data, match) in _bad_files(tmp_path).items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            read_coefficients(path)


def test_real_arithmetic_coded_file(tmp_path):
    jpeglib = pytest.importorskip("jpeglib")
    path = tmp_path / "arith.jpg"
    try:
        with jpeglib.version("turbo210"):
            jpeglib.from_spatial(pixels(16, 16)).write_spatial(str(path), qt=75, flags=["+ARITH_CODE"])
    except Exception as err:  # pragma: no cover - depends on the jpeglib build
        pytest.skip(f"jpeglib cannot write arithmetic-coded files here: {err}")
    if b"\xff\xc9" not in path.read_bytes():
        pytest.skip("jpeglib wrote a Huffman-coded file")
    with pytest.raises(ValueError, match="arithmetic"):
        read_coefficients(path)


def test_corrupt_files_never_crash_the_interpreter(tmp_path):
    """Random byte flips and cuts: each read returns or raises ValueError; run in a child process so
    that a libjpeg abort would fail this test instead of killing the test run."""
    pillow_save(tmp_path / "good.jpg", pixels(40, 56), 70)
    pillow_save(tmp_path / "prog.jpg", pixels(24, 17), 70, progressive=True)
    code = textwrap.dedent(f"""
        import numpy as np, os
        from diffjpeg.jpeg.io import read_coefficients
        rng = np.random.default_rng(0)
        counts = {{"ok": 0, "ValueError": 0}}
        for src in ("good.jpg", "prog.jpg"):
            good = open(os.path.join({str(tmp_path)!r}, src), "rb").read()
            for i in range(150):
                b = bytearray(good)
                span = len(b) if i % 2 else min(len(b), 700)  # half of them hit the headers
                for _ in range(rng.integers(1, 5)):
                    b[rng.integers(2, span)] = rng.integers(0, 256)
                if i % 3 == 0:
                    b = b[: rng.integers(2, len(b))]
                path = os.path.join({str(tmp_path)!r}, "fuzz.jpg")
                open(path, "wb").write(b)
                try:
                    read_coefficients(path)
                    counts["ok"] += 1
                except ValueError:
                    counts["ValueError"] += 1
        print(counts)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ValueError" in proc.stdout


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"coefficients": torch.zeros(1, 2, 2, 8, 8)}, TypeError, "list of per-component"),
        ({"coefficients": [torch.zeros(2, 2, 2, 8, 8)]}, ValueError, "batch of 2 images"),
        ({"coefficients": [torch.zeros(2, 2, 8, 7)]}, ValueError, r"shape \(nby, nbx, 8, 8\)"),
        ({"coefficients": [torch.zeros(2, 2, 8, 8)] * 2}, ValueError, "1 \\(grayscale\\) or 3"),
        ({"coefficients": [torch.full((2, 2, 8, 8), 0.5)]}, ValueError, "integer values"),
        ({"coefficients": [torch.full((2, 2, 8, 8), 5000.0)]}, ValueError, "out of baseline range"),
        ({"coefficients": [torch.full((2, 2, 8, 8), float("nan"))]}, ValueError, "finite"),
        ({"qtables": None}, ValueError, "qtables is required"),
        ({"qtables": torch.full((2, 8, 8), 1.5)}, ValueError, "integer-valued"),
        ({"qtables": torch.full((2, 8, 8), 300.0)}, ValueError, r"\[1, 255\]"),
        ({"qtables": torch.ones(2, 2, 8, 8)}, ValueError, "2 images"),
        ({"size": (40, 16)}, ValueError, "block grid"),
        ({"size": (0, 16)}, ValueError, "size must be"),
    ],
)
def test_write_errors(tmp_path, kwargs, error, match):
    args = {"path": tmp_path / "e.jpg", "coefficients": [torch.zeros(2, 2, 8, 8)], "qtables": torch.ones(8, 8)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        write_coefficients(**args)
    assert not (tmp_path / "e.jpg").exists()


def test_write_subsampling_inference(tmp_path):
    grids = block_grid(32, 32, ((2, 2), (1, 1), (1, 1)))
    coefs = [torch.zeros(*g, 8, 8) for g in grids]
    write_coefficients(tmp_path / "i.jpg", coefs, torch.ones(2, 8, 8), size=(32, 32))
    assert read_coefficients(tmp_path / "i.jpg").subsampling == "420"
    tiny = [torch.zeros(1, 1, 8, 8)] * 3  # an 8x8 image fits every subsampling
    with pytest.raises(ValueError, match="pass subsampling explicitly"):
        write_coefficients(tmp_path / "t.jpg", tiny, torch.ones(2, 8, 8), size=(8, 8))
    with pytest.raises(ValueError, match="subsampling must be one of"):
        write_coefficients(tmp_path / "t.jpg", tiny, torch.ones(2, 8, 8), size=(8, 8), subsampling="411")


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_coefficients(tmp_path / "no" / "x.jpg", [torch.zeros(1, 1, 8, 8)], torch.ones(8, 8))


def test_dataclass_write_rejects_extra_arguments(tmp_path):
    pillow_save(tmp_path / "a.jpg", pixels(8, 8), 50)
    jc = read_coefficients(tmp_path / "a.jpg")
    assert isinstance(jc, JPEGCoefficients)
    with pytest.raises(ValueError, match="come from the JPEGCoefficients"):
        write_coefficients(tmp_path / "b.jpg", jc, torch.ones(8, 8))
