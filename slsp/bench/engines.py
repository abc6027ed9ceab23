"""`slsp bench engines`: per-stage latency in-process, PyTorch eager next to ONNX Runtime and the compiled TrSORs,
TrSOR next to its memory floor and the model next to its compute floor, all measured in the same run."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from slsp import contract
from slsp.bench.timing import machine, photo_at, timeit, timeit_blocks

# Results are keyed by stage name (trsor, model, score) and "pipeline" for the whole detector.
TRSOR, MODEL, SCORING = (s.name for s in contract.CHAIN)
SIZES = ((256, 256), (512, 512), (1024, 1024), (2048, 2048), (3000, 4000))


def memory_floor(img: np.ndarray) -> Callable[[], object]:
    """One read of the uint8 image and one float32 write of the same size: what any TrSOR must at least do."""
    import torch

    src = torch.from_numpy(img)
    dst = torch.empty(img.shape, dtype=torch.float32)
    return lambda: dst.copy_(src)


def compute_floor(n: int = 1024, min_time: float = 1.0) -> float:
    """The machine's dense float32 ceiling in GFLOP/s: a square matrix product through PyTorch's BLAS."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / (timeit(lambda: a @ b, min_time)["min_ms"] * 1e6)


def model_gflop(model, crops, phi) -> float:
    """Floating-point work of one forward pass of the batched model (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(crops, phi)
    return counter.get_total_flops() / 1e9


def cuda_engines(det, base: np.ndarray, sizes, min_time: float = 1.0) -> dict:
    """PyTorch CUDA on the current GPU: TrSOR per image size (the image already on the GPU) and the batched model
    over 1 to 64 images' crops. Each timed run ends with a device synchronise, so host time is device time."""
    import copy

    import torch

    gpu = copy.deepcopy(det).to("cuda")
    timed = lambda fn: timeit(lambda: (fn(), torch.cuda.synchronize()), min_time)  # noqa: E731
    out = {"device": torch.cuda.get_device_name(0), TRSOR: [], MODEL: []}
    with torch.inference_mode():
        for h, w in sizes:
            img = torch.from_numpy(photo_at(base, h, w)).cuda()
            t = timed(lambda: gpu.trsor(img))
            out[TRSOR].append({"size": f"{w}x{h}", **t, "mpix_per_s": h * w / 1e3 / t["median_ms"]})
        sel = gpu.trsor(img)  # the largest size's crops
        for n in (1, 4, 16, 64):
            crops, phi = sel.crops.repeat(n, 1, 1, 1), sel.crop_phi.repeat(n, 1, 1)
            t = timed(lambda: gpu.model(crops, phi))
            out[MODEL].append(
                {"images": n, "crops": int(crops.shape[0]), **t, "images_per_s": n * 1e3 / t["median_ms"]}
            )
    out["end_to_end"] = end_to_end(det, base, sizes, "cuda", min_time, compiled=True)
    return out


def end_to_end(det, base: np.ndarray, sizes, device: str, min_time: float = 1.0, compiled: bool = False
               ) -> list[dict]:
    """From JPEG bytes (q90) to a score: the library on the CPU (`decode` + `Detector.detect`) next to the on-device
    path (`DevicePipeline`: nvJPEG where it can, the resize, TrSOR, model and scoring on `device`), and with
    `compiled` the same path through `torch.compile` (CUDA graphs on a GPU), same run. Compiling is not timed: each
    size runs three times first."""
    import torch

    from slsp.device_pipeline import DevicePipeline
    from slsp.imaging import decode

    pipes = {"device": DevicePipeline(det, device)}
    if compiled:
        pipes["device_compiled"] = DevicePipeline(det, device, compiled=True)
    sync = torch.cuda.synchronize if pipes["device"].device.type == "cuda" else (lambda: None)
    rows = []
    for h, w in sizes:
        buf = io.BytesIO()
        Image.fromarray(photo_at(base, h, w)).save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
        ref = float(det.detect(decode(data)).score)
        for pipe in pipes.values():
            for _ in range(3):
                pipe.detect(data)
        fns = [lambda: det.detect(decode(data))] + [lambda p=p: (p.detect(data), sync()) for p in pipes.values()]
        lib, *dev = timeit_blocks(fns, min_time)
        row = {"size": f"{w}x{h}", "jpeg_bytes": len(data), "decoder": pipes["device"].decoder.upload(data)[1],
               "cpu_library": lib}
        for (name, pipe), t in zip(pipes.items(), dev):
            row |= {name: t, f"{name}_speedup": lib["median_ms"] / t["median_ms"],
                    f"{name}_score_diff": abs(float(pipe.detect(data).score) - ref)}
        rows.append(row)
    return rows


def measure(run: Path | None, artifacts: Path, source: Path, sizes=SIZES, min_time: float = 1.0, quiet: bool = False,
            threads: int = 0) -> dict:
    import torch

    from slsp import detector as det_io
    from slsp.export.build import compiled_pipelines, verify_artifacts
    from slsp.export.runners import OrtRunner
    from slsp.fluctuation import log_kurtosis
    from slsp.imaging import decode, load
    from slsp.progress import bar

    det = det_io.load(run)
    verify_artifacts(det, det_io.default_dir() if run is None else run, artifacts)
    base = load(source)
    if threads:
        torch.set_num_threads(threads)
    stages = {s.name: OrtRunner(artifacts / s.onnx, threads=threads) for s in contract.STAGES.values()}
    # Compiled TrSORs in the artifacts (AOTInductor, the C++ kernel), each with the pipeline the CPU server runs.
    compiled = {name.removesuffix("-cpu"): p for name, p in compiled_pipelines(artifacts, threads).items()}
    peak = compute_floor(min_time=min_time)
    rows = []
    with bar(quiet) as pb, torch.inference_mode():
        task = pb.add_task("bench engines", total=len(sizes), info="")
        for h, w in sizes:
            img = photo_at(base, h, w)
            encoded = _png(img)
            t = det.trsor(torch.from_numpy(img))
            crops, phi, valid, sigma = t.crops, t.crop_phi, t.valid, t.sigma
            scores, kurtosis = det.model(crops, phi), log_kurtosis(crops)
            low = torch.tensor(False)
            feeds = {contract.IMAGE: img, contract.CROPS: crops.numpy(), contract.CROP_PHI: phi.numpy(),
                     contract.CROP_SCORES: scores.numpy(), contract.CROP_KURTOSIS: kurtosis.numpy(),
                     contract.VALID: valid.numpy(), contract.SIGMA: sigma.numpy(), contract.LOW_RESOLUTION: low.numpy()}
            r = {"size": f"{w}x{h}", "pixels": h * w}
            r["decode_png"] = timeit(lambda: decode(encoded), min_time)
            r["floor"] = timeit(memory_floor(img), min_time)
            torch_fns = {
                TRSOR: lambda: det.trsor(torch.from_numpy(img)),
                MODEL: lambda: (det.model(crops, phi), log_kurtosis(crops)),
                SCORING: lambda: det.scorer(scores, kurtosis, valid, sigma, low),
                "pipeline": lambda: det(torch.from_numpy(img), low),
            }
            ort_fns = {**{s.name: lambda s=s: stages[s.name].infer(feeds) for s in contract.CHAIN},
                       "pipeline": lambda: stages[contract.FUSED.name].infer(feeds)}
            r["torch"], r["ort"] = {}, {}
            if not rows:  # the first size would also pay for thread pools and caches warming up
                timeit_blocks([torch_fns["pipeline"], ort_fns["pipeline"]], min_time)
            # The compiled TrSORs, and the pipelines the CPU server runs with them, join the same alternating blocks.
            for s in torch_fns:
                extra = (
                    {k: (p.trsor.infer if s == TRSOR else p.infer) for k, p in compiled.items()}
                    if s in (TRSOR, "pipeline")
                    else {}
                )
                times = timeit_blocks(
                    [torch_fns[s], ort_fns[s]] + [lambda f=f: f(feeds) for f in extra.values()], min_time
                )
                r["torch"][s], r["ort"][s] = times[:2]
                for k, t in zip(extra, times[2:]):
                    r.setdefault(k, {})[s] = t
            gflop = model_gflop(det.model, crops, phi)
            floor_ms = 1e3 * gflop / peak  # the model's work at the machine's matmul rate
            r["model_gflop"] = gflop
            r["ratios"] = {
                "trsor_ort_over_floor": r["ort"][TRSOR]["median_ms"] / r["floor"]["median_ms"],
                "trsor_torch_over_floor": r["torch"][TRSOR]["median_ms"] / r["floor"]["median_ms"],
                "model_ort_over_compute_floor": r["ort"][MODEL]["median_ms"] / floor_ms,
                "model_torch_over_compute_floor": r["torch"][MODEL]["median_ms"] / floor_ms,
                "pipeline_ort_speedup_over_torch": r["torch"]["pipeline"]["median_ms"]
                / r["ort"]["pipeline"]["median_ms"],
            }
            for k in compiled:
                r["ratios"].update(
                    {
                        f"trsor_{k}_over_floor": r[k][TRSOR]["median_ms"] / r["floor"]["median_ms"],
                        f"trsor_{k}_speedup_over_ort": r["ort"][TRSOR]["median_ms"] / r[k][TRSOR]["median_ms"],
                        f"pipeline_{k}_speedup_over_torch": r["torch"]["pipeline"]["median_ms"]
                        / r[k]["pipeline"]["median_ms"],
                    }
                )
            rows.append(r)
            pb.advance(task)
    result = {"kind": "engines", "machine": machine(), "threads": threads, "source": str(source),
              "crops_per_image": det.cfg.trsor.crops, "matmul_gflops": peak, "compiled": list(compiled), "rows": rows}
    if torch.cuda.is_available():
        result["cuda"] = cuda_engines(det, base, sizes, min_time)
    return result


SLOWER = 1.5  # a stage this much slower than its baseline, relative to PyTorch eager in the same run, is flagged


def compare(result: dict, baseline: dict, limit: float = SLOWER) -> dict:
    """Each stage of `result` against the same stage and size of `baseline` (an earlier `slsp bench engines`
    result), as the ratio of its time over PyTorch eager's time for the same stage in the same run: machine speed
    and load cancel, a regression of the engine does not. PyTorch eager's own times are compared as they are
    (`raw`, not flagged: they depend on the machine). A stage is flagged when its relative time grew more than
    `limit` times; stages or sizes only one side has are listed apart."""
    def relative(row: dict) -> dict[str, float]:
        torch_ms = {s: t["median_ms"] for s, t in row["torch"].items()}
        out = {}
        for engine in ("ort", *(k for k in ("native", "aoti") if k in row)):
            for stage, t in row[engine].items():
                out[f"{engine} {stage}"] = t["median_ms"] / torch_ms[stage]
        out["decode_png"] = row["decode_png"]["median_ms"] / torch_ms["pipeline"]
        return out

    base_rows = {r["size"]: r for r in baseline["rows"]}
    rows, missing = [], []
    for r in result["rows"]:
        b = base_rows.get(r["size"])
        if b is None:
            missing.append(f"{r['size']}: not in the baseline")
            continue
        now, then = relative(r), relative(b)
        for stage in now.keys() | then.keys():
            if stage not in now or stage not in then:
                missing.append(f"{r['size']} {stage}: only in the {'result' if stage in now else 'baseline'}")
        for stage in sorted(now.keys() & then.keys()):
            ratio = now[stage] / then[stage]
            rows.append({"size": r["size"], "stage": stage, "now_ms": _ms(r, stage), "baseline_ms": _ms(b, stage),
                         "relative_now": now[stage], "relative_baseline": then[stage], "ratio": ratio,
                         "flagged": ratio > limit})
        for stage in sorted(r["torch"]):
            rows.append({"size": r["size"], "stage": f"torch {stage} (raw)", "now_ms": r["torch"][stage]["median_ms"],
                         "baseline_ms": b["torch"][stage]["median_ms"],
                         "ratio": r["torch"][stage]["median_ms"] / b["torch"][stage]["median_ms"], "flagged": False})
    return {"limit": limit, "rows": rows, "missing": missing, "flagged": [f"{r['size']} {r['stage']}" for r in rows
                                                                          if r["flagged"]]}


def _ms(row: dict, stage: str) -> float:
    if stage == "decode_png":
        return row["decode_png"]["median_ms"]
    engine, name = stage.split(" ", 1)
    return row[engine][name]["median_ms"]


def compare_table(cmp: dict) -> str:
    """`compare`'s result as `slsp bench engines --compare` prints it."""
    lines = [f"{'size':<11}{'stage':<24}{'now ms':>10}{'base ms':>10}{'ratio':>8}",
             *(f"{r['size']:<11}{r['stage']:<24}{r['now_ms']:>10.2f}{r['baseline_ms']:>10.2f}{r['ratio']:>8.2f}"
               + ("  SLOWER" if r["flagged"] else "") for r in cmp["rows"]),
             f"ratio: the stage's time over PyTorch eager's for the same stage, now over the baseline's "
             f"(raw rows: PyTorch eager itself, not flagged); SLOWER: above {cmp['limit']}x",
             *(f"not compared: {m}" for m in cmp["missing"])]
    lines.append(f"{len(cmp['flagged'])} stage(s) slower than {cmp['limit']}x: " + ", ".join(cmp["flagged"])
                 if cmp["flagged"] else "no stage slower than its baseline by more than the limit")
    return "\n".join(lines)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def table(result: dict) -> str:
    """The engines result as printed by `slsp bench engines`."""
    lines = [
        f"{'size':<11}{'floor':>8}{'trsor ort':>11}{'/floor':>8}{'trsor pt':>10}{'model ort':>11}{'model pt':>10}"
        f"{'/mm':>6}{'pipe ort':>10}{'pipe pt':>9}{'ort/pt x':>9}{'decode':>9}"
        + "".join(
            f"{'trsor ' + k:>13}{'/floor':>8}{'pipe ' + k:>13}{k + '/pt x':>12}" for k in result.get("compiled", [])
        )
        + "   (median ms)"
    ]
    for r in result["rows"]:
        lines.append(f"{r['size']:<11}{r['floor']['median_ms']:>8.2f}{r['ort'][TRSOR]['median_ms']:>11.2f}"
                     f"{r['ratios']['trsor_ort_over_floor']:>8.1f}{r['torch'][TRSOR]['median_ms']:>10.2f}"
                     f"{r['ort'][MODEL]['median_ms']:>11.2f}{r['torch'][MODEL]['median_ms']:>10.2f}"
                     f"{r['ratios']['model_ort_over_compute_floor']:>6.1f}"
                     f"{r['ort']['pipeline']['median_ms']:>10.2f}{r['torch']['pipeline']['median_ms']:>9.2f}"
                     f"{r['ratios']['pipeline_ort_speedup_over_torch']:>9.2f}{r['decode_png']['median_ms']:>9.2f}"
                     + "".join(f"{r[k][TRSOR]['median_ms']:>13.2f}{r['ratios'][f'trsor_{k}_over_floor']:>8.1f}"
                               f"{r[k]['pipeline']['median_ms']:>13.2f}{r['ratios'][f'pipeline_{k}_speedup_over_torch']:>12.2f}"
                               for k in result.get("compiled", [])))
    lines.append(
        "/floor: TrSOR over one uint8 read + float32 write; "
        f"/mm: the model over its {result['rows'][0]['model_gflop']:.2f} "
        f"GFLOP at the {result['matmul_gflops']:.0f} GFLOP/s of a 1024^3 matmul; "
        f"threads: {result.get('threads') or 'engine defaults'}"
    )
    if "cuda" in result:
        cuda = result["cuda"]
        lines.append(
            f"PyTorch CUDA on {cuda['device']}: TrSOR "
            + ", ".join(f"{r['size']} {r['median_ms']:.2f} ms ({r['mpix_per_s']:.0f} MP/s)" for r in cuda[TRSOR])
            + "; model "
            + ", ".join(
                f"{r['crops']} crops {r['median_ms']:.2f} ms ({r['images_per_s']:.0f} img/s)" for r in cuda[MODEL]
            )
            + "; JPEG bytes to score, CPU library vs GPU vs GPU compiled ("
            + ", ".join(f"{r['size']} {r['cpu_library']['median_ms']:.1f} vs {r['device']['median_ms']:.1f} vs "
                        f"{r['device_compiled']['median_ms']:.1f} ms, {r['decoder']}" for r in cuda["end_to_end"])
            + ")"
        )
    return "\n".join(lines)
