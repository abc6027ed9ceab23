"""Image score from per-crop scores and the TrSOR noise estimate, as tensor ops (exported as the `score` stage)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from slsp.config import FusionConfig, LowResolutionConfig

NOISE_EPS = 1e-3  # gray levels; keeps the log finite on noiseless images


def noise_score(sigma: float) -> float:
    """-log(sigma + eps): the noise baseline's score and the fusion's noise part (a cleaner image scores higher).
    `Scorer.fuse` computes the same in the graph."""
    return -float(np.log(float(sigma) + NOISE_EPS))


class Scorer(nn.Module):
    """Aggregate per-crop scores over valid crops, fuse with the noise level (if enabled), apply the threshold; a
    low-resolution image (scored at native scale) gets its own fusion and threshold where the model has them."""

    def __init__(self, aggregate: str, threshold: float, fusion: FusionConfig | None = None,
                 low_resolution: LowResolutionConfig | None = None) -> None:
        super().__init__()
        self.aggregate = aggregate
        self.threshold = float(threshold)
        self.fusion = fusion or FusionConfig()
        low = low_resolution or LowResolutionConfig()
        # Without a low-resolution calibration the flag changes nothing (such images are refused before the graph),
        # yet stays an input of the graph, so every exported score stage has one signature.
        self.low_fusion = low.fusion if low.enabled else self.fusion
        self.low_threshold = float(low.threshold) if low.enabled else self.threshold

    def crop_aggregate(self, crop_scores: Tensor, valid: Tensor) -> Tensor:
        v = valid.to(crop_scores.dtype)
        if self.aggregate == "max":
            return (crop_scores * v - (1.0 - v)).max()
        return (crop_scores * v).sum() / v.sum().clamp(min=1.0)

    @staticmethod
    def fuse(agg: Tensor, sigma: Tensor, f: FusionConfig) -> Tensor:
        """sigmoid(z_model + z_noise), standardised on held-out reals (FusionConfig); identity when disabled."""
        if not f.enabled:
            # sigma * 0 keeps sigma an input of every exported score stage (an unused input is dropped from the
            # graph), so the stage has one signature whether or not a model fuses the noise level.
            return agg + sigma * 0.0
        z_model = (agg - f.model_mean) * (1.0 / f.model_std)
        z_noise = (-torch.log(sigma + NOISE_EPS) - f.noise_mean) * (1.0 / f.noise_std)
        return torch.sigmoid(z_model + z_noise)

    def forward(self, crop_scores: Tensor, valid: Tensor, sigma: Tensor, low_resolution: Tensor
                ) -> tuple[Tensor, Tensor]:
        agg = self.crop_aggregate(crop_scores, valid)
        score = torch.where(low_resolution, self.fuse(agg, sigma, self.low_fusion), self.fuse(agg, sigma, self.fusion))
        threshold = torch.where(low_resolution, score.new_tensor(self.low_threshold), score.new_tensor(self.threshold))
        return score, score >= threshold
