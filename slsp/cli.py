"""`slsp` command line: thin Typer commands over the library. Progress on stderr, results (or --json) on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from slsp.errors import SlspError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Detect AI-generated images from smooth-patch fluctuations.")

RunOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder from `slsp train`; default: the shipped model.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
def train(
    real: Annotated[list[Path], typer.Option("--real", help="Folder(s) of real photos (the only training data).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: weights, config, optimiser state.")],
    steps: int = 1000,
    batch: int = 64,
    lr: float = 2e-3,
    crop: Annotated[int, typer.Option(help="Crop size (model input and TrSOR crop).")] = 64,
    size: Annotated[str, typer.Option(help="Model size: 'small' (CPU) or 'paper' (GPU).")] = "small",
    score: Annotated[str, typer.Option(help="Per-crop score: disc, recon or latent.")] = "disc",
    fake_phi: Annotated[str, typer.Option(help="Phi for pseudo-fakes: 'same' or 'ones'.")] = "same",
    target_fpr: Annotated[float, typer.Option(help="Calibration target false-positive rate.")] = 0.05,
    seed: int = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train on real images only, then calibrate the threshold on a held-out real split."""
    import dataclasses

    from slsp.config import DetectorConfig, ModelConfig, TrainConfig, TrsorConfig
    from slsp.train import train as run_train

    if size not in ("small", "paper"):
        raise SlspError(f"--size must be 'small' or 'paper', got {size!r}")
    base = ModelConfig() if size == "small" else ModelConfig.paper()
    mcfg = dataclasses.replace(base, crop=crop if size == "small" else base.crop, score=score)
    cfg = DetectorConfig(trsor=TrsorConfig(crop=mcfg.crop), model=mcfg, target_fpr=target_fpr)
    tcfg = TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, fake_phi=fake_phi, target_fpr=target_fpr)
    result = run_train(real, out, cfg, tcfg, resume=resume, quiet=quiet)
    typer.echo(f"wrote {out} (threshold {result.threshold:.4f})")


@app.command()
def detect(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    model: RunOpt = None,
    explain: Annotated[Optional[Path], typer.Option(help="Write a PNG per image: Phi and the scored crops.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score images with the embedded detector (no server). Exit 1 if any image failed."""
    from slsp.detect import detect_paths

    results = detect_paths(paths, model, explain=explain, quiet=quiet)
    if json_out:
        _emit(results)
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['path']}\tERROR\t{r['error']}")
            else:
                typer.echo(f"{r['path']}\t{r['score']:.4f}\t{r['verdict']}\t(threshold {r['threshold']:.4f})")
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    real: Annotated[Path, typer.Option("--real", help="Folder of real images.")],
    fake: Annotated[Path, typer.Option("--fake", help="Folder of generated images; subfolders are generators.")],
    model: RunOpt = None,
    reencode: Annotated[str, typer.Option(help="Applied to both classes: none, png or jpeg:Q.")] = "none",
    perturb: Annotated[Optional[list[str]], typer.Option(help="Robustness rows: jpeg:Q or resize:F (repeatable).")] = None,
    trim_bottom: Annotated[int, typer.Option(help="Rows removed from the bottom of every image (watermarks).")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Folder for report.json and roc.png.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """AUROC, AP, TPR/FPR at the calibrated threshold, TPR at 1%/5% FPR; model vs a training-free baseline."""
    from slsp.evaluate import evaluate, plot_roc, table

    report = evaluate(real, fake, model, reencode=reencode, perturb=perturb, trim_bottom=trim_bottom, quiet=quiet)
    public = {k: v for k, v in report.items() if k != "scores"}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(public, indent=2) + "\n")
        plot_roc(report, out / "roc.png")
    if json_out:
        _emit(public)
    else:
        typer.echo(table(report))


@app.command("export")
def export_cmd(
    model: RunOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Artifacts folder (replaced only if the gate passes).")] = Path("artifacts"),
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision model stage.")] = False,
    trt: Annotated[bool, typer.Option("--trt", help="Also build TensorRT engines (needs tensorrt and a GPU).")] = False,
    max_batch: Annotated[int, typer.Option(help="Largest crop batch (TensorRT profile, Triton max_batch_size).")] = 64,
    images: Annotated[Optional[list[Path]], typer.Option(help="Real images for the parity gate.")] = None,
    sizes: Annotated[int, typer.Option(help="Random-size crops per parity image.")] = 2,
    json_out: JsonOpt = False,
) -> None:
    """Export ONNX (and TensorRT) artifacts; the parity gate runs first and a failing export writes nothing."""
    from slsp.export.build import build

    report = build(model, out, fp16=fp16, trt=trt, max_batch=max_batch, images=images, sizes=sizes)
    if json_out:
        _emit({k: v for k, v in report.items() if k != "table"})
    else:
        typer.echo(report["table"])
        for name, why in report["skipped"].items():
            typer.echo(f"skipped {name}: {why}")
        typer.echo(f"wrote {out}")


@app.command()
def parity(
    artifacts: Annotated[Path, typer.Option(help="Folder written by `slsp export`.")] = Path("artifacts"),
    model: RunOpt = None,
    images: Annotated[Optional[list[Path]], typer.Option(help="Real images (default: ../shared/data/real/dev).")] = None,
    sizes: Annotated[int, typer.Option(help="Random-size crops per image.")] = 2,
    seed: int = 0,
    runtime: Annotated[Optional[list[str]], typer.Option(help="Only these runtimes (repeatable); default: all available.")] = None,
    server: Annotated[Optional[str], typer.Option(help="Also check a live Triton server (grpc://host:port or http://...).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare every available runtime with PyTorch on real images; exit 1 on any failure."""
    from slsp import detector as det_io
    from slsp.export.build import check, verify_artifacts

    det = det_io.load(model)
    verify_artifacts(det, det_io.default_dir() if model is None else model, artifacts)
    extra = []
    if server:
        from slsp.clients.runner import ServerRunner

        extra.append(ServerRunner(server))
    report = check(det, artifacts, images, sizes, seed, runtimes=runtime, extra=extra,
                   failure_dir=artifacts.parent / f"{artifacts.name}.parity-failed")
    if json_out:
        _emit({k: v for k, v in report.items() if k != "table"})
    else:
        typer.echo(report["table"])
        for name, why in report["skipped"].items():
            typer.echo(f"skipped {name}: {why}")
        for f in (r for rt in report["runtimes"] for r in rt["failures"]):
            typer.echo(f"FAIL {f['runtime']} {f['image']} {f['output']}: {f['why']}\n  reproduce: {f.get('reproduce', '-')}")
    if not report["ok"]:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except SlspError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
