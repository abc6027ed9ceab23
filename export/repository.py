"""Triton model repository: the `slsp` ensemble over decode+TrSOR, the batched model and scoring.

Configs are built as dicts, validated by parsing them into Triton's own `ModelConfig` protobuf, and written
with `text_format`. Two targets from the same ONNX artifacts:
- `cpu`: every member on the Python backend running ONNX Runtime (the server bundled with nvidia-pytriton);
- `gpu`: decode+TrSOR on the Python backend (ONNX Runtime CUDA), the model on `tensorrt_plan` (when
  model.plan exists) or `onnxruntime_onnx` with KIND_GPU, scoring on `onnxruntime_onnx`, for the NGC container.
Each export adds a new version folder to every member (built in a temporary folder, then renamed in).
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import struct
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from PIL import Image

from slsp.config import DetectorConfig
from slsp.errors import SlspError
from slsp.export import torch2aoti, trsor_native
from slsp.imaging import DEFAULT_MAX_PIXELS
from slsp.transforms import Transform

ENSEMBLE, DECODE, MODEL, SCORE = "slsp", "slsp_decode_trsor", "slsp_model", "slsp_score"
MEMBERS = (DECODE, MODEL, SCORE)


@dataclass(frozen=True)
class ServingConfig:
    """Serving knobs; the defaults suit a 2-core CPU (see benchmarks/ for how they were chosen)."""

    target: str = "cpu"
    max_batch: int = 64
    queue_delay_us: int = 2000
    model_instances: int = 1
    decode_instances: int = 2
    intra_op_threads: int = 1  # decode+TrSOR and score members: one thread per instance, two instances
    model_threads: int = 2  # the batched model is the bottleneck on 2 cores: 1.00x vs 0.87x in-process ORT at c=8
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = 64 << 20
    max_inflight: int = 64

    def __post_init__(self) -> None:
        if self.target not in ("cpu", "gpu"):
            raise SlspError(f"--target must be 'cpu' or 'gpu', got {self.target!r}")


def _params(d: dict[str, object]) -> dict:
    return {k: {"string_value": str(v)} for k, v in d.items()}


def _io(name: str, dtype: str, dims: list[int], reshape: list[int] | None = None) -> dict:
    d = {"name": name, "data_type": dtype, "dims": dims}
    if reshape is not None:
        d["reshape"] = {"shape": reshape}
    return d


def configs(cfg: DetectorConfig, s: ServingConfig, trt: bool, trsor_file: str = "trsor.onnx") -> dict[str, dict]:
    c, k = cfg.trsor.crop, cfg.trsor.crops
    if s.max_batch < k:
        raise SlspError(f"max_batch {s.max_batch} must be >= the {k} crops of one image")
    device = "cuda" if s.target == "gpu" else "cpu"
    common = {"device": device, "intra_op_threads": s.intra_op_threads}
    decode = {
        "name": DECODE, "backend": "python", "max_batch_size": 0,
        "input": [_io("IMAGE", "TYPE_STRING", [1])],
        "output": [_io("crops", "TYPE_UINT8", [-1, c, c, 3]), _io("crop_phi", "TYPE_FP32", [-1, c, c]),
                   _io("positions", "TYPE_INT64", [-1, 2]), _io("valid", "TYPE_BOOL", [-1]), _io("sigma", "TYPE_FP32", [1])],
        "instance_group": [{"kind": "KIND_CPU", "count": s.decode_instances}],
        # The canonical transform and the minimum side come from the version folder's slsp_config.json: versions
        # share this config, and a rolled-back version must keep its own.
        "parameters": _params({**common, "trsor_file": trsor_file, "max_pixels": s.max_pixels, "max_bytes": s.max_bytes}),
        "model_warmup": [{"name": "photo", "batch_size": 0, "inputs": {"IMAGE": {
            "data_type": "TYPE_STRING", "dims": [1], "input_data_file": "photo"}}}],
    }
    gpu_native = s.target == "gpu"
    model = {
        "name": MODEL, "max_batch_size": s.max_batch,
        "input": [_io("crops", "TYPE_UINT8", [c, c, 3]), _io("crop_phi", "TYPE_FP32", [c, c])],
        "output": [_io("crop_scores", "TYPE_FP32", [1], [] if gpu_native else None)],
        "dynamic_batching": {"preferred_batch_size": sorted({k, min(2 * k, s.max_batch), s.max_batch}),
                             "max_queue_delay_microseconds": s.queue_delay_us},
        "model_warmup": [{"name": "crops", "batch_size": k, "inputs": {
            "crops": {"data_type": "TYPE_UINT8", "dims": [c, c, 3], "random_data": True},
            "crop_phi": {"data_type": "TYPE_FP32", "dims": [c, c], "zero_data": True}}}],
    }
    if not gpu_native:
        model.update(backend="python", instance_group=[{"kind": "KIND_CPU", "count": s.model_instances}],
                     parameters=_params({**common, "intra_op_threads": s.model_threads}))
    elif trt:
        model.update(platform="tensorrt_plan", default_model_filename="model.plan",
                     instance_group=[{"kind": "KIND_GPU", "count": s.model_instances, "profile": ["0"]}])
    else:
        model.update(backend="onnxruntime", default_model_filename="model.onnx",
                     instance_group=[{"kind": "KIND_GPU", "count": s.model_instances}],
                     optimization={"graph": {"level": 1}})
    score = {
        "name": SCORE, "max_batch_size": 0,
        "input": [_io("crop_scores", "TYPE_FP32", [-1, 1], [-1] if gpu_native else None), _io("valid", "TYPE_BOOL", [-1]),
                  _io("sigma", "TYPE_FP32", [1], [] if gpu_native else None)],
        "output": [_io("score", "TYPE_FP32", [1], [] if gpu_native else None),
                   _io("verdict", "TYPE_BOOL", [1], [] if gpu_native else None)],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    }
    if gpu_native:
        score.update(backend="onnxruntime", default_model_filename="score.onnx")
    else:
        score.update(backend="python", parameters=_params(common))
    step = lambda m, i, o: {"model_name": m, "model_version": -1, "input_map": i, "output_map": o}  # noqa: E731
    ensemble = {
        "name": ENSEMBLE, "platform": "ensemble", "max_batch_size": 0,
        "input": [_io("IMAGE", "TYPE_STRING", [1])],
        "output": [_io("SCORE", "TYPE_FP32", [1]), _io("VERDICT", "TYPE_BOOL", [1]), _io("POSITIONS", "TYPE_INT64", [-1, 2]),
                   _io("CROP_SCORES", "TYPE_FP32", [-1, 1]), _io("VALID", "TYPE_BOOL", [-1]), _io("SIGMA", "TYPE_FP32", [1])],
        "ensemble_scheduling": {"step": [
            step(DECODE, {"IMAGE": "IMAGE"}, {"crops": "crops", "crop_phi": "crop_phi", "positions": "POSITIONS",
                                              "valid": "VALID", "sigma": "SIGMA"}),
            step(MODEL, {"crops": "crops", "crop_phi": "crop_phi"}, {"crop_scores": "CROP_SCORES"}),
            step(SCORE, {"crop_scores": "CROP_SCORES", "valid": "VALID", "sigma": "SIGMA"},
                 {"score": "SCORE", "verdict": "VERDICT"}),
        ]},
    }
    return {DECODE: decode, MODEL: model, SCORE: score, ENSEMBLE: ensemble}


def to_proto(d: dict):
    """Validate a config dict against Triton's schema (unknown fields and bad enums raise)."""
    from tritonclient.grpc import model_config_pb2

    try:
        return json_format.ParseDict(d, model_config_pb2.ModelConfig())
    except json_format.ParseError as e:
        raise SlspError(f"invalid Triton config for {d.get('name')}: {e}") from e


def read_config(path: Path):
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def _warmup_image(path: Path, side: int) -> None:
    """A serialized TYPE_STRING element (4-byte little-endian length + PNG bytes) of a smooth noisy photo."""
    import io

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    img = np.clip((80 + 0.3 * yy + 0.2 * xx)[..., None] + rng.normal(0, 2, (side, side, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    path.write_bytes(struct.pack("<I", len(buf.getvalue())) + buf.getvalue())


def versions(repo: Path, model: str) -> list[int]:
    d = Path(repo) / model
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []


def trsor_files(artifacts: Path, target: str) -> list[str]:
    """The decode member's TrSOR, fastest first: the C++ kernel (--native), the AOTInductor package (--aoti), ONNX.
    Both compiled ones hold code for the exporting CPU, so only the CPU target serves them."""
    if target == "cpu" and (artifacts / trsor_native.LIBRARY).is_file():
        return [trsor_native.LIBRARY, trsor_native.META]
    if target == "cpu" and (artifacts / torch2aoti.PACKAGE).is_file():
        return [torch2aoti.PACKAGE]
    return ["trsor.onnx"]


def write(artifacts: Path, repo: Path, s: ServingConfig = ServingConfig()) -> int:
    """Add one new version of every member to `repo` (created if missing); returns the version number."""
    artifacts, repo = Path(artifacts), Path(repo)
    cfg = DetectorConfig.load(artifacts / "config.json")
    trt = (artifacts / "model.plan").is_file()
    trsor = trsor_files(artifacts, s.target)
    protos = {name: to_proto(d) for name, d in configs(cfg, s, trt, trsor[0]).items()}
    repo.mkdir(parents=True, exist_ok=True)
    version = 1 + max([0] + [v for m in MEMBERS for v in versions(repo, m)])
    files = {DECODE: trsor, MODEL: ["model.plan"] if trt and s.target == "gpu" else ["model.onnx"], SCORE: ["score.onnx"]}
    py = {DECODE: "decode_trsor.py", MODEL: "model.py", SCORE: "score.py"}
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=repo))
    try:
        for name, proto in protos.items():
            mdir = staging / name
            vdir = mdir / str(version if name != ENSEMBLE else 1)
            vdir.mkdir(parents=True)
            (mdir / "config.pbtxt").write_text(text_format.MessageToString(proto))
            for f in files.get(name, []):
                shutil.copy2(artifacts / f, vdir / f)
            if proto.backend == "python":
                src = resources.files("slsp.export.triton") / py[name]
                (vdir / "model.py").write_text(src.read_text())
                # Compiled here so the stub finds a valid cache: a __pycache__ written at load time would change
                # the version folder's mtime and make a polling server load the new version a second time.
                src_py = str(vdir / "model.py")
                py_compile.compile(src_py, cfile=importlib.util.cache_from_source(src_py), doraise=True)
            if name == DECODE:
                (mdir / "warmup").mkdir()
                # Shared by all versions: four crops at least, so a rolled-back version with another canonical still fits.
                side = max(4 * cfg.trsor.crop, 2 * Transform(cfg.canonical).min_side(cfg.trsor.crop))
                _warmup_image(mdir / "warmup" / "photo", side + 3)
        shutil.copy2(artifacts / "config.json", staging / DECODE / str(version) / "slsp_config.json")
        for name in protos:
            _install(staging / name, repo / name, version if name != ENSEMBLE else 1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version


def _install(staged: Path, dst: Path, version: int) -> None:
    """Move the new version folder in first, then swap config and warm-up data by rename."""
    dst.mkdir(exist_ok=True)
    if not (dst / str(version)).exists():
        os.replace(staged / str(version), dst / str(version))
    if (staged / "warmup").exists():
        old = dst / "warmup"
        if old.exists():
            shutil.rmtree(old)
        os.replace(staged / "warmup", old)
    os.replace(staged / "config.pbtxt", dst / "config.pbtxt")


def rollback(repo: Path) -> int:
    """Retire the newest version of every member (moved to `.retired-<v>`), so the previous one serves again.

    Triton only loads numeric version folders, so a server polling the repository switches back on its next
    poll; the retired folder stays on disk for inspection. Returns the version now serving.
    """
    repo = Path(repo)
    current = {m: versions(repo, m) for m in MEMBERS}
    newest = {vs[-1] for vs in current.values() if vs}
    if len(newest) != 1 or any(len(vs) < 2 for vs in current.values()):
        raise SlspError(f"{repo}: nothing to roll back to (versions: {current})")
    (v,) = newest
    for m in MEMBERS:
        os.replace(repo / m / str(v), repo / m / f".retired-{v}")
    return max(versions(repo, MODEL))
