"""The recipe's model (METHOD.md 2): encoder over (crop, Phi), bottleneck, decoder, discriminator.

The encoder embeds image patches as tokens; Phi, pooled to the token grid, forms query tokens that attend to the
image tokens (Phi-conditioned cross-attention), so the representation is steered to the over-smooth area. A
transformer with long skips (U-ViT style) follows; pooled tokens feed both the bottleneck latent s (which the
decoder G turns back into an over-smooth reconstruction, the pseudo-fake) and the discriminator D.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsp.families.base import Encoding, prepare
from slsp.families.recipe import RecipeConfig


class Attention(nn.Module):
    """Multi-head attention written with plain matmuls (exports identically to every ONNX runtime)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, d = x.shape
        h, dh = self.heads, d // self.heads
        q = self.q(x).reshape(b, n, h, dh).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, h, dh).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(dh)), dim=-1)
        return self.out((a @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block; `skip` (long skip from the mirrored block) is fused in by a linear layer."""

    def __init__(self, dim: int, heads: int, skip: bool) -> None:
        super().__init__()
        self.fuse = nn.Linear(2 * dim, dim) if skip else None
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.fuse is not None and skip is not None:
            x = self.fuse(torch.cat([x, skip], dim=-1))
        y = self.n1(x)
        x = x + self.attn(y, y)
        return x + self.mlp(self.n2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: RecipeConfig) -> None:
        super().__init__()
        g = cfg.crop // cfg.token
        self.token = cfg.token
        self.embed = nn.Conv2d(3, cfg.dim, cfg.token, stride=cfg.token)
        self.phi_embed = nn.Linear(1, cfg.dim)
        self.pos = nn.Parameter(torch.randn(1, g * g, cfg.dim) * 0.02)
        self.phi_pos = nn.Parameter(torch.randn(1, g * g, cfg.dim) * 0.02)
        self.cross_norm = nn.LayerNorm(cfg.dim)
        self.cross = Attention(cfg.dim, cfg.heads)
        half = cfg.depth // 2
        self.down = nn.ModuleList(Block(cfg.dim, cfg.heads, skip=False) for _ in range(half))
        self.up = nn.ModuleList(Block(cfg.dim, cfg.heads, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(cfg.dim)
        self.bottleneck = nn.Linear(cfg.dim, cfg.latent)

    def forward(self, x: Tensor, phi: Tensor) -> Encoding:
        """x: (B, 3, C, C) in [-1, 1]; phi: (B, 1, C, C) in [0, 1]."""
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        q = self.phi_embed(F.avg_pool2d(phi, self.token).flatten(2).transpose(1, 2)) + self.phi_pos
        t = t + self.cross(self.cross_norm(q), self.cross_norm(t))
        skips = []
        for blk in self.down:
            t = blk(t)
            skips.append(t)
        for blk in self.up:
            t = blk(t, skips.pop())
        pooled = self.norm(t).mean(dim=1)
        return Encoding(pooled, self.bottleneck(pooled))


class Decoder(nn.Module):
    """G: latent -> 8 x 8 x ch -> log2(C / 8) up-blocks -> tanh image; over-smooth by construction."""

    def __init__(self, cfg: RecipeConfig) -> None:
        super().__init__()
        ch = cfg.decoder_channels
        self.ch = ch
        self.fc = nn.Linear(cfg.latent, 8 * 8 * ch)
        blocks = []
        for _ in range(int(math.log2(cfg.crop // 8))):
            blocks += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1), nn.GELU()]
            ch //= 2
        self.up = nn.Sequential(*blocks)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, s: Tensor) -> Tensor:
        return torch.tanh(self.out(self.up(self.fc(s).reshape(-1, self.ch, 8, 8))))


class SLSPModel(nn.Module):
    """Encoder + decoder + discriminator; `forward` maps raw crops to per-crop synthetic scores."""

    def __init__(self, cfg: RecipeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.disc = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, 1))

    prepare = staticmethod(prepare)

    def forward(self, crops: Tensor, crop_phi: Tensor) -> Tensor:
        """Per-crop synthetic score in [0, 1] (higher = more likely generated), by the configured score.

        Computes in the weights' dtype (float16 after `.half()` for an FP16 export) and returns float32.
        """
        return self._score(*self.prepare(crops, crop_phi, self.encoder.pos.dtype)).to(torch.float32)

    def _score(self, x: Tensor, phi: Tensor) -> Tensor:
        return SCORES[self.cfg.score](self, self.encoder(x, phi), x, phi)


def disc_score(m: SLSPModel, enc: Encoding, x: Tensor, phi: Tensor) -> Tensor:
    """1 - P(real) from the discriminator."""
    return torch.sigmoid(-m.disc(enc.pooled)[:, 0])


def recon_score(m: SLSPModel, enc: Encoding, x: Tensor, phi: Tensor) -> Tensor:
    """Reconstruction error inside Phi: a small error means the crop is as smooth as G's output."""
    rec = m.decoder(enc.latent)
    err = ((rec - x).abs().mean(1, keepdim=True) * phi).sum((1, 2, 3)) / phi.sum((1, 2, 3)).clamp(min=1.0)
    return torch.exp(-err * 10.0)


def latent_score(m: SLSPModel, enc: Encoding, x: Tensor, phi: Tensor) -> Tensor:
    """Latent consistency: the reconstruction re-encoded lands near the crop's own latent."""
    s2 = m.encoder(m.decoder(enc.latent), torch.ones_like(phi)).latent
    return torch.exp(-(enc.latent - s2).norm(dim=1) / math.sqrt(m.cfg.latent))


# Per-crop scores by `RecipeConfig.score`; the declaration's SCORES lists the same names (checked in tests).
SCORES: dict[str, Callable[[SLSPModel, Encoding, Tensor, Tensor], Tensor]] = {
    "disc": disc_score, "recon": recon_score, "latent": latent_score}
