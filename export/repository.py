"""Triton model repository: the `slsp` ensemble over decode+TrSOR, the batched model and scoring.

Configs are built as dicts, validated by parsing them into Triton's own `ModelConfig` protobuf, and written
with `text_format`. Three targets from the same artifacts:
- `cpu`: every member on the Python backend running ONNX Runtime (the server bundled with nvidia-pytriton);
- `gpu-python`: the bundled server on a GPU machine with PyTorch (no container): decode+TrSOR and the batched model
  on the Python backend in PyTorch CUDA from the exported weights (nvJPEG and the canonical resize on the GPU, the
  decoded image handed to TrSOR without leaving the device), scoring as in `cpu`;
- `gpu`: decode+TrSOR on the Python backend (nvJPEG decode and the canonical resize on the GPU where PyTorch and
  torchvision are installed in the server's Python; TrSOR on ONNX Runtime CUDA), the model on `tensorrt_plan` (when
  model.plan exists) or `onnxruntime_onnx` with KIND_GPU, scoring on the Python backend (CPU), for the NGC container.
Each export adds a new version folder to every member (built in a temporary folder, then renamed in); each version
folder keeps a copy of the config it was written with (`VERSION_CONFIG`), so a rollback can bring back both.
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

from google.protobuf import json_format, text_format

from slsp import contract
from slsp.canary import canary_image
from slsp.config import DetectorConfig
from slsp.contract import TensorSpec
from slsp.errors import SlspError
from slsp.export import trsor_backends
from slsp.imaging import DEFAULT_MAX_PIXELS
from slsp.transforms import Transform

ENSEMBLE = contract.ENSEMBLE
VERSION_CONFIG = "written.pbtxt"  # the member config a version was written with (Triton reads config.pbtxt only)
DECODE, MODEL, SCORE = (contract.MEMBERS[s.name] for s in contract.CHAIN)
MEMBERS = (DECODE, MODEL, SCORE)
SOURCES = {DECODE: "decode_trsor.py", MODEL: "model.py", SCORE: "score.py"}  # in slsp.export.triton
TARGETS = ("cpu", "gpu", "gpu-python")
TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
                "bytes": "TYPE_STRING"}


@dataclass(frozen=True)
class ServingConfig:
    """Serving knobs; the defaults suit a 2-core CPU (see benchmarks/ for how they were chosen)."""

    target: str = "cpu"
    max_batch: int = 192  # four images of the shipped model's 48 crops (16 per pyramid level)
    queue_delay_us: int = 2000
    model_instances: int = 1
    decode_instances: int = 2
    intra_op_threads: int = 1  # decode+TrSOR and score members: one thread per instance, two instances
    model_threads: int = 2  # the batched model is the bottleneck on 2 cores (docs/benchmarks-log.md, "Server")
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = 64 << 20
    # Requests waiting for the decode member beyond this many, or longer than queue_timeout_s, are refused at once
    # (UNAVAILABLE: "Exceeds maximum queue size" / timeout), so a flood queues neither memory nor latency without end.
    max_inflight: int = 64
    queue_timeout_s: float = 30.0
    torch_device: str = "cuda"  # where the gpu-python target's PyTorch members run ("cpu" tests them without a GPU)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise SlspError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.max_inflight < 1 or not self.queue_timeout_s > 0:
            raise SlspError("--max-inflight must be >= 1 and the queue timeout > 0")


def _params(d: dict[str, object]) -> dict:
    return {k: {"string_value": str(v)} for k, v in d.items()}


def _io(t: TensorSpec, crop: int, *, batched: bool = False, after_batch: bool = False, native: bool = False,
        name: str | None = None) -> dict:
    """A config input or output for tensor `t` of the contract. A batching member leaves out the batch dim, and a
    tensor it produced arrives elsewhere as [-1, ...]; a scalar travels as [1]. Where a native backend runs the
    graph (`native`), a reshape gives the graph its own dims."""
    graph = list(t.shape(crop))[1 if batched else 0 :]  # K is -1: Triton sees crops as a variable-length dim
    dims = [-1, *(graph[1:] or [1])] if after_batch else graph or [1]
    d = {"name": name or t.name, "data_type": TRITON_TYPES[t.dtype], "dims": dims}
    if native and dims != graph:
        d["reshape"] = {"shape": graph}
    return d


def configs(cfg: DetectorConfig, s: ServingConfig, trt: bool, trsor_file: str = contract.TRSOR.onnx) -> dict[str, dict]:
    c, k = cfg.trsor.crop, cfg.trsor.slots
    if s.max_batch < k:
        raise SlspError(f"max_batch {s.max_batch} must be >= the {k} crops of one image")
    device = {"gpu": "cuda", "gpu-python": s.torch_device}.get(s.target, "cpu")
    common = {"device": device, "intra_op_threads": s.intra_op_threads}
    trsor, model_stage, scoring = contract.TRSOR, contract.MODEL, contract.SCORING
    image = contract.ENSEMBLE_INPUT
    # Every member's queue is bounded, not only the decode member's: a client may call any member directly, and an
    # unbounded queue behind it lets a flood grow memory and latency without end (issue 38, finding 4). A request
    # over the bound or past the timeout is refused at once, as at the decode member.
    queue = {"default_queue_policy": {"max_queue_size": s.max_inflight, "timeout_action": "REJECT",
                                      "default_timeout_microseconds": int(s.queue_timeout_s * 1e6)}}
    decode = {
        "name": DECODE,
        "backend": "python",
        "max_batch_size": 0,
        "input": [_io(image, c)],
        "output": [_io(t, c) for t in contract.DECODED],
        "instance_group": [{"kind": "KIND_CPU", "count": s.decode_instances}],
        # No batching (max_batch_size 0): the dynamic batcher is here for its bounded queue.
        "dynamic_batching": queue,
        # The canonical transform and the minimum side come from the version folder's SERVED_CONFIG: versions
        # share this config, and a rolled-back version must keep its own.
        "parameters": _params(
            {**common, "trsor_file": trsor_file, "max_pixels": s.max_pixels, "max_bytes": s.max_bytes}
        ),
        "model_warmup": [
            {
                "name": "photo",
                "batch_size": 0,
                "inputs": {
                    image.name: {
                        "data_type": TRITON_TYPES[image.dtype],
                        "dims": list(image.dims),
                        "input_data_file": "photo",
                    }
                },
            }
        ],
    }
    gpu_native = s.target == "gpu"
    model = {
        "name": MODEL, "max_batch_size": s.max_batch,
        "input": [_io(t, c, batched=True) for t in model_stage.inputs],
        "output": [_io(t, c, batched=True, native=gpu_native) for t in model_stage.outputs],
        "dynamic_batching": {"preferred_batch_size": sorted({k, min(2 * k, s.max_batch), s.max_batch}),
                             "max_queue_delay_microseconds": s.queue_delay_us, **queue},
        "model_warmup": [{"name": "crops", "batch_size": k, "inputs": {
            t.name: {"data_type": TRITON_TYPES[t.dtype], "dims": _io(t, c, batched=True)["dims"],
                     **({"random_data": True} if t.dtype == "uint8" else {"zero_data": True})}
            for t in model_stage.inputs}}],
    }
    if not gpu_native:  # the Python backend (ONNX Runtime, or PyTorch for gpu-python) places its own work
        model.update(backend="python", instance_group=[{"kind": "KIND_CPU", "count": s.model_instances}],
                     parameters=_params({**common, "intra_op_threads": s.model_threads}))
    elif trt:
        model.update(platform="tensorrt_plan", default_model_filename=contract.plan(model_stage),
                     instance_group=[{"kind": "KIND_GPU", "count": s.model_instances, "profile": ["0"]}])
    else:
        model.update(backend="onnxruntime", default_model_filename=model_stage.onnx,
                     instance_group=[{"kind": "KIND_GPU", "count": s.model_instances}],
                     optimization={"graph": {"level": 1}})
    batched_outputs = {t.name for t in model_stage.outputs}
    # Always the Python backend, on the CPU (scalar arithmetic): it also forwards the fused outputs computed earlier
    # (contract.FORWARDED), under their ensemble names.
    inputs = (*scoring.inputs, *(t for t in contract.FORWARDED if t not in scoring.inputs))
    score = {
        "name": SCORE, "max_batch_size": 0, "backend": "python",
        "input": [_io(t, c, after_batch=t.name in batched_outputs) for t in inputs],
        "output": [_io(t, c) for t in scoring.outputs]
        + [_io(t, c, after_batch=t.name in batched_outputs, name=contract.served(t.name)) for t in contract.FORWARDED],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": _params({**common, "device": "cpu"}),
        "dynamic_batching": queue,  # no batching (max_batch_size 0): its bounded queue
    }

    def step(member: str, stage: contract.Stage) -> dict:
        """Tensors between members keep the graphs' names; the ensemble's outputs (upper-cased) all come from the
        scoring member, its own and the ones it forwards."""
        # The decode member takes the encoded image where the TrSOR graph takes decoded pixels.
        names = [image.name if n == contract.IMAGE else n for n in stage.input_names]
        outputs = {t.name: t.name for t in (contract.DECODED if stage is trsor else stage.outputs)}
        if stage is scoring:
            names += [t.name for t in contract.FORWARDED if t.name not in names]
            outputs = {n: contract.served(n) for n in stage.output_names}
            outputs.update({contract.served(t.name): contract.served(t.name) for t in contract.FORWARDED})
        return {"model_name": member, "model_version": -1, "input_map": {n: n for n in names}, "output_map": outputs}

    ensemble = {
        "name": ENSEMBLE,
        "platform": "ensemble",
        "max_batch_size": 0,
        "input": [_io(image, c)],
        "output": [
            _io(t, c, after_batch=t.name in batched_outputs, name=contract.served(t.name)) for t in contract.SERVED
        ],
        "ensemble_scheduling": {"step": [step(m, st) for m, st in zip(MEMBERS, contract.CHAIN)]},
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


def max_bytes(repo: Path) -> int:
    """The largest encoded image the repository's decode member accepts (`ServingConfig.max_bytes` at export)."""
    params = read_config(Path(repo) / DECODE / "config.pbtxt").parameters
    return int(params["max_bytes"].string_value) if "max_bytes" in params else ServingConfig().max_bytes


def _warmup_image(path: Path, side: int) -> None:
    """A serialized TYPE_STRING element (4-byte little-endian length + PNG bytes) of the canary's photo-like image."""
    data = canary_image(side)
    path.write_bytes(struct.pack("<I", len(data)) + data)


def versions(repo: Path, model: str) -> list[int]:
    d = Path(repo) / model
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []


def check_served(repo: Path) -> None:
    """Refuse to serve a repository whose model and score members another slsp version wrote (their tensors differ
    from this version's contract, which the members' code reads): every request would fail."""
    for stage, member in ((contract.MODEL, MODEL), (contract.SCORING, SCORE)):
        path = Path(repo) / member / "config.pbtxt"
        if not path.is_file():
            raise SlspError(f"{repo}: no {member}/config.pbtxt; write the repository with slsp export --repo")
        cfg = read_config(path)
        given, taken = [t.name for t in cfg.output], {t.name for t in cfg.input}
        if not set(stage.input_names) <= taken or (stage is contract.MODEL and given != stage.output_names):
            raise SlspError(f"{path} takes {sorted(taken)} and gives {given}, another slsp version's contract: this "
                            f"one's {stage.name} stage takes {stage.input_names} and gives {stage.output_names}. "
                            "Write a new version with this one (slsp export --repo), or serve with the version "
                            "that wrote it.")


def write(artifacts: Path, repo: Path, s: ServingConfig = ServingConfig()) -> int:
    """Add one new version of every member to `repo` (created if missing); returns the version number."""
    from slsp.export.build import check_contract

    artifacts, repo = Path(artifacts), Path(repo)
    check_contract(artifacts)
    cfg = DetectorConfig.load(artifacts / contract.CONFIG)
    model_plan = contract.plan(contract.MODEL)
    trt = (artifacts / model_plan).is_file()
    trsor = trsor_backends.served(artifacts, s.target).files
    protos = {name: to_proto(d) for name, d in configs(cfg, s, trt, trsor[0]).items()}
    repo.mkdir(parents=True, exist_ok=True)
    version = 1 + max([0] + [v for m in MEMBERS for v in versions(repo, m)])
    model_files = {"gpu": [model_plan if trt else contract.MODEL.onnx],
                   "gpu-python": [contract.WEIGHTS, contract.CONFIG]}.get(s.target, [contract.MODEL.onnx])
    files = {DECODE: trsor, MODEL: model_files, SCORE: [contract.SCORING.onnx]}
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=repo))
    try:
        for name, proto in protos.items():
            mdir = staging / name
            vdir = mdir / str(version if name != ENSEMBLE else 1)
            vdir.mkdir(parents=True)
            (mdir / "config.pbtxt").write_text(text_format.MessageToString(proto))
            if name != ENSEMBLE:
                shutil.copy2(mdir / "config.pbtxt", vdir / VERSION_CONFIG)
            for f in files.get(name, []):
                if not (artifacts / f).is_file():
                    raise SlspError(f"{artifacts} has no {f}, which --target {s.target} serves; export again")
                shutil.copy2(artifacts / f, vdir / f)
            if proto.backend == "python":
                src = resources.files("slsp.export.triton") / SOURCES[name]
                (vdir / "model.py").write_text(src.read_text())
                # Compiled here so the stub finds a valid cache: a __pycache__ written at load time would change
                # the version folder's mtime and make a polling server load the new version a second time.
                src_py = str(vdir / "model.py")
                py_compile.compile(src_py, cfile=importlib.util.cache_from_source(src_py), doraise=True)
            if name == DECODE:
                (mdir / "warmup").mkdir()
                # Shared by all versions: four crops at least, so a rolled-back version with another canonical
                # still fits.
                side = max(4 * cfg.trsor.crop, 2 * Transform(cfg.canonical).min_side(cfg.trsor.crop))
                _warmup_image(mdir / "warmup" / "photo", side + 3)
        shutil.copy2(artifacts / contract.CONFIG, staging / DECODE / str(version) / contract.SERVED_CONFIG)
        for name in protos:
            _install(staging / name, repo / name, version if name != ENSEMBLE else 1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version


def ensure(repo: Path) -> bool:
    """Export the shipped model and write it as `repo`'s first version when `repo` does not exist (what `slsp serve`
    starts from): for the GPU (gpu-python) where PyTorch sees one, else for the CPU; returns whether it did. The
    artifacts stay beside it in `<repo>.artifacts`."""
    import torch

    from slsp.export.build import build, default_images
    from slsp.imaging import collect
    from slsp.progress import stderr

    repo = Path(repo)
    if repo.is_dir():
        return False
    # The shipped weights passed the full gate when released; here the gate checks this machine's runtimes, and 8
    # photos at their own size do that in seconds instead of minutes for the full gate.
    found = default_images()
    quick = collect(found)[:8] if found else None
    artifacts = repo.parent / f"{repo.name}.artifacts"
    stderr.print(
        f"{repo} missing: exporting the shipped model (artifacts in {artifacts}, parity gate on "
        f"{len(quick) if quick else 'synthetic'} images; `slsp export --repo` runs the full gate)",
        soft_wrap=True,
    )
    build(None, artifacts, images=quick, sizes=0, quiet=False)
    target = "gpu-python" if torch.cuda.is_available() else "cpu"
    stderr.print(f"writing {repo} for --target {target}")
    write(artifacts, repo, ServingConfig(target=target))
    return True


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


def rollback(repo: Path) -> tuple[int, int]:
    """Serve the previous version again by writing it forward: the version before the newest is copied, with the
    config it was written with, as a new version of every member. Returns (new version, the version it copies).

    A rollback is then the same event as an update, which a polling server handles by loading the new version
    before it lets the old one go. Removing the newest folder instead leaves each member to notice the removal on
    its own poll, and a member that misses it keeps serving the newest version beside the others' previous one.
    """
    repo = Path(repo)
    current = {m: versions(repo, m) for m in MEMBERS}
    newest = {vs[-1] for vs in current.values() if vs}
    if len(newest) != 1 or any(len(vs) < 2 for vs in current.values()):
        raise SlspError(f"{repo}: nothing to roll back to (versions: {current})")
    (last,) = newest
    previous = sorted(set.intersection(*(set(vs) for vs in current.values())) - {last})
    if not previous:
        raise SlspError(f"{repo}: no earlier version that every member has (versions: {current})")
    source, version = previous[-1], last + 1
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=repo))
    try:
        for m in MEMBERS:
            src = repo / m / str(source)
            # copy2 keeps mtimes, so model.py's compiled cache stays valid and loading writes nothing.
            shutil.copytree(src, staging / m / str(version), copy_function=shutil.copy2)
            written = src / VERSION_CONFIG
            shutil.copy2(written if written.is_file() else repo / m / "config.pbtxt", staging / m / "config.pbtxt")
        for m in MEMBERS:
            _install(staging / m, repo / m, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version, source
