"""Family "slsp", the authors' recipe: a patch-token transformer over (crop, Phi) with Phi cross-attention, whose
decoder's reconstructions are the pseudo-fakes (`model.py`, `training.py`). This module is its torch-free
declaration: config, training options, defaults."""

from __future__ import annotations

from dataclasses import dataclass

from slsp.errors import ConfigError
from slsp.families.spec import Family

SCORES = ("disc", "recon", "latent")  # per-crop scores (model.py SCORES holds the functions)
FAKE_PHI = ("same", "ones")  # Phi given to the pseudo-fake: as the real crop's, or all ones (authors' code)
FAKE_MIX = ("full", "phi", "partial")  # pseudo-fake: full reconstruction (authors' code), inside Phi only, or a
# random 25-100% of the way from the crop to its reconstruction


@dataclass(frozen=True)
class RecipeConfig:
    """The recipe's model; the default trains on a 2-core CPU, `paper()` is the authors' (GPU) size."""

    family: str = "slsp"
    crop: int = 64
    token: int = 8
    dim: int = 128
    depth: int = 4
    heads: int = 4
    latent: int = 128
    decoder_channels: int = 128
    score: str = "disc"

    def __post_init__(self) -> None:
        if self.crop % self.token or (self.crop // 8) & (self.crop // 8 - 1):
            raise ConfigError(f"crop ({self.crop}) must be token-divisible and 8 * a power of two")
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.depth < 2 or self.depth % 2:
            raise ConfigError(f"depth must be even and >= 2 (long skips pair blocks), got {self.depth}")
        if self.family != "slsp":
            raise ConfigError(f"RecipeConfig is family 'slsp', got {self.family!r}")
        if self.score not in SCORES:
            raise ConfigError(f"score must be one of {SCORES}, got {self.score!r}")

    @staticmethod
    def paper() -> RecipeConfig:
        return RecipeConfig(crop=256, token=16, dim=768, depth=12, heads=12, latent=512, decoder_channels=512)


@dataclass(frozen=True)
class RecipeOptions:
    """How the recipe makes its pseudo-fakes from the decoder's reconstructions."""

    fake_phi: str = "same"  # one of FAKE_PHI
    fake_mix: str = "full"  # one of FAKE_MIX

    def __post_init__(self) -> None:
        if self.fake_phi not in FAKE_PHI:
            raise ConfigError(f"fake_phi must be one of {FAKE_PHI}, got {self.fake_phi!r}")
        if self.fake_mix not in FAKE_MIX:
            raise ConfigError(f"fake_mix must be one of {FAKE_MIX}, got {self.fake_mix!r}")


FAMILY = Family(
    name="slsp",
    summary="the authors' recipe",
    sizes={"small": RecipeConfig(), "paper": RecipeConfig.paper()},
    options=RecipeOptions,
    defaults={"steps": 1000, "holdout": 0.15, "crops_per_image": 32, "canonical": "none", "levels": 1},
    model="slsp.families.recipe.model:SLSPModel",
    training="slsp.families.recipe.training:RecipeTraining",
)
