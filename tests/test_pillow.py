"""The Pillow adapter (diffjpeg.jpeg.pillow): the one place that asks Pillow for a JPEG."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffjpeg.jpeg import pillow
from diffjpeg.jpeg.real import real_jpeg

PACKAGE = Path(__file__).resolve().parent.parent / "diffjpeg"


def _image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, c, h, w, generator=g)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
def test_encode_is_pillows_file(c, subsampling):
    x = _image(c, 19, 26)
    pixels = pillow.image_array(pillow.to_uint8(x)[0])
    assert pixels.shape == ((19, 26) if c == 1 else (19, 26, 3))
    reference = io.BytesIO()
    options = {"quality": 40} if c == 1 else {"quality": 40, "subsampling": pillow.PIL_SUBSAMPLING[subsampling]}
    Image.fromarray(pixels).save(reference, format="JPEG", **options)
    data = pillow.encode(pixels, quality=40, subsampling=subsampling)
    assert data == reference.getvalue()
    decoded = torch.from_numpy(pillow.decode(data).copy())
    decoded = decoded[None] if c == 1 else decoded.permute(2, 0, 1)
    assert torch.equal(decoded[None].float() / 255, real_jpeg(x, 40, subsampling))


def test_tables_are_written_as_given_and_grayscale_uses_luma():
    t = np.arange(1, 129, dtype=np.int64).reshape(2, 8, 8)
    with Image.open(io.BytesIO(pillow.encode(np.zeros((8, 8, 3), np.uint8), tables=t))) as im:
        assert [list(im.quantization[0]), list(im.quantization[1])] == [t[0].ravel().tolist(), t[1].ravel().tolist()]
    with Image.open(io.BytesIO(pillow.encode(np.zeros((8, 8), np.uint8), tables=t))) as im:
        assert list(im.quantization) == [0] and list(im.quantization[0]) == t[0].ravel().tolist()


def test_round_quality_and_integer_tables():
    assert pillow.round_quality(50.5, 2) == [51, 51]
    assert pillow.round_quality(torch.tensor([49.5, 30.4]), 2) == [50, 30]
    assert pillow.round_quality(torch.tensor(7.0), 3) == [7, 7, 7]
    tables = pillow.integer_tables(torch.full((2, 8, 8), 2.5), 3)
    assert tables.shape == (3, 2, 8, 8) and (tables == 3).all()


def test_save_jpeg_checks_and_writes(tmp_path):
    from diffjpeg.jpeg import io as jpeg_io

    assert jpeg_io.save_jpeg is pillow.save_jpeg  # the old import path still works
    x = _image(3, 16, 24)
    pillow.save_jpeg(tmp_path / "q.jpg", x[0], q=60.5, subsampling="444")
    with Image.open(tmp_path / "q.jpg") as im:
        got = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(got, real_jpeg(x, 61, "444"))
    with pytest.raises(ValueError, match="x must hold one image"):
        pillow.save_jpeg(tmp_path / "b.jpg", torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="qtables has 3 entries"):
        pillow.save_jpeg(tmp_path / "b.jpg", x, qtables=torch.ones(3, 2, 8, 8))
    with pytest.raises(ValueError, match="subsampling must be one of"):
        pillow.save_jpeg(tmp_path / "b.jpg", x, subsampling="411")


def test_no_other_module_asks_pillow_for_a_jpeg():
    """Pillow's JPEG options (format, quality/qtables, subsampling codes) are spelled out in pillow.py only."""
    pattern = re.compile(r"""\.save\([^)]*["']JPEG["']|format\s*=\s*["']JPEG["']|["']qtables["']\]\s*=|"""
                         r"""["']qtables["']\s*:|PIL_SUBSAMPLING\[""")
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "pillow.py" and pattern.search(p.read_text())]
    assert offenders == []
    assert pattern.search((PACKAGE / "jpeg" / "pillow.py").read_text())
