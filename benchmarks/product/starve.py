"""Can expensive images starve valid traffic? A valid request's latency alone, then while threads send the costly
hostile files the issue found (a 1 x 40,000,000 PNG strip, a 7000 x 7000 black PNG) and a large corrupt JPEG.

    python benchmarks/product/starve.py --threads 6 --requests 40 --out benchmarks/results/starve.json

Both phases run in one server, one after the other, with the same valid image, so the ratio of medians is the
effect of the hostile threads. Exit 1 if a valid request failed or a hostile one was not refused.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from soak import shipped_server

from slsp.clients.client import InvalidInput, SlspClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "real_kodak24_kodim03.png"


def expensive_images() -> dict[str, bytes]:
    def png(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    noisy = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    jpeg = bytearray(buf.getvalue())
    jpeg[len(jpeg) // 2 : len(jpeg) // 2 + 4096] = np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes()
    return {"strip 1 x 40M": png(Image.new("RGB", (40_000_000, 1))),
            "black 7000 x 7000": png(Image.new("RGB", (7000, 7000))), "corrupt 3 MP jpeg": bytes(jpeg)}


def latencies(client: SlspClient, data: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.detect(data)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def run(url: str, threads: int, requests: int) -> dict:
    client = SlspClient(url, timeout=120)
    good = EXAMPLE.read_bytes()
    bad = expensive_images()
    latencies(client, good, 5)  # warm-up
    alone = latencies(client, good, requests)
    stop, refused, other = threading.Event(), [0], []

    def hammer(k: int) -> None:
        files = list(bad.values())
        i = k
        while not stop.is_set():
            t = time.perf_counter()
            try:
                client.detect(files[i % len(files)])
                other.append("accepted")
            except InvalidInput:
                refused[0] += 1
            except Exception as e:  # noqa: BLE001
                other.append(f"{type(e).__name__}: {e}"[:200])
            cost.setdefault(list(bad)[i % len(files)], []).append((time.perf_counter() - t) * 1e3)
            i += 1

    cost: dict[str, list[float]] = {}
    workers = [threading.Thread(target=hammer, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    loaded = latencies(client, good, requests)
    stop.set()
    for w in workers:
        w.join()
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return {"threads": threads, "requests": requests, "sizes_bytes": {k: len(v) for k, v in bad.items()},
            "valid_p50_ms_alone": med(alone), "valid_p50_ms_under_hostile": med(loaded),
            "valid_p90_ms_under_hostile": float(np.percentile(loaded, 90)), "ratio_p50": med(loaded) / med(alone),
            "hostile_refused": refused[0], "hostile_not_refused": other[:5],
            "hostile_p50_ms": {k: med(v) for k, v in cost.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/starve.json"))
    args = ap.parse_args(argv)
    with shipped_server([EXAMPLE]) as srv:
        res = run(srv.grpc_url, args.threads, args.requests)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0 if not res["hostile_not_refused"] else 1


if __name__ == "__main__":
    sys.exit(main())
