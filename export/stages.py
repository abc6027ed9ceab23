"""The torch modules behind each stage of `slsp.contract` (trsor, model, score, and the fused pipeline): what the
ONNX export traces, what the parity gate's PyTorch reference runs, and what the gpu-python repository's members
serve with PyTorch. Torch only (no onnx), so a Triton member can import it."""

from __future__ import annotations

import copy

from torch import Tensor, nn

from slsp import contract
from slsp.detector import Detector
from slsp.fluctuation import log_kurtosis


class TrsorStage(nn.Module):
    """The TrSOR stage: every pyramid level, or (single_level, for compiled backends that run the pyramid around
    it, `slsp.pyramid`) level 0 alone."""

    def __init__(self, det: Detector, single_level: bool = False) -> None:
        super().__init__()
        self.trsor = det.trsor.level if single_level else det.trsor

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        o = self.trsor(image)
        return o.crops, o.crop_phi, o.positions, o.valid, o.sigma


class ModelStage(nn.Module):
    """The model stage: the model's per-crop scores and the crops' log kurtosis (weight-free, always float32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: Tensor, crop_phi: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(crops, crop_phi), log_kurtosis(crops)


class ScoreStage(nn.Module):
    def __init__(self, det: Detector) -> None:
        super().__init__()
        self.scorer = det.scorer

    def forward(self, crop_scores: Tensor, crop_kurtosis: Tensor, valid: Tensor, sigma: Tensor,
                low_resolution: Tensor) -> tuple[Tensor, Tensor]:
        return self.scorer(crop_scores, crop_kurtosis, valid, sigma, low_resolution)


class FusedStage(nn.Module):
    def __init__(self, det: Detector) -> None:
        super().__init__()
        self.det = det

    def forward(self, image: Tensor, low_resolution: Tensor) -> tuple[Tensor, ...]:
        d = self.det(image, low_resolution)
        return tuple(getattr(d, n) for n in contract.FUSED.output_names)


def stage_modules(det: Detector, fp16: bool = False) -> dict[str, nn.Module]:
    """The module behind each exported graph; with fp16 only the model's weights are half precision."""
    model = copy.deepcopy(det.model).half() if fp16 else det.model
    fused = det
    if fp16:
        fused = copy.deepcopy(det)
        fused.model = model
    return {contract.TRSOR.name: TrsorStage(det), contract.MODEL.name: ModelStage(model),
            contract.SCORING.name: ScoreStage(det),
            contract.FUSED.name: FusedStage(fused)}
