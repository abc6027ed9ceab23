"""Memory after oversized requests: what a few requests over the byte limit leave behind in a local CPU server.

    python benchmarks/product/oversized.py --mb 256 --count 4 --out benchmarks/results/oversized.json

Triton 2.51 (the bundled server) has no request-size limit of its own: the whole body is received and copied into
the decode member's shared-memory region before the member checks `max_bytes` and refuses it (HTTP 400). This
records, against a baseline taken after warm-up in the same run: the resident memory of the server and its
Python-backend stubs (shared pages count in every process that touched them), the bytes in /dev/shm, each refusal's
latency, and whether a valid request is still answered with the same score. Exit 1 if it is not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.http as http
from soak import shipped_server, tree_rss_mb

from slsp import contract
from slsp.clients.client import SlspClient
from slsp.server import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "real_kodak24_kodim03.png"


def shm_mb() -> float:
    return sum(f.stat().st_size for f in Path("/dev/shm").iterdir() if f.is_file()) / 2**20


def measure(srv: Server, mb: int, count: int, rest_s: float) -> dict:
    good = EXAMPLE.read_bytes()
    client = SlspClient(srv.http_url)
    score = client.detect(good).score
    for _ in range(4):
        client.detect(good)
    time.sleep(2)

    def sample(label: str, **kw) -> dict:
        return {"at": label, "rss_mib": round(tree_rss_mb(srv.proc.pid)), "dev_shm_mib": round(shm_mb()), **kw}

    rows = [sample("baseline")]
    raw = http.InferenceServerClient(srv.http_url.removeprefix("http://"), network_timeout=600, connection_timeout=600)
    body = np.array([b"\x89PNG" + bytes(mb << 20)], dtype=object)
    for i in range(count):
        inp = http.InferInput(contract.ENSEMBLE_INPUT.name, [1], "BYTES")
        inp.set_data_from_numpy(body)
        t = time.perf_counter()
        try:
            raw.infer(contract.ENSEMBLE, [inp])
            status = "accepted"
        except Exception as e:  # noqa: BLE001 - the refusal is what is measured
            status = str(e).split("]")[0].lstrip("[")
        rows.append(sample(f"after oversized {i + 1}", status=status, seconds=round(time.perf_counter() - t, 2)))
        del inp
    time.sleep(rest_s)
    rows.append(sample(f"{rest_s:g} s later"))
    after = client.detect(good).score
    return {"mb": mb, "count": count, "samples": rows, "valid_score_before": score, "valid_score_after": after,
            "valid_unchanged": abs(after - score) < 1e-6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="size of each oversized request, MiB")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--rest", type=float, default=10.0, help="seconds to wait before the last sample")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/oversized.json"))
    args = ap.parse_args(argv)
    with shipped_server([EXAMPLE]) as srv:
        res = measure(srv, args.mb, args.count, args.rest)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0 if res["valid_unchanged"] else 1


if __name__ == "__main__":
    sys.exit(main())
