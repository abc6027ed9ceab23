"""Timing primitives shared by every benchmark: alternating blocks, machine description, results files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np


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
        info["cpu_model"] = next(
            row.split(":", 1)[1].strip() for row in open("/proc/cpuinfo") if row.startswith("model name")
        )
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
    return "  ".join(
        f"{k}: {v:.{digits}f} ms ({row['speedup_over_first'][k]:.2f}x)" for k, v in row["median_ms"].items()
    )


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def save(result: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{result['kind']}-{result.get('protocol', 'inproc')}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


