"""Edge replication to whole MCUs and the 8x8 block layout (and the adjoints of padding and cropping).

Inside the codec, samples and coefficients stay in planes ``(B, n, h, w)`` (see :mod:`.dct`); the
public coefficient API uses blocks ``(B, h / 8, w / 8, 8, 8)``: block row, block column, then the
8x8 values in row-major order. The two layouts are views of each other.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

BLOCK = 8


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pad_replicate(x: Tensor, height: int, width: int) -> Tensor:
    """Extend ``(B, C, H, W)`` to ``(B, C, height, width)`` by repeating the last row and column.

    libjpeg fills partial MCUs this way (not with zeros), so that edge blocks carry no artificial
    step into the DCT.
    """
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h == pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def pad_replicate_adjoint(grad: Tensor, height: int, width: int) -> Tensor:
    """Adjoint of :func:`pad_replicate`: ``(..., H, W)`` -> ``(..., height, width)``, the gradient of every
    repeated sample added to the edge sample it copies."""
    h, w = grad.shape[-2:]
    if h == height and w == width:
        return grad
    out = grad[..., :height, :width].clone()
    if w > width:
        out[..., width - 1] += grad[..., :height, width:].sum(-1)
    if h > height:
        out[..., height - 1, :] += grad[..., height:, :width].sum(-2)
    if w > width and h > height:
        out[..., height - 1, width - 1] += grad[..., height:, width:].sum((-2, -1))
    return out


def crop_adjoint(grad: Tensor, height: int, width: int) -> Tensor:
    """Adjoint of :func:`crop`: ``grad`` zero-padded at the bottom and right to ``(..., height, width)``."""
    pad_h, pad_w = height - grad.shape[-2], width - grad.shape[-1]
    return grad if pad_h == pad_w == 0 else F.pad(grad, (0, pad_w, 0, pad_h))


def crop(x: Tensor, height: int, width: int) -> Tensor:
    """``x[..., :height, :width]``, skipping the slice (and its backward copy) when nothing is cut."""
    if x.shape[-2] == height and x.shape[-1] == width:
        return x
    return x[..., :height, :width]


def to_blocks(plane: Tensor) -> Tensor:
    """``(..., h, w)`` -> ``(..., h/8, w/8, 8, 8)`` (a view, no copy)."""
    *lead, h, w = plane.shape
    return plane.reshape(*lead, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(-3, -2)


def from_blocks(blocks: Tensor) -> Tensor:
    """``(..., nby, nbx, 8, 8)`` -> ``(..., nby * 8, nbx * 8)`` (a view when ``blocks`` came from ``to_blocks``)."""
    *lead, nby, nbx, _, _ = blocks.shape
    return blocks.transpose(-3, -2).reshape(*lead, nby * BLOCK, nbx * BLOCK)
