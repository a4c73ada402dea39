"""The benchmark refuses what would mix or lose results, and every user error is one line.

Resume: a run's fingerprint covers the checkpoint's and the data's content, diffjpeg's and torch's
versions and torch's thread count; a second process on the same ``--out`` is refused; the outputs are
strict JSON; wrong TOML types, a missing CUDA device, a too small image size, an unwritable ``--out``
and damaged run files are one-line errors naming the key or file.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import diffjpeg
from diffjpeg.eval import load_dataset, run_benchmark, train_small_cnn
from diffjpeg.eval.bench import main


def _train(path: Path, epochs: int) -> str:
    data = load_dataset("foolbox:cifar10")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_small_cnn(data.images, data.labels, classes=10, epochs=epochs, batch_size=20, lr=3e-3, out=path)
    finally:
        torch.set_num_threads(threads)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """Two different small CNN checkpoints (a second of training each)."""
    folder = tmp_path_factory.mktemp("models")
    return _train(folder / "a.pt", 4), _train(folder / "b.pt", 2)


def tiny(checkpoint: str, out: Path, **changes) -> dict:
    cfg = {"model": "small_cnn", "checkpoint": checkpoint, "data": "foolbox:cifar10", "n": 4, "batch_size": 4,
           "defenses": ["none"], "threat_models": ["graybox"], "attack": ["fgsm"], "eps": [8 / 255], "steps": 1,
           "out": str(out), "progress": False}
    cfg.update(changes)
    return cfg


def _cli(checkpoint: str, out: Path, *extra: str) -> list[str]:
    return ["--model", "small_cnn", "--checkpoint", checkpoint, "--data", "foolbox:cifar10", "--examples", "4",
            "--batch-size", "4", "--defenses", "none", "--threat-models", "graybox", "--attack", "fgsm",
            "--steps", "1", "--out", str(out), "--no-progress", *extra]


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("diffjpeg bench: error:"), err
    return err


# ------------------------------------------------------------------------------------------ resume


def test_swapped_checkpoint_at_the_same_path_is_refused(models, tmp_path):
    path, out = tmp_path / "m.pt", tmp_path / "run"
    shutil.copy(models[0], path)
    run_benchmark(tiny(str(path), out))
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "units").iterdir()}
    run_benchmark(tiny(str(path), out))  # unchanged: resumes, recomputes nothing
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").iterdir()} == stamp
    shutil.copy(models[1], path)
    with pytest.raises(ValueError, match=r"different configuration \(changed: checkpoint content, model weights\)"):
        run_benchmark(tiny(str(path), out))
    run_benchmark(tiny(str(path), out, restart=True))
    assert json.loads((out / "config.json").read_text())["inputs"]["checkpoint"] != ""


def test_changed_image_folder_is_refused(models, tmp_path):
    images = load_dataset("foolbox:cifar10").images
    folder = tmp_path / "data" / "cls"
    folder.mkdir(parents=True)

    def save(i: int, k: int) -> None:
        pixels = (images[k] * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")

    for i in range(4):
        save(i, i)
    out = tmp_path / "run"
    run_benchmark(tiny(models[0], out, data=f"imagefolder:{tmp_path / 'data'}"))
    save(2, 7)  # one image replaced, same name
    with pytest.raises(ValueError, match=r"different configuration \(changed: data\)"):
        run_benchmark(tiny(models[0], out, data=f"imagefolder:{tmp_path / 'data'}"))


def test_changed_library_version_or_thread_count_is_refused(models, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_benchmark(tiny(models[0], out))
    with monkeypatch.context() as m:
        m.setattr(diffjpeg, "__version__", "0.0.1-other")
        with pytest.raises(ValueError, match=r"different configuration \(changed: diffjpeg version\)"):
            run_benchmark(tiny(models[0], out))
    with monkeypatch.context() as m:
        m.setattr(torch, "__version__", "1.0.0")
        with pytest.raises(ValueError, match=r"different configuration \(changed: torch version\)"):
            run_benchmark(tiny(models[0], out))
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        with pytest.raises(ValueError, match=r"different configuration \(changed: torch threads\)"):
            run_benchmark(tiny(models[0], out))
    finally:
        torch.set_num_threads(threads)
    run_benchmark(tiny(models[0], out))  # the original setting resumes
    table = (out / "table.md").read_text().splitlines()
    assert table[1] == (f"torch {torch.__version__}, {threads} intra-op thread(s) (both can change a few verdicts)")


def test_second_run_on_the_same_out_is_refused(models, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a") as held:  # another run in progress holds the lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = _one_line_error(_cli(models[0], out), capsys)
        assert f"out {str(out)!r} is in use: another run holds its lock" in err
        assert not (out / "config.json").exists()
    assert main(_cli(models[0], out)) == 0  # released: the run goes ahead


def test_outputs_are_strict_json_with_null_for_infinite_psnr(models, tmp_path):
    """An identity defense (8-bit images at 256 levels) gives identical images: PSNR null, not Infinity."""
    out = tmp_path / "run"
    summary = run_benchmark(tiny(models[0], out, defenses=["none", "bit_depth:levels=256"]))

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    psnr = [r["psnr"] for r in summary["rows"] if r["defense"] != "none"]
    assert psnr and all(p == float("inf") for p in psnr)  # in memory: the true value
    stored = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert [r["psnr"] for r in stored["rows"] if r["defense"] != "none"] == [None] * len(psnr)
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=refuse) for line in lines]
    assert any("psnr" in r and r["psnr"] is None for r in records)
    for unit in (out / "units").glob("*.json"):
        json.loads(unit.read_text(), parse_constant=refuse)
    json.loads((out / "config.json").read_text(), parse_constant=refuse)
    row = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| bit_depth"))
    assert "| 99.0 |" in row  # the table caps an infinite PSNR at 99 dB


# ------------------------------------------------------------------------------------------ one-line errors


@pytest.mark.parametrize("toml, message", [
    ("defenses = 5", "config key defenses must be a list of strings, got int 5"),
    ("out = 5", "config key out must be a string, got int 5"),
    ("model = 5", "config key model must be a string, got int 5"),
    ('restart = "false"', "config key restart must be true or false, got str 'false'"),
    ('steps = "5"', "steps must be an integer >= 1, got str '5'"),
    ("eps = [true]", "eps values must be numbers in [0, 1] (e.g. 8/255), got True"),
    ('eps = "abc"', "eps values must be numbers in [0, 1] (e.g. 8/255), got 'abc'"),
    ('threat_models = ["graybox", 3]', "config key threat_models must be a list of strings, got list ['graybox', 3]"),
    ('device = 0', "config key device must be a string, got int 0"),
    ('checkpoint = ["a.pt"]', "config key checkpoint must be a string or none (unset), got list ['a.pt']"),
])
def test_wrong_toml_types_are_one_line_errors(toml, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.toml").write_text(toml + "\n")
    err = _one_line_error(["--config", str(tmp_path / "b.toml"), "--no-progress"], capsys)
    assert message in err
    assert not (tmp_path / "bench-results").exists()  # refused before anything is written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    err = _one_line_error(["--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert "device 'cuda': no CUDA device is available here" in err and "--device cpu" in err


def test_device_spelling(tmp_path, capsys):
    err = _one_line_error(["--device", "cuda:x", "--out", str(tmp_path / "o")], capsys)
    assert "device must be 'cpu', 'cuda' or 'cuda:N', got 'cuda:x'" in err
    err = _one_line_error(["--device", f"cuda:{torch.cuda.device_count()}", "--out", str(tmp_path / "o")], capsys)
    assert "available here" in err


def test_image_size_too_small(models, tmp_path, capsys):
    err = _one_line_error(_cli(models[0], tmp_path / "o", "--image-size", "1"), capsys)
    assert "image_size must be an integer >= 8, got 1" in err
    err = _one_line_error(_cli(models[0], tmp_path / "o", "--image-size", "16"), capsys)
    assert "image_size 16: model 'small_cnn' cannot classify 16x16 images (its own size: 32" in err


@pytest.mark.parametrize("flags", [["--eps", "-1/255"], ["--eps=-1/255"], ["--eps", "2/255", "-1/255"]])
def test_negative_eps_is_named_in_both_spellings(flags, tmp_path, capsys):
    err = _one_line_error(["--out", str(tmp_path / "o"), "--no-progress", *flags], capsys)
    assert "eps values must be numbers in [0, 1] (e.g. 8/255), got -0.0039" in err


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the output folder was checked")


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_unwritable_out_is_refused_before_any_work(where, models, tmp_path, capsys, monkeypatch):
    import diffjpeg.eval.zoo

    monkeypatch.setattr(diffjpeg.eval.zoo, "load_model", _no_model)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = {"a file": blocker, "under a file": blocker / "out", "read-only": tmp_path / "ro" / "out"}[where]
    if where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
    try:
        err = _one_line_error(_cli(models[0], out), capsys)
    finally:
        if where == "read-only":
            (tmp_path / "ro").chmod(0o755)
    assert f"out {str(out)!r} is not a writable folder" in err and "choose another --out" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not a unit"])
def test_corrupt_unit_file_is_named(damage, models, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli(models[0], out)) == 0
    capsys.readouterr()
    unit = sorted((out / "units").glob("*.json"))[0]
    text = unit.read_text()
    damaged = {"garbage": "\x00\xff garbage", "truncated": text[: len(text) // 2], "not a unit": "[1, 2]"}
    unit.write_text(damaged[damage])
    err = _one_line_error(_cli(models[0], out), capsys)
    assert f"unit file {str(unit)!r}" in err and "delete it" in err


def test_units_of_another_run_are_refused(models, tmp_path):
    """Without its config.json (deleted by hand), a folder's units still refuse to mix with another run's."""
    out = tmp_path / "run"
    run_benchmark(tiny(models[0], out))
    (out / "config.json").unlink()
    with pytest.raises(ValueError, match=r"unit file '.*/units/b00000-clean.json' holds results of a different run "
                                         r"\(fingerprint \w+, this run's \w+\); pass --restart"):
        run_benchmark(tiny(models[0], out, seed=1))
    run_benchmark(tiny(models[0], out))  # the same run resumes
    assert (out / "config.json").is_file()


def test_corrupt_config_json_is_named(models, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli(models[0], out)) == 0
    capsys.readouterr()
    (out / "config.json").write_text('{"fingerprint": "')
    err = _one_line_error(_cli(models[0], out), capsys)
    assert f"run record {str(out / 'config.json')!r} is corrupt" in err and "delete it" in err
    assert main(_cli(models[0], out, "--restart")) == 0  # --restart starts over
