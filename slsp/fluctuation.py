"""The crops' pixel fluctuation as tensor ops: the high-pass residual the fluct model reads, and the residual's log
kurtosis, a weight-free per-crop statistic the model stage emits beside its scores.

Why kurtosis: a camera's fluctuation (shot and read noise through demosaicing) is near-Gaussian inside a smooth
region; a generator's decoder leaves it heavy-tailed (sparse, amplitude-modulated) or, where it denoises, light-tailed
(docs/benchmarks-log.md, "hand-made statistics"). The score stage counts it two-sided, by its distance from the
held-out real photos' mean (`FusionConfig.kurtosis`), so no generated image picks its side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 luma, as TrSOR reads the image (slsp.trsor)
MIN_VARIANCE = 1e-6  # gray levels squared: below it the residual is flat and has no kurtosis (NaN)
# Scales that keep every intermediate small enough for half precision, which a TensorRT FP16 engine may choose for
# these layers (a gray-level residual's 4th power overflows float16 from 16 gray levels on): the residual in units
# of 16 gray levels, and each pixel's share of the variance (at most the pixel count) over 64.
UNIT, SHARE = 16.0, 64.0


def residual(x255: Tensor) -> Tensor:
    """(B, 3, H, W) in gray levels -> crop minus its 3 x 3 mean (reflect-padded): the fluctuation, not the content."""
    return x255 - F.avg_pool2d(F.pad(x255, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def log_kurtosis(crops: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (N, C, C, 3) -> (N,) float32 log(m4 / m2^2) of each crop's luma residual, its padded border left out
    (3 for Gaussian noise, so about 1.1); NaN where the residual is flat. Computed in `dtype` (float32 in every
    exported graph, whatever the model's precision; float16 to check what a half-precision engine would give) as
    log(mean(q^2)) with q = d^2 / m2, each pixel's share of the variance, so no intermediate grows with the 4th
    power of the pixel values."""
    x = crops.permute(0, 3, 1, 2).to(dtype)
    r = residual(x)[:, :, 1:-1, 1:-1] * (1.0 / UNIT)
    luma = r[:, 0] * LUMA[0] + r[:, 1] * LUMA[1] + r[:, 2] * LUMA[2]
    d = luma - luma.mean(dim=(1, 2), keepdim=True)
    d2 = d * d
    m2 = d2.mean(dim=(1, 2), keepdim=True)
    flat = m2 <= MIN_VARIANCE / UNIT**2
    w = d2 / torch.where(flat, torch.ones_like(m2), m2) * (1.0 / SHARE)
    out = (torch.log((w * w).mean(dim=(1, 2))) + 2.0 * math.log(SHARE)).to(torch.float32)
    return torch.where(flat[:, 0, 0], torch.full_like(out, float("nan")), out)
