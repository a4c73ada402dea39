"""Datasets by spec (load_dataset), models by name (load_model), and `diffjpeg train` -- all offline."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from diffjpeg.eval.datasets import load_dataset, load_fashion_mnist
from diffjpeg.eval.train import main as train_main
from diffjpeg.eval.train import train_small_cnn
from diffjpeg.eval.train_reconstruction import FMNISTNet
from diffjpeg.eval.zoo import LoadedModel, SmallCNN, load_model, save_small_cnn


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train far faster on one OpenMP thread when the 2 cores are busy (see conftest)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_fashion_mnist(root, n_train=48, n_test=16):
    """Tiny idx files in torchvision's layout (ROOT/FashionMNIST/raw/*-ubyte.gz)."""
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * 40 + labels[:, None, None] * 20).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return root


# ------------------------------------------------------------------------------------ datasets

@pytest.mark.parametrize("subset, shape, classes", [("imagenet", (3, 224, 224), 1000), ("cifar10", (3, 32, 32), 10),
                                                    ("cifar100", (3, 32, 32), 100), ("mnist", (1, 28, 28), 10),
                                                    ("fashion_mnist", (1, 28, 28), 10)])
def test_foolbox_samples(subset, shape, classes):
    data = load_dataset(f"foolbox:{subset}", image_size=224 if subset == "imagenet" else None)
    assert data.images.shape == (20, *shape) and data.images.dtype == torch.float32
    assert 0 <= data.images.min() and data.images.max() <= 1 and data.images.max() > 0.5
    assert data.labels.dtype == torch.int64 and data.labels.shape == (20,) and int(data.labels.max()) < classes
    assert data.classes == classes and data.name == f"foolbox:{subset}" and len(data) == 20
    assert data.ids == sorted(data.ids) and all(int(i.rsplit("_", 1)[1].split(".")[0]) == int(y)
                                                for i, y in zip(data.ids, data.labels))
    first = load_dataset(f"foolbox:{subset}", n=3, image_size=16)
    assert first.images.shape == (3, shape[0], 16, 16) and first.ids == data.ids[:3]


def test_imagefolder_resizes_like_torchvision(tmp_path):
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(0)
    sizes = {"cat/a.png": (40, 30), "cat/b.jpg": (30, 30), "dog/c.png": (25, 50)}
    for name, (w, h) in sizes.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_dataset(f"imagefolder:{tmp_path}", image_size=20)
    assert data.images.shape == (3, 3, 20, 20) and data.labels.tolist() == [0, 0, 1] and data.classes == 2
    assert data.ids == ["cat/a.png", "cat/b.jpg", "dog/c.png"]
    with Image.open(tmp_path / "dog/c.png") as im:
        expected = TF.to_tensor(TF.center_crop(TF.resize(im, 20, TF.InterpolationMode.BICUBIC), 20))
    assert torch.equal(data.images[2], expected)
    with pytest.raises(ValueError, match=r"different sizes \(40x30 and 30x30, \.\.\.\); pass image_size=S"):
        load_dataset(f"imagefolder:{tmp_path}")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(tmp_path / "cat" / "b.jpg")  # now grayscale
    assert load_dataset(f"imagefolder:{tmp_path}", n=2, image_size=8).images.shape == (2, 3, 8, 8)  # mixed -> RGB
    gray = tmp_path / "gray" / "x"
    gray.mkdir(parents=True)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(gray / "0.png")
    assert load_dataset(f"imagefolder:{tmp_path / 'gray'}").images.shape == (1, 1, 9, 9)  # grayscale stays 1 channel


def test_skimage_photos():
    data = load_dataset("skimage", n=2, image_size=32)
    assert data.images.shape == (2, 3, 32, 32) and data.labels is None and data.classes is None
    assert data.ids == ["astronaut", "chelsea"]
    with pytest.raises(ValueError, match="pass image_size"):
        load_dataset("skimage")


def test_fashion_mnist_spec(tmp_path):
    root = write_fashion_mnist(tmp_path)
    data = load_dataset(f"fashion_mnist:{root}")
    x, y = load_fashion_mnist(root, "test")
    assert torch.equal(data.images, x) and torch.equal(data.labels, y) and data.classes == 10
    assert data.ids[:2] == ["test-00000", "test-00001"] and len(data) == 16
    train = load_dataset(f"fashion_mnist:{root}", n=5, split="train", image_size=14)
    assert train.images.shape == (5, 1, 14, 14) and train.labels.tolist() == [0, 1, 2, 3, 4]


def write_cifar10(root, n=7, names=("test_batch",)):
    """Tiny batch files in torchvision's CIFAR-10 layout (ROOT/cifar-10-batches-py/NAME); returns the pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 256, (n, 3072), dtype=np.uint8)
    for name in names:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [i % 10 for i in range(n)], "batch_label": name}, f, protocol=2)
    return data


def test_cifar10_spec_reads_batches_safely(tmp_path):
    data = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    got = load_dataset(f"cifar10:{tmp_path}", n=5)
    assert got.images.shape == (5, 3, 32, 32) and got.labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal((got.images * 255).round().to(torch.uint8), torch.from_numpy(data[:5].reshape(5, 3, 32, 32)))
    with pytest.raises(FileNotFoundError, match=r"spec 'cifar10:.*'.*data_batch_1"):
        load_dataset(f"cifar10:{tmp_path}", split="train")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": print}, f)  # anything beyond containers and arrays is refused
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_dataset(f"cifar10:{folder}")


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset kind 'mnist'.*valid kinds: foolbox:<subset>, imagefolder:PATH"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="valid: foolbox:imagenet, foolbox:cifar10, .*foolbox:fashion_mnist"):
        load_dataset("foolbox:svhn")
    with pytest.raises(FileNotFoundError, match=r"no such folder .*nowhere.*imagefolder:"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match=r"dataset spec 'fashion_mnist:.*nowhere'"):
        load_dataset(f"fashion_mnist:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="cifar10:PATH"):
        load_dataset("cifar10")
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must be a positive int or None"):
            load_dataset("foolbox:mnist", n=bad)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_dataset("foolbox:mnist", image_size=0)
    with pytest.raises(ValueError, match="split='train' exists for the cifar10 and fashion_mnist"):
        load_dataset("foolbox:mnist", split="train")


# ------------------------------------------------------------------------------------ models

def test_efficientnet_lite0_classifies_foolbox_imagenet():
    loaded = load_model("efficientnet_lite0")
    assert (loaded.mean, loaded.std, loaded.image_size, loaded.channels, loaded.classes) == \
        ((0.5,) * 3, (0.5,) * 3, 224, 3, 1000)
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    data = load_dataset("foolbox:imagenet", image_size=loaded.image_size)
    with torch.no_grad():
        predictions = loaded.defended()(data.images).argmax(1)
    assert int((predictions == data.labels).sum()) >= 16


def test_small_cnn_keeps_fmnistnet_layout():
    shapes = {k: tuple(v.shape) for k, v in FMNISTNet().state_dict().items()}
    assert shapes == {"features.0.weight": (32, 1, 3, 3), "features.0.bias": (32,), "features.3.weight": (64, 32, 3, 3),
                      "features.3.bias": (64,), "head.1.weight": (128, 3136), "head.1.bias": (128,),
                      "head.3.weight": (10, 128), "head.3.bias": (10,)}
    assert isinstance(FMNISTNet(), SmallCNN) and SmallCNN(3, 32, 10)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="image_size must be an integer >= 4"):
        SmallCNN(image_size=2)


@pytest.mark.parametrize("spec", ["foolbox:cifar10", "foolbox:fashion_mnist"])
def test_small_cnn_round_trip(tmp_path, spec):
    data = load_dataset(spec)
    c = data.images.shape[1]
    out = tmp_path / "net.pt"
    trained = train_small_cnn(data.images, data.labels, data.classes, mean=(0.5,) * c, std=(0.25,) * c, epochs=2,
                              batch_size=8, out=out, dataset=spec)
    assert (out.parent / "net.pt.ckpt").is_file()
    loaded = load_model("small_cnn", checkpoint=out)
    assert isinstance(loaded, LoadedModel) and loaded.dataset == spec and loaded.mean == (0.5,) * c
    assert (loaded.channels, loaded.image_size, loaded.classes) == (c, data.images.shape[-1], 10)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    with torch.no_grad():
        assert torch.equal(loaded.defended()(data.images), trained.defended()(data.images))
    again = train_small_cnn(data.images, data.labels, data.classes, mean=(0.5,) * c, std=(0.25,) * c, epochs=2,
                            batch_size=8)  # same seed, no checkpoint: same weights
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), loaded.model.state_dict().values()))


def test_small_cnn_reads_plain_fmnistnet_state_dicts(tmp_path):
    net = FMNISTNet()
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    loaded = load_model("small_cnn", checkpoint=tmp_path / "plain.pt")
    assert loaded.mean is None and (loaded.channels, loaded.image_size, loaded.classes) == (1, 28, 10)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded.model(x), net(x))


def test_module_factory_spec(tmp_path):
    net = FMNISTNet()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    loaded = load_model("diffjpeg.eval.train_reconstruction:FMNISTNet", checkpoint=tmp_path / "w.pt", mean=0.5, std=0.2)
    assert (loaded.channels, loaded.image_size, loaded.classes, loaded.mean, loaded.std) == (1, 28, 10, (0.5,), (0.2,))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded.model(x), net(x))
    assert load_model("torch.nn:Identity", image_size=5, channels=3).classes == 5  # classes from one forward pass
    with pytest.raises(ValueError, match="pass image_size=S"):
        load_model("torch.nn:Identity")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        load_model("no_such_module:make")
    with pytest.raises(ValueError, match="has no callable 'Nope'"):
        load_model("torch.nn:Nope")


def test_torchvision_spec_needs_cache_download_or_checkpoint(tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(FileNotFoundError, match=r"'torchvision:resnet18'.*not in the torch hub cache.*download=True.*checkpoint"):
        load_model("torchvision:resnet18")
    net = tvm.get_model("mobilenet_v3_small", num_classes=7)
    torch.save(net.state_dict(), tmp_path / "mnv3.pt")
    loaded = load_model("torchvision:mobilenet_v3_small", checkpoint=tmp_path / "mnv3.pt", classes=7)
    assert (loaded.mean, loaded.std, loaded.image_size, loaded.classes) == \
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, 7)
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnet7'.*list_models"):
        load_model("torchvision:resnet7")


class _NotATensor:
    pass


def test_model_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'; valid: efficientnet_lite0, small_cnn, "
                                         r"torchvision:<name>, <module>:<factory>"):
        load_model("resnet18")
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*missing.pt' for model 'small_cnn': no such file"):
        load_model("small_cnn", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="needs checkpoint=PATH: train one with `diffjpeg train"):
        load_model("small_cnn")
    save_small_cnn(SmallCNN(3, 32, 10), tmp_path / "cifar.pt")
    with pytest.raises(ValueError, match="does not fit model 'efficientnet_lite0'"):
        load_model("efficientnet_lite0", checkpoint=tmp_path / "cifar.pt")
    torch.save({"state_dict": {}, "extra": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):  # weights_only=True refuses arbitrary objects
        load_model("small_cnn", checkpoint=tmp_path / "evil.pt")


# ------------------------------------------------------------------------------------ diffjpeg train

def test_train_cli_trains_resumes_and_saves_a_loadable_model(tmp_path, capsys):
    root = write_fashion_mnist(tmp_path / "fmnist")
    out = tmp_path / "fm.pt"
    argv = ["--recipe", "fashion_mnist", "--data", str(root), "--out", str(out), "--batch-size", "16", "--quiet"]
    assert train_main(argv + ["--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "(16 test images)" in text and "resuming" not in text
    assert torch.load(tmp_path / "fm.pt.ckpt", weights_only=True)["epoch"] == 1
    assert train_main(argv + ["--epochs", "2"]) == 0  # one more epoch, from the checkpoint
    assert "resuming from" in capsys.readouterr().out
    assert torch.load(tmp_path / "fm.pt.ckpt", weights_only=True)["epoch"] == 2
    loaded = load_model("small_cnn", checkpoint=out)
    assert loaded.dataset == "fashion_mnist" and loaded.mean == (0.2860,) and loaded.image_size == 28

    assert train_main(["--recipe", "cifar10", "--out", str(out)]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert train_main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert train_main(["--data", str(root), "--limit", "0", "--out", str(out)]) == 2
    assert "n must be a positive int" in capsys.readouterr().err

    write_cifar10(tmp_path / "cifar", n=6, names=[f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    argv = ["--recipe", "cifar10", "--data", str(tmp_path / "cifar"), "--out", str(tmp_path / "c.pt"), "--epochs", "1",
            "--batch-size", "10", "--quiet"]  # with random crops and flips
    assert train_main(argv) == 0
    assert "cifar10: trained 1 epoch(s) on 30 images" in capsys.readouterr().out
    loaded = load_model("small_cnn", checkpoint=tmp_path / "c.pt")
    assert (loaded.dataset, loaded.channels, loaded.image_size, len(loaded.mean)) == ("cifar10", 3, 32, 3)
