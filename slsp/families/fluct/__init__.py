"""Family "fluct", the shipped default: a convolutional encoder over the crop, its high-pass residual and Phi
(`model.py`), trained real-only against content-preserving pseudo-fakes (`pseudofakes.py`) through one processing
chain (`training.py`), its score fused with the noise level. This module is its torch-free declaration."""

from __future__ import annotations

from dataclasses import dataclass

from slsp.errors import ConfigError
from slsp.families.spec import Family


@dataclass(frozen=True)
class FluctConfig:
    """The model. `gain` scales the residual (8-bit levels per unit), so +-1 gray level is an input of order one."""

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


# Pseudo-fake kinds (pseudofakes.py): denoised, re-noised wrongly, resampled, a latent decoder's 8x upsampling,
# a GAN generator's checkerboard upsampling, re-noised with a heavy-tailed (amplitude-modulated) residual, and
# re-noised with noise upsampled from a coarse grid by a decoder's stages.
FAKE_KINDS = ("denoise", "renoise", "resample", "decoder", "gan", "sparse", "latent")
# What the shipped model trained with: `resample` half the draws, the rest denoise, re-noise and sparse (benchmarks/
# DETECTION.md's seeded rows; the model before it drew the first three kinds equally).
SHIPPED_FAKES = ("denoise", "renoise", "resample", "resample", "resample", "resample", "sparse", "sparse")
SCALES = (1, 2, 4, 8)  # FluctOptions.scales: the views of a training photo that can be sources


@dataclass(frozen=True)
class FluctOptions:
    chain: bool = True  # the processing chain on real crops and pseudo-fakes (off only to measure it)
    # The kinds drawn from, uniformly over the entries: a kind named twice is drawn twice as often.
    fakes: tuple[str, ...] = SHIPPED_FAKES
    # Simulated-camera versions of each training photo (camera.py: its content downscaled 3-4x through a random
    # camera), made once and added to the photo's sources; 0: none.
    camera: int = 0
    photos: bool = True  # the photos themselves among the sources (off, with camera > 0, to measure cameras alone)
    # The views of each photo taken as sources, by scale: 1 the photo as given, 2 halved as the canonical resize:0.5
    # does, 4 and 8 the box averages of the halved view (the pyramid levels the detector scores). A view smaller
    # than a source crop is skipped.
    scales: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fakes", tuple(self.fakes))
        object.__setattr__(self, "scales", tuple(self.scales))
        if not self.scales or len(set(self.scales)) != len(self.scales) or not set(self.scales) <= set(SCALES):
            raise ConfigError(f"scales must be distinct views among {', '.join(map(str, SCALES))}, got {self.scales}")
        if not 0 <= self.camera <= 8:
            raise ConfigError(f"camera must be in [0, 8] versions per photo, got {self.camera}")
        if not self.photos and not self.camera:
            raise ConfigError("without the photos (photos=False) there must be simulated cameras (camera > 0)")
        if not self.fakes or not set(self.fakes) <= set(FAKE_KINDS):
            raise ConfigError(f"fakes must be kinds among {', '.join(FAKE_KINDS)}, got {self.fakes}")


FAMILY = Family(
    name="fluct",
    summary="the shipped default: residual CNN vs content-preserving pseudo-fakes, fused with the noise level and "
            "the crops' kurtosis",
    # "medium": twice the width (about 4x the compute), to measure whether capacity limits the small model
    sizes={"small": FluctConfig(), "medium": FluctConfig(width=32, latent=128)},
    options=FluctOptions,
    # Three pyramid levels: the crop scores at 1/2, 1/4 and 1/8 of the image, fused, and the crops' log kurtosis as a
    # two-sided part of the fusion (benchmarks/DETECTION.md).
    defaults={"steps": 1500, "holdout": 0.25, "crops_per_image": 16, "canonical": "resize:0.5", "levels": 3,
              "kurtosis": True},
    model="slsp.families.fluct.model:FluctModel",
    training="slsp.families.fluct.training:FluctTraining",
)
