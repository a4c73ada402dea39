"""Colour conversion equals libjpeg's 16-bit fixed-point integer formulas on every 8-bit input."""
from __future__ import annotations

import torch

from diffjpeg.jpeg.color import rgb_to_ycbcr, ycbcr_to_rgb


def fix(v: float) -> int:
    """libjpeg's FIX(): the constant times 2^16, rounded half up."""
    return int(v * 65536 + 0.5)


def all_pairs() -> torch.Tensor:
    """(2, 65536) int64: every pair of 8-bit values."""
    a, b = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    return torch.stack((a.flatten(), b.flatten()))


def test_ycbcr_to_rgb_exhaustive():
    cb, cr = all_pairs() - 128
    half = 1 << 15
    deltas = (
        (fix(1.40200) * cr + half) >> 16,
        (-fix(0.34414) * cb - fix(0.71414) * cr + half) >> 16,
        (fix(1.77200) * cb + half) >> 16,
    )
    chroma = all_pairs().float().reshape(1, 2, 256, 256)
    for y in range(256):
        ycc = torch.cat((torch.full((1, 1, 256, 256), float(y)), chroma), 1)
        ours = ycbcr_to_rgb(ycc, True).reshape(3, -1).long()
        for channel, delta in enumerate(deltas):
            assert torch.equal(ours[channel], (y + delta).clamp(0, 255)), (y, channel)


def test_rgb_to_ycbcr_exhaustive():
    g, b = all_pairs()
    half = 1 << 15
    for r in range(256):
        y = (fix(0.29900) * r + fix(0.58700) * g + fix(0.11400) * b + half) >> 16
        cb = (-fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + (128 << 16) + half - 1) >> 16
        cr = (fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + (128 << 16) + half - 1) >> 16
        rgb = torch.stack((torch.full_like(g, r), g, b)).float().reshape(1, 3, 256, 256)
        ours = rgb_to_ycbcr(rgb, True).reshape(3, -1).long()
        assert torch.equal(ours, torch.stack((y, cb, cr))), r
