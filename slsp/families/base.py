"""What every family's model shares (METHOD.md 2): uint8 crops + Phi in, an encoding with the pooled features the
discriminator reads and the bottleneck latent the decoder reconstructs from."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Encoding(NamedTuple):
    pooled: Tensor  # (B, dim): what the discriminator sees
    latent: Tensor  # (B, latent): the bottleneck s


def prepare(crops: Tensor, crop_phi: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """uint8 (B, C, C, 3) and (B, C, C) -> float (B, 3, C, C) in [-1, 1] and (B, 1, C, C)."""
    x = crops.permute(0, 3, 1, 2).to(dtype) * (2.0 / 255.0) - 1.0
    return x, crop_phi.to(dtype).unsqueeze(1)
