"""Image-quality metrics the reports and the benchmark print: PSNR and SSIM of images in [0, 1]."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["psnr", "ssim"]


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images (or batches, one MSE over all) in [0, 1]; ``inf`` when identical."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: Tensor, b: Tensor) -> float | None:
    """SSIM of two ``(C, H, W)`` images in [0, 1] (scikit-image; window shrunk for small images, None below 3 px)."""
    from skimage.metrics import structural_similarity

    win = min(7, *a.shape[1:])
    win -= 1 - win % 2
    if win < 3:
        return None
    return float(structural_similarity(a.double().cpu().numpy(), b.double().cpu().numpy(), channel_axis=0,
                                       data_range=1.0, win_size=win))
