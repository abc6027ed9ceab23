"""Image score from per-crop scores, as tensor ops (exported as the `score` stage)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Scorer(nn.Module):
    """Aggregate per-crop scores over valid crops and apply the calibrated threshold."""

    def __init__(self, aggregate: str, threshold: float) -> None:
        super().__init__()
        self.aggregate = aggregate
        self.threshold = float(threshold)

    def forward(self, crop_scores: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        v = valid.to(crop_scores.dtype)
        if self.aggregate == "max":
            score = (crop_scores * v - (1.0 - v)).max()
        else:
            score = (crop_scores * v).sum() / v.sum().clamp(min=1.0)
        return score, score >= self.threshold
