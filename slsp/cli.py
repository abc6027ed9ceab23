"""`slsp` command line: thin Typer commands over the library. Progress on stderr, results (or --json) on stdout."""

from __future__ import annotations

import itertools
import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from slsp.config import AGGREGATES
from slsp.errors import SlspError
from slsp.families import recipe

# Click's plain help (rich_markup_mode=None): Typer's rich panels label every flag `<bool>` and wrap each option's
# help to a third of the terminal.
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Detect AI-generated images from smooth-patch fluctuations.")

RunOpt = Annotated[
    Optional[Path], typer.Option("--model", "-m", help="Run folder from `slsp train`; default: the shipped model.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
LevelsOpt = Annotated[
    Optional[int],
    typer.Option(help="Pyramid levels TrSOR selects crops from (1-4): level l is the image box-averaged over "
                 "2^l x 2^l pixels, each level's crop score a part of the fused score (default: the family's, or "
                 "the model's own)."),
]
ClippedOpt = Annotated[
    Optional[bool],
    typer.Option(help="TrSOR leaves out patches holding a clipped pixel (black or white in all three channels): "
                 "neither over-smooth nor part of the noise estimate (default: the family's, or the model's own)."),
]


def _version(value: bool) -> None:
    if value:
        import slsp

        typer.echo(f"slsp {slsp.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Detect AI-generated images from smooth-patch fluctuations."""


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _print_report(report: dict, json_out: bool) -> None:
    """A parity report: JSON on stdout, or the table plus the runtimes skipped and why."""
    if json_out:
        _emit({k: v for k, v in report.items() if k != "table"})
        return
    typer.echo(report["table"])
    for name, why in report["skipped"].items():
        typer.echo(f"skipped {name}: {why}")


def _legacy(help: str) -> typer.models.OptionInfo:
    """A research flag from before recipes: still accepted (documented reproduce-commands use them), not listed;
    each is the `--set` of one recipe key (`LEGACY`)."""
    return typer.Option(hidden=True, help=help)


# The flags `slsp train` took before recipes, as recipe keys: `--fakes X` is `--set options.fakes=X`.
LEGACY = {"family": "family", "size": "size", "batch": "train.batch", "lr": "train.lr", "crop": "model.crop",
          "score": "model.score", "fake_phi": "options.fake_phi", "fake_mix": "options.fake_mix",
          "target_fpr": "train.target_fpr", "holdout": "train.holdout", "crops_per_image": "train.crops_per_image",
          "calibrate_on": "train.calibration", "chain": "options.chain", "fakes": "options.fakes",
          "camera": "options.camera", "photos": "options.photos", "scales": "options.scales",
          "residual": "model.residual", "canonical": "detector.canonical", "levels": "trsor.levels",
          "skip_clipped": "trsor.skip_clipped", "kurtosis": "train.kurtosis"}


def legacy_sets(flags: dict[str, object]) -> list[str]:
    """`--set` overrides equal to the legacy flags given (None: not given)."""
    out = []
    for name, value in flags.items():
        if value is None:
            continue
        if name == "calibrate_on":
            value = ",".join(["none", *value])
        elif isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{LEGACY[name]}={value}")
    return out


@app.command()
def train(
    real: Annotated[list[Path], typer.Option("--real", help="Folder(s) of real photos (the only training data).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: weights, config, optimiser state, the recipe.")],
    recipe: Annotated[
        Optional[Path],
        typer.Option(help="Recipe file (TOML, or a run's train.json): family, model, TrSOR, pseudo-fakes, "
                     "calibration, steps, seed (slsp/recipes.py). Default: the first family's defaults, which is "
                     "slsp/default/recipe.toml, the shipped model's."),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="key=value over the recipe (repeatable): family, size or SECTION.FIELD, e.g. "
                     "train.steps=3000, options.fakes=denoise,sparse, trsor.levels=1."),
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps (train.steps).")] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Seed of the data split, the weights and the batches (train.seed).")
    ] = None,
    device: Annotated[
        Optional[str], typer.Option(help="cpu or cuda (default: the GPU where PyTorch sees one, else the CPU).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="CPU processes making batches ahead of the step (0: the training process makes them, the "
                     "pseudo-fakes on the training device); the weights do not depend on it."),
    ] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    print_recipe: Annotated[
        bool, typer.Option("--print-recipe", help="Print the resolved recipe (TOML) and exit without training.")
    ] = False,
    quiet: QuietOpt = False,
    family: Annotated[Optional[str], _legacy("family")] = None,
    size: Annotated[Optional[str], _legacy("size")] = None,
    batch: Annotated[Optional[int], _legacy("train.batch")] = None,
    lr: Annotated[Optional[float], _legacy("train.lr")] = None,
    crop: Annotated[Optional[int], _legacy("model.crop")] = None,
    score: Annotated[Optional[str], _legacy("model.score")] = None,
    fake_phi: Annotated[Optional[str], _legacy("options.fake_phi")] = None,
    fake_mix: Annotated[Optional[str], _legacy("options.fake_mix")] = None,
    target_fpr: Annotated[Optional[float], _legacy("train.target_fpr")] = None,
    holdout: Annotated[Optional[float], _legacy("train.holdout")] = None,
    crops_per_image: Annotated[Optional[int], _legacy("train.crops_per_image")] = None,
    calibrate_on: Annotated[Optional[list[str]], _legacy("train.calibration, after none")] = None,
    chain: Annotated[Optional[bool], _legacy("options.chain")] = None,
    fakes: Annotated[Optional[str], _legacy("options.fakes")] = None,
    camera: Annotated[Optional[int], _legacy("options.camera")] = None,
    photos: Annotated[Optional[bool], _legacy("options.photos")] = None,
    scales: Annotated[Optional[str], _legacy("options.scales")] = None,
    residual: Annotated[Optional[bool], _legacy("model.residual")] = None,
    canonical: Annotated[Optional[str], _legacy("detector.canonical")] = None,
    levels: Annotated[Optional[int], _legacy("trsor.levels")] = None,
    skip_clipped: Annotated[Optional[bool], _legacy("trsor.skip_clipped")] = None,
    kurtosis: Annotated[Optional[bool], _legacy("train.kurtosis")] = None,
) -> None:
    """Train on real images only, then calibrate the threshold on a held-out real split. A run is its recipe:
    --recipe FILE, then --set key=value, then --steps and --seed."""
    from slsp import recipes
    from slsp.train import train as run_train

    legacy = legacy_sets({"family": family, "size": size, "batch": batch, "lr": lr, "crop": crop, "score": score,
                          "fake_phi": fake_phi, "fake_mix": fake_mix, "target_fpr": target_fpr, "holdout": holdout,
                          "crops_per_image": crops_per_image, "calibrate_on": calibrate_on, "chain": chain,
                          "fakes": fakes, "camera": camera, "photos": photos, "scales": scales, "residual": residual,
                          "canonical": canonical, "levels": levels, "skip_clipped": skip_clipped,
                          "kurtosis": kurtosis})
    per_run = [f"train.{k}={v}" for k, v in (("steps", steps), ("seed", seed)) if v is not None]
    given = recipes.load(recipe) if recipe is not None else {}
    resolved = recipes.resolve(recipes.override(given, [*legacy, *(set_ or []), *per_run]))
    if print_recipe:
        typer.echo(recipes.dumps(resolved.recipe), nl=False)
        return
    result = run_train(real, out, resolved.cfg, resolved.tcfg, resume=resume, quiet=quiet, workers=workers,
                       recipe=resolved.recipe, device=device)
    typer.echo(f"wrote {out} (threshold {result.threshold:.4f})")


@app.command()
def calibrate(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Run folder from `slsp train` (its held-out reals are used).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (may be --model itself).")],
    variant: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Also calibrate on each held-out photo under this transform: jpeg:Q or resize:F (repeatable)."
        ),
    ] = None,
    target_fpr: Annotated[float, typer.Option(help="Target false-positive rate.")] = 0.05,
    canonical: Annotated[
        Optional[str],
        typer.Option(
            help="Set the canonical transform every image goes through before scoring: none, jpeg:Q or resize:F."
        ),
    ] = None,
    low_resolution: Annotated[
        bool,
        typer.Option(help="Also calibrate scoring at native scale for images too small for the canonical transform "
                     "(--no-low-resolution: refuse them)."),
    ] = True,
    levels: LevelsOpt = None,
    skip_clipped: ClippedOpt = None,
    channel: Annotated[
        Optional[str],
        typer.Option(help="What TrSOR's gradient energy reads: luma, or rgb (each channel's energy, summed) "
                     "(default: as the run does)."),
    ] = None,
    kurtosis: Annotated[
        Optional[bool],
        typer.Option(help="Fuse the crops' log kurtosis as a two-sided part (--no-kurtosis: leave it out; default: "
                     "as the run does)."),
    ] = None,
    real: Annotated[
        Optional[list[Path]],
        typer.Option("--real", help="Calibrate on this folder's real photos instead of the run's held-out ones "
                     "(repeatable): a pool from many sources the run never trained on."),
    ] = None,
    source_fpr: Annotated[
        Optional[float],
        typer.Option(help="Also keep the FPR of every source (each --real folder, or each training folder's held-out "
                     "photos) of 20 photos or more at or under this: the threshold rises to the worst source's."),
    ] = None,
    keep_fusion: Annotated[
        bool, typer.Option("--keep-fusion", help="Re-fit the threshold (and the low-resolution scoring) only; the "
                           "noise fusion stays as the run has it.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-fit the threshold (and the noise fusion, if the model fuses) on real photos only: the run's held-out
    ones, or --real folders."""
    from slsp.calibrate import recalibrate

    cal = recalibrate(model, out, target_fpr, ("none", *(variant or [])), canonical=canonical, quiet=quiet,
                      low_resolution=low_resolution, levels=levels, skip_clipped=skip_clipped, channel=channel,
                      kurtosis=kurtosis, reals=real, source_fpr=source_fpr, keep_fusion=keep_fusion)
    typer.echo(f"wrote {out} (threshold {cal.threshold:.4f}, held-out FPR {cal.fpr:.1%} on {len(cal.scores)} scores)")


@app.command()
def detect(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    model: RunOpt = None,
    explain: Annotated[Optional[Path], typer.Option(help="Write a PNG per image: Phi and the scored crops.")] = None,
    max_pixels: Annotated[
        Optional[int], typer.Option(help="Refuse images declaring more pixels (default: the model's, 50 MP).")
    ] = None,
    device: Annotated[
        Optional[str],
        typer.Option(help="Run the whole path on this torch device (cuda, cuda:N, cpu): JPEGs decoded by nvJPEG "
                     "where torchvision has it, the resize, TrSOR and the model there (default: the CPU library)."),
    ] = None,
    compile_: Annotated[
        bool,
        typer.Option("--compile", help="With --device: torch.compile the detector, one graph per image size (CUDA "
                     "graphs on a GPU); the first image of each size pays for compiling it."),
    ] = False,
    c2pa_trust: Annotated[
        Optional[Path], typer.Option(help="PEM file of trust anchors for C2PA signers (default: none, so a valid "
                                     "signature is reported valid but untrusted).")
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score images with the embedded detector (no server), each with what its file claims about its provenance
    (C2PA, IPTC XMP, generator metadata; never part of the score). Exit 1 if any image failed."""
    from slsp.detect import detect_paths
    from slsp.imaging import printable
    from slsp.provenance import Trust, summary

    trust = Trust(c2pa_trust.read_bytes() if c2pa_trust else None)
    results = detect_paths(paths, model, explain=explain, quiet=quiet, max_pixels=max_pixels, device=device,
                           compiled=compile_, trust=trust)
    if json_out:
        _emit(results)
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{printable(r['path'])}\tERROR\t{printable(r['error'])}")
            else:
                low = ", low resolution: scored at native scale" if r["low_resolution"] else ""
                typer.echo(f"{printable(r['path'])}\t{r['score']:.4f}\t{r['verdict']}\t"
                           f"(threshold {r['threshold']:.4f}{low})")
            line = summary(r["provenance"]) if "provenance" in r else None
            if line:
                typer.echo(f"\t{printable(line)}")
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    real: Annotated[Path, typer.Option("--real", help="Folder of real images.")],
    fake: Annotated[Path, typer.Option("--fake", help="Folder of generated images; subfolders are generators.")],
    model: RunOpt = None,
    reencode: Annotated[str, typer.Option(help="Applied to both classes: none, png or jpeg:Q.")] = "none",
    perturb: Annotated[
        Optional[list[str]],
        typer.Option(help="Robustness rows: jpeg:Q, resize:F or thumb:S (short side S, as a thumbnail; repeatable)."),
    ] = None,
    trim_bottom: Annotated[int, typer.Option(help="Rows removed from the bottom of every image (watermarks).")] = 0,
    score: Annotated[
        Optional[str],
        typer.Option(help=f"Family slsp: override the per-crop score ({', '.join(recipe.SCORES)}); same weights."),
    ] = None,
    aggregate: Annotated[
        Optional[str], typer.Option(help=f"Override the aggregation over crops ({', '.join(AGGREGATES)}).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for report.json and roc.png.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """AUROC, AP, TPR/FPR at the calibrated threshold, TPR at 1%/5% FPR; model vs a training-free baseline."""
    from slsp.evaluate import evaluate, plot_roc, table

    report = evaluate(real, fake, model, reencode=reencode, perturb=perturb, trim_bottom=trim_bottom, quiet=quiet,
                      score=score, aggregate=aggregate)
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
    out: Annotated[Path, typer.Option("--out", help="Artifacts folder (replaced only if the gate passes).")] = Path(
        "artifacts"
    ),
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision model stage.")] = False,
    trt: Annotated[bool, typer.Option("--trt", help="Also build TensorRT engines (needs tensorrt and a GPU).")] = False,
    aoti: Annotated[
        bool,
        typer.Option(
            "--aoti",
            help="Also compile TrSOR to native CPU code with AOTInductor (needs g++; the CPU server then runs it).",
        ),
    ] = False,
    native: Annotated[
        bool,
        typer.Option(
            "--native",
            help="Also compile the hand-written C++ TrSOR (needs g++; the fastest CPU TrSOR, timings in "
            "docs/benchmarks-log.md; the CPU server then runs it).",
        ),
    ] = False,
    max_batch: Annotated[
        int,
        typer.Option(help="Largest crop batch (TensorRT profile, Triton max_batch_size); 192: four images of the "
                     "shipped model's 48 crops."),
    ] = 192,
    images: Annotated[Optional[list[Path]], typer.Option(help="Real images for the parity gate.")] = None,
    sizes: Annotated[int, typer.Option(help="Random-size crops per parity image.")] = 2,
    repo: Annotated[
        Optional[Path], typer.Option(help="Also add a new version to this Triton model repository.")
    ] = None,
    target: Annotated[
        str, typer.Option(help="Repository target: cpu (the bundled server), gpu-python (the bundled server on a CUDA "
                          "GPU, its members in PyTorch) or gpu (the NGC container).")
    ] = "cpu",
    max_pixels: Annotated[int, typer.Option(help="Server-side limit on decoded pixels per image.")] = 50_000_000,
    max_bytes: Annotated[int, typer.Option(help="Server-side limit on encoded bytes per request.")] = 64 << 20,
    model_threads: Annotated[
        int, typer.Option(help="ONNX Runtime threads of the batched model member (CPU target).")
    ] = 2,
    max_inflight: Annotated[
        int, typer.Option(help="Requests queued for decoding beyond this are refused at once (server busy).")
    ] = 64,
    queue_timeout: Annotated[
        float, typer.Option(help="Seconds a request may wait for decoding before it is refused.")
    ] = 30.0,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export ONNX (and TensorRT) artifacts; the parity gate runs first and a failing export writes nothing."""
    from slsp.export import repository
    from slsp.export.build import build

    serving = repository.ServingConfig(target=target, max_batch=max_batch, max_pixels=max_pixels, max_bytes=max_bytes,
                                       model_threads=model_threads, max_inflight=max_inflight,
                                       queue_timeout_s=queue_timeout)
    report = build(
        model, out, fp16=fp16, trt=trt, aoti=aoti, native=native, max_batch=max_batch, images=images, sizes=sizes,
        quiet=quiet,
    )
    if repo is not None:
        report["repository"] = {"path": str(repo), "version": repository.write(out, repo, serving), "target": target}
    _print_report(report, json_out)
    if not json_out:
        typer.echo(f"wrote {out}")
        if repo is not None:
            typer.echo(f"added version {report['repository']['version']} to {repo} ({target})")


@app.command()
def parity(
    artifacts: Annotated[Path, typer.Option(help="Folder written by `slsp export`.")] = Path("artifacts"),
    model: RunOpt = None,
    images: Annotated[
        Optional[list[Path]], typer.Option(help="Real images (default: ../shared/data/real/dev).")
    ] = None,
    sizes: Annotated[int, typer.Option(help="Random-size crops per image.")] = 2,
    seed: int = 0,
    runtime: Annotated[
        Optional[list[str]], typer.Option(help="Only these runtimes (repeatable); default: all available.")
    ] = None,
    server: Annotated[
        Optional[str], typer.Option(help="Also check a live Triton server (grpc://host:port or http://...).")
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
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
                   failure_dir=artifacts.parent / f"{artifacts.name}.parity-failed", quiet=quiet)
    _print_report(report, json_out)
    if not json_out:
        for f in (r for rt in report["runtimes"] for r in rt["failures"]):
            typer.echo(
                f"FAIL {f['runtime']} {f['image']} {f['output']}: {f['why']}\n  reproduce: {f.get('reproduce', '-')}"
            )
    if not report["ok"]:
        raise typer.Exit(1)


@app.command()
def serve(
    repo: Annotated[Path, typer.Option(help="Model repository (exported with the shipped model if missing).")] = Path(
        "model_repository"
    ),
    host: Annotated[str, typer.Option(help="Bind address; 127.0.0.1 unless you mean to expose it.")] = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    model_control: Annotated[
        str, typer.Option(help="Triton's model control mode: none, poll (picks up new versions) or explicit.")
    ] = "poll",
    log: Annotated[Optional[Path], typer.Option(help="Write the server log here instead of the terminal.")] = None,
    admin_key: Annotated[
        Optional[str],
        typer.Option(envvar="SLSP_ADMIN_KEY", help="Key that opens the operator APIs (shared-memory registration, "
                     "model repository, logging, trace) to requests carrying it (`slsp query --shm --admin-key`). "
                     "Default: a random key nobody is told, so they are closed. Prefer SLSP_ADMIN_KEY or "
                     "--admin-key-file: a command line is readable by every local user."),
    ] = None,
    admin_key_file: Annotated[
        Optional[Path], typer.Option(help="Read the admin key from this file (a mounted secret).")
    ] = None,
    canary_every: Annotated[
        float,
        typer.Option(help="Seconds between canary inferences; 3 stalls in a row (a canary failing while no other "
                     "request completes; a full queue or a busy pipeline is not one) stop the server with exit code 1 "
                     "(a stalled pipeline that still reports ready), for a supervisor to restart it. 0: off."),
    ] = 10.0,
    canary_timeout: Annotated[float, typer.Option(help="Seconds a canary inference may take.")] = 10.0,
    edge: Annotated[
        bool, typer.Option(help="Put slsp's edge between clients and tritonserver, which then listens on 127.0.0.1: "
                           "it absorbs cancelled gRPC calls (they can crash tritonserver 2.51), refuses compressed "
                           "bodies and bodies over the repository's max-bytes before reading them, and answers a "
                           "malformed inference header with 400. --no-edge exposes tritonserver itself.")
    ] = True,
    print_docker: Annotated[
        bool, typer.Option("--print-docker", help="Print the NGC container command for a GPU repository and exit.")
    ] = False,
) -> None:
    """Run the bundled Triton server (CPU, no Docker) on the repository until Ctrl-C."""
    import secrets

    from slsp.canary import CANARY_FAILURES, health
    from slsp.edge import Edge
    from slsp.export import repository
    from slsp.server import EXPOSED_RISK, HEADER_ALLOWANCE, MODEL_CONTROL, Server, docker_command, free_port

    if print_docker:
        import shlex

        typer.echo(" ".join(shlex.quote(a) for a in docker_command(repo)))
        return
    if model_control not in MODEL_CONTROL:
        raise SlspError(f"--model-control must be one of {', '.join(MODEL_CONTROL)}, got {model_control!r}")
    repository.ensure(repo)
    repository.check_served(repo)
    if admin_key_file is not None:
        if admin_key is not None:
            raise SlspError("give the admin key once: --admin-key (or SLSP_ADMIN_KEY) or --admin-key-file")
        admin_key = admin_key_file.read_text().strip()
    if edge:  # tritonserver on loopback ports with a key of its own; the edge takes the public ones
        internal = secrets.token_urlsafe(24)
        server = Server(repo, host="127.0.0.1", http_port=free_port(), grpc_port=free_port(),
                        metrics_port=metrics_port, metrics_host=host, log_path=log, model_control=model_control,
                        admin_key=internal)
        front = Edge(host, http_port, grpc_port, server.http_port, server.grpc_port,
                     repository.max_bytes(repo) + HEADER_ALLOWANCE, admin_key=admin_key, internal_key=internal)
    else:
        server = Server(repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                        log_path=log, model_control=model_control, admin_key=admin_key or secrets.token_urlsafe(24))
        if host not in ("127.0.0.1", "::1", "localhost"):
            typer.echo(f"warning: tritonserver is exposed without the edge; {EXPOSED_RISK}", err=True)
    server.start(log=None if log else sys.stderr)
    if edge:
        try:
            front.start()
        except OSError:
            server.stop()
            raise
    typer.echo(f"serving {repo}: grpc://{host}:{grpc_port}  http://{host}:{http_port}  (Ctrl-C stops)", err=True)
    # Ctrl-C stops even where a non-interactive shell started us in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    failures, stalled, next_canary = 0, None, time.monotonic() + canary_every
    try:
        for tick in itertools.count():
            if server.proc is None or server.proc.poll() is not None:
                break
            if tick % 10 == 0:  # versions loaded by polling bring new backend regions
                server.private_shm()
            if canary_every > 0 and time.monotonic() >= next_canary:
                state, seen = health(server.http_url, canary_timeout)
                if state == "stalled":
                    failures += 1
                    typer.echo(f"canary {failures}/{CANARY_FAILURES}: stalled: {seen}", err=True)
                    if failures == CANARY_FAILURES:
                        stalled = seen
                        break
                else:  # ok, or busy: refused by the full queue, or slow while other requests complete
                    failures = 0
                    if state == "busy":
                        typer.echo(f"canary: busy, not stalled: {seen}", err=True)
                next_canary = time.monotonic() + canary_every
            time.sleep(0.5)
    except KeyboardInterrupt:
        typer.echo("stopping", err=True)
    finally:
        if edge:
            front.stop()
        server.stop()
    if stalled:
        raise SlspError(f"the pipeline stopped answering ({CANARY_FAILURES} canary inferences failed in a row; last: "
                        f"{stalled}); the server was stopped so that a supervisor restarts it")
    # 0: stopped by Ctrl-C or SIGTERM as asked; -SIGINT / -SIGKILL: stopped by us (a second signal kills at once).
    if server.proc is not None and server.proc.returncode not in (0, -signal.SIGINT, -signal.SIGKILL, None):
        raise SlspError(f"tritonserver exited with code {server.proc.returncode}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def query(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    url: Annotated[str, typer.Option(help="grpc://host:port or http://host:port.")] = "grpc://127.0.0.1:8001",
    concurrency: int = 8,
    shared_memory: Annotated[
        bool, typer.Option("--shm", help="Send images through system shared memory (same host).")
    ] = False,
    timeout: float = 60.0,
    admin_key: Annotated[
        Optional[str], typer.Option(envvar="SLSP_ADMIN_KEY", help="The server's admin key (--shm needs it).")
    ] = None,
    max_bytes: Annotated[
        int, typer.Option(help="Files over this many bytes are refused unread (the server's default limit).")
    ] = 64 << 20,
    json_out: JsonOpt = False,
) -> None:
    """Score images on a running server; exit 1 if any request failed."""
    from slsp.clients.client import ClientError, ServerUnavailable, SlspClient
    from slsp.imaging import display_name, printable, scan
    from slsp.provenance import summary

    files, skipped = scan(paths)
    client = SlspClient(url, timeout=timeout, shared_memory=shared_memory, admin_key=admin_key)
    results = client.detect_many(files, concurrency, max_bytes)  # read in the workers, a few at a time
    if results and all(isinstance(r, ServerUnavailable) for r in results):
        raise SlspError(f"no server at {url}: {results[0]}")
    rows = [{**display_name(p), "error": f"{p}: {why}"} for p, why in skipped]
    rows += [{**display_name(f), **({"error": f"{type(r).__name__}: {r}"} if isinstance(r, ClientError)
                                    else r.as_dict())} for f, r in zip(files, results)]
    if json_out:
        _emit(rows)
    else:
        for r in rows:
            if "error" in r:
                typer.echo(f"{printable(r['path'])}\tERROR\t{printable(r['error'])}")
            else:
                low = "\t(low resolution)" if r["low_resolution"] else ""
                typer.echo(f"{printable(r['path'])}\t{r['score']:.4f}\t{r['verdict']}{low}")
                line = summary(r["provenance"]) if r.get("provenance") else None
                if line:
                    typer.echo(f"\t{printable(line)}")
    if any("error" in r for r in rows):
        raise typer.Exit(1)


@app.command()
def rollback(repo: Annotated[Path, typer.Option(help="Model repository.")] = Path("model_repository")) -> None:
    """Serve the previous model version again: it is copied forward as a new version, which a server started with
    --model-control poll loads like any update."""
    from slsp.export import repository

    version, source = repository.rollback(repo)
    typer.echo(f"{repo}: version {version} (a copy of version {source}) added; a polling server switches to it")


deploy_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Write what runs an exported repository beyond one machine.")
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("kubernetes")
def deploy_kubernetes(
    out: Annotated[Path, typer.Option("--out", help="Folder for the manifests and the image's build context.")],
    repository_uri: Annotated[
        str,
        typer.Option(help="Where pods read the model repository: pvc://CLAIM[/PATH] (mounted read-only), or an "
                     "object store Triton reads itself: s3://, gs://, as://."),
    ] = "pvc://slsp-model-repository",
    repo: Annotated[
        Optional[Path],
        typer.Option(help="The local repository you will upload (checked: its target, a TrSOR the image runs)."),
    ] = None,
    target: Annotated[
        Optional[str], typer.Option(help="cpu or gpu (default: --repo's target, else cpu).")
    ] = None,
    kserve: Annotated[
        bool, typer.Option("--kserve", help="An InferenceService on KServe's Triton runtime instead.")
    ] = False,
    name: str = "slsp",
    namespace: Annotated[str, typer.Option(help="Its own namespace (namespace.yaml); not 'default'.")] = "slsp",
    ingress_namespace: Annotated[
        str, typer.Option(help="The namespace whose pods may reach HTTP and gRPC (the NetworkPolicy).")
    ] = "ingress-nginx",
    metrics_namespace: Annotated[
        str, typer.Option(help="The namespace whose pods may reach the metrics port (Prometheus).")
    ] = "monitoring",
    image: Annotated[
        Optional[str], typer.Option(help="Serving image, pinned by digest once pushed (REPO@sha256:...; default "
                                    "slsp-triton:VERSION-TARGET, from image/Dockerfile).")
    ] = None,
    replicas: Annotated[int, typer.Option(help="Replicas, and the autoscaler's minimum.")] = 1,
    max_replicas: Annotated[int, typer.Option(help="The autoscaler's maximum.")] = 4,
    cpu: Annotated[str, typer.Option(help="CPU request and limit per pod.")] = "2",
    memory: Annotated[str, typer.Option(help="Memory request and limit per pod.")] = "4Gi",
    gpus: Annotated[int, typer.Option(help="GPUs per pod (--target gpu).")] = 1,
    repository_secret: Annotated[
        Optional[str], typer.Option(help="Secret with the object store's credentials, passed as environment.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Manifests to serve an exported repository on Triton in a Kubernetes cluster (README: "Deploy on Kubernetes")."""
    from slsp import deploy

    if repo is not None:
        target = deploy.check_repository(repo, target)
    c = deploy.Cluster(repository=repository_uri, target=target or "cpu", name=name, namespace=namespace,
                       ingress_namespace=ingress_namespace, metrics_namespace=metrics_namespace,
                       image=image or "", replicas=replicas, max_replicas=max_replicas, cpu=cpu, memory=memory,
                       gpus=gpus, repository_secret=repository_secret)
    files = deploy.write(c, out, kserve=kserve)
    if json_out:
        _emit({"manifests": [str(f) for f in files], "image": c.container_image, "build": str(out / "image")})
        return
    for f in files:
        typer.echo(f"wrote {f}")
    typer.echo(f"build and push the image: docker build -t {c.container_image} {out / 'image'}\n"
               f"then: kubectl apply -f {out}")
    if not c.pinned:
        typer.echo("the image is named by tag: once pushed, write the manifests again with --image REPO@sha256:DIGEST "
                   "so every pod runs the same bytes", err=True)


bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Measure engines in-process and the live server.")
app.add_typer(bench_app, name="bench")
BenchOut = Annotated[Path, typer.Option(help="Folder for the results file.")]


@bench_app.command("engines")
def bench_engines(
    artifacts: Annotated[Path, typer.Option(help="Folder written by `slsp export`.")] = Path("artifacts"),
    model: RunOpt = None,
    source: Annotated[Path, typer.Option(help="Real photo, mirror-tiled to each size.")] = Path(
        "examples/real_kodak24_kodim03.png"
    ),
    size: Annotated[
        Optional[list[str]], typer.Option(help="WxH (repeatable); default 256..2048 squares and 4000x3000.")
    ] = None,
    compare: Annotated[
        Optional[Path],
        typer.Option(help="An earlier result (e.g. benchmarks/results/engines-baseline.json): print each stage's "
                     "ratio to it, relative to PyTorch eager in each run; exit 1 if a stage is over 1.5x slower."),
    ] = None,
    min_time: Annotated[float, typer.Option(help="Seconds of timing per measurement.")] = 1.0,
    threads: Annotated[
        int,
        typer.Option(
            help="Threads for every engine (0: their defaults, one per core); 1 is "
            "what the CPU server's decode member runs."
        ),
    ] = 0,
    out: BenchOut = Path("benchmarks/results"),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Per-stage latency for PyTorch eager and ONNX Runtime, and TrSOR against its memory floor."""
    from slsp.bench import engines, timing

    baseline = None
    if compare is not None:
        try:
            baseline = json.loads(compare.read_text())
        except (OSError, ValueError) as e:
            raise SlspError(f"--compare {compare}: not a readable `slsp bench engines` result ({e})") from None
        if baseline.get("kind") != "engines":
            raise SlspError(f"--compare {compare}: not a `slsp bench engines` result (kind {baseline.get('kind')!r})")
    sizes = engines.SIZES if not size else [timing.parse_size(s) for s in size]
    result = engines.measure(model, artifacts, source, sizes, min_time, quiet, threads)
    if baseline is not None:
        result["compare"] = {"baseline": str(compare), **engines.compare(result, baseline)}
    path = timing.save(result, out)
    if json_out:
        _emit(result)
    else:
        typer.echo(engines.table(result) + f"\nwrote {path}")
        if baseline is not None:
            typer.echo(f"\nagainst {compare}:\n" + engines.compare_table(result["compare"]))
    if baseline is not None and result["compare"]["flagged"]:
        raise typer.Exit(1)


@bench_app.command("train")
def bench_train(
    images: Annotated[
        Optional[list[Path]], typer.Option(help="Real photos for training crops (default: the checkout's own).")
    ] = None,
    run: Annotated[
        Optional[list[str]],
        typer.Option(help="DEVICE:WORKERS to time (repeatable; the first is the baseline), e.g. cpu:0 cuda:8."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed steps per configuration.")] = 30,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 5,
    batch: int = 64,
    out: BenchOut = Path("benchmarks/results"),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Training steps/s of the shipped model's family per device and batch-making workers, in one run."""
    from slsp.bench import timing, training

    configs = []
    for spec in run or ["cpu:0", "cpu:1"]:
        device, _, workers = spec.partition(":")
        if not workers.isdigit():
            raise SlspError(f"--run takes DEVICE:WORKERS (e.g. cuda:8), got {spec!r}")
        configs.append((device, int(workers)))
    from slsp.imaging import collect

    files = collect(images or [Path("examples/real_kodak24_kodim03.png"), Path("tests/data")])
    result = training.measure(files, configs, steps, warmup, batch, quiet)
    path = timing.save(result, out)
    _emit(result) if json_out else typer.echo(training.table(result) + f"\nwrote {path}")


@bench_app.command("server")
def bench_server(
    url: Annotated[str, typer.Option(help="grpc://host:port or http://host:port.")] = "grpc://127.0.0.1:8001",
    images: Annotated[
        Optional[list[Path]], typer.Option(help="Images to send (default: examples/).")
    ] = None,
    artifacts: Annotated[Path, typer.Option(help="Artifacts for the in-process ONNX Runtime baseline.")] = Path(
        "artifacts"
    ),
    concurrency: Annotated[Optional[list[int]], typer.Option(help="Concurrency levels (repeatable).")] = None,
    requests: Annotated[int, typer.Option(help="Requests per level (ignored with --duration).")] = 64,
    duration: Annotated[Optional[float], typer.Option(help="Seconds per level instead of a request count.")] = None,
    out: BenchOut = Path("benchmarks/results"),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Concurrency sweep over gRPC or HTTP: throughput, p50/p90/p99, errors, Triton's per-member time split."""
    from slsp.bench import server, timing

    result = server.measure(url, images or [Path("examples")], artifacts,
                            tuple(concurrency or (1, 2, 4, 8, 16)), None if duration else requests, duration, quiet)
    path = timing.save(result, out)
    _emit(result) if json_out else typer.echo(server.table(result) + f"\nwrote {path}")


def main() -> None:
    # SIGTERM (kill, docker stop, systemd) unwinds like Ctrl-C, so temporary folders are removed and servers stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except SlspError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
