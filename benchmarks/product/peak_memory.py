"""Peak memory of `slsp detect` on one large image, per model, alternated over several runs.

    python benchmarks/product/peak_memory.py [--model RUN ...] [--runs 3] [--out benchmarks/results/peak-memory.json]

The image is made here, seeded: a 6000 x 4000 noisy ramp saved as PNG (24 megapixels, scored at 3000 x 2000 after
the canonical halving). Each run is one `slsp detect` process; its peak resident memory comes from the kernel's
accounting of that child alone (`os.wait4`). Models (default: the shipped one; "default" names it among others)
are alternated run by run, so a drift of the machine shows in all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def ramp(path: Path, h: int = 4000, w: int = 6000) -> None:
    """Made 200 rows at a time: a forked child's peak RSS counts this process's pages at the fork, so this process
    must stay far below what it measures."""
    rng = np.random.default_rng(0)
    img = np.empty((h, w, 3), np.uint8)
    xx = np.arange(w)[None, :, None]
    for y in range(0, h, 200):
        yy = np.arange(y, min(y + 200, h))[:, None, None]
        img[y : y + 200] = np.clip(60 + 0.02 * yy + 0.01 * xx + rng.normal(0, 2, (len(yy), w, 3)), 0, 255)
    Image.fromarray(img).save(path)


def peak_mb(image: Path, model: str) -> float:
    """One `slsp detect` process; its peak RSS in MB (ru_maxrss is in KB on Linux)."""
    cmd = [sys.executable, "-m", "slsp.cli", "detect", str(image), "-q"] + ([] if model == "default" else
                                                                         ["--model", model])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help='run folder (repeatable; "default": the shipped model)')
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peak-memory.json")
    args = ap.parse_args()
    models = args.model or ["default"]
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "ramp.png"
        ramp(image)
        peaks = {m: [] for m in models}
        for _ in range(args.runs):
            for m in models:
                peaks[m].append(peak_mb(image, m))
    result = {"image": "6000 x 4000 noisy ramp, PNG", "runs": args.runs, "peak_rss_mb": peaks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for m, v in peaks.items():
        print(f"{m}: peak RSS {min(v):.0f}-{max(v):.0f} MB over {len(v)} runs")


if __name__ == "__main__":
    main()
