"""A/B two Triton repositories under the same load, in one run: both servers up, load blocks alternating.

    python benchmarks/ab_server.py REPO_A REPO_B --images ../shared/data/real/dev --concurrency 8 --rounds 3

Each round sends `--requests` images at `--concurrency` to A, then to B (an idle server costs no CPU), so a
slow spell of a noisy machine lands on both sides. Prints throughput, p50 and p99 per repository and B's
throughput over A's; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from slsp.bench.server import load_run
from slsp.clients.client import SlspClient
from slsp.imaging import collect
from slsp.server import Server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repos", type=Path, nargs=2)
    ap.add_argument("--images", type=Path, action="append", required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=59, help="requests per block")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    images = [f.read_bytes() for f in collect(args.images)]
    servers = [Server(repo).start(timeout=300) for repo in args.repos]
    try:
        clients = [SlspClient(s.grpc_url) for s in servers]
        for c in clients:  # warm: every image size once, so no block pays for first-time allocations
            c.detect_many(images, concurrency=args.concurrency)
        lat: list[list[float]] = [[], []]
        wall, done, errors = [0.0, 0.0], [0, 0], [0, 0]
        for _ in range(args.rounds):
            for i, c in enumerate(clients):
                r = load_run(c.detect, images, args.concurrency, args.requests, None, latencies=lat[i])
                wall[i] += r["wall_s"]
                done[i] += r["requests"] - r["errors"]
                errors[i] += r["errors"]
    finally:
        for s in servers:
            s.stop()
    rows = [{"repo": str(repo), "throughput_rps": done[i] / wall[i], "errors": errors[i],
             "p50_ms": float(np.percentile(lat[i], 50) * 1e3), "p99_ms": float(np.percentile(lat[i], 99) * 1e3)}
            for i, repo in enumerate(args.repos)]
    result = {"concurrency": args.concurrency, "requests_per_block": args.requests, "rounds": args.rounds,
              "images": len(images), "rows": rows, "b_over_a": rows[1]["throughput_rps"] / rows[0]["throughput_rps"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for r in rows:
        print(f"{r['repo']}: {r['throughput_rps']:.2f} img/s  p50 {r['p50_ms']:.0f} ms  p99 {r['p99_ms']:.0f} ms  "
              f"errors {r['errors']}")
    print(
        f"B / A throughput: {result['b_over_a']:.2f}x  "
        f"(c={args.concurrency}, {args.rounds} x {args.requests} requests each)"
    )


if __name__ == "__main__":
    main()
