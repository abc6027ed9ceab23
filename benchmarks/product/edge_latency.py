"""What the edge (slsp/edge.py) adds per request: the same images sent to tritonserver directly and through the edge,
alternating, over gRPC and HTTP, in one run.

    python benchmarks/product/edge_latency.py --artifacts artifacts [--rounds 20] [--out results/edge-latency.json]

Sequential requests (concurrency 1) of the files in examples/; per protocol and path, the median and p90 latency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from slsp.clients.client import SlspClient
from slsp.edge import Edge
from slsp.export import repository
from slsp.server import HEADER_ALLOWANCE, Server, free_port

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="from `slsp export --out`")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edge-latency.json")
    a = ap.parse_args()
    images = [p.read_bytes() for p in sorted((ROOT / "examples").glob("*.png"))]
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repository.write(a.artifacts, repo)
        with Server(repo, log_path=Path(tmp) / "log") as srv, Edge(
                "127.0.0.1", free_port(), free_port(), srv.http_port, srv.grpc_port,
                repository.max_bytes(repo) + HEADER_ALLOWANCE) as edge:
            urls = {"grpc direct": srv.grpc_url, "grpc edge": f"grpc://127.0.0.1:{edge.grpc_port}",
                    "http direct": srv.http_url, "http edge": f"http://127.0.0.1:{edge.http_port}"}
            clients = {k: SlspClient(u) for k, u in urls.items()}
            for c in clients.values():  # warm every path
                c.detect(images[0])
            for _ in range(a.rounds):
                for data in images:
                    for k, c in clients.items():
                        t = time.perf_counter()
                        c.detect(data)
                        times.setdefault(k, []).append(1e3 * (time.perf_counter() - t))
    result = {k: {"requests": len(v), "median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}
              for k, v in times.items()}
    for proto in ("grpc", "http"):
        result[f"{proto} added_median_ms"] = result[f"{proto} edge"]["median_ms"] - result[f"{proto} direct"][
            "median_ms"]
    print(json.dumps(result, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
