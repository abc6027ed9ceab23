"""Model families, each in one home (a package here: its config and defaults, its model, its training step) and
registered once below. Both families map uint8 crops + Phi to per-crop scores, so they are exported, served and
parity-gated the same way. Torch-free: a family's torch code is imported when a model is built or trained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slsp.errors import ConfigError
from slsp.families import fluct, recipe
from slsp.families.spec import Family, ModelConfig

if TYPE_CHECKING:
    from torch import nn

# The registry: `slsp train --family` lists these, the shipped default first.
FAMILIES: dict[str, Family] = {f.name: f for f in (fluct.FAMILY, recipe.FAMILY)}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The per-crop scorer of `cfg.family`: forward(crops uint8 (N, C, C, 3), crop_phi (N, C, C)) -> (N,) scores."""
    return family(cfg.family).load("model")(cfg)
