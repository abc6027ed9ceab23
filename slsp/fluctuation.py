"""The crops' pixel fluctuation as tensor ops: the high-pass residual the fluct model reads, and the residual's log
kurtosis, a weight-free per-crop statistic the model stage emits beside its scores.

Why kurtosis: a camera's fluctuation (shot and read noise through demosaicing) is near-Gaussian inside a smooth
region; a generator's decoder leaves it heavy-tailed (sparse, amplitude-modulated) or, where it denoises, light-tailed
(benchmarks/README.md, "hand-made statistics"). The score stage counts it two-sided, by its distance from the
held-out real photos' mean (`FusionConfig.kurtosis`), so no generated image picks its side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)
MIN_VARIANCE = 1e-6  # gray levels squared: below it the residual is flat and has no kurtosis (NaN)


def residual(x255: Tensor) -> Tensor:
    """(B, 3, H, W) in gray levels -> crop minus its 3 x 3 mean (reflect-padded): the fluctuation, not the content."""
    return x255 - F.avg_pool2d(F.pad(x255, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def log_kurtosis(crops: Tensor) -> Tensor:
    """uint8 (N, C, C, 3) -> (N,) float32 log(m4 / m2^2) of each crop's luma residual, its padded border left out
    (3 for Gaussian noise, so about 1.1); NaN where the residual is flat. Always float32, whatever the model's
    precision."""
    x = crops.permute(0, 3, 1, 2).to(torch.float32)
    r = residual(x)[:, :, 1:-1, 1:-1]
    luma = r[:, 0] * LUMA[0] + r[:, 1] * LUMA[1] + r[:, 2] * LUMA[2]
    d = luma - luma.mean(dim=(1, 2), keepdim=True)
    d2 = d * d
    m2 = d2.mean(dim=(1, 2))
    m4 = (d2 * d2).mean(dim=(1, 2))
    flat = m2 <= MIN_VARIANCE
    return torch.where(flat, torch.full_like(m2, float("nan")), torch.log(m4 / torch.where(flat, 1.0, m2 * m2)))
