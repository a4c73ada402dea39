"""PixelDepthReconstruction (bit-depth compression + EDSR reconstruction), its training, weights and
the Fashion-MNIST loader, on small synthetic data (CPU; the CUDA test skips without a GPU)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from torch import nn

from diffjpeg.contract import Defense
from diffjpeg.defenses import build
from diffjpeg.defenses.reconstruction import (EDSR, PixelDepthReconstruction, load_weights, quantize_depth,
                                              quantize_depth_ste, save_weights)
from diffjpeg.learn.reconstruction import train_reconstruction
from diffjpeg.eval.datasets import load_fashion_mnist, read_idx
from diffjpeg.wrappers import BPDA, DefendedModel


def blobs(n: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Smooth synthetic grayscale images ``(n, 1, size, size)`` in [0, 1]: a Gaussian blob on a ramp."""
    g = torch.Generator().manual_seed(seed)
    r = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    cx, cy, w = torch.rand(3, n, 1, 1, generator=g)
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 + 0.1 * w))
    ramp = 0.3 * torch.rand(n, 1, 1, generator=g) * xx
    return (0.1 + 0.6 * blob + ramp).clamp(0, 1)[:, None]


class TinyClassifier(nn.Module):
    def __init__(self, size: int = 12, classes: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * size * size, classes))

    def forward(self, x):
        return self.net(x)


# ------------------------------------------------------------------------------------ quantiser


@pytest.mark.parametrize("levels", [2, 3, 4, 8, 32, 256])
def test_quantiser_matches_numpy_reference(levels):
    rng = np.random.default_rng(levels)
    x = rng.random((3, 1, 9, 7)).astype(np.float32)
    ties = (np.arange(2 * (levels - 1) + 1, dtype=np.float32) / np.float32(2 * (levels - 1)))  # k/(2(L-1))
    x.flat[:ties.size] = ties[: x.size]
    ref = (np.floor(x.astype(np.float64) * (levels - 1) + 0.5) / (levels - 1)).astype(np.float32)
    out = quantize_depth(torch.from_numpy(x), levels)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), ref)
    assert len(np.unique(out.numpy())) <= levels
    assert out.min() >= 0 and out.max() <= 1
    # float64 against a float64 reference; values are exactly k / (levels - 1)
    x64 = rng.random((2, 1, 5, 5))
    ref64 = np.floor(x64 * (levels - 1) + 0.5) / (levels - 1)
    np.testing.assert_array_equal(quantize_depth(torch.from_numpy(x64), levels).numpy(), ref64)
    # check_image's float slack outside [0, 1] stays in range
    edge = quantize_depth(torch.tensor([-1e-6, 1 + 1e-6]), levels)
    assert edge.tolist() == [0.0, 1.0]


def test_straight_through_quantiser():
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    y = quantize_depth_ste(x, 4)
    assert torch.equal(y, quantize_depth(x.detach(), 4))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


# ------------------------------------------------------------------------------------ defense


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (1, 1, 5, 9), (3, 1, 1, 1)])
def test_shape_dtype_range_preserved(shape, dtype):
    torch.manual_seed(0)
    net = EDSR(channels=1, features=8, blocks=2)
    nn.init.normal_(net.tail.weight, std=0.5)  # non-trivial output that leaves [0, 1]
    defense = PixelDepthReconstruction(levels=4, network=net)
    x = torch.rand(shape, dtype=dtype)
    y = defense(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert isinstance(defense, Defense) and not defense.differentiable and not defense.randomized


def test_untrained_default_is_bit_depth_reduction_and_rgb_works():
    x = torch.rand(2, 1, 10, 10)
    assert torch.equal(PixelDepthReconstruction(levels=4)(x), quantize_depth(x, 4))
    assert torch.equal(PixelDepthReconstruction(levels=2, network=nn.Identity())(x), (x >= 0.5).float())
    rgb = torch.rand(2, 3, 8, 8)
    assert PixelDepthReconstruction(levels=8, channels=3)(rgb).shape == rgb.shape


def test_gradients_flow_through_the_surrogate_only():
    torch.manual_seed(0)
    net = EDSR(channels=1, features=8, blocks=1)
    nn.init.normal_(net.tail.weight, std=0.1)
    defense = PixelDepthReconstruction(levels=4, network=net)
    clf = TinyClassifier(size=10)
    x = torch.rand(4, 1, 10, 10) * 0.8 + 0.1
    y = torch.tensor([0, 1, 0, 1])

    # autograd through the real forward pass: the quantiser kills the gradient
    xd = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(clf(defense(xd)), y).backward()
    assert xd.grad is None or xd.grad.abs().max() == 0

    surrogate = defense.surrogate()
    assert torch.equal(surrogate(x), defense(x))  # same forward value
    assert surrogate.network is defense.network  # shared, so .to() and loaded weights reach it
    xs = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(clf(surrogate(xs)), y).backward()
    assert xs.grad.abs().max() > 0

    with pytest.warns(UserWarning, match="not differentiable"):
        DefendedModel(clf, defense)
    xb = x.clone().requires_grad_(True)
    model = DefendedModel(clf, BPDA(defense))
    nn.functional.cross_entropy(model(xb), y).backward()
    torch.testing.assert_close(xb.grad, xs.grad)


def test_bad_parameters_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"levels must be an integer in \[2, 65536\].*got 1"):
        PixelDepthReconstruction(levels=1)
    with pytest.raises(TypeError, match=r"levels must be an integer in \[2, 65536\], got float"):
        PixelDepthReconstruction(levels=2.5)
    with pytest.raises(TypeError, match="levels must be an integer"):
        PixelDepthReconstruction(levels=True)
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"weights: no such file .*nope\.pt"):
        PixelDepthReconstruction(levels=4, weights=missing)
    with pytest.raises(TypeError, match="network must be an nn.Module"):
        PixelDepthReconstruction(levels=4, network="edsr")
    with pytest.raises(ValueError, match="x must have 1 channel"):
        PixelDepthReconstruction(levels=4)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        PixelDepthReconstruction(levels=4)(torch.rand(1, 1, 8, 8) + 1)
    with pytest.raises(ValueError, match="EDSR: features must be an integer >= 1"):
        EDSR(features=0)
    x = blobs(4)
    with pytest.raises(ValueError, match=r"fgsm_eps must satisfy 0 <= lo <= hi <= 1, got \(0.2, 0.1\)"):
        train_reconstruction(EDSR(features=4, blocks=0), x, 4, fgsm_eps=(0.2, 0.1), progress=False)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        train_reconstruction(EDSR(features=4, blocks=0), x, 4, epochs=-1, progress=False)
    with pytest.raises(ValueError, match=r"images must have values in \[0, 1\]"):
        train_reconstruction(EDSR(features=4, blocks=0), x * 3, 4, progress=False)
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an EDSR"):
        load_weights(bad)
    save_weights(EDSR(features=4, blocks=1), bad)
    with pytest.raises(ValueError, match="does not fit EDSR"):
        load_weights(bad, EDSR(features=8, blocks=1))


def test_registry_round_trip(tmp_path):
    net = EDSR(channels=1, features=6, blocks=2)
    nn.init.normal_(net.tail.weight, std=0.1)
    path = save_weights(net, tmp_path / "w.pt")
    d = build("pixel_depth_reconstruction:levels=8")
    assert isinstance(d, PixelDepthReconstruction) and d.levels == 8
    d = build("pixel_depth_reconstruction:levels=4", weights=str(path))
    x = torch.rand(2, 1, 7, 7)
    assert torch.equal(d(x), net(quantize_depth(x, 4)).clamp(0, 1))
    with pytest.raises(ValueError, match="levels must be an integer in"):
        build("pixel_depth_reconstruction:levels=1")


# ------------------------------------------------------------------------------------ weights


def test_weights_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(1)
    net = EDSR(channels=1, features=6, blocks=3, res_scale=0.25)
    nn.init.normal_(net.tail.weight, std=0.1)
    path = save_weights(net, tmp_path / "w.pt")
    state = torch.load(path, weights_only=True)
    assert set(state) == set(net.state_dict())
    rebuilt = load_weights(path)  # sizes read from the file
    assert isinstance(rebuilt, EDSR) and (rebuilt.features, rebuilt.n_blocks) == (6, 3)
    assert float(rebuilt.res_scale) == 0.25 and rebuilt.body[0].res_scale == 0.25
    x = torch.rand(2, 1, 9, 9)
    assert torch.equal(rebuilt(x), net(x))
    into = load_weights(path, EDSR(channels=1, features=6, blocks=3))
    assert torch.equal(into(x), net(x))
    d = PixelDepthReconstruction(levels=4, weights=path)
    assert torch.equal(d(x), net(quantize_depth(x, 4)).clamp(0, 1))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporaries


# ------------------------------------------------------------------------------------ training


def test_training_lowers_reconstruction_error():
    torch.manual_seed(0)
    x = blobs(48, seed=0)
    held_out = blobs(32, seed=1)
    net = EDSR(channels=1, features=8, blocks=1)
    before = nn.functional.mse_loss(net(quantize_depth(held_out, 4)), held_out).item()
    history = train_reconstruction(net, x, levels=4, epochs=5, batch_size=16, lr=3e-3,
                                   generator=torch.Generator().manual_seed(0), progress=False)
    with torch.no_grad():
        after = nn.functional.mse_loss(net(quantize_depth(held_out, 4)), held_out).item()
    assert len(history) == 5 and history[-1] < history[0]
    assert after < 0.8 * before, (before, after)


def test_training_with_fgsm_against_a_classifier():
    x = blobs(32)
    torch.manual_seed(0)
    clf = TinyClassifier().train()
    clf_state = {k: v.clone() for k, v in clf.state_dict().items()}

    def run(classifier):
        torch.manual_seed(1)
        net = EDSR(channels=1, features=4, blocks=1)
        return train_reconstruction(net, x, levels=4, classifier=classifier, fgsm_eps=0.1, adversarial_fraction=1.0,
                                    epochs=2, batch_size=16, generator=torch.Generator().manual_seed(0),
                                    progress=False)

    history = run(clf)
    assert len(history) == 2 and all(np.isfinite(history))
    assert clf.training  # mode restored after crafting in eval mode
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in clf_state.items())  # classifier untouched
    assert all(p.grad is None for p in clf.parameters())
    # the FGSM inputs change what the network sees: same seeds, clean-only training differs
    assert run(None) != history


def test_resume_from_checkpoint_continues_at_the_right_epoch(tmp_path):
    x = blobs(24)

    def fresh():
        torch.manual_seed(3)
        return EDSR(channels=1, features=4, blocks=1)

    straight = fresh()
    full = train_reconstruction(straight, x, 4, epochs=3, batch_size=8, generator=torch.Generator().manual_seed(5),
                                progress=False)

    ckpt = tmp_path / "run.ckpt"
    first = fresh()
    part = train_reconstruction(first, x, 4, epochs=1, batch_size=8, checkpoint=ckpt,
                                generator=torch.Generator().manual_seed(5), progress=False)
    assert len(part) == 1 and torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = fresh()  # a new process: fresh network, fresh generator, same checkpoint
    rest = train_reconstruction(resumed, x, 4, epochs=3, batch_size=8, checkpoint=ckpt,
                                generator=torch.Generator().manual_seed(5), progress=False)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    assert rest == pytest.approx(full, rel=1e-6)
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-7)
    # a finished run does nothing more
    again = fresh()
    assert train_reconstruction(again, x, 4, epochs=3, checkpoint=ckpt, progress=False) == rest
    torch.testing.assert_close(again.state_dict()["tail.weight"], resumed.state_dict()["tail.weight"])
    with pytest.raises(ValueError, match="trained with levels=4, this run asks for levels=8"):
        train_reconstruction(fresh(), x, 8, epochs=4, checkpoint=ckpt, progress=False)


# ------------------------------------------------------------------------------------ data + CLI


def write_idx(path, array: np.ndarray) -> None:
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_fashion_mnist(folder, n_train: int = 96, n_test: int = 40, gz: bool = True) -> np.ndarray:
    """Write small idx files that look like Fashion-MNIST; returns the train images (uint8)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    out = None
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        images[:, 4:24, 4 + labels[0] % 3:24] += (labels[:, None, None] * 19).astype(np.uint8)  # class-dependent
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        out = images if prefix == "train" else out
    return out


def test_fashion_mnist_loader_both_layouts(tmp_path):
    flat = tmp_path / "debian"
    images = fake_fashion_mnist(flat, gz=True)
    x, y = load_fashion_mnist(flat, "train")
    assert x.shape == (96, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images))
    assert torch.equal(y, torch.arange(96) % 10)
    xt, yt = load_fashion_mnist(flat, "test", limit=7)
    assert xt.shape == (7, 1, 28, 28) and yt.shape == (7,)

    tv = tmp_path / "tv"
    fake_fashion_mnist(tv / "FashionMNIST" / "raw", gz=False)  # torchvision's extracted raw files
    x2, y2 = load_fashion_mnist(tv, "train")
    assert torch.equal(x2, x) and torch.equal(y2, y)

    with pytest.raises(FileNotFoundError, match=r"not found in .*empty.*apt install dataset-fashion-mnist"):
        (tmp_path / "empty").mkdir()
        load_fashion_mnist(tmp_path / "empty")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist(flat, "val")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 7)
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(bad / "train-images-idx3-ubyte")


def test_cli_trains_and_saves_loadable_weights(tmp_path, capsys):
    from diffjpeg.eval.train_reconstruction import main

    data = tmp_path / "fmnist"
    fake_fashion_mnist(data, n_train=64, n_test=20)
    out = tmp_path / "w.pt"
    argv = ["--data", str(data), "--out", str(out), "--levels", "4", "--epochs", "1", "--features", "4",
            "--blocks", "1", "--classifier-epochs", "1", "--batch-size", "32", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "saved" in text
    assert (tmp_path / "w.pt.classifier.pt").is_file() and (tmp_path / "w.pt.ckpt").is_file()
    defense = PixelDepthReconstruction(levels=4, weights=out)
    assert defense(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    assert main(argv) == 0  # second run: classifier reused, training resumed (already finished)
    assert "classifier: loaded" in capsys.readouterr().out
    assert main(["--data", str(tmp_path / "none"), "--out", str(out), "--quiet"]) == 2
    assert "apt install dataset-fashion-mnist" in capsys.readouterr().err
    assert main(argv + ["--classifier-weights", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    net = EDSR(channels=1, features=8, blocks=2)
    nn.init.normal_(net.tail.weight, std=0.1)
    defense = PixelDepthReconstruction(levels=4, network=net)
    x = torch.rand(3, 1, 28, 28)
    expected = defense(x)
    defense.cuda()
    out = defense(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="x is on cpu but the reconstruction network is on cuda"):
        defense(x)
    xg = x.cuda().requires_grad_(True)
    defense.surrogate()(xg).sum().backward()
    assert xg.grad.abs().max() > 0
