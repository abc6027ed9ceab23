"""ONNX -> TensorRT (`slsp export --trt`): raw serialized engines (`model.plan`, no metadata prefix) for Triton.

The model stage gets one optimization profile over the crop batch (min 1, opt = one image's K crops, max =
--max-batch). TrSOR is attempted with a profile over H and W; where the parser or builder refuses it, the
reason is returned and TrSOR stays on ONNX Runtime. Engines are tied to the GPU architecture and TensorRT
version that built them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slsp import contract
from slsp.errors import RuntimeMissing, SlspError
from slsp.export.runners import import_tensorrt

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """Per-input (min, opt, max) shapes of one optimization profile."""

    shapes: dict[str, tuple[Shape, Shape, Shape]]


def model_profile(crop: int, k: int, max_batch: int) -> Profile:
    if max_batch < k:
        raise SlspError(f"--max-batch {max_batch} must be >= the crops per image ({k}) so one image fits a batch")
    # The batch dim N runs from 1 to max_batch, optimal at one image's K crops.
    return Profile({t.name: tuple(tuple(n if d == -1 else d for d in t.shape(crop, k)) for n in (1, k, max_batch))
                    for t in contract.MODEL.inputs})


def trsor_profile(crop: int, max_side: int = 4096, opt_side: int = 1024) -> Profile:
    (image,) = contract.TRSOR.inputs
    return Profile({image.name: tuple((s, s, 3) for s in (crop, opt_side, max_side))})


def builder_flags(fp16: bool, tf32: bool) -> list[str]:
    """Names of trt.BuilderFlag members to set; FP16 only where asked (it changes numerics)."""
    flags = []
    if fp16:
        flags.append("FP16")
    if not tf32:
        flags.append("__CLEAR_TF32")  # TF32 is on by default in TensorRT; clear it for bit-closer FP32
    return flags


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    profile: Profile,
    fp16: bool = False,
    tf32: bool = True,
    timing_cache: Path | None = None,
    workspace_gib: float = 4.0,
) -> None:
    """Parse, configure and build one engine; raises SlspError with the parser's messages on failure."""
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise RuntimeMissing("building TensorRT engines needs an NVIDIA GPU; none is visible")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SlspError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    for flag in builder_flags(fp16, tf32):
        if flag == "__CLEAR_TF32":
            config.clear_flag(trt.BuilderFlag.TF32)
        else:
            config.set_flag(getattr(trt.BuilderFlag, flag))
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.shapes.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SlspError(f"TensorRT could not build an engine from {onnx_path.name} (see the log above)")
    plan_path.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))


def build_all(onnx_dir: Path, crop: int, k: int, max_batch: int, fp16: bool, tf32: bool = True) -> dict[str, str]:
    """The model stage's engine always; TrSOR's where TensorRT takes it. Returns a per-stage status for the report."""
    cache = onnx_dir / contract.TRT_TIMING_CACHE
    model, trsor = contract.MODEL, contract.TRSOR
    build_engine(
        onnx_dir / model.onnx, onnx_dir / contract.plan(model), model_profile(crop, k, max_batch), fp16, tf32, cache
    )
    status = {model.name: "tensorrt"}
    try:
        build_engine(onnx_dir / trsor.onnx, onnx_dir / contract.plan(trsor), trsor_profile(crop), False, False, cache)
        status[trsor.name] = "tensorrt"
    except SlspError as e:
        status[trsor.name] = f"onnxruntime (TensorRT refused it: {e})"
    return status
