"""A/B two or more ONNX graphs of one stage on the same real photo, in alternating timing blocks (one run).

    python benchmarks/ab_onnx.py benchmarks/results/trsor-276dafd.onnx artifacts/trsor.onnx \
        --size 1024x1024 --size 2048x2048 --size 4000x3000

For graphs that take `image` (TrSOR, the fused pipeline). Prints median ms per graph and each graph's speed-up
over the first; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from slsp import contract
from slsp.bench.timing import ab, ab_cells, parse_size, photo_at
from slsp.imaging import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, nargs="+")
    ap.add_argument("--size", action="append", help="WxH (repeatable); default 1024x1024 and 2048x2048")
    ap.add_argument("--source", type=Path, default=Path("../shared/data/real/train/sun-hays80_img_011.png"))
    ap.add_argument("--block", type=float, default=0.5, help="seconds per timing block")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per graph, interleaved")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in args.onnx]
    base = load(args.source)
    rows = []
    for size in args.size or ["1024x1024", "2048x2048"]:
        feed = {contract.IMAGE: photo_at(base, *parse_size(size)), contract.LOW_RESOLUTION: np.array(False)}
        fns = {str(p): lambda s=sess: s.run(None, {i.name: feed[i.name] for i in s.get_inputs()})
               for p, sess in zip(args.onnx, sessions)}
        rows.append({"size": size, **ab(fns, args.block, args.rounds)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['size']:<11} {ab_cells(r)}")


if __name__ == "__main__":
    main()
