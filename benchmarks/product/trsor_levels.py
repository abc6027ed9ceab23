"""Where the native TrSOR's time goes over the pyramid (issue 41), one run: the whole stage, the kernel on each level,
each coarser level's box average built by the kernel, by NumPy's uint16 halving (`slsp.pyramid.box_level`) and by
the int64 reshape-sum NumPy used before issue 41, on the checkout's photo mirror-tiled to each size.

    python benchmarks/product/trsor_levels.py --artifacts artifacts [--size 1024x1024 --size 4000x3000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def int64_box(image: np.ndarray, f: int) -> np.ndarray:
    """The box level as built before issue 41: an int64 copy and a 5-D reshape-sum."""
    h, w = image.shape[0] // f * f, image.shape[1] // f * f
    s = image[:h, :w].astype(np.int64).reshape(h // f, f, w // f, f, 3).sum(axis=(1, 3))
    return ((s + f * f // 2) // (f * f)).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="an export with --native")
    ap.add_argument("--size", action="append", help="WxH (repeatable; default 1024x1024 and 4000x3000)")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/trsor-levels.json"))
    args = ap.parse_args(argv)

    from slsp import pyramid
    from slsp.bench.timing import machine, parse_size, photo_at, timeit_blocks
    from slsp.export.trsor_native import NativeRunner
    from slsp.imaging import load

    runner = NativeRunner(args.artifacts)
    levels = runner.meta["levels"]
    base = load(Path(__file__).resolve().parents[2] / "examples" / "real_kodak24_kodim03.png")
    rows = []
    for size in args.size or ["1024x1024", "4000x3000"]:
        h, w = parse_size(size)
        img = np.ascontiguousarray(photo_at(base, h, w))
        fns = {"stage": lambda: runner.infer({"image": img})}
        for lv in range(levels):
            f = 2**lv
            pixels = img if lv == 0 else np.ascontiguousarray(runner.box(img, f))
            fns[f"kernel level {lv}"] = lambda p=pixels: runner.level({"image": p})
            if lv:
                fns[f"box {f}x{f}: kernel"] = lambda f=f: runner.box(img, f)
                fns[f"box {f}x{f}: numpy uint16"] = lambda f=f: pyramid.box_level(img, f)
                fns[f"box {f}x{f}: numpy int64 (before)"] = lambda f=f: int64_box(img, f)
        times = timeit_blocks(list(fns.values()), args.min_time)
        rows.append({"size": size, **{k: t for k, t in zip(fns, times)}})
        for k, t in zip(fns, times):
            print(f"{size:<11}{k:<32}{t['median_ms']:>9.2f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": "trsor-levels", "machine": machine(), "threads": runner.threads,
                                    "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
