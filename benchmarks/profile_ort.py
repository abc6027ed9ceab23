"""Where ONNX Runtime spends a graph's time, by operator type (ORT's own profiler).

    python benchmarks/profile_ort.py artifacts/trsor.onnx --size 1024x1024 [--runs 5]

Feeds `image` (a real photo mirror-tiled to the size) for stage graphs that take one, else random crops.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from slsp import contract
from slsp.bench.timing import parse_size, photo_at
from slsp.imaging import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path)
    ap.add_argument("--size", default="1024x1024", help="WxH of the image input")
    ap.add_argument("--source", type=Path, default=Path("../shared/data/real/train/sun-hays80_img_011.png"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(str(args.onnx), opts, providers=["CPUExecutionProvider"])
    h, w = parse_size(args.size)
    rng = np.random.default_rng(0)
    feed = {}
    for i in sess.get_inputs():
        if i.name == contract.IMAGE:
            feed[i.name] = photo_at(load(args.source), h, w)
        elif i.name == contract.LOW_RESOLUTION:
            feed[i.name] = np.array(False)
        else:  # batch of 16 for dynamic dims, uint8 crops / float Phi
            shape = [16 if not isinstance(d, int) else d for d in i.shape]
            feed[i.name] = (rng.integers(0, 256, shape, dtype=np.uint8) if "uint8" in i.type
                            else (rng.random(shape) > 0.5).astype(np.float32))
    for _ in range(args.runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    for op, us in per_op.most_common(12):
        print(f"{op:<20}{us / args.runs / 1e3:>9.2f} ms {100 * us / total:>6.1f}%")
    print(f"{'total':<20}{total / args.runs / 1e3:>9.2f} ms")


if __name__ == "__main__":
    main()
