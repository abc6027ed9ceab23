"""What reading provenance adds per image, beside the pixel detector's own time, in the same run.

    python benchmarks/product/provenance_time.py [FILES_OR_FOLDERS ...] [--out results/provenance-time.json]

Default images: examples/ and the dev split's camera JPEGs (../shared/data/real/dev/exif-*). For each image:
`slsp.provenance.read` on its bytes (the call `slsp detect` and the server's decode member make) and the shipped
detector's `detect` on its decoded pixels, best of 3 each. Prints the medians and the worst case.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from slsp import detector as det_io
from slsp import provenance
from slsp.imaging import collect, decode

ROOT = Path(__file__).resolve().parents[2]


def best(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "provenance-time.json")
    a = ap.parse_args()
    paths = a.paths or [ROOT / "examples", *sorted((ROOT.parent / "shared/data/real/dev").glob("exif-*"))]
    det = det_io.load()
    rows = []
    for f in collect(paths):
        data = f.read_bytes()
        img = decode(data)
        rows.append({"file": f.name, "bytes": len(data), "megapixels": img.shape[0] * img.shape[1] / 1e6,
                     "provenance_ms": 1e3 * best(lambda d=data: provenance.read(d)),
                     "detect_ms": 1e3 * best(lambda i=img: det.detect(i), 1),
                     "verdict": provenance.read(data)["verdict"]})
        print(json.dumps(rows[-1]), flush=True)
    p = np.array([r["provenance_ms"] for r in rows])
    d = np.array([r["detect_ms"] for r in rows])
    summary = {"images": len(rows), "provenance_ms_median": float(np.median(p)), "provenance_ms_max": float(p.max()),
               "detect_ms_median": float(np.median(d)), "ratio_median": float(np.median(p / d))}
    print(json.dumps(summary))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
