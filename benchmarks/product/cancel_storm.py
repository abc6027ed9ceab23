"""Issue 38, finding 1: bursts of gRPC calls, every other one with a 50 ms deadline, on a full queue; tritonserver
2.51 reached directly, then through slsp's edge (slsp/edge.py), a fresh server for each.

    python benchmarks/product/cancel_storm.py --artifacts artifacts [--bursts 15] [--out results/cancel-storm.json]

A burst is 200 async ModelInfer calls to `slsp` on a repository written with max_inflight=4. Reports, per path,
how many bursts the server survived, the outcomes of the calls and, for the edge, how many cancellations it
absorbed. The crash is a race: a run that survives every burst directly does not show it is gone.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from slsp.edge import Edge
from slsp.export import repository
from slsp.server import HEADER_ALLOWANCE, Server, free_port

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "real_kodak24_kodim03.png"


def storm(url: str, srv: Server, bursts: int) -> dict:
    inp = grpcclient.InferInput("IMAGE", [1], "BYTES")
    inp.set_data_from_numpy(np.array([PHOTO.read_bytes()], dtype=object))
    client = grpcclient.InferenceServerClient(url)
    outcomes: collections.Counter = collections.Counter()
    survived = 0
    for _ in range(bursts):
        done: list = []
        for i in range(200):
            client.async_infer("slsp", [inp], lambda result, error, d=done: d.append(error),
                               client_timeout=0.05 if i % 2 else None)
        deadline = time.monotonic() + 120
        while len(done) < 200 and time.monotonic() < deadline and srv.proc.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
        outcomes.update("ok" if e is None else str(e).split("]")[0].strip("[") for e in done)
        if srv.proc.poll() is not None:
            break
        survived += 1
    client.close()
    return {"bursts": bursts, "survived": survived, "exit_code": srv.proc.poll(), "outcomes": dict(outcomes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="from `slsp export --out`")
    ap.add_argument("--bursts", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "cancel-storm.json")
    a = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("direct", "edge"):
            repo = Path(tmp) / path
            repository.write(a.artifacts, repo, repository.ServingConfig(max_inflight=4))
            with Server(repo, log_path=Path(tmp) / f"{path}.log") as srv:
                if path == "direct":
                    result[path] = storm(f"127.0.0.1:{srv.grpc_port}", srv, a.bursts)
                else:
                    with Edge("127.0.0.1", free_port(), free_port(), srv.http_port, srv.grpc_port,
                              repository.max_bytes(repo) + HEADER_ALLOWANCE) as edge:
                        result[path] = storm(f"127.0.0.1:{edge.grpc_port}", srv, a.bursts)
                        result[path]["absorbed"] = edge.absorbed
            print(path, json.dumps(result[path]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
