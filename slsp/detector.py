"""The whole detector as one module (TrSOR -> model -> score) plus checkpoint I/O (safetensors + JSON config)."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from slsp.config import DetectorConfig
from slsp.contract import CONFIG, WEIGHTS
from slsp.errors import CheckpointError
from slsp.families import build_model
from slsp.fluctuation import log_kurtosis
from slsp.imaging import check_fluctuation, check_image
from slsp.scoring import Scorer
from slsp.transforms import Canonical
from slsp.trsor import Pyramid


class Detection(NamedTuple):
    score: Tensor  # () float32, synthetic score in [0, 1]
    verdict: Tensor  # () bool, score >= threshold
    positions: Tensor  # (K, 2) int64
    crop_scores: Tensor  # (K,) float32
    crop_kurtosis: Tensor  # (K,) float32, log kurtosis of each crop's fluctuation (NaN where flat)
    valid: Tensor  # (K,) bool
    sigma: Tensor  # () float32, TrSOR noise estimate
    low_resolution: Tensor  # () bool, scored at native scale under the low-resolution calibration


class Detector(nn.Module):
    """uint8 (H, W, 3) and its low-resolution flag -> Detection; the same graph is exported whole (`fused`) and
    per stage. The canonical transform, which sets the flag, is applied before the graph (`analyze`)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trsor = Pyramid(cfg.trsor)
        self.model = build_model(cfg.model)
        self.scorer = Scorer(cfg.aggregate, cfg.threshold, cfg.fusion, cfg.low_resolution, cfg.trsor.levels)
        self.canonical = Canonical(cfg.canonical, cfg.trsor.crop, cfg.low_resolution.enabled)

    def forward(self, image: Tensor, low_resolution: Tensor) -> Detection:
        return self._run(image, low_resolution)[0]

    def _run(self, image: Tensor, low_resolution: Tensor) -> tuple[Detection, Tensor]:
        """The detection and the full-resolution Phi it was computed from (Phi is not an exported output)."""
        t = self.trsor(image)
        crop_scores, crop_kurtosis = self.model(t.crops, t.crop_phi), log_kurtosis(t.crops)
        score, verdict = self.scorer(crop_scores, crop_kurtosis, t.valid, t.sigma, low_resolution)
        d = Detection(score, verdict, t.positions, crop_scores, crop_kurtosis, t.valid, t.sigma, low_resolution)
        return d, t.phi

    def with_config(self, cfg: DetectorConfig) -> "Detector":
        """The same weights under another config (threshold, score, aggregation); the model shape must match."""
        out = Detector(cfg)
        out.model.load_state_dict(self.model.state_dict())
        return out.eval()

    @property
    def min_side(self) -> int:
        """The graph's smallest image side: one crop."""
        return self.cfg.trsor.crop

    @property
    def crop_sides(self) -> np.ndarray:
        """(K,) the side of each crop slot in the scored image's pixels: C at level 0, C * 2^l at level l."""
        t = self.cfg.trsor
        return np.repeat(t.crop * 2 ** np.arange(t.levels), t.crops)

    @property
    def min_input_side(self) -> int:
        """The smallest side of an input image: one crop after the canonical transform, or one crop at native
        scale where the model has a low-resolution calibration."""
        return self.canonical.min_side

    @property
    def min_side_reason(self) -> str:
        """Why `min_input_side` is the minimum, for the error that refuses a smaller image."""
        if self.min_input_side == self.canonical.full_side and self.min_input_side != self.min_side:
            return f"one {self.min_side}-pixel crop after the canonical {self.cfg.canonical}"
        return "one crop at native scale" if self.canonical.low_resolution else "one crop"

    def check(self, image: np.ndarray, name: str = "<image>") -> None:
        """The shape contract the graph cannot enforce itself: uint8 H x W x 3, each side >= `min_input_side`."""
        check_image(image, self.min_input_side, name, self.min_side_reason)

    @torch.inference_mode()
    def analyze(self, image: np.ndarray, name: str = "<image>") -> tuple[Detection, np.ndarray]:
        """Detection plus the over-smooth mask Phi, from one pass. Positions and Phi refer to the image as
        scored, i.e. after the canonical transform (`canonical`), or as given for a low-resolution image."""
        self.check(image, name)
        pixels, low = self.canonical(image)
        d, phi = self._run(torch.from_numpy(np.ascontiguousarray(pixels)), torch.tensor(low))
        check_fluctuation(float(d.sigma), name)
        return d, phi.numpy()

    def detect(self, image: np.ndarray, name: str = "<image>") -> Detection:
        return self.analyze(image, name)[0]


def default_dir() -> Path:
    return Path(str(resources.files("slsp") / "default"))


def checkpoint_hash(run: Path) -> str:
    return hashlib.sha256((Path(run) / WEIGHTS).read_bytes()).hexdigest()


def save(det: Detector, run: Path) -> None:
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in det.model.state_dict().items()}, str(run / WEIGHTS))
    (run / CONFIG).write_text(det.cfg.to_json() + "\n")


def load(run: Path | None = None) -> Detector:
    """Load a run folder (config.json + model.safetensors); None loads the shipped default model."""
    run = default_dir() if run is None else Path(run)
    if not (run / CONFIG).is_file() or not (run / WEIGHTS).is_file():
        raise CheckpointError(f"{run}: expected {CONFIG} and {WEIGHTS} (a folder written by `slsp train`)")
    det = Detector(DetectorConfig.load(run / CONFIG))
    try:
        det.model.load_state_dict(load_file(str(run / WEIGHTS)))
    except (RuntimeError, OSError) as e:
        raise CheckpointError(f"{run / WEIGHTS}: does not match {run / CONFIG} ({e})") from e
    return det.eval()
