"""Pixel-depth compression followed by a learned reconstruction network (Zhang et al.).

The defense of Zhang, Xu, Pei and Yang ("Adversarial example defense based on image
reconstruction") has two stages:

1. **pixel-depth compression**: every value is snapped to the nearest of ``levels`` evenly spaced
   values in [0, 1] (``levels = 4`` on Fashion-MNIST, 2 on MNIST in the paper), which wipes out
   small perturbations together with some image detail;
2. **reconstruction**: an EDSR-style residual network (Lim et al., 2017; no batch norm, scaled
   residual blocks, a long skip) trained with the mean squared error to map compressed clean and
   compressed FGSM images back to the clean originals.

This module has the pieces as functions and thin modules:

* :func:`quantize_depth` / :func:`quantize_depth_ste` -- the compression, exact or with a
  straight-through (identity) gradient;
* :class:`EDSR` -- the reconstruction network (same size in and out, no upsampling);
* :class:`PixelDepthReconstruction` -- the defense (a :class:`~diffjpeg.contract.Defense`);
* :func:`save_weights` / :func:`load_weights` -- state dicts, read with ``torch.load(..., weights_only=True)``.

The network's training (clean and FGSM inputs, per-epoch checkpoints, resume) is
:func:`diffjpeg.learn.reconstruction.train_reconstruction`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contract import Defense
from ..jpeg.rounding import straight_through
from ..jpeg.validate import check_image
from ..arguments import check_int, check_real
from .bit_depth import reduce_depth
from .registry import register
from ..files import atomic_torch_save, load_checkpoint

__all__ = ["EDSR", "PixelDepthReconstruction", "load_weights", "quantize_depth", "quantize_depth_ste",
           "save_weights"]


# ------------------------------------------------------------------------------------ quantiser


def _check_levels(levels: object) -> int:
    return check_int(levels, "levels", 2, 65536)


def quantize_depth(x: Tensor, levels: int) -> Tensor:
    """Snap every value to the nearest of ``levels`` evenly spaced values: ``BitDepth(levels=...)``.

    ``y = floor(x (levels - 1) + 1/2) / (levels - 1)`` (ties go up), computed in float64, returned in
    ``x``'s dtype. Its gradient is zero (use :func:`quantize_depth_ste` for a useful one).

    Args:
        x: images ``(B, C, H, W)``, float, values in [0, 1].
        levels: number of output values, >= 2 (``2 ** bits`` for a bit depth).
    """
    return reduce_depth(x, None, levels)


def quantize_depth_ste(x: Tensor, levels: int) -> Tensor:
    """:func:`quantize_depth` in the forward pass, identity gradient (straight-through) backward."""
    return straight_through(x, quantize_depth(x, levels))


def _clamp_ste(x: Tensor) -> Tensor:
    """Clamp to [0, 1] in the forward pass with an identity gradient."""
    return straight_through(x, x.clamp(0, 1))


# ------------------------------------------------------------------------------------ network


class _ResidualBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, scaled by ``res_scale`` and added to the input (no batch norm)."""

    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class EDSR(nn.Module):
    """EDSR-style reconstruction network without upsampling (Lim et al., 2017).

    ``head`` (3x3 conv, ``channels -> features``), ``blocks`` residual blocks (conv-ReLU-conv, no
    batch norm, output scaled by ``res_scale``), a 3x3 conv and a long skip from the head's output,
    ``tail`` (3x3 conv, ``features -> channels``) and a global skip: the network predicts a
    correction that is added to its input. The tail starts at zero, so an untrained network is
    the identity and training starts from the compressed image.

    ``res_scale`` is stored as a buffer, so a state dict describes the whole network and
    :meth:`from_state_dict` rebuilds it without being told the sizes.

    Args:
        channels: image channels (1 grayscale, 3 RGB).
        features: width of the hidden layers.
        blocks: number of residual blocks (>= 0).
        res_scale: factor applied to each block's residual (EDSR uses 0.1 for wide networks).

    Shape:
        input ``(B, channels, H, W)``; output ``(B, channels, H, W)`` (not clamped).
    """

    def __init__(self, channels: int = 1, features: int = 32, blocks: int = 4, res_scale: float = 0.1):
        super().__init__()
        for name, value, low in (("channels", channels, 1), ("features", features, 1), ("blocks", blocks, 0)):
            check_int(value, f"EDSR: {name}", low)
        check_real(res_scale, "EDSR: res_scale", 0.0, lo_open=True)
        self.channels, self.features, self.n_blocks = int(channels), int(features), int(blocks)
        self.register_buffer("res_scale", torch.tensor(float(res_scale)))
        self.head = nn.Conv2d(self.channels, self.features, 3, padding=1)
        self.body = nn.ModuleList(_ResidualBlock(self.features, float(res_scale)) for _ in range(self.n_blocks))
        self.body_end = nn.Conv2d(self.features, self.features, 3, padding=1)
        self.tail = nn.Conv2d(self.features, self.channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.head(x)
        r = h
        for block in self.body:
            r = block(r)
        r = self.body_end(r) + h
        return x + self.tail(r)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for block in self.body:  # keep the blocks' float copy in step with the loaded buffer
            block.res_scale = float(self.res_scale)

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "EDSR":
        """An :class:`EDSR` of the sizes a state dict describes, with those weights loaded."""
        try:
            features, channels = state_dict["head.weight"].shape[:2]
            blocks = len({int(m.group(1)) for k in state_dict if (m := re.match(r"body\.(\d+)\.", k))})
            res_scale = float(state_dict["res_scale"])
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"the state dict is not an EDSR's (needs head.weight, body.N.*, res_scale): "
                             f"{type(exc).__name__}: {exc}; keys: {sorted(state_dict)[:6]}...") from None
        net = cls(channels=int(channels), features=int(features), blocks=blocks, res_scale=res_scale)
        net.load_state_dict(state_dict)
        return net

    def extra_repr(self) -> str:
        return f"channels={self.channels}, features={self.features}, blocks={self.n_blocks}, " \
               f"res_scale={float(self.res_scale):g}"


# ------------------------------------------------------------------------------------ weights


def _load(path: str | os.PathLike, name: str) -> object:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{name}: no such file {str(path)!r}; train one with "
                                f"`diffjpeg train-reconstruction --out {path}` or pass the right path")
    return load_checkpoint(path, name)


def save_weights(network: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``network.state_dict()`` to ``path`` (atomically: a crash never leaves half a file)."""
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be an nn.Module, got {type(network).__name__}")
    return atomic_torch_save({k: v.detach().cpu() for k, v in network.state_dict().items()}, path)


def load_weights(path: str | os.PathLike, network: nn.Module | None = None) -> nn.Module:
    """Read a state dict with ``torch.load(path, weights_only=True)``.

    Args:
        path: file written by :func:`save_weights` (or any ``torch.save``-d state dict).
        network: module to load into (strictly: every key must match); ``None`` builds an
            :class:`EDSR` of the sizes the file describes.

    Returns:
        the network with the weights, on the CPU when built here, else on ``network``'s device.
    """
    state = _load(path, "weights")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} must hold a state dict (names -> tensors), "
                         f"got {type(state).__name__}")
    if network is None:
        return EDSR.from_state_dict(state)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"weights file {str(path)!r} does not fit {type(network).__name__}: {exc}") from None
    return network


# ------------------------------------------------------------------------------------ defense


class _Surrogate(nn.Module):
    """quantiser with identity gradient -> network -> clamp with identity gradient."""

    def __init__(self, defense: "PixelDepthReconstruction"):
        super().__init__()
        self.levels = defense.levels
        self.network = defense.network

    def forward(self, x: Tensor) -> Tensor:
        dtype = _param_dtype(self.network, x.dtype)
        y = self.network(quantize_depth_ste(x, self.levels).to(dtype)).to(x.dtype)
        return _clamp_ste(y)


def _param_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    p = next(module.parameters(), None)
    return default if p is None else p.dtype


class PixelDepthReconstruction(Defense):
    """Pixel-depth compression to ``levels`` values, then a reconstruction network, then clamp.

    ``forward(x) = clamp(network(quantize_depth(x, levels)), 0, 1)`` (Zhang et al.). The network runs
    in its parameters' dtype; the output is cast back to the input's dtype.

    Facts (the :class:`~diffjpeg.contract.Defense` contract):

    * ``differentiable = False``: the quantiser is piecewise constant (its true derivative is zero
      almost everywhere), and its output is detached, so autograd through the forward pass gives
      the input no gradient at all. Attack it with ``BPDA(defense)``.
    * ``surrogate()``: the quantiser with a straight-through (identity) gradient, the same network
      (shared, not copied), and a straight-through clamp. Its forward value equals the defense's.
    * ``randomized = False``.

    Args:
        levels: number of grey levels per channel, >= 2 (the paper: 4 on Fashion-MNIST, 2 on MNIST).
        network: the reconstruction module ``(B, C, H, W) -> (B, C, H, W)``; ``None`` builds an
            :class:`EDSR` (from ``weights`` when given, else an untrained one of ``channels``
            channels, which is the identity: bit-depth reduction alone). ``nn.Identity()`` gives
            bit-depth reduction alone explicitly.
        weights: path of a state dict for the network (read with ``weights_only=True``), or ``None``.
        channels: image channels of the default network (ignored when ``network`` or ``weights``
            is given).

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H, W)`` in [0, 1], input's dtype and device.
    """

    differentiable = False
    randomized = False

    def __init__(self, levels: int = 4, network: nn.Module | None = None,
                 weights: str | os.PathLike | None = None, channels: int = 1):
        super().__init__()
        self.levels = _check_levels(levels)
        if network is not None and not isinstance(network, nn.Module):
            raise TypeError(f"network must be an nn.Module or None, got {type(network).__name__}")
        if network is None:
            network = load_weights(weights) if weights is not None else EDSR(channels=channels)
        elif weights is not None:
            network = load_weights(weights, network)
        self.network = network
        self.weights = None if weights is None else str(weights)

    def _check_input(self, x: Tensor) -> None:
        check_image(x)
        expected = getattr(self.network, "channels", None)
        if expected is not None and x.shape[1] != expected:
            raise ValueError(f"x must have {expected} channel(s) for this reconstruction network, "
                             f"got C = {x.shape[1]} (shape {tuple(x.shape)})")
        p = next(self.network.parameters(), None)
        if p is not None and p.device != x.device:
            raise ValueError(f"x is on {x.device} but the reconstruction network is on {p.device}; "
                             f"move one of them (defense.to('{x.device}'))")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        dtype = _param_dtype(self.network, x.dtype)
        y = self.network(quantize_depth(x, self.levels).to(dtype))
        return y.clamp(0, 1).to(x.dtype)

    def surrogate(self) -> nn.Module:
        return _Surrogate(self)

    def extra_repr(self) -> str:
        return f"levels={self.levels}" + (f", weights={self.weights!r}" if self.weights else "")


register("pixel_depth_reconstruction", PixelDepthReconstruction)
