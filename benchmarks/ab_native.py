"""A/B builds of the native TrSOR kernel: other sources of export/trsor.cpp, other -march levels and other models'
TrSOR settings (e.g. with and without skip_clipped), one run.

    git show 187f543^:export/trsor.cpp > /tmp/before.cpp
    python benchmarks/ab_native.py /tmp/before.cpp export/trsor.cpp --march x86-64-v3 --march x86-64-v4 \
        --size 1024x1024 --size 2048x2048 --threads 1 --threads 2
    python benchmarks/ab_native.py export/trsor.cpp --model runs/no-skip --model slsp/default

Every (model, source, march) triple is built by `slsp.export.trsor_native.build` (the flags `slsp export --native` uses)
and timed through `NativeRunner.infer` in alternating blocks, so each variant pays the same Python around the
kernel. Sources must have the current C signature (commits from 7a325d2 on). Prints median ms per variant and
its speed-up over the first; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from slsp import contract, detector
from slsp.bench.timing import ab, ab_cells, parse_size, photo_at
from slsp.export import trsor_native
from slsp.imaging import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", type=Path, nargs="+")
    ap.add_argument("--march", action="append", help="-march level (repeatable); default: the highest this CPU has")
    ap.add_argument("--size", action="append", help="WxH (repeatable); default 1024x1024 and 2048x2048")
    ap.add_argument("--threads", type=int, action="append", help="kernel threads (repeatable); default 1")
    ap.add_argument("--model", type=Path, action="append", help="detector run (repeatable); default: the shipped one")
    ap.add_argument("--source-image", type=Path, default=Path("../shared/data/real/train/sun-hays80_img_011.png"))
    ap.add_argument("--block", type=float, default=0.5, help="seconds per timing block")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per variant, interleaved")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = args.model or [None]
    dets, base = {m: detector.load(m) for m in models}, load(args.source_image)
    marches = args.march or [trsor_native.isa_levels()[-1] if trsor_native.isa_levels() else "default"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = {}
        for i, (m, src, march) in enumerate(itertools.product(models, args.sources, marches)):
            out = Path(tmp) / str(i)
            out.mkdir()
            trsor_native.build(dets[m], out, march, src)
            name = f"{src}@{march}" if m is None else f"{m}:{src}@{march}"
            variants[name if name not in variants else f"{name}#{i}"] = out  # the same build twice: a noise check
        for threads in args.threads or [1]:
            runners = {name: trsor_native.NativeRunner(d, threads) for name, d in variants.items()}
            for size in args.size or ["1024x1024", "2048x2048"]:
                feed = {contract.IMAGE: photo_at(base, *parse_size(size))}
                fns = {name: lambda r=r: r.infer(feed) for name, r in runners.items()}
                rows.append({"size": size, "threads": threads, **ab(fns, args.block, args.rounds)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['size']:<11} {r['threads']} thr  {ab_cells(r, 2)}")


if __name__ == "__main__":
    main()
