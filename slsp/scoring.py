"""Image score from per-crop scores and the TrSOR noise estimate, as tensor ops (exported as the `score` stage)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from slsp.config import FusionConfig

NOISE_EPS = 1e-3  # gray levels; keeps the log finite on noiseless images


def noise_score(sigma: float) -> float:
    """-log(sigma + eps): the noise baseline's score and the fusion's noise part (a cleaner image scores higher).
    `Scorer.fuse` computes the same in the graph."""
    return -float(np.log(float(sigma) + NOISE_EPS))


class Scorer(nn.Module):
    """Aggregate per-crop scores over valid crops, fuse with the noise level (if enabled), apply the threshold."""

    def __init__(self, aggregate: str, threshold: float, fusion: FusionConfig | None = None) -> None:
        super().__init__()
        self.aggregate = aggregate
        self.threshold = float(threshold)
        self.fusion = fusion or FusionConfig()

    def crop_aggregate(self, crop_scores: Tensor, valid: Tensor) -> Tensor:
        v = valid.to(crop_scores.dtype)
        if self.aggregate == "max":
            return (crop_scores * v - (1.0 - v)).max()
        return (crop_scores * v).sum() / v.sum().clamp(min=1.0)

    def fuse(self, agg: Tensor, sigma: Tensor) -> Tensor:
        """sigmoid(z_model + z_noise), standardised on held-out reals (FusionConfig); identity when disabled."""
        f = self.fusion
        if not f.enabled:
            # sigma * 0 keeps sigma an input of every exported score stage (an unused input is dropped from the
            # graph), so the stage has one signature whether or not a model fuses the noise level.
            return agg + sigma * 0.0
        z_model = (agg - f.model_mean) * (1.0 / f.model_std)
        z_noise = (-torch.log(sigma + NOISE_EPS) - f.noise_mean) * (1.0 / f.noise_std)
        return torch.sigmoid(z_model + z_noise)

    def forward(self, crop_scores: Tensor, valid: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        score = self.fuse(self.crop_aggregate(crop_scores, valid), sigma)
        return score, score >= self.threshold
