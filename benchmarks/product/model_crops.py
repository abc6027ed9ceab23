"""The model stage's cost against its crop count (issue 41): the shipped model scores 48 crops an image (16 per
pyramid level) where the one-level model scored 16. ONNX Runtime on `model.onnx` of an export, in one run: 16 crops,
48 crops in one call, three calls of 16, each at 1 and 2 intra-op threads.

    python benchmarks/product/model_crops.py --artifacts artifacts [--out benchmarks/results/model-crops.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/model-crops.json"))
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args(argv)

    from slsp import contract
    from slsp.bench.timing import machine, timeit_blocks
    from slsp.export.runners import OrtRunner

    rng = np.random.default_rng(0)
    c = 64
    crops = rng.integers(0, 256, (48, c, c, 3), dtype=np.uint8)
    phi = (rng.random((48, c, c)) > 0.5).astype(np.float32)
    feed = lambda n, a=0: {contract.CROPS: crops[a : a + n], contract.CROP_PHI: phi[a : a + n]}  # noqa: E731
    rows = []
    for threads in (1, 2):
        model = OrtRunner(args.artifacts / contract.MODEL.onnx, threads=threads)
        fns = {"16 crops": lambda: model.infer(feed(16)), "48 crops, one call": lambda: model.infer(feed(48)),
               "3 calls of 16": lambda: [model.infer(feed(16, a)) for a in (0, 16, 32)]}
        times = timeit_blocks(list(fns.values()), args.min_time)
        for name, t in zip(fns, times):
            rows.append({"threads": threads, "case": name, **t})
    base = {r["threads"]: r["median_ms"] for r in rows if r["case"] == "16 crops"}
    for r in rows:
        r["over_16_crops"] = r["median_ms"] / base[r["threads"]]
    result = {"kind": "model-crops", "machine": machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"threads {r['threads']}  {r['case']:<20}{r['median_ms']:>8.2f} ms  {r['over_16_crops']:.2f}x 16 crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
