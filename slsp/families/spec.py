"""What a model family declares (torch-free, so configs load in torch-free serving and client code) and what its
training code gives the one training loop (`slsp/train.py`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from slsp.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor, nn, optim


class ModelConfig(Protocol):
    """Every family's model config is a frozen dataclass with at least these fields."""

    family: str
    crop: int


def _replace(base: Any, what: str, family: str, options: Mapping[str, Any]) -> Any:
    """`base` with the options that are not None replacing its fields; an option it has no field for is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    if unknown := sorted(set(given) - {f.name for f in dataclasses.fields(base)}):
        raise ConfigError(f"family {family!r} has no {what} {', '.join(unknown)}")
    return dataclasses.replace(base, **given)


@dataclass(frozen=True)
class Family:
    """One registration (slsp/families/__init__.py): the family's torch-free facts, and where its torch code lives.

    `model` and `training` are "module:Class" paths, imported when first used, so that reading a config never
    imports torch.
    """

    name: str
    summary: str  # one line for `slsp train --help`
    sizes: Mapping[str, ModelConfig]  # named model configs; "small" trains on a 2-core CPU
    options: type  # the family's training options: a frozen dataclass whose defaults are the family's
    defaults: Mapping[str, Any]  # TrainConfig / DetectorConfig / TrsorConfig fields set when a command leaves them out
    model: str  # its nn.Module: forward(crops uint8 (N, C, C, 3), crop_phi (N, C, C)) -> (N,) scores
    training: str  # its Training (below)

    @property
    def config(self) -> type:
        return type(self.sizes["small"])

    def model_config(self, size: str = "small", **options: Any) -> ModelConfig:
        """The model config at a named size, with `options` (None: the size's own value) replacing fields."""
        if size not in self.sizes:
            raise ConfigError(f"family {self.name!r} has sizes {', '.join(self.sizes)}, not {size!r}")
        return _replace(self.sizes[size], "option", self.name, options)

    def train_options(self, **options: Any) -> Any:
        """The family's training options, `options` (None: the family's default) replacing its defaults."""
        return _replace(self.options(), "training option", self.name, options)

    def load(self, what: str) -> Any:
        """The class behind `model` or `training`."""
        module, _, attr = getattr(self, what).partition(":")
        return getattr(import_module(module), attr)


class Training(Protocol):
    """What a family's training code gives the loop: like a LightningModule's `training_step`, the family says what a
    batch and a step are; the loop (slsp/train.py) owns the run folder, resume, checkpoints, the learning-rate
    schedule, devices and data parallelism, crop extraction and calibration."""

    split_per_folder: ClassVar[bool]  # hold out a share of each real folder (else of all photos pooled)
    fuse: ClassVar[bool]  # calibration also fits the noise fusion (FusionConfig)

    def __init__(self, model: nn.Module, tcfg: Any, options: Any) -> None: ...

    @property
    def source_crop(self) -> int:
        """Side of the TrSOR crops the training sources are cut at (batches cut model inputs from them)."""

    def sources(self, image: np.ndarray, index: int) -> list[np.ndarray]:
        """The images training photo number `index` gives TrSOR crops from, made once before training: the photo,
        and any the family derives from it (seeded by the index alone)."""

    def objectives(self) -> nn.Module:
        """The module whose forward computes the losses (under torchrun, its gradients are averaged over the ranks)."""

    def optimizers(self) -> dict[str, optim.Optimizer]:
        """The optimisers by name (their state is checkpointed under these names)."""

    def batch(self, crops: Tensor, phis: Tensor, step: int, rank: int, world: int, device: torch.device
              ) -> tuple[Tensor, ...]:
        """The step's batch on `device` (its arithmetic done there) from uint8 sources and their Phi on the CPU: a
        function of (seed, step, rank) alone, so a resumed run sees the batches the interrupted one would have."""

    def step(self, objectives: nn.Module, opts: dict[str, optim.Optimizer], batch: tuple[Tensor, ...]
             ) -> dict[str, float]:
        """One optimisation step on a batch already on the device (the loop has set the learning rate); its logs."""
