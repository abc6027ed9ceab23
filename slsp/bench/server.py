"""`slsp bench server`: a closed-loop load generator for the live server, next to in-process baselines measured in
the same run, with Triton's own per-member time split."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from slsp import contract
from slsp.bench.timing import machine
from slsp.errors import SlspError


def _percentiles(lat: list[float]) -> dict:
    a = np.array(lat) * 1e3
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
    }


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
    return {
        "concurrency": concurrency,
        "requests": len(lat) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wall_s": wall,
        "throughput_rps": len(lat) / wall,
        **_percentiles(lat or [0.0]),
    }


def server_split(stats_before: dict, stats_after: dict) -> dict:
    """Per member model: average queue / compute_input / compute_infer / compute_output time per request (ms)."""
    def index(stats: dict) -> dict:
        return {m["name"]: m for m in stats.get("model_stats", [])}

    before, after = index(stats_before), index(stats_after)
    out = {}
    for name, m in after.items():
        b = before.get(name, {})
        n = int(m["inference_stats"]["success"]["count"]) - int(
            b.get("inference_stats", {}).get("success", {}).get("count", 0)
        )
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


def measure(url: str, sources: list[Path], artifacts: Path, concurrencies=(1, 2, 4, 8, 16), requests: int = 64,
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
    fused = OrtRunner(artifacts / contract.FUSED.onnx)
    compiled = served_pipeline(artifacts)
    rows = []
    with bar(quiet) as pb:
        task = pb.add_task("bench server", total=len(concurrencies) + 1 + bool(compiled), info="")
        # Baselines in the same run, one request at a time: in-process ONNX Runtime (decode + fused graph) and,
        # with a compiled TrSOR in the artifacts, the same engines as the CPU server (serving overhead alone).
        def feed(data: bytes) -> dict:
            return {contract.IMAGE: decode(data), contract.LOW_RESOLUTION: np.array(False)}

        base = load_run(lambda d: fused.infer(feed(d)), images, 1, requests, duration)
        pb.advance(task)
        same = None
        if compiled:
            same = load_run(lambda d: compiled.infer(feed(d)), images, 1, requests, duration)
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


def table(result: dict) -> str:
    """The server result as printed by `slsp bench server`."""
    b = result["inprocess_ort"]
    a = result.get("inprocess_served_engines")
    lines = [
        f"in-process ORT (c=1): {b['throughput_rps']:.2f} img/s, p50 {b['p50_ms']:.1f} ms"
        + (
            f"; in-process {result['served_engines']} as served (c=1): {a['throughput_rps']:.2f} img/s, "
            f"p50 {a['p50_ms']:.1f} ms"
            if a
            else ""
        ),
        f"{'conc':>5}{'img/s':>8}{'vs ORT':>8}{'vs same':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'p99/p50':>8}{'errors':>7}"
        "   server split per request (ms)",
    ]
    for r in result["rows"]:
        split = "  ".join(f"{m.split('_', 1)[-1]}: q{v['queue_ms']:.1f} in{v['compute_input_ms']:.1f} "
                          f"inf{v['compute_infer_ms']:.1f} out{v['compute_output_ms']:.1f}"
                          for m, v in r["server_split"].items() if m != contract.ENSEMBLE)
        lines.append(
            f"{r['concurrency']:>5}{r['throughput_rps']:>8.2f}{r['throughput_vs_inprocess_ort']:>8.2f}"
            f"{r.get('throughput_vs_inprocess_served_engines', float('nan')):>8.2f}"
            f"{r['p50_ms']:>8.1f}{r['p90_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['p99_over_p50']:>8.2f}"
            f"{r['errors']:>7}   {split}"
        )
    return "\n".join(lines)
