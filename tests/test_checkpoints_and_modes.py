"""Checkpoints are integrity-checked and load weights only; written files get the usual mode."""
from __future__ import annotations

import os
import pickle
import stat
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from diffjpeg.eval.zoo import SmallCNN, load_model, save_small_cnn
from diffjpeg.files import (
    CheckpointError,
    UnsafeCheckpointError,
    atomic_torch_save,
    atomic_write,
    load_checkpoint,
    output_mode,
)


class _Thing:
    pass


def _flip_member(path, member: str, count: int = 40) -> None:
    """Flip ``count`` bytes inside ``member``'s stored data (the archive's structure stays intact)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    local_extra = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + len(info.filename.encode()) + local_extra
    for k in range(count):
        data[start + 7 * k] ^= 0x5A
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_caught_by_the_crc(tmp_path):
    path = tmp_path / "cnn.pt"
    save_small_cnn(SmallCNN(1, 28, 10), path)
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size).filename  # the largest weight tensor
    _flip_member(path, member)
    # what a plain torch.load does with it: loads, with wrong weights
    assert isinstance(torch.load(path, weights_only=True)["state_dict"], dict)
    with pytest.raises(CheckpointError, match=rf"checkpoint '.*cnn.pt' is damaged: the CRC-32 of its member "
                                              rf"'{member}' does not match"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="is damaged"):
        load_model("small_cnn", checkpoint=path)


def test_unreadable_checkpoints_get_one_line_naming_the_file(tmp_path):
    good = tmp_path / "good.pt"
    atomic_torch_save({"w": torch.ones(3)}, good)
    cases = {"empty.pt": (b"", "is empty"),
             "garbage.pt": (np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
                            "is not a PyTorch checkpoint"),
             "truncated.pt": (good.read_bytes()[:300], "is not a PyTorch checkpoint, or is truncated or corrupt"),
             "text.pt": (b"hello, this is text\n" * 20, "is not a PyTorch checkpoint")}
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"checkpoint '.*{name}' {match}") as info:
            load_checkpoint(tmp_path / name)
        text = str(info.value)
        assert "\n" not in text and "weights_only" not in text
    with pytest.raises(FileNotFoundError, match=r"weights '.*nope.pt': no such file"):
        load_checkpoint(tmp_path / "nope.pt", "weights")
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        load_checkpoint(None)
    assert torch.equal(load_checkpoint(good)["w"], torch.ones(3))


def test_objects_other_than_weights_are_refused_without_suggesting_unsafe_loading(tmp_path):
    torch.save({"state_dict": {}, "extra": _Thing()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"'.*evil.pt' holds objects other than tensors and plain "
                                                    r"containers \(.*_Thing\); only weights are loaded") as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, ValueError)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for legacy in (False, True):
        torch.save(model, tmp_path / "whole.pt", _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsafeCheckpointError, match=r"holds a whole pickled model \(torch.nn.modules.container."
                                                        r"Sequential, saved with torch.save\(model\)\); only weights "
                                                        r"are loaded: save its state_dict\(\) instead"):
            load_model("small_cnn", checkpoint=tmp_path / "whole.pt")


def test_legacy_format_checkpoints_still_load(tmp_path):
    state = {"w": torch.arange(4.0)}
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["w"], state["w"])


# ------------------------------------------------------------------------------------ file modes

@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_get_the_umasks_mode(tmp_path, umask):
    from diffjpeg.jpeg.io import read_coefficients, save_jpeg, write_coefficients

    old = os.umask(umask)
    try:
        expected = 0o666 & ~umask
        assert output_mode(tmp_path / "new.txt") == expected
        atomic_write(tmp_path / "results.jsonl", lambda f: f.write("{}\n"), mode="w")  # results, tables, plots
        atomic_torch_save({"w": torch.ones(2)}, tmp_path / "model.pt")
        save_small_cnn(SmallCNN(1, 8, 2), tmp_path / "cnn.pt")
        save_jpeg(tmp_path / "pillow.jpg", torch.rand(1, 3, 8, 8))
        write_coefficients(tmp_path / "copy.jpg", read_coefficients(tmp_path / "pillow.jpg"))
        for name in ("results.jsonl", "model.pt", "cnn.pt", "copy.jpg"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
        (tmp_path / "results.jsonl").chmod(0o640)  # an existing file keeps the mode its owner gave it
        atomic_write(tmp_path / "results.jsonl", lambda f: f.write("{}\n{}\n"), mode="w")
        assert stat.S_IMODE((tmp_path / "results.jsonl").stat().st_mode) == 0o640
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    finally:
        os.umask(old)
