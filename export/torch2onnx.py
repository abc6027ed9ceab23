"""PyTorch -> ONNX: the three stages Triton chains (trsor, model, score) and one fused graph of the whole pipeline.

Each graph's tensor names, dtypes and dims are those of `slsp.contract` (tests/test_contract.py checks them).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor

import slsp
from slsp import contract
from slsp.detector import Detector
from slsp.export.stages import stage_modules

OPSET = 17


def example_inputs(det: Detector) -> dict[str, tuple[Tensor, ...]]:
    """Tracing inputs of odd sizes so no dimension is mistaken for a constant."""
    g = torch.Generator().manual_seed(0)
    c, k = det.cfg.trsor.crop, det.cfg.trsor.slots
    image = torch.randint(0, 256, (c * 3 + 5, c * 4 + 3, 3), generator=g, dtype=torch.uint8)
    crops = torch.randint(0, 256, (3, c, c, 3), generator=g, dtype=torch.uint8)
    phi = (torch.rand(3, c, c, generator=g) > 0.5).to(torch.float32)
    scores = torch.rand(k, generator=g)
    kurtosis = torch.rand(k, generator=g) * 3.0
    valid = torch.rand(k, generator=g) > 0.3
    sigma = torch.rand((), generator=g) * 3.0
    low = torch.tensor(True)
    return {
        contract.TRSOR.name: (image,),
        contract.MODEL.name: (crops, phi),
        contract.SCORING.name: (scores, kurtosis, valid, sigma, low),
        contract.FUSED.name: (image, low),
    }


def metadata(det: Detector, checkpoint_hash: str, stage: str, fp16: bool) -> dict[str, str]:
    cfg = det.cfg
    return {
        "slsp_version": slsp.__version__,
        "stage": stage,
        "patch": str(cfg.trsor.patch),
        "crop": str(cfg.trsor.crop),
        "K": str(cfg.trsor.slots),
        "levels": str(cfg.trsor.levels),
        "iterations": str(cfg.trsor.iterations),
        "delta": str(cfg.trsor.delta),
        "threshold": repr(cfg.threshold),
        "aggregate": cfg.aggregate,
        "canonical": cfg.canonical,  # applied before the graph, by the caller (Detector.analyze, the decode member)
        "score": cfg.model.score,
        "precision": "fp16" if fp16 and stage in (contract.MODEL.name, contract.FUSED.name) else "fp32",
        "checkpoint_sha256": checkpoint_hash,
        "config_json": cfg.to_json(),
    }


def export(
    det: Detector, out_dir: Path, checkpoint_hash: str, fp16: bool = False, opset: int = OPSET
) -> dict[str, Path]:
    """Write each stage's graph (`contract.STAGES`: trsor, model, score and the fused slsp), each fully checked;
    returns their paths by stage."""
    if opset > 20:
        raise ValueError("TensorRT's ONNX parser takes opsets up to 20")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    det = det.eval()
    modules, inputs = stage_modules(det, fp16), example_inputs(det)
    paths = {}
    for stage, spec in contract.STAGES.items():
        path = out_dir / spec.onnx
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                modules[stage], inputs[stage], str(path), dynamo=False, opset_version=opset,
                input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=spec.dynamic_axes(),
            )
        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        for k, v in metadata(det, checkpoint_hash, stage, fp16).items():
            proto.metadata_props.add(key=k, value=v)
        proto.producer_name, proto.producer_version = "slsp", slsp.__version__
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(path))
        paths[stage] = path
    return paths


def read_metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


