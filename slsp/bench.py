"""`slsp bench`: in-process stage timings and a load generator for the live server, written as results files.

Every figure is reported next to a baseline measured in the same run (machines here are noisy): TrSOR next
to its memory floor, ONNX Runtime next to PyTorch eager, the server next to in-process ONNX Runtime.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from slsp.errors import SlspError

SIZES = ((256, 256), (512, 512), (1024, 1024), (2048, 2048), (3000, 4000))


def machine() -> dict:
    import onnxruntime
    import torch

    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    try:
        info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def photo_at(source: np.ndarray, h: int, w: int) -> np.ndarray:
    """A real photo brought to h x w by mirror-tiling (no resampling: pixel statistics stay real)."""
    reps = (int(np.ceil(h / source.shape[0])), int(np.ceil(w / source.shape[1])))
    tiles = [[source[:, ::-1] if j % 2 else source for j in range(reps[1])] for _ in range(reps[0])]
    rows = [np.concatenate(r, 1)[::-1] if i % 2 else np.concatenate(r, 1) for i, r in enumerate(tiles)]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:h, :w])


def _stats(times: list[float]) -> dict:
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": len(times)}


def timeit(fn: Callable[[], object], min_time: float = 1.0, min_runs: int = 3, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _stats(times)


def timeit_blocks(fns: list[Callable[[], object]], min_time: float = 1.0, rounds: int = 2) -> list[dict]:
    """Time functions in alternating blocks (A B A B ...), so a slow spell of a noisy machine lands on every side
    of a ratio. Blocks, not single runs: right after an ONNX Runtime run its spinning threads slow the next
    PyTorch run. The first run of each block is discarded; each function gets `min_time` in all."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            fn()
            start = time.perf_counter()
            while len(ts) < 3 or time.perf_counter() - start < min_time / rounds:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    return [_stats(ts) for ts in times]


def ab(fns: dict[str, Callable[[], object]], block: float = 0.5, rounds: int = 3) -> dict:
    """Named variants timed in alternating blocks: median ms of each and its speed-up over the first."""
    med = [st["median_ms"] for st in timeit_blocks(list(fns.values()), block * rounds, rounds)]
    return {"median_ms": dict(zip(fns, med)), "speedup_over_first": dict(zip(fns, (med[0] / m for m in med)))}


def ab_cells(row: dict, digits: int = 1) -> str:
    """One printed line's cells for a result of `ab`."""
    return "  ".join(f"{k}: {v:.{digits}f} ms ({row['speedup_over_first'][k]:.2f}x)" for k, v in row["median_ms"].items())


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


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
    out = {"device": torch.cuda.get_device_name(0), "trsor": [], "model": []}
    with torch.inference_mode():
        for h, w in sizes:
            img = torch.from_numpy(photo_at(base, h, w)).cuda()
            t = timed(lambda: gpu.trsor(img))
            out["trsor"].append({"size": f"{w}x{h}", **t, "mpix_per_s": h * w / 1e3 / t["median_ms"]})
        sel = gpu.trsor(img)  # the largest size's crops
        for n in (1, 4, 16, 64):
            crops, phi = sel.crops.repeat(n, 1, 1, 1), sel.crop_phi.repeat(n, 1, 1)
            t = timed(lambda: gpu.model(crops, phi))
            out["model"].append({"images": n, "crops": int(crops.shape[0]), **t, "images_per_s": n * 1e3 / t["median_ms"]})
    return out


def engines(run: Path | None, artifacts: Path, source: Path, sizes=SIZES, min_time: float = 1.0, quiet: bool = False,
            threads: int = 0) -> dict:
    import torch

    from slsp import detector as det_io
    from slsp.export.build import compiled_pipelines, verify_artifacts
    from slsp.export.runners import OrtRunner
    from slsp.imaging import decode, load
    from slsp.progress import bar

    det = det_io.load(run)
    verify_artifacts(det, det_io.default_dir() if run is None else run, artifacts)
    base = load(source)
    if threads:
        torch.set_num_threads(threads)
    stages = {s: OrtRunner(artifacts / f"{s}.onnx", threads=threads) for s in ("trsor", "model", "score", "slsp")}
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
            scores = det.model(crops, phi)
            feeds = {"image": img, "crops": crops.numpy(), "crop_phi": phi.numpy(), "crop_scores": scores.numpy(), "valid": valid.numpy(),
                     "sigma": sigma.numpy()}
            r = {"size": f"{w}x{h}", "pixels": h * w}
            r["decode_png"] = timeit(lambda: decode(encoded), min_time)
            r["floor"] = timeit(memory_floor(img), min_time)
            torch_fns = {"trsor": lambda: det.trsor(torch.from_numpy(img)), "model": lambda: det.model(crops, phi),
                         "score": lambda: det.scorer(scores, valid, sigma), "pipeline": lambda: det(torch.from_numpy(img))}
            ort_fns = {**{s: lambda s=s: stages[s].infer(feeds) for s in ("trsor", "model", "score")},
                       "pipeline": lambda: stages["slsp"].infer(feeds)}
            r["torch"], r["ort"] = {}, {}
            if not rows:  # the first size also paid for thread pools and caches warming up (model 1.5x slower)
                timeit_blocks([torch_fns["pipeline"], ort_fns["pipeline"]], min_time)
            # The compiled TrSORs, and the pipelines the CPU server runs with them, join the same alternating blocks.
            for s in torch_fns:
                extra = {k: (p.trsor.infer if s == "trsor" else p.infer) for k, p in compiled.items()} if s in ("trsor", "pipeline") else {}
                times = timeit_blocks([torch_fns[s], ort_fns[s]] + [lambda f=f: f(feeds) for f in extra.values()], min_time)
                r["torch"][s], r["ort"][s] = times[:2]
                for k, t in zip(extra, times[2:]):
                    r.setdefault(k, {})[s] = t
            gflop = model_gflop(det.model, crops, phi)
            floor_ms = 1e3 * gflop / peak  # the model's work at the machine's matmul rate
            r["model_gflop"] = gflop
            r["ratios"] = {
                "trsor_ort_over_floor": r["ort"]["trsor"]["median_ms"] / r["floor"]["median_ms"],
                "trsor_torch_over_floor": r["torch"]["trsor"]["median_ms"] / r["floor"]["median_ms"],
                "model_ort_over_compute_floor": r["ort"]["model"]["median_ms"] / floor_ms,
                "model_torch_over_compute_floor": r["torch"]["model"]["median_ms"] / floor_ms,
                "pipeline_ort_speedup_over_torch": r["torch"]["pipeline"]["median_ms"] / r["ort"]["pipeline"]["median_ms"],
            }
            for k in compiled:
                r["ratios"].update({
                    f"trsor_{k}_over_floor": r[k]["trsor"]["median_ms"] / r["floor"]["median_ms"],
                    f"trsor_{k}_speedup_over_ort": r["ort"]["trsor"]["median_ms"] / r[k]["trsor"]["median_ms"],
                    f"pipeline_{k}_speedup_over_torch": r["torch"]["pipeline"]["median_ms"] / r[k]["pipeline"]["median_ms"]})
            rows.append(r)
            pb.advance(task)
    result = {"kind": "engines", "machine": machine(), "threads": threads, "source": str(source),
              "crops_per_image": det.cfg.trsor.crops, "matmul_gflops": peak, "compiled": list(compiled), "rows": rows}
    if torch.cuda.is_available():
        result["cuda"] = cuda_engines(det, base, sizes, min_time)
    return result


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _percentiles(lat: list[float]) -> dict:
    a = np.array(lat) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99))}


def load_run(send: Callable[[bytes], object], images: list[bytes], concurrency: int, requests: int | None,
             duration: float | None, latencies: list[float] | None = None) -> dict:
    """Closed-loop load: `concurrency` workers send images round-robin until `requests` or `duration` is reached.
    Successful requests' latencies (s) are also appended to `latencies` when given, to pool several runs."""
    lat, errors, lock = [], [], threading.Lock()
    counter = iter(range(10**9))
    deadline = time.perf_counter() + duration if duration else None

    def worker() -> None:
        while True:
            i = next(counter)
            if (requests is not None and i >= requests) or (deadline and time.perf_counter() > deadline):
                return
            t0 = time.perf_counter()
            try:
                send(images[i % len(images)])
            except Exception as e:  # noqa: BLE001 - counted, reported
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
            else:
                with lock:
                    lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - t0
    if latencies is not None:
        latencies.extend(lat)
    return {"concurrency": concurrency, "requests": len(lat) + len(errors), "errors": len(errors),
            "error_samples": errors[:3], "wall_s": wall, "throughput_rps": len(lat) / wall, **_percentiles(lat or [0.0])}


def server_split(stats_before: dict, stats_after: dict) -> dict:
    """Per member model: average queue / compute_input / compute_infer / compute_output time per request (ms)."""
    def index(stats: dict) -> dict:
        return {m["name"]: m for m in stats.get("model_stats", [])}

    before, after = index(stats_before), index(stats_after)
    out = {}
    for name, m in after.items():
        b = before.get(name, {})
        n = int(m["inference_stats"]["success"]["count"]) - int(b.get("inference_stats", {}).get("success", {}).get("count", 0))
        execs = int(m.get("execution_count", 0)) - int(b.get("execution_count", 0))
        if n <= 0:
            continue
        row = {"requests": n, "executions": execs, "batch_sizes": _batch_sizes(b, m)}
        for k in ("queue", "compute_input", "compute_infer", "compute_output"):
            ns = int(m["inference_stats"][k]["ns"]) - int(b.get("inference_stats", {}).get(k, {}).get("ns", 0))
            row[f"{k}_ms"] = ns / n / 1e6
        out[name] = row
    return out


def _batch_sizes(before: dict, after: dict) -> dict[str, int]:
    """Executions per batch size (in batch rows: crops for the model member) between two statistics snapshots."""
    def counts(m: dict) -> dict[str, int]:
        return {str(b["batch_size"]): int(b["compute_infer"]["count"]) for b in m.get("batch_stats", [])}

    a, b = counts(after), counts(before)
    return {k: v - b.get(k, 0) for k, v in sorted(a.items(), key=lambda kv: int(kv[0])) if v - b.get(k, 0) > 0}


def server(url: str, sources: list[Path], artifacts: Path, concurrencies=(1, 2, 4, 8, 16), requests: int = 64,
           duration: float | None = None, quiet: bool = False) -> dict:
    from slsp.clients.client import SlspClient
    from slsp.export.build import served_pipeline
    from slsp.export.runners import OrtRunner
    from slsp.imaging import collect, decode
    from slsp.progress import bar

    files = collect(sources)
    images = [f.read_bytes() for f in files]
    client = SlspClient(url)
    if not client.ready():
        raise SlspError(f"no ready server at {url} (start one with `slsp serve`)")
    fused = OrtRunner(artifacts / "slsp.onnx")
    compiled = served_pipeline(artifacts)
    rows = []
    with bar(quiet) as pb:
        task = pb.add_task("bench server", total=len(concurrencies) + 1 + bool(compiled), info="")
        # Baselines in the same run, one request at a time: in-process ONNX Runtime (decode + fused graph) and,
        # with a compiled TrSOR in the artifacts, the same engines as the CPU server (serving overhead alone).
        base = load_run(lambda d: fused.infer({"image": decode(d)}), images, 1, requests, duration)
        pb.advance(task)
        same = None
        if compiled:
            same = load_run(lambda d: compiled.infer({"image": decode(d)}), images, 1, requests, duration)
            pb.advance(task)
        for c in concurrencies:
            client.detect(images[0])  # keep the pipeline warm between settings
            before = client.statistics()
            row = load_run(client.detect, images, c, requests, duration)
            row["server_split"] = server_split(before, client.statistics())
            row["throughput_vs_inprocess_ort"] = row["throughput_rps"] / base["throughput_rps"]
            if same:
                row["throughput_vs_inprocess_served_engines"] = row["throughput_rps"] / same["throughput_rps"]
            row["p99_over_p50"] = row["p99_ms"] / max(row["p50_ms"], 1e-9)
            rows.append(row)
            pb.advance(task)
    return {"kind": "server", "machine": machine(), "url": url, "protocol": client.protocol,
            "images": [str(f) for f in files], "inprocess_ort": base, "inprocess_served_engines": same,
            "served_engines": compiled.name if compiled else "ort-cpu", "rows": rows}


def save(result: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{result['kind']}-{result.get('protocol', 'inproc')}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table(result: dict) -> str:
    if result["kind"] == "engines":
        lines = [f"{'size':<11}{'floor':>8}{'trsor ort':>11}{'/floor':>8}{'trsor pt':>10}{'model ort':>11}{'model pt':>10}"
                 f"{'/mm':>6}{'pipe ort':>10}{'pipe pt':>9}{'ort/pt x':>9}{'decode':>9}"
                 + "".join(f"{'trsor ' + k:>13}{'/floor':>8}{'pipe ' + k:>13}{k + '/pt x':>12}" for k in result.get("compiled", []))
                 + "   (median ms)"]
        for r in result["rows"]:
            lines.append(f"{r['size']:<11}{r['floor']['median_ms']:>8.2f}{r['ort']['trsor']['median_ms']:>11.2f}"
                         f"{r['ratios']['trsor_ort_over_floor']:>8.1f}{r['torch']['trsor']['median_ms']:>10.2f}"
                         f"{r['ort']['model']['median_ms']:>11.2f}{r['torch']['model']['median_ms']:>10.2f}"
                         f"{r['ratios']['model_ort_over_compute_floor']:>6.1f}"
                         f"{r['ort']['pipeline']['median_ms']:>10.2f}{r['torch']['pipeline']['median_ms']:>9.2f}"
                         f"{r['ratios']['pipeline_ort_speedup_over_torch']:>9.2f}{r['decode_png']['median_ms']:>9.2f}"
                         + "".join(f"{r[k]['trsor']['median_ms']:>13.2f}{r['ratios'][f'trsor_{k}_over_floor']:>8.1f}"
                                   f"{r[k]['pipeline']['median_ms']:>13.2f}{r['ratios'][f'pipeline_{k}_speedup_over_torch']:>12.2f}"
                                   for k in result.get("compiled", [])))
        lines.append(f"/floor: TrSOR over one uint8 read + float32 write; /mm: the model over its {result['rows'][0]['model_gflop']:.2f} "
                     f"GFLOP at the {result['matmul_gflops']:.0f} GFLOP/s of a 1024^3 matmul; "
                     f"threads: {result.get('threads') or 'engine defaults'}")
        if "cuda" in result:
            cuda = result["cuda"]
            lines.append(f"PyTorch CUDA on {cuda['device']}: TrSOR " + ", ".join(
                f"{r['size']} {r['median_ms']:.2f} ms ({r['mpix_per_s']:.0f} MP/s)" for r in cuda["trsor"]) + "; model " + ", ".join(
                f"{r['crops']} crops {r['median_ms']:.2f} ms ({r['images_per_s']:.0f} img/s)" for r in cuda["model"]))
        return "\n".join(lines)
    b = result["inprocess_ort"]
    a = result.get("inprocess_served_engines")
    lines = [f"in-process ORT (c=1): {b['throughput_rps']:.2f} img/s, p50 {b['p50_ms']:.1f} ms"
             + (f"; in-process {result['served_engines']} as served (c=1): {a['throughput_rps']:.2f} img/s, "
                f"p50 {a['p50_ms']:.1f} ms" if a else ""),
             f"{'conc':>5}{'img/s':>8}{'vs ORT':>8}{'vs same':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'p99/p50':>8}{'errors':>7}   server split per request (ms)"]
    for r in result["rows"]:
        split = "  ".join(f"{m.split('_', 1)[-1]}: q{v['queue_ms']:.1f} in{v['compute_input_ms']:.1f} "
                          f"inf{v['compute_infer_ms']:.1f} out{v['compute_output_ms']:.1f}"
                          for m, v in r["server_split"].items() if m != "slsp")
        lines.append(f"{r['concurrency']:>5}{r['throughput_rps']:>8.2f}{r['throughput_vs_inprocess_ort']:>8.2f}"
                     f"{r.get('throughput_vs_inprocess_served_engines', float('nan')):>8.2f}"
                     f"{r['p50_ms']:>8.1f}{r['p90_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['p99_over_p50']:>8.2f}{r['errors']:>7}   {split}")
    return "\n".join(lines)
