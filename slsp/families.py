"""Model families by the `family` field of the model config: one factory, so the authors' recipe and a new family
live side by side and are exported, served and parity-gated the same way (both map uint8 crops + Phi to scores)."""

from __future__ import annotations

from torch import nn

from slsp.config import FluctConfig, ModelConfig
from slsp.errors import ConfigError
from slsp.fluct import FluctModel
from slsp.model import SLSPModel

FAMILIES: dict[str, type[nn.Module]] = {"slsp": SLSPModel, "fluct": FluctModel}


def build_model(cfg: ModelConfig | FluctConfig) -> nn.Module:
    """The per-crop scorer of `cfg.family`: forward(crops uint8 (N, C, C, 3), crop_phi (N, C, C)) -> (N,) scores."""
    if cfg.family not in FAMILIES:
        raise ConfigError(f"unknown model family {cfg.family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[cfg.family](cfg)
