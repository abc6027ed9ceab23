"""The family registry: declarations load without torch, each family's classes are where its registration says, and
a new family is one home plus one registration (a toy family here trains, calibrates and detects through the one
loop without a change anywhere else)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from conftest import synthetic_photo
from slsp import detector as det_io
from slsp.config import DetectorConfig, TrainConfig, TrsorConfig
from slsp.errors import ConfigError
from slsp.families import FAMILIES, family
from slsp.families.base import Encoding, prepare
from slsp.families.spec import Family
from slsp.train import train


def test_declarations_import_without_torch() -> None:
    code = ("import sys; from slsp.families import FAMILIES; from slsp.config import DetectorConfig; "
            "[f.model_config() for f in FAMILIES.values()]; assert 'torch' not in sys.modules, 'torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_is_complete(name: str) -> None:
    fam = family(name)
    cfg = fam.model_config()
    assert cfg.family == name and fam.config is type(cfg) and isinstance(fam.train_options(), fam.options)
    assert set(fam.defaults) <= {f.name for f in dataclasses.fields(TrainConfig)} | {"canonical", "levels"}
    assert isinstance(fam.load("model")(cfg), nn.Module)
    training = fam.load("training")
    assert isinstance(training.split_per_folder, bool) and isinstance(training.fuse, bool)
    for method in ("objectives", "optimizers", "batch", "step"):
        assert callable(getattr(training, method)), method


def test_options_of_another_family_are_refused() -> None:
    with pytest.raises(ConfigError, match="family 'fluct' has no training option fake_mix"):
        family("fluct").train_options(fake_mix="partial")
    with pytest.raises(ConfigError, match="fake_mix must be one of"):
        family("slsp").train_options(fake_mix="nope")
    assert family("fluct").train_options(chain=None, fake_mix=None) == family("fluct").options()
    with pytest.raises(ConfigError, match="takes FluctOptions"):
        train([], Path("unused"), DetectorConfig(model=family("fluct").model_config()),
              TrainConfig(options=family("slsp").options()))


# A whole family in one place: declaration, model and training step. Registering it is one entry in FAMILIES.
@dataclass(frozen=True)
class ToyConfig:
    family: str = "toy"
    crop: int = 32
    width: int = 4


@dataclass(frozen=True)
class ToyOptions:
    blur: float = 1.0


class ToyModel(nn.Module):
    prepare = staticmethod(prepare)

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(4, cfg.width, 3, padding=1)
        self.disc = nn.Linear(cfg.width, 1)

    def encode(self, x: Tensor, phi: Tensor) -> Encoding:
        f = F.gelu(self.conv(torch.cat([x, phi], 1))).mean((2, 3))
        return Encoding(f, f)

    def forward(self, crops: Tensor, crop_phi: Tensor) -> Tensor:
        return torch.sigmoid(-self.disc(self.encode(*self.prepare(crops, crop_phi)).pooled)[:, 0])


class ToyTraining:
    split_per_folder = True
    fuse = False

    def __init__(self, model: ToyModel, tcfg: TrainConfig, options: ToyOptions) -> None:
        self.model, self.tcfg, self.options = model, tcfg, options

    @property
    def source_crop(self) -> int:
        return self.model.cfg.crop

    def sources(self, image: np.ndarray, index: int) -> list[np.ndarray]:
        return [image]  # crops from the photo alone

    def objectives(self) -> nn.Module:
        return self.model

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"sgd": torch.optim.SGD(self.model.parameters(), lr=self.tcfg.lr)}

    def batch(self, crops: Tensor, phis: Tensor, step: int, rank: int, world: int, device: torch.device
              ) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(self.tcfg.seed * 1_000_003 + step * world + rank)
        x, phi = prepare(crops[torch.randint(crops.shape[0], (self.tcfg.batch,), generator=g)].to(device),
                         phis[:1].expand(self.tcfg.batch, -1, -1).to(device))
        return x, phi, F.avg_pool2d(x, 3, 1, 1)  # the pseudo-fake: the crop with its fluctuations averaged away

    def step(self, objectives: nn.Module, opts: dict[str, torch.optim.Optimizer], batch: tuple[Tensor, ...]
             ) -> dict[str, float]:
        x, phi, fake = batch
        m = self.model
        logits = m.disc(torch.cat([m.encode(x, phi).pooled, m.encode(fake, phi).pooled]))[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, (torch.arange(len(logits)) < len(x)).float())
        opts["sgd"].zero_grad()
        loss.backward()
        opts["sgd"].step()
        return {"loss": loss.item()}


TOY = Family(name="toy", summary="a test family", sizes={"small": ToyConfig()}, options=ToyOptions,
             defaults={"steps": 3}, model=f"{__name__}:ToyModel", training=f"{__name__}:ToyTraining")


def test_a_new_family_is_one_home_plus_one_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, "toy", TOY)
    real = tmp_path / "real"
    real.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_photo(96, 112, seed=i)).save(real / f"r{i}.png")
    cfg = DetectorConfig(trsor=TrsorConfig(crop=32, crops=2), model=TOY.model_config())
    out = train([real], tmp_path / "run", cfg, TrainConfig(steps=3, batch=4, warmup=1, crops_per_image=2,
                                                            holdout=0.25, options=TOY.train_options(blur=2.0)),
                quiet=True)
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["family"] == "toy" and info["step"] == 3 and info["train_config"]["options"] == {"blur": 2.0}
    det = det_io.load(tmp_path / "run")  # config.json names the family; the registry builds its model
    assert isinstance(det.model, ToyModel) and det.cfg == out and out.threshold != cfg.threshold
    assert 0 <= float(det.detect(synthetic_photo(80, 90)).score) <= 1
