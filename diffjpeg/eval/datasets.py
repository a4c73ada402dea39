"""Datasets for the benchmarks, read from files on disk (nothing downloads unless asked).

Fashion-MNIST (Xiao et al., 2017) is read from its idx files, gzipped or not, in either layout:

* a flat folder with ``train-images-idx3-ubyte.gz`` etc., as Debian's ``dataset-fashion-mnist``
  package installs it in ``/usr/share/datasets/fashion-mnist`` (the default);
* torchvision's layout, ``ROOT/FashionMNIST/raw/train-images-idx3-ubyte[.gz]``, as
  ``torchvision.datasets.FashionMNIST(ROOT, download=True)`` writes it (``download=True`` here does
  exactly that, with internet access).
"""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "load_fashion_mnist", "read_idx"]

#: where Debian's ``dataset-fashion-mnist`` package puts the files
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}
#: idx type codes -> numpy dtype (big-endian on disk)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (LeCun's MNIST format; gzipped when the name ends in ``.gz``) as a numpy array.

    Raises ``ValueError`` when the header is not an idx header or the data is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] < 1:
        raise ValueError(f"{str(path)!r} is not an idx file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{str(path)!r}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    count = int(np.prod(shape)) if shape else 0
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(f"{str(path)!r}: header says shape {shape} ({count * dtype.itemsize} bytes) but the "
                         f"file holds {len(data) - header} bytes of data")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, name: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR, split: str = "train", limit: int | None = None,
                       download: bool = False) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST images and labels from idx files under ``root``.

    Args:
        root: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, directly or in
            torchvision's ``FashionMNIST/raw`` subfolder.
        split: "train" (60 000 images) or "test" (10 000).
        limit: keep only the first ``limit`` images (``None``: all).
        download: when the files are missing, fetch them with torchvision into ``root`` (needs
            internet access; never used by the tests or benchmarks).

    Returns:
        ``images`` float32 ``(N, 1, 28, 28)`` with values ``k / 255`` in [0, 1], and ``labels``
        int64 ``(N,)`` in [0, 9] (names in :data:`FASHION_MNIST_CLASSES`).
    """
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path (str or os.PathLike), got {type(root).__name__}")
    root = Path(root)
    prefix = _PREFIX[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find(root, name) for name in names]
    if None in paths and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=split == "train", download=True)
        paths = [_find(root, name) for name in names]
    if None in paths:
        missing = [name for name, p in zip(names, paths) if p is None]
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files {missing} (.gz or not) not found in {str(root)!r} or its FashionMNIST/raw "
            f"subfolder; install them with `apt install dataset-fashion-mnist` (to {FASHION_MNIST_DIR}), or "
            f"download them with torchvision.datasets.FashionMNIST({str(root)!r}, download=True) or "
            f"load_fashion_mnist(..., download=True)")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"unexpected Fashion-MNIST files: images {images.dtype} {images.shape} from {paths[0]}, "
                         f"labels {labels.dtype} {labels.shape} from {paths[1]}; expected uint8 (N, 28, 28) "
                         f"and (N,)")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise ValueError(f"Fashion-MNIST labels must be in [0, 9], got [{int(y.min())}, {int(y.max())}] "
                         f"in {paths[1]}")
    return x, y


def gratings(n: int, seed: int, size: int = 16, classes: int = 4, amplitude: float = 0.22) -> tuple[Tensor, Tensor]:
    """A synthetic, instantly learnable classification task for tests and benchmarks.

    Oriented sinusoidal gratings (class = orientation, ``classes`` angles in [0, pi)) with random
    phase, colour tint, brightness and Gaussian noise, deterministic for a given ``seed``.

    Returns:
        images ``(n, 3, size, size)`` float32 in [0, 1] and labels ``(n,)`` int64 in [0, classes).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    angle = y.double() * math.pi / classes
    phase = torch.rand(n, generator=g, dtype=torch.double) * 2 * math.pi
    r = torch.arange(size, dtype=torch.double)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    proj = xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]
    wave = torch.sin(2 * math.pi * proj / 8 + phase[:, None, None])  # (n, H, W)
    tint = 0.5 + 0.5 * torch.rand(n, 3, 1, 1, generator=g, dtype=torch.double)
    base = 0.3 + 0.4 * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.double)
    x = base + amplitude * tint * wave[:, None] + 0.04 * torch.randn(n, 3, size, size, generator=g, dtype=torch.double)
    return x.clamp(0, 1).float(), y
