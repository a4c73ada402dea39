"""Hostile files: decompression bombs, forged headers, corrupt and truncated images, and a fuzz run
under a memory cap (``diffjpeg.jpeg.limits``, ``diffjpeg.jpeg.io``, ``diffjpeg.eval.datasets``)."""
from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from PIL import Image

from diffjpeg.eval.datasets import load_dataset, read_idx
from diffjpeg.jpeg import io as jio
from diffjpeg.jpeg.io import decode_file, read_coefficients, write_coefficients
from diffjpeg.jpeg.limits import (
    DecompressionBombError,
    check_jpeg,
    min_scan_bytes,
    read_frame_header,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def jpeg_bytes(h: int = 40, w: int = 56, channels: int = 3, seed: int = 0, **options) -> bytes:
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, channels)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if channels == 1 else a).save(buf, format="JPEG", **{"quality": 70, **options})
    return buf.getvalue()


def with_size(data: bytes, height: int, width: int) -> bytes:
    """``data`` with its SOF segment's height and width replaced (the rest of the file unchanged)."""
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


# ------------------------------------------------------------------------------------ the frame header

def test_frame_header_is_read_from_the_markers():
    data = jpeg_bytes(40, 56)
    frame = read_frame_header(data)
    assert (frame.height, frame.width, frame.marker) == (40, 56, 0xC0)
    assert frame.components == ((2, 2), (1, 1), (1, 1))  # Pillow's 4:2:0
    assert frame.blocks() == 5 * 7 + 2 * (3 * 4) and min_scan_bytes(frame) == 8
    assert data[frame.header_bytes: frame.header_bytes + 2] == b"\xff\xda"
    progressive = read_frame_header(jpeg_bytes(24, 17, 1, progressive=True))
    assert (progressive.height, progressive.width, progressive.components, progressive.marker) == \
        (24, 17, ((1, 1),), 0xC2)
    for bad in (b"", b"\x89PNG\r\n\x1a\n", data[:2], data[:30], data[:2] + b"\xff\xda\x00\x02"):
        assert read_frame_header(bad) is None and check_jpeg(bad, "x.jpg") is None


@pytest.mark.parametrize("height, width", [(20000, 20000), (65500, 65500), (65535, 1400)])
def test_decompression_bombs_are_refused_before_any_allocation(tmp_path, height, width):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(with_size(jpeg_bytes(), height, width))
    assert path.stat().st_size < 2500
    for read in (read_coefficients, decode_file):
        with pytest.raises(DecompressionBombError, match=rf"bomb.jpg claims {width}x{height} = {width * height} "
                                                           r"pixels, more than the limit of 89478485 pixels.*"
                                                           r"PIL.Image.MAX_IMAGE_PIXELS"):
            read(path)


def test_too_little_data_for_the_claimed_size_is_refused(tmp_path):
    path = tmp_path / "forged.jpg"
    path.write_bytes(with_size(jpeg_bytes(), 3000, 3000))  # 9 Mpixel: under the pixel limit
    with pytest.raises(DecompressionBombError, match=r"forged.jpg is truncated or forged: it claims 3000x3000 pixels "
                                                     r"\(211313 blocks of 8x8\), which need at least 26415 bytes"):
        read_coefficients(path)
    assert isinstance(DecompressionBombError("x"), ValueError)  # callers catching ValueError keep working


def test_the_pixel_limit_is_pillows_and_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "small.jpg"
    path.write_bytes(jpeg_bytes(40, 56))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 56 - 1)
    with pytest.raises(DecompressionBombError, match="claims 56x40 = 2240 pixels, more than the limit of 2239"):
        read_coefficients(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 56)
    assert read_coefficients(path).size == (40, 56)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # disabled: only the data-length rule is left
    assert read_coefficients(path).size == (40, 56)
    path.write_bytes(with_size(jpeg_bytes(), 20000, 20000))
    with pytest.raises(DecompressionBombError, match="truncated or forged"):
        read_coefficients(path)


def test_progressive_files_with_scans_missing_are_refused(tmp_path):
    """Cut before the last scan and patched with an EOI: libjpeg would smooth the incomplete blocks when
    decoding pixels, so the coefficients are not the image Pillow shows."""
    from diffjpeg.jpeg.limits import incomplete_components

    data = jpeg_bytes(24, 40, progressive=True)
    frame = read_frame_header(data)
    assert incomplete_components(data, frame) == []
    last = data.rindex(b"\xff\xda")
    cut = data[:last] + b"\xff\xd9"
    assert incomplete_components(cut, read_frame_header(cut)) != []
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    with pytest.raises(ValueError, match=r"cut.jpg is truncated: its progressive scans leave coefficients of "
                                         r"component\(s\) \[.*\] incomplete"):
        read_coefficients(path)
    assert incomplete_components(jpeg_bytes(), read_frame_header(jpeg_bytes())) == []  # sequential: complete


# ------------------------------------------------------------------------------------ io's errors

def test_read_coefficients_of_a_non_path_is_a_type_error():
    for bad in (None, 3, ["a.jpg"]):
        with pytest.raises(TypeError, match="path must be a str or os.PathLike naming a JPEG file, got"):
            read_coefficients(bad)


def test_libjpeg_says_why_it_cannot_read_a_file(tmp_path):
    data = bytearray(jpeg_bytes())
    dht = data.index(b"\xff\xc4")
    data[dht + 5: dht + 21] = b"\xff" * 16  # code-length counts that overflow the Huffman tree
    path = tmp_path / "bogus.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bogus.jpg is corrupt: libjpeg could not read it: Bogus Huffman table "
                                         r"definition$") as info:
        read_coefficients(path)
    assert tempfile.gettempdir() not in str(info.value).replace(str(tmp_path), "")  # no temp file named


def test_write_into_an_unwritable_folder_names_the_destination(tmp_path, monkeypatch):
    jc = read_coefficients(_write(tmp_path / "a.jpg", jpeg_bytes()))
    target = tmp_path / "out" / "b.jpg"
    target.parent.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(target.parent / "tmpXYZ.jpg"))

    monkeypatch.setattr(jio.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"cannot write '.*out/b.jpg': its folder '.*out' is not writable "
                                              r"\(Permission denied\)") as info:
        write_coefficients(target, jc)
    assert "tmpXYZ" not in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that folder modes restrict")
def test_write_into_a_read_only_folder_names_the_destination(tmp_path):
    jc = read_coefficients(_write(tmp_path / "a.jpg", jpeg_bytes()))
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"cannot write '.*ro/b.jpg'"):
            write_coefficients(folder / "b.jpg", jc)
    finally:
        folder.chmod(0o700)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------ dataset loaders

def _folder(tmp_path, files: dict[str, bytes]):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "good.png").write_bytes(_png(8, 8))
    for name, data in files.items():
        (root / "cat" / name).write_bytes(data)
    return f"imagefolder:{root}"


def _png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_imagefolder_names_corrupt_and_truncated_files(tmp_path):
    good = jpeg_bytes(8, 8)
    cases = {"garbage.jpg": (b"this is not an image at all", "not an image Pillow can read"),
             "truncated.png": (_png(64, 64)[:90], "corrupt or truncated"),
             "truncated.jpg": (jpeg_bytes(64, 64)[:400], "corrupt or truncated")}
    for i, (name, (data, match)) in enumerate(cases.items()):
        spec = _folder(tmp_path / str(i), {name: data})
        with pytest.raises(ValueError, match=rf"image file '.*cat/{name}' (is|was) {match}"):
            load_dataset(spec)
    assert len(load_dataset(_folder(tmp_path / "ok", {"also.jpg": good}))) == 2


def test_imagefolder_refuses_bombs_and_names_the_file(tmp_path, monkeypatch):
    bomb = with_size(jpeg_bytes(8, 8), 30000, 30000)  # above twice the limit: Pillow itself refuses
    with pytest.raises(DecompressionBombError, match=r"cat/bomb.jpg.*exceeds limit of 178956970 pixels"):
        load_dataset(_folder(tmp_path / "a", {"bomb.jpg": bomb}))
    big = with_size(jpeg_bytes(8, 8), 10000, 10000)  # 1x - 2x the limit: Pillow only warns; refused here
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(DecompressionBombError, match=r"cat/big.jpg claims 10000x10000 = 100000000 pixels"):
        load_dataset(_folder(tmp_path / "b", {"big.jpg": big}))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(DecompressionBombError, match=r"good.png claims 8x8 = 64 pixels, more than the limit of 63"):
        load_dataset(_folder(tmp_path / "c", {}))


def test_idx_headers_cannot_allocate_beyond_the_limit(tmp_path):
    forged = tmp_path / "forged-idx3-ubyte.gz"
    forged.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 60000, 60000, 60000)))
    with pytest.raises(ValueError, match=r"shape \(60000, 60000, 60000\) \(216000000000000 bytes\), more than the "
                                         r"limit of 2147483648 bytes"):
        read_idx(forged)
    bomb = tmp_path / "bomb-idx3-ubyte.gz"  # 2 x 2 x 2 declared, 50 MB of zeros inside a 50 kB gzip
    bomb.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 2, 2) + bytes(50_000_000)))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"header says shape \(2, 2, 2\) \(8 bytes\) but the file holds more than "
                                         r"that bytes"):
        read_idx(bomb)
    small = tmp_path / "small-idx1-ubyte"
    small.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x03")
    assert read_idx(small).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="more than the limit of 2 bytes"):
        read_idx(small, max_bytes=2)
    broken = tmp_path / "broken-idx1-ubyte.gz"
    broken.write_bytes(gzip.compress(small.read_bytes())[:-6])
    with pytest.raises(ValueError, match=r"broken-idx1-ubyte.gz' cannot be read"):
        read_idx(broken)


def test_cifar_batches_that_are_truncated_or_wrong_name_the_file(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}, protocol=2)
    (folder / "test_batch").write_bytes(batch)
    assert len(load_dataset(f"cifar10:{tmp_path}")) == 4
    for data in (batch[: len(batch) // 2], pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": []}),
                 pickle.dumps({"labels": [1]})):
        (folder / "test_batch").write_bytes(data)
        with pytest.raises((ValueError, pickle.UnpicklingError), match=r"CIFAR-10 batch file '.*test_batch'"):
            load_dataset(f"cifar10:{tmp_path}")


# ------------------------------------------------------------------------------------ fuzz under a memory cap

_FUZZ_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from PIL import Image
    from diffjpeg.jpeg.exact import exact_decode
    from diffjpeg.jpeg.io import read_coefficients

    def address_space():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))

    # everything imported: from here on at most 1 GiB more address space (a bomb needs gigabytes)
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + (1 << 30), resource.RLIM_INFINITY))
    counts = {"refused": 0, "same": 0, "undecodable": 0, "pillow_refuses": 0}
    for path in sys.argv[1:]:
        try:
            jc = read_coefficients(path)
        except ValueError:
            counts["refused"] += 1
            continue
        try:
            coefs, tables = jc.to_batch(torch.float64)
        except ValueError:  # a layout the differentiable decoder does not model (e.g. 4:1:1)
            counts["undecodable"] += 1
            continue
        ours = exact_decode(coefs, tables, jc.subsampling, jc.height, jc.width)[0]
        try:
            with Image.open(path) as im:
                theirs = np.asarray(im.convert("L" if jc.num_components == 1 else "RGB"))
        except (OSError, ValueError, SyntaxError):
            counts["pillow_refuses"] += 1
            continue
        theirs = torch.from_numpy(theirs.copy())
        theirs = theirs[None] if theirs.ndim == 2 else theirs.permute(2, 0, 1)
        if ours.shape != theirs.shape or not torch.equal(ours, theirs):
            print("DIFFERENT", path, tuple(ours.shape), tuple(theirs.shape), flush=True)
            sys.exit(3)
        counts["same"] += 1
    print(json.dumps(counts))
""")


def _mutants(n: int, seed: int = 0) -> list[bytes]:
    """``n`` mutated JPEGs: bit flips (half of them in the headers), truncations, and forged SOF fields."""
    rng = np.random.default_rng(seed)
    bases = [jpeg_bytes(40, 56), jpeg_bytes(24, 17, progressive=True), jpeg_bytes(33, 20, 1, quality=85),
             jpeg_bytes(32, 32, subsampling=0, quality=90), jpeg_bytes(17, 40, subsampling=1, quality=40)]
    sizes = [0, 1, 7, 8, 9, 255, 4096, 9460, 20000, 65500, 65535]
    out = []
    for i in range(n):
        data = bytearray(bases[i % len(bases)])
        sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        kind = i % 4
        if kind == 0:  # bit flips anywhere, or within the headers
            span = len(data) if i % 8 else data.find(b"\xff\xda") + 12
            for _ in range(rng.integers(1, 6)):
                data[rng.integers(2, span)] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncation (some keep an EOI marker at the end)
            data = data[: rng.integers(2, len(data))] + (b"\xff\xd9" if i % 3 == 0 else b"")
        elif kind == 2:  # forged height and width
            h, w = (int(v) if v >= 0 else int(rng.integers(1, 65536)) for v in rng.choice(sizes + [-1], 2))
            data[sof + 5: sof + 9] = struct.pack(">HH", h, w)
        else:  # other header fields: components, sampling factors, precision, segment lengths
            field = rng.choice(["components", "factors", "precision", "length"])
            if field == "components":
                data[sof + 9] = int(rng.choice([0, 2, 4, 255]))
            elif field == "factors":
                data[sof + 11] = int(rng.integers(0, 256))
            elif field == "precision":
                data[sof + 4] = int(rng.choice([0, 12, 16]))
            else:
                at = data.find(b"\xff", int(rng.integers(2, sof + 1)))
                data[at + 2: at + 4] = struct.pack(">H", int(rng.integers(0, 65536)))
        out.append(bytes(data))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_fuzzed_files_never_crash_hang_or_allocate_beyond_the_limit(tmp_path):
    """600 mutated JPEGs, read in two child processes capped at 1 GiB more address space than their
    imports take, with a timeout: each file is refused with a ValueError or read and then decodes to
    the pixels Pillow gives. The cap fails the run for any bomb: before the limits, the forged sizes
    here made read_coefficients ask for gigabytes."""
    mutants = _mutants(600)
    paths = []
    for i, data in enumerate(mutants):
        paths.append(str(_write(tmp_path / f"m{i:03d}.jpg", data)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    total = {}
    for batch in (paths[:300], paths[300:]):
        proc = subprocess.run([sys.executable, "-c", _FUZZ_CHILD, *batch], capture_output=True, text=True,
                              timeout=120, env=env)
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
        for key, value in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            total[key] = total.get(key, 0) + value
    assert sum(total.values()) == 600
    assert total["same"] >= 100 and total["refused"] >= 200, total  # both paths are exercised
    forged = [d for d in mutants[2::4]]
    bombs = sum(1 for d in forged if (f := read_frame_header(d)) is not None and f.pixels > 89478485)
    assert bombs >= 20  # the run includes real bombs, all refused (else the cap would have failed it)
