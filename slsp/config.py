"""Frozen, validated configuration; the resolved config is saved as JSON beside every artifact."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slsp.errors import ConfigError
from slsp.families import family
from slsp.families.recipe import RecipeConfig
from slsp.families.spec import ModelConfig

AGGREGATES = ("mean", "max")


@dataclass(frozen=True)
class TrsorConfig:
    """TrSOR: patch size p, Gamma-null quantile delta, fixed iteration count, crop size, crops per level and the
    number of pyramid levels it selects crops from (`trsor.Pyramid`: level l is the image box-averaged over
    2^l x 2^l pixels; the noise estimate and Phi are level 0's). `skip_clipped`: patches holding a clipped pixel
    (black or white in all three channels) are neither over-smooth nor part of the noise estimate, since clipping
    leaves no fluctuation to judge there, in a photo or a generated image alike."""

    patch: int = 7
    delta: float = 0.99
    iterations: int = 3
    crop: int = 64
    crops: int = 16
    channel: str = "luma"  # "luma" or "rgb" (per-channel energy, summed)
    levels: int = 1
    skip_clipped: bool = False

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
        if not 1 <= self.levels <= 4:
            raise ConfigError(f"levels must be in [1, 4], got {self.levels}")

    @property
    def slots(self) -> int:
        """Crops per image over all levels (the contract's K): `crops` per level, level 0 first."""
        return self.crops * self.levels


@dataclass(frozen=True)
class FusionConfig:
    """Image score = sigmoid(z_model + z_noise): both parts standardised on held-out real photos only.

    z_model = (mean crop score - model_mean) / model_std; z_noise = (-log(sigma) - noise_mean) / noise_std, so a
    cleaner image (lower TrSOR sigma) scores higher. Disabled: the image score is the crop aggregate alone.

    With pyramid levels (TrsorConfig.levels), the crop aggregate of level l >= 1 is a part too, standardised by
    `level_means[l - 1]`, `level_stds[l - 1]`, and the score is sigmoid(2 x the mean of the parts the image has): a
    level too small for one crop is left out, and with no levels it is sigmoid(z_model + z_noise) as above.

    `kurtosis` adds a two-sided part: k = the median log kurtosis over level 0's valid crops
    (`slsp.fluctuation.log_kurtosis`), z = (|k - kurtosis_center| - kurtosis_mean) / kurtosis_std, where the center
    is the held-out real photos' mean of k and the mean and std are of their distances from it. An image whose crops
    are all flat has no such part. Absent from a config, it is off, so older configs score as they did.
    """

    enabled: bool = False
    model_mean: float = 0.0
    model_std: float = 1.0
    noise_mean: float = 0.0
    noise_std: float = 1.0
    level_means: tuple[float, ...] = ()
    level_stds: tuple[float, ...] = ()
    kurtosis: bool = False
    kurtosis_center: float = 0.0
    kurtosis_mean: float = 0.0
    kurtosis_std: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_means", tuple(float(v) for v in self.level_means))
        object.__setattr__(self, "level_stds", tuple(float(v) for v in self.level_stds))
        if not (self.model_std > 0 and self.noise_std > 0 and self.kurtosis_std > 0
                and all(v > 0 for v in self.level_stds)):
            raise ConfigError("fusion standard deviations must be > 0")
        if len(self.level_means) != len(self.level_stds):
            raise ConfigError("fusion needs one standard deviation per level mean")


@dataclass(frozen=True)
class LowResolutionConfig:
    """Images too small for the canonical transform (a side below one crop after it) but with at least one crop at
    native scale: scored without the transform, under their own fusion and threshold, both calibrated on held-out
    real photos downscaled to such sizes (`calibrate.calibrate_low_resolution`). Disabled: such images are refused.
    """

    enabled: bool = False
    threshold: float = 0.5
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.fusion, dict):
            object.__setattr__(self, "fusion", FusionConfig(**self.fusion))


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings (AdamW, warm-up, half-cycle cosine, data split, calibration) and the family's own
    training options (`options`: the family's options dataclass; None takes the family's defaults)."""

    steps: int = 1000
    batch: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    warmup: int = 100
    holdout: float = 0.15
    crops_per_image: int = 32
    seed: int = 0
    target_fpr: float = 0.05
    # Each held-out real photo is calibrated as stored and under these transforms (slsp/transforms.py), so the
    # threshold spans processing histories the photo may still go through.
    calibration: tuple[str, ...] = ("none",)
    kurtosis: bool = False  # the fusion's kurtosis part (FusionConfig.kurtosis), for families that fuse
    options: Any = None

    def __post_init__(self) -> None:
        from slsp.transforms import Transform

        object.__setattr__(self, "calibration", tuple(self.calibration))
        for spec in self.calibration:
            Transform(spec)
        if self.steps < 1 or self.batch < 2:
            raise ConfigError("steps must be >= 1 and batch >= 2")
        if not 0.0 < self.holdout < 0.5:
            raise ConfigError(f"holdout must be in (0, 0.5), got {self.holdout}")
        if not 0.0 < self.target_fpr < 0.5:
            raise ConfigError(f"target_fpr must be in (0, 0.5), got {self.target_fpr}")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild a detector: TrSOR, model, aggregation and the calibrated threshold."""

    trsor: TrsorConfig = field(default_factory=TrsorConfig)
    model: ModelConfig = field(default_factory=RecipeConfig)  # the family's model config
    fusion: FusionConfig = field(default_factory=FusionConfig)
    aggregate: str = "mean"
    threshold: float = 0.5
    target_fpr: float = 0.05
    max_pixels: int = 50_000_000
    # Applied to every decoded image before TrSOR, in the library and in the server alike (slsp/transforms.py):
    # "none", "jpeg:Q" or "resize:F". A canonical processing step that both classes go through, so an image's
    # own processing history (never compressed, camera JPEG, resized) weighs less in the score.
    canonical: str = "none"
    low_resolution: LowResolutionConfig = field(default_factory=LowResolutionConfig)

    def __post_init__(self) -> None:
        from slsp.transforms import Transform

        Transform(self.canonical)
        if self.canonical.startswith("thumb"):
            raise ConfigError("thumb:S is an evaluation condition; a canonical transform is none, png, jpeg:Q or "
                              "resize:F")
        if self.trsor.crop != self.model.crop:
            raise ConfigError(f"TrSOR crop {self.trsor.crop} != model crop {self.model.crop}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        for name, f in (("fusion", self.fusion), ("low_resolution.fusion", self.low_resolution.fusion)):
            if len(f.level_means) >= self.trsor.levels:
                raise ConfigError(f"{name} standardises {len(f.level_means)} pyramid levels above level 0, but "
                                  f"TrSOR has {self.trsor.levels} levels")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "DetectorConfig":
        try:
            m = d.get("model", {})
            return DetectorConfig(
                trsor=TrsorConfig(**d.get("trsor", {})),
                model=family(m.get("family", "slsp")).config(**m),
                fusion=FusionConfig(**d.get("fusion", {})),
                low_resolution=LowResolutionConfig(**d.get("low_resolution", {})),
                **{k: v for k, v in d.items() if k not in ("trsor", "model", "fusion", "low_resolution")},
            )
        except TypeError as e:
            raise ConfigError(f"unknown or missing config key: {e}") from e

    @staticmethod
    def load(path: Path) -> "DetectorConfig":
        try:
            return DetectorConfig.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
