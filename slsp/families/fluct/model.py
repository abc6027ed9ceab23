"""The fluct model: the method's structure (encoder over crop + Phi, bottleneck, decoder, discriminator) with a
convolutional encoder that reads pixel fluctuations.

Why not the token transformer: 8 x 8 patch embeddings of a crop in [-1, 1] make +-1 gray level a 0.008 input, and
its discriminator learned "blur" (METHOD.md 5). Here the encoder sees the high-pass residual (crop minus its 3 x 3
mean, `gain` gray levels per unit) at full resolution beside the crop and Phi, and pools its features both over the
whole crop and inside Phi, so the over-smooth region steers what the discriminator reads. The decoder reconstructs
the crop from the bottleneck (an auxiliary loss in training); only the discriminator scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsp.families.base import Encoding, prepare
from slsp.families.fluct import FluctConfig
from slsp.fluctuation import residual


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GELU())


class FluctEncoder(nn.Module):
    def __init__(self, cfg: FluctConfig) -> None:
        super().__init__()
        w = cfg.width
        self.gain = cfg.gain
        self.residual = cfg.residual
        # Full resolution first (the fluctuation lives at one pixel), then two stride-2 stages.
        self.body = nn.Sequential(
            _conv(7 if cfg.residual else 4, w),
            _conv(w, 2 * w, 2),
            _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, 2),
            _conv(4 * w, 4 * w),
        )
        self.norm = nn.LayerNorm(8 * w)
        self.bottleneck = nn.Linear(8 * w, cfg.latent)

    def forward(self, x: Tensor, phi: Tensor) -> Encoding:
        """x: (B, 3, C, C) in [-1, 1]; phi: (B, 1, C, C) in [0, 1]."""
        parts = [residual((x + 1.0) * 127.5) * (1.0 / self.gain)] if self.residual else []
        f = self.body(torch.cat([*parts, x, phi], dim=1))
        p = F.avg_pool2d(phi, 4)  # Phi on the feature grid
        inside = (f * p).sum((2, 3)) / p.sum((2, 3)).clamp(min=1e-3)
        pooled = self.norm(torch.cat([f.mean((2, 3)), inside], dim=1))
        return Encoding(pooled, self.bottleneck(pooled))


class FluctDecoder(nn.Module):
    """latent -> 8 x 8 -> up-blocks to C x C -> tanh: the crop's content, without its fluctuations."""

    def __init__(self, cfg: FluctConfig) -> None:
        super().__init__()
        self.ch = 4 * cfg.width
        self.fc = nn.Linear(cfg.latent, 8 * 8 * self.ch)
        blocks, ch, size = [], self.ch, 8
        while size < cfg.crop:
            blocks += [nn.Upsample(scale_factor=2.0, mode="nearest"), _conv(ch, max(ch // 2, 8))]
            ch, size = max(ch // 2, 8), size * 2
        self.up = nn.Sequential(*blocks)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        self.crop = cfg.crop

    def forward(self, s: Tensor) -> Tensor:
        y = self.up(self.fc(s).reshape(-1, self.ch, 8, 8))
        return torch.tanh(self.out(F.interpolate(y, size=(self.crop, self.crop)) if y.shape[-1] != self.crop else y))


class FluctModel(nn.Module):
    """Encoder + decoder + discriminator; `forward` maps raw crops to per-crop synthetic scores (1 - P(real))."""

    prepare = staticmethod(prepare)

    def __init__(self, cfg: FluctConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FluctEncoder(cfg)
        self.decoder = FluctDecoder(cfg)
        d = 8 * cfg.width
        self.disc = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.bottleneck.weight.dtype

    def logit(self, x: Tensor, phi: Tensor) -> Tensor:
        """Discriminator logit of P(real), from prepared inputs."""
        return self.disc(self.encoder(x, phi).pooled)[:, 0]

    def forward(self, crops: Tensor, crop_phi: Tensor) -> Tensor:
        x, phi = self.prepare(crops, crop_phi, self.dtype)
        return torch.sigmoid(-self.logit(x, phi)).to(torch.float32)
