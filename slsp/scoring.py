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
    """Aggregate per-crop scores over the valid crops of each pyramid level, fuse them with the noise level and the
    crops' kurtosis (as enabled), apply the threshold; a low-resolution image (scored at native scale) gets its own
    fusion and threshold where the model has them."""

    def __init__(self, aggregate: str, threshold: float, fusion: FusionConfig | None = None,
                 low_resolution: LowResolutionConfig | None = None, levels: int = 1) -> None:
        super().__init__()
        self.aggregate = aggregate
        self.levels = levels
        self.threshold = float(threshold)
        self.fusion = fusion or FusionConfig()
        low = low_resolution or LowResolutionConfig()
        # Without a low-resolution calibration the flag changes nothing (such images are refused before the graph),
        # yet stays an input of the graph, so every exported score stage has one signature.
        self.low_fusion = low.fusion if low.enabled else self.fusion
        self.low_threshold = float(low.threshold) if low.enabled else self.threshold

    def level_aggregates(self, crop_scores: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(levels,) aggregates over each level's valid crops, and (levels,) whether the level has any."""
        s, v = crop_scores.reshape(self.levels, -1), valid.reshape(self.levels, -1).to(crop_scores.dtype)
        if self.aggregate == "max":
            agg = (s * v - (1.0 - v)).max(dim=1).values
        else:
            agg = (s * v).sum(dim=1) / v.sum(dim=1).clamp(min=1.0)
        return agg, v.max(dim=1).values > 0.5

    def crop_aggregate(self, crop_scores: Tensor, valid: Tensor) -> Tensor:
        """Level 0's aggregate: the model's part of the score at the scale the image is given."""
        return self.level_aggregates(crop_scores, valid)[0][0]

    def kurtosis(self, crop_kurtosis: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """The median log kurtosis over level 0's valid crops that have one (np.nanmedian's: the mean of the two
        middle values of an even count), 0 where none has; and whether any has."""
        k = crop_kurtosis.reshape(self.levels, -1)[0]
        have = valid.reshape(self.levels, -1)[0] & ~torch.isnan(k)
        ordered = torch.where(have, k, torch.full_like(k, float("inf"))).sort().values  # the n values first
        n = have.sum()
        middle = torch.stack([(n - 1).clamp(min=0) // 2, n // 2]).clamp(max=k.shape[0] - 1)
        median = ordered.gather(0, middle).mean()
        return torch.where(n > 0, median, torch.zeros_like(median)), n > 0

    @staticmethod
    def fuse(agg: Tensor, present: Tensor, kurtosis: Tensor, has_kurtosis: Tensor, sigma: Tensor, f: FusionConfig
             ) -> Tensor:
        """sigmoid(2 x the mean of the standardised parts the image has), FusionConfig; level 0's aggregate alone
        when disabled. agg, present: (levels,) from `level_aggregates`; kurtosis, has_kurtosis from `kurtosis`."""
        if not f.enabled:
            # `* 0.0` keeps sigma and the kurtosis inputs of every exported score stage (an unused input is dropped
            # from the graph), so the stage has one signature whatever the model fuses; both are finite.
            return agg[0] + (sigma + kurtosis) * 0.0
        z = [(agg[0] - f.model_mean) * (1.0 / f.model_std),
             (-torch.log(sigma + NOISE_EPS) - f.noise_mean) * (1.0 / f.noise_std)]
        z += [(agg[i] - m) * (1.0 / s) for i, (m, s) in enumerate(zip(f.level_means, f.level_stds), 1)]
        # The kurtosis part always enters the graph, with weight 0 where the config has none: 0 x a finite z.
        z.append(((kurtosis - f.kurtosis_center).abs() - f.kurtosis_mean) * (1.0 / f.kurtosis_std))
        use = has_kurtosis if f.kurtosis else torch.zeros_like(has_kurtosis)
        w = torch.cat([present.new_ones(2), present[1 : len(z) - 2], use.reshape(1)])
        w = w.to(agg.dtype)
        return torch.sigmoid((torch.stack(z) * w).sum() * 2.0 / w.sum())

    def forward(self, crop_scores: Tensor, crop_kurtosis: Tensor, valid: Tensor, sigma: Tensor,
                low_resolution: Tensor) -> tuple[Tensor, Tensor]:
        agg, present = self.level_aggregates(crop_scores, valid)
        k, has_k = self.kurtosis(crop_kurtosis, valid)
        score = torch.where(low_resolution, self.fuse(agg, present, k, has_k, sigma, self.low_fusion),
                            self.fuse(agg, present, k, has_k, sigma, self.fusion))
        threshold = torch.where(low_resolution, score.new_tensor(self.low_threshold), score.new_tensor(self.threshold))
        return score, score >= threshold
