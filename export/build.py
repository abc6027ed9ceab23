"""`slsp export`: ONNX (and TensorRT) artifacts that pass the parity gate, or nothing at all.

Everything is built in a temporary folder beside the destination, checked, and only then renamed into
place; a failing build leaves the previous artifacts untouched and its parity report in `<out>.parity-failed/`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from slsp import contract
from slsp import detector as det_io
from slsp.detector import Detector
from slsp.errors import CheckpointError, ParityError, RuntimeMissing, SlspError
from slsp.export import onnx2trt, parity, stages, torch2aoti, torch2onnx, trsor_backends, trsor_native
from slsp.export.runners import OrtRunner, Pipeline, TorchRunner, TrtRunner
from slsp.progress import stderr

RUNTIMES = ("ort-cpu", "ort-cpu-fused", "aoti-cpu", "native-cpu", "ort-cuda", "torch-cuda", "tensorrt")
TRSOR, MODEL, SCORING, FUSED = contract.TRSOR, contract.MODEL, contract.SCORING, contract.FUSED


def default_images() -> list[Path]:
    """Real photos for the gate: $SLSP_PARITY_IMAGES (os.pathsep-separated) or ../shared/data/real/dev."""
    env = os.environ.get("SLSP_PARITY_IMAGES")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    for base in (Path.cwd(), *Path.cwd().parents):
        cand = base.parent / "shared" / "data" / "real" / "dev"
        if cand.is_dir():
            return [cand]
    return []


def synthetic_images(seed: int, crop: int) -> list[tuple[str, np.ndarray]]:
    """Used only when no real photo is available: smooth ramps with mild noise and a textured half."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in ((crop, crop), (crop * 3 + 1, crop * 2 + 7), (crop * 5 + 3, crop * 4)):
        yy, xx = np.mgrid[0:h, 0:w]
        base = 60 + 120 * (yy / h) + 40 * (xx / w)
        img = base[..., None] + rng.normal(0, 2, (h, w, 3))
        img[:, w // 2 :] += rng.normal(0, 25, (h, w - w // 2, 3))
        out.append((f"synthetic_{h}x{w}", np.clip(img, 0, 255).astype(np.uint8)))
    return out


def make_runtimes(det: Detector, artifacts: Path, names: list[str] | None) -> tuple[list, dict[str, str]]:
    """Instantiate the requested runtimes (default: all); unavailable ones are skipped with their reason."""
    skipped: dict[str, str] = {}
    out = []
    for name in names or RUNTIMES:
        try:
            if name == "ort-cpu":
                out.append(Pipeline(name, *(OrtRunner(artifacts / s.onnx) for s in contract.CHAIN)))
            elif name == "ort-cpu-fused":
                out.append(OrtRunner(artifacts / FUSED.onnx, name=name))
            elif name in trsor_backends.COMPILED:
                out.append(cpu_pipeline(name, artifacts))
            elif name == "ort-cuda":
                out.append(
                    Pipeline(
                        name,
                        OrtRunner(artifacts / TRSOR.onnx, "cuda"),
                        OrtRunner(artifacts / MODEL.onnx, "cuda"),
                        OrtRunner(artifacts / SCORING.onnx),
                    )
                )
            elif name == "torch-cuda":
                out.append(TorchRunner(stages.FusedStage(det), FUSED.name, "cuda"))
            elif name == "tensorrt":
                if not (artifacts / contract.plan(MODEL)).is_file():
                    raise RuntimeMissing(
                        f"no {contract.plan(MODEL)} in {artifacts} (export with --trt on a GPU machine)"
                    )
                trsor_plan = artifacts / contract.plan(TRSOR)
                trsor = TrtRunner(trsor_plan) if trsor_plan.is_file() else OrtRunner(artifacts / TRSOR.onnx)
                out.append(
                    Pipeline(
                        name, trsor, TrtRunner(artifacts / contract.plan(MODEL)), OrtRunner(artifacts / SCORING.onnx)
                    )
                )
            else:
                raise SlspError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
        except RuntimeMissing as e:
            if names:
                raise
            skipped[name] = str(e)
    return out, skipped


def cpu_pipeline(name: str, artifacts: Path, threads: int = 0) -> Pipeline:
    """What the CPU server runs for artifacts exported with a compiled TrSOR (`trsor_backends.COMPILED`): that TrSOR,
    then model and score in ONNX Runtime."""
    trsor = trsor_backends.COMPILED[name].open(artifacts, "cpu", threads)
    return Pipeline(name, trsor, *(OrtRunner(artifacts / s.onnx, threads=threads) for s in (MODEL, SCORING)))


def compiled_pipelines(artifacts: Path, threads: int = 0) -> dict[str, Pipeline]:
    """Every compiled-TrSOR pipeline the artifacts hold, by runtime name."""
    return {n: cpu_pipeline(n, artifacts, threads) for n, b in trsor_backends.COMPILED.items() if b.present(artifacts)}


def served_pipeline(artifacts: Path) -> Pipeline | None:
    """The compiled-TrSOR pipeline a CPU repository written from these artifacts serves (None: it serves ONNX)."""
    backend = trsor_backends.served(artifacts, "cpu")
    return cpu_pipeline(backend.name, artifacts) if backend.compiled else None


def check(
    det: Detector,
    artifacts: Path,
    images: list[Path] | None = None,
    sizes: int = 2,
    seed: int = 0,
    runtimes: list[str] | None = None,
    extra: list | None = None,
    failure_dir: Path | None = None,
    quiet: bool = True,
) -> dict:
    """Run the parity gate on `artifacts` against `det` in PyTorch; returns the JSON report (ok flag inside)."""
    meta = torch2onnx.read_metadata(artifacts / FUSED.onnx)
    fp16 = meta.get("precision") == "fp16"
    sources = images if images is not None else default_images()
    # Images every runtime takes: the live server applies the canonical transform first, so its minimum applies.
    side = det.min_input_side
    imgs = parity.parity_images(sources, sizes, seed, side) if sources else synthetic_images(seed, side)
    if not imgs:
        raise SlspError(f"no usable image (each side >= {side}) under {', '.join(map(str, sources))}")
    runners, skipped = make_runtimes(det, artifacts, runtimes)
    runners += extra or []
    tol = parity.FP16 if fp16 else parity.FP32
    reference = TorchRunner(stages.FusedStage(det), FUSED.name)
    cmd = f"slsp parity --artifacts {artifacts}"
    results = parity.run_parity(imgs, reference, runners, tol, failure_dir, cmd, canonical=det.canonical, quiet=quiet)
    report = parity.as_json(results, tol)
    report.update(images=[n for n, _ in imgs], skipped=skipped, precision="fp16" if fp16 else "fp32",
                  table=parity.table(results), source="real" if sources else "synthetic")
    return report


def build(
    run: Path | None,
    out: Path,
    fp16: bool = False,
    trt: bool = False,
    aoti: bool = False,
    native: bool = False,
    max_batch: int = 192,
    images: list[Path] | None = None,
    sizes: int = 2,
    seed: int = 0,
    quiet: bool = True,
) -> dict:
    """Export, gate, then move into place atomically; raises ParityError (and keeps nothing) on failure."""
    say = (lambda _: None) if quiet else stderr.print
    det = det_io.load(run)
    run_dir = det_io.default_dir() if run is None else Path(run)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        torch2onnx.export(det, tmp, det_io.checkpoint_hash(run_dir), fp16=fp16)
        shutil.copy2(run_dir / contract.CONFIG, tmp / contract.CONFIG)
        # The weights too: the gpu-python repository's members run them in PyTorch (1.5 MB for the shipped model).
        shutil.copy2(run_dir / det_io.WEIGHTS, tmp / det_io.WEIGHTS)
        if aoti:
            say("compiling TrSOR with AOTInductor (the slowest step of the export)")
            torch2aoti.compile_trsor(det, tmp)
        if native:
            trsor_native.build(det, tmp)
        trt_status = {}
        if trt:
            cfg = det.cfg.trsor
            trt_status = onnx2trt.build_all(tmp, cfg.crop, cfg.slots, max_batch, fp16)
        say(f"exported to {tmp.name}; running the parity gate")
        report = check(det, tmp, images, sizes, seed, failure_dir=out.parent / f"{out.name}.parity-failed", quiet=quiet)
        report["tensorrt"] = trt_status
        (tmp / contract.PARITY_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        if not report["ok"]:
            raise ParityError(f"parity gate failed; nothing was written to {out}\n{report['table']}\n"
                              f"report and failing inputs: {out.parent / (out.name + '.parity-failed')}")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _replace_dir(src: Path, dst: Path) -> None:
    """Put src at dst; an existing dst is swapped out first and removed only after src is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_contract(artifacts: Path) -> None:
    """Refuse artifacts whose graphs take or give other tensors than this slsp's contract (exported by another
    version): the members would fail on every request."""
    import onnx

    for stage in contract.STAGES.values():
        graph = onnx.load(str(artifacts / stage.onnx), load_external_data=False).graph
        got = ([i.name for i in graph.input], [o.name for o in graph.output])
        if got != (stage.input_names, stage.output_names):
            raise SlspError(f"{artifacts / stage.onnx} takes {got[0]} and gives {got[1]}; this slsp expects "
                            f"{stage.input_names} and {stage.output_names}. Export the artifacts again with this "
                            "version (slsp export).")


def verify_artifacts(det: Detector, run_dir: Path, artifacts: Path) -> None:
    """Refuse to compare artifacts with a checkpoint they were not exported from, or whose graphs another slsp
    version's contract shaped (each image would fail on a missing tensor)."""
    meta = torch2onnx.read_metadata(artifacts / FUSED.onnx)
    want = det_io.checkpoint_hash(run_dir)
    if meta.get("checkpoint_sha256") != want:
        raise CheckpointError(f"{artifacts} was exported from checkpoint {meta.get('checkpoint_sha256', '?')[:12]}, "
                              f"not from {run_dir} ({want[:12]}); pass the matching --model")
    check_contract(artifacts)
