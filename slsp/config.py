"""Frozen, validated configuration; the resolved config is saved as JSON beside every artifact."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slsp.errors import ConfigError

SCORES = ("disc", "recon", "latent")  # the recipe's per-crop scores (slsp/model.py SCORES holds them)
AGGREGATES = ("mean", "max")
FAKE_PHI = ("same", "ones")  # Phi given to the pseudo-fake: as the real crop's, or all ones (authors' code)
FAKE_MIX = ("full", "phi", "partial")  # pseudo-fake: full reconstruction (authors' code), inside Phi only, or a
# random 25-100% of the way from the crop to its reconstruction


@dataclass(frozen=True)
class TrsorConfig:
    """TrSOR: patch size p, Gamma-null quantile delta, fixed iteration count, crop size and count K."""

    patch: int = 7
    delta: float = 0.99
    iterations: int = 3
    crop: int = 64
    crops: int = 16
    channel: str = "luma"  # "luma" or "rgb" (per-channel energy, summed)

    def __post_init__(self) -> None:
        if not 3 <= self.patch <= 31 or self.patch % 2 == 0:
            raise ConfigError(f"patch must be odd and in [3, 31], got {self.patch}")
        if not 0.5 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0.5, 1), got {self.delta}")
        if not 1 <= self.iterations <= 20:
            raise ConfigError(f"iterations must be in [1, 20], got {self.iterations}")
        if self.crop < 4 * self.patch or self.crop % 8:
            raise ConfigError(f"crop must be a multiple of 8 and >= 4 * patch, got {self.crop}")
        if not 1 <= self.crops <= 256:
            raise ConfigError(f"crops must be in [1, 256], got {self.crops}")
        if self.channel not in ("luma", "rgb"):
            raise ConfigError(f"channel must be 'luma' or 'rgb', got {self.channel!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The authors' recipe (family "slsp"): a token transformer over (crop, Phi); the default trains on a 2-core CPU,
    `paper()` is the GPU size."""

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
            raise ConfigError(f"ModelConfig is family 'slsp', got {self.family!r}")
        if self.score not in SCORES:
            raise ConfigError(f"score must be one of {SCORES}, got {self.score!r}")

    @staticmethod
    def paper() -> "ModelConfig":
        return ModelConfig(crop=256, token=16, dim=768, depth=12, heads=12, latent=512, decoder_channels=512)


@dataclass(frozen=True)
class FluctConfig:
    """Family "fluct": a convolutional encoder over the crop, its high-pass residual and Phi (slsp/fluct.py).

    `gain` scales the residual (8-bit levels per unit), so +-1 gray level is an input of order one.
    """

    family: str = "fluct"
    crop: int = 64
    width: int = 16
    latent: int = 64
    gain: float = 2.0
    residual: bool = True  # the high-pass residual channels beside the crop (off only to measure them)
    score: str = "disc"

    def __post_init__(self) -> None:
        if self.family != "fluct":
            raise ConfigError(f"FluctConfig is family 'fluct', got {self.family!r}")
        if self.crop % 8 or self.crop < 32:
            raise ConfigError(f"crop must be a multiple of 8 and >= 32, got {self.crop}")
        if not 4 <= self.width <= 256 or not 4 <= self.latent <= 1024:
            raise ConfigError(f"width must be in [4, 256] and latent in [4, 1024], got {self.width}, {self.latent}")
        if not self.gain > 0:
            raise ConfigError(f"gain must be > 0, got {self.gain}")
        if self.score != "disc":
            raise ConfigError(f"family 'fluct' scores with 'disc' only, got {self.score!r}")


# Named sizes per family: "small" trains on a 2-core CPU; the recipe's "paper" size is the authors' (a GPU's).
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "slsp": {"small": ModelConfig(), "paper": ModelConfig.paper()},
    "fluct": {"small": FluctConfig()},
}
MODEL_CONFIGS: dict[str, type] = {family: type(sizes["small"]) for family, sizes in MODEL_SIZES.items()}


def model_config(family: str, size: str = "small", **options: Any) -> ModelConfig | FluctConfig:
    """A family's model config at a named size, with `options` (None = the size's own value) replacing fields."""
    if family not in MODEL_SIZES:
        raise ConfigError(f"unknown model family {family!r}; known: {', '.join(MODEL_SIZES)}")
    if size not in MODEL_SIZES[family]:
        raise ConfigError(f"family {family!r} has sizes {', '.join(MODEL_SIZES[family])}, not {size!r}")
    base = MODEL_SIZES[family][size]
    fields = {f.name for f in dataclasses.fields(base)}
    given = {k: v for k, v in options.items() if v is not None}
    if unknown := sorted(set(given) - fields):
        raise ConfigError(f"family {family!r} has no option {', '.join(unknown)}")
    return dataclasses.replace(base, **given)
# `slsp train` options a family sets when the command line leaves them out (the shipped default is family fluct).
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "fluct": {"steps": 1500, "holdout": 0.25, "crops_per_image": 16, "canonical": "resize:0.5"},
    "slsp": {"steps": 1000, "holdout": 0.15, "crops_per_image": 32, "canonical": "none"},
}


@dataclass(frozen=True)
class FusionConfig:
    """Image score = sigmoid(z_model + z_noise): both parts standardised on held-out real photos only.

    z_model = (mean crop score - model_mean) / model_std; z_noise = (-log(sigma) - noise_mean) / noise_std, so a
    cleaner image (lower TrSOR sigma) scores higher. Disabled: the image score is the crop aggregate alone.
    """

    enabled: bool = False
    model_mean: float = 0.0
    model_std: float = 1.0
    noise_mean: float = 0.0
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        if not (self.model_std > 0 and self.noise_std > 0):
            raise ConfigError("fusion standard deviations must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe (AdamW, warm-up, half-cycle cosine) and data split."""

    steps: int = 1000
    batch: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    warmup: int = 100
    holdout: float = 0.15
    crops_per_image: int = 32
    fake_phi: str = "same"  # one of FAKE_PHI
    fake_mix: str = "full"  # one of FAKE_MIX
    seed: int = 0
    target_fpr: float = 0.05
    # Family fluct: each held-out real photo is calibrated as stored and under these transforms (slsp/transforms.py),
    # so the threshold spans processing histories the photo may still go through.
    calibration: tuple[str, ...] = ("none",)
    chain: bool = True  # family fluct: the processing chain on real crops and pseudo-fakes (off only to measure it)

    def __post_init__(self) -> None:
        from slsp.transforms import Transform

        object.__setattr__(self, "calibration", tuple(self.calibration))
        for spec in self.calibration:
            Transform(spec)
        if self.steps < 1 or self.batch < 2:
            raise ConfigError("steps must be >= 1 and batch >= 2")
        if not 0.0 < self.holdout < 0.5:
            raise ConfigError(f"holdout must be in (0, 0.5), got {self.holdout}")
        if self.fake_phi not in FAKE_PHI:
            raise ConfigError(f"fake_phi must be one of {FAKE_PHI}, got {self.fake_phi!r}")
        if self.fake_mix not in FAKE_MIX:
            raise ConfigError(f"fake_mix must be one of {FAKE_MIX}, got {self.fake_mix!r}")
        if not 0.0 < self.target_fpr < 0.5:
            raise ConfigError(f"target_fpr must be in (0, 0.5), got {self.target_fpr}")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild a detector: TrSOR, model, aggregation and the calibrated threshold."""

    trsor: TrsorConfig = field(default_factory=TrsorConfig)
    model: ModelConfig | FluctConfig = field(default_factory=ModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    aggregate: str = "mean"
    threshold: float = 0.5
    target_fpr: float = 0.05
    max_pixels: int = 50_000_000
    # Applied to every decoded image before TrSOR, in the library and in the server alike (slsp/transforms.py):
    # "none", "jpeg:Q" or "resize:F". A canonical processing step that both classes go through, so an image's
    # own processing history (never compressed, camera JPEG, resized) weighs less in the score.
    canonical: str = "none"

    def __post_init__(self) -> None:
        from slsp.transforms import Transform

        Transform(self.canonical)
        if self.trsor.crop != self.model.crop:
            raise ConfigError(f"TrSOR crop {self.trsor.crop} != model crop {self.model.crop}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "DetectorConfig":
        try:
            m = d.get("model", {})
            family = m.get("family", "slsp")
            if family not in MODEL_CONFIGS:
                raise ConfigError(f"unknown model family {family!r}; known: {', '.join(MODEL_CONFIGS)}")
            return DetectorConfig(
                trsor=TrsorConfig(**d.get("trsor", {})),
                model=MODEL_CONFIGS[family](**m),
                fusion=FusionConfig(**d.get("fusion", {})),
                **{k: v for k, v in d.items() if k not in ("trsor", "model", "fusion")},
            )
        except TypeError as e:
            raise ConfigError(f"unknown or missing config key: {e}") from e

    @staticmethod
    def load(path: Path) -> "DetectorConfig":
        try:
            return DetectorConfig.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
