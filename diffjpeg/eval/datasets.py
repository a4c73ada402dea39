"""Datasets for the benchmarks, read from files on disk (nothing downloads unless asked).

:func:`load_dataset` loads any supported source by a spec string into a :class:`Dataset`
(``foolbox:imagenet``, ``imagefolder:PATH``, ``cifar10:PATH``, ``fashion_mnist[:PATH]``, ``skimage``).

Fashion-MNIST (Xiao et al., 2017) is read from its idx files, gzipped or not, in either layout:

* a flat folder with ``train-images-idx3-ubyte.gz`` etc., as Debian's ``dataset-fashion-mnist``
  package installs it in ``/usr/share/datasets/fashion-mnist`` (the default);
* torchvision's layout, ``ROOT/FashionMNIST/raw/train-images-idx3-ubyte[.gz]``, as
  ``torchvision.datasets.FashionMNIST(ROOT, download=True)`` writes it (``download=True`` here does
  exactly that, with internet access).
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..jpeg.limits import DecompressionBombError, check_pixels

__all__ = ["DATASET_KINDS", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FOOLBOX_SUBSETS", "SKIMAGE_PHOTOS",
           "Dataset", "load_cifar10", "load_dataset", "load_fashion_mnist", "read_idx"]

#: where Debian's ``dataset-fashion-mnist`` package puts the files
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}
#: idx type codes -> numpy dtype (big-endian on disk)
#: the most bytes :func:`read_idx` reads (a forged header or a gzip bomb is refused above it)
MAX_IDX_BYTES = 1 << 31
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike, max_bytes: int | None = None) -> np.ndarray:
    """An idx file (LeCun's MNIST format; gzipped when the name ends in ``.gz``) as a numpy array.

    The header is read first and at most the data it declares (plus one byte, to detect extra data):
    a forged header or a gzip bomb cannot make it allocate more than ``max_bytes``
    (default :data:`MAX_IDX_BYTES`, 2 GiB; Fashion-MNIST's training images are 47 MB).

    Raises ``ValueError`` when the header is not an idx header, declares more than ``max_bytes``,
    or the data is truncated or longer than declared.
    """
    path = Path(path)
    limit = MAX_IDX_BYTES if max_bytes is None else max_bytes
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or head[3] < 1:
                raise ValueError(f"{str(path)!r} is not an idx file (bad magic number {head.hex()})")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{str(path)!r}: truncated idx header")
            shape = tuple(int.from_bytes(dims[4 * i:4 + 4 * i], "big") for i in range(ndim))
            dtype = np.dtype(_IDX_TYPES[head[2]])
            size = math.prod(shape) * dtype.itemsize
            if size > limit:
                raise ValueError(f"{str(path)!r}: header says shape {shape} ({size} bytes), more than the limit of "
                                 f"{limit} bytes (pass max_bytes= to read it)")
            data = f.read(size + 1)
    except (OSError, EOFError) as exc:  # gzip: not a gzip file, truncated stream, bad CRC
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"{str(path)!r} cannot be read: {exc}") from None
    if len(data) != size:
        raise ValueError(f"{str(path)!r}: header says shape {shape} ({size} bytes) but the file holds "
                         f"{len(data) if len(data) <= size else 'more than that'} bytes of data")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


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


# ------------------------------------------------------------------------------------ CIFAR-10

_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (CIFAR's batch files): nothing else is imported."""

    def find_class(self, module: str, name: str):
        if (module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype", "scalar")) or \
                (module, name) == ("_codecs", "encode"):  # protocol-2 bytes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch file")


def load_cifar10(root: str | os.PathLike, split: str = "test", limit: int | None = None,
                 download: bool = False) -> tuple[Tensor, Tensor]:
    """CIFAR-10 images and labels from torchvision's files (``ROOT/cifar-10-batches-py/*_batch*``).

    Args:
        root: the folder holding ``cifar-10-batches-py`` (as ``torchvision.datasets.CIFAR10(root)``
            takes it), or that folder itself.
        split: "train" (50 000 images) or "test" (10 000).
        limit: keep only the first ``limit`` images (``None``: all).
        download: when the files are missing, fetch them with torchvision into ``root`` (internet).

    Returns:
        ``images`` float32 ``(N, 3, 32, 32)`` with values ``k / 255``, ``labels`` int64 ``(N,)`` in [0, 9].
    """
    if split not in _CIFAR_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    root = Path(root)
    folder = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    paths = [folder / name for name in _CIFAR_FILES[split]]
    if not all(p.is_file() for p in paths) and download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=split == "train", download=True)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 {split} files {missing} not found in {str(folder)!r}; download them with "
                                f"torchvision.datasets.CIFAR10({str(root)!r}, download=True) or download=True")
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                entry = _ArrayUnpickler(f, encoding="latin1").load()
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry["labels"], dtype=np.int64))
        except pickle.UnpicklingError as exc:
            raise pickle.UnpicklingError(f"CIFAR-10 batch file {str(path)!r}: {exc}") from None
        except (EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"CIFAR-10 batch file {str(path)!r} is corrupt or truncated "
                             f"({type(exc).__name__}: {exc})") from None
        if limit is not None and sum(map(len, labels)) >= limit:
            break
    x = torch.from_numpy(np.concatenate(images)[:limit]).float().div_(255.0)
    return x, torch.from_numpy(np.concatenate(labels)[:limit])


# ------------------------------------------------------------------------------------ any dataset by spec

#: the dataset specs :func:`load_dataset` understands
DATASET_KINDS = ("foolbox:<subset>", "imagefolder:PATH", "cifar10:PATH", "fashion_mnist[:PATH]", "skimage")
#: foolbox subset -> (file-name prefix in ``foolbox/data``, number of classes)
FOOLBOX_SUBSETS = {"imagenet": ("imagenet", 1000), "cifar10": ("cifar10", 10), "cifar100": ("cifar100", 100),
                   "mnist": ("mnist", 10), "fashion_mnist": ("fashionMNIST", 10)}
#: scikit-image's colour photos, in this order (unlabelled; native sizes differ)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "rocket")
#: file extensions ImageFolder reads (torchvision's IMG_EXTENSIONS)
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Dataset:
    """A set of images in the library's convention, with labels when it has them.

    Attributes:
        images: float32 ``(N, C, H, W)`` in [0, 1], ``C`` = 1 (grayscale) or 3 (RGB).
        labels: int64 ``(N,)`` in [0, classes), or ``None`` (unlabelled).
        ids: ``N`` stable per-example ids (file names, or ``"test-00042"`` for indexed sets).
        classes: number of classes, or ``None`` (unlabelled).
        name: the spec the set was loaded from.
    """

    images: Tensor
    labels: Tensor | None
    ids: list[str]
    classes: int | None
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]


def _open(path: Path):
    """One image file as an "L" or "RGB" PIL image; a ``ValueError`` naming the file when it cannot be read.

    Pillow refuses images above twice ``PIL.Image.MAX_IMAGE_PIXELS`` when it opens them; between one
    and two times the limit it only warns, and here they are refused too (:mod:`diffjpeg.jpeg.limits`).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_pixels(*im.size, str(path))
            return im.convert("L" if im.mode in ("1", "L", "LA") else "RGB")
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(f"{path}: {exc}") from None
    except UnidentifiedImageError:
        raise ValueError(f"image file {str(path)!r} is not an image Pillow can read (corrupt, or not an image)"
                         ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, (DecompressionBombError, FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"image file {str(path)!r} is corrupt or truncated: {exc}") from None


def _resize_crop(im, size: int):
    """Shorter side to ``size`` (bicubic, antialiased), then the central ``size x size`` (as torchvision's
    ``Resize(size)`` + ``CenterCrop(size)`` on PIL images)."""
    from PIL import Image

    w, h = im.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    if new != (w, h):
        im = im.resize(new, Image.BICUBIC)
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    return im.crop((left, top, left + size, top + size))


def _stack(pictures, image_size: int | None, spec: str) -> Tensor:
    """PIL images, or a float ``(N, C, H, W)`` tensor of values ``k / 255``, as one ``(N, C, S, S)`` tensor."""
    if isinstance(pictures, Tensor):
        if image_size is None:
            return pictures
        from PIL import Image

        data = pictures.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pictures = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in data]
    gray = all(p.mode == "L" for p in pictures)
    arrays = []
    for p in pictures:
        p = p if gray else p.convert("RGB")
        arrays.append(np.asarray(p if image_size is None else _resize_crop(p, image_size)))
    sizes = list(dict.fromkeys(a.shape[1::-1] for a in arrays))  # (W, H), first seen first
    if len(sizes) > 1:
        raise ValueError(f"the images of {spec!r} have different sizes ({' and '.join('%dx%d' % s for s in sizes[:2])}"
                         f"{', ...' if len(sizes) > 2 else ''}); pass image_size=S to resize and centre-crop them to S x S")
    x = torch.from_numpy(np.stack(arrays)).float().div_(255.0)
    return x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2).contiguous()


def _foolbox(arg: str, spec: str, n: int | None, split: str, download: bool):
    if arg not in FOOLBOX_SUBSETS:
        raise ValueError(f"unknown foolbox subset {arg!r} in dataset spec {spec!r}; valid: "
                         f"{', '.join('foolbox:' + k for k in FOOLBOX_SUBSETS)}")
    found = importlib.util.find_spec("foolbox")  # not imported: foolbox is slow to import
    if found is None:
        raise FileNotFoundError(f"dataset spec {spec!r} needs the foolbox package's sample images: "
                                f"pip install foolbox==3.3.4")
    folder = Path(found.submodule_search_locations[0]) / "data"
    prefix, classes = FOOLBOX_SUBSETS[arg]
    pattern = re.compile(rf"{prefix}_\d+_(\d+)\.(png|jpg)")
    files = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))[:n] if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no {prefix}_*.png/jpg sample images in {str(folder)!r} (dataset spec {spec!r})")
    labels = [int(pattern.fullmatch(p.name).group(1)) for p in files]
    return [_open(p) for p in files], labels, [p.name for p in files], classes


def _imagefolder(arg: str, spec: str, n: int | None, split: str, download: bool):
    root = Path(arg)
    if not arg or not root.is_dir():
        raise FileNotFoundError(f"no such folder {arg!r} (dataset spec {spec!r}, expected imagefolder:PATH with "
                                f"one subfolder of images per class)")
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(p, c) for c, name in enumerate(names) for p in sorted((root / name).rglob("*"))
             if p.suffix.lower() in _IMAGE_EXTENSIONS and p.is_file()][:n]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(_IMAGE_EXTENSIONS)}) in class subfolders of {arg!r} "
                                f"(dataset spec {spec!r})")
    return ([_open(p) for p, _ in files], [c for _, c in files], [p.relative_to(root).as_posix() for p, _ in files],
            len(names))


def _indexed(loader, default: str | None):
    def load(arg: str, spec: str, n: int | None, split: str, download: bool):
        root = arg or default
        if not root:
            raise ValueError(f"dataset spec {spec!r} needs a folder: {spec.split(':')[0]}:PATH")
        try:
            x, y = loader(root, split, limit=n, download=download)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"dataset spec {spec!r}: {exc}") from None
        return x, y.tolist(), [f"{split}-{i:05d}" for i in range(len(y))], 10
    return load


def _skimage(arg: str, spec: str, n: int | None, split: str, download: bool):
    if arg:
        raise ValueError(f"dataset spec {spec!r}: skimage takes no argument (its photos are {', '.join(SKIMAGE_PHOTOS)})")
    import skimage.data
    from PIL import Image

    names = SKIMAGE_PHOTOS[:n]
    return [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in names], None, list(names), None


_LOADERS = {"foolbox": _foolbox, "imagefolder": _imagefolder, "cifar10": _indexed(load_cifar10, None),
            "fashion_mnist": _indexed(load_fashion_mnist, FASHION_MNIST_DIR), "skimage": _skimage}


def load_dataset(spec: str, n: int | None = None, image_size: int | None = None, download: bool = False,
                 split: str = "test") -> Dataset:
    """Images (and labels) from a source named by ``spec``; nothing downloads unless ``download=True``.

    Args:
        spec: one of

            * ``foolbox:imagenet|cifar10|cifar100|mnist|fashion_mnist``: the 20 labelled samples that
              foolbox's wheel ships for each (ImageNet RGB of mixed sizes, so pass ``image_size``;
              CIFAR 32x32 RGB; MNIST and Fashion-MNIST 28x28 grayscale), sorted by file name;
            * ``imagefolder:PATH``: torchvision's ImageFolder layout (``PATH/CLASS/*.png|jpg|...``;
              label = index of the class folder in sorted order);
            * ``cifar10:PATH``: torchvision's CIFAR-10 files (see :func:`load_cifar10`);
            * ``fashion_mnist`` (Debian's folder) or ``fashion_mnist:PATH`` (see :func:`load_fashion_mnist`);
            * ``skimage``: scikit-image's colour photos :data:`SKIMAGE_PHOTOS` (unlabelled).
        n: keep the first ``n`` examples (``None``: all).
        image_size: ``S`` resizes the shorter side to ``S`` (PIL bicubic, antialiased) and crops the
            central ``S x S``; ``None`` keeps the native size (then all images must share it).
        download: let torchvision fetch ``cifar10`` / ``fashion_mnist`` files that are missing (internet).
        split: "test" (default) or "train"; "train" exists for ``cifar10`` and ``fashion_mnist`` only.

    Returns:
        a :class:`Dataset`: images float32 ``(N, C, H, W)`` in [0, 1] (grayscale sources keep
        ``C = 1``; others are RGB), labels int64 ``(N,)`` or ``None``.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str such as 'foolbox:imagenet', got {type(spec).__name__}")
    for name, value in (("n", n), ("image_size", image_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    kind, _, arg = spec.partition(":")
    if kind not in _LOADERS:
        raise ValueError(f"unknown dataset kind {kind!r} in spec {spec!r}; valid kinds: {', '.join(DATASET_KINDS)}")
    if split == "train" and kind not in ("cifar10", "fashion_mnist"):
        raise ValueError(f"split='train' exists for the cifar10 and fashion_mnist datasets only, not {spec!r}")
    pictures, labels, ids, classes = _LOADERS[kind](arg, spec, n, split, download)
    images = _stack(pictures, image_size, spec)
    labels = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return Dataset(images=images, labels=labels, ids=ids, classes=classes, name=spec)
