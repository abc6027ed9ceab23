"""A canary inference: one small photo-like image through the whole ensemble over HTTP, with a deadline.

Triton's `/v2/health/ready` says the members are loaded, not that a request gets through: a stalled member leaves
it answering 200 while every request hangs. A busy server is not a stalled one, though (issue 38, finding 3): a
canary refused by the bounded queue (503, "Exceeds maximum queue size") or timed out while the ensemble kept
completing other requests (its success count in Triton's statistics moved) is `busy`; only a canary that fails
while nothing completes is `stalled`. `slsp serve` runs this periodically and stops a server found stalled three
times in a row (so a supervisor restarts it); the Kubernetes manifests run it as the pods' liveness probe
(`python3 -m slsp.canary`: fails when stalled, so a busy pod is not restarted) and readiness probe (`--ready`:
fails when busy too, so a saturated pod sheds load to the others). Standard library, numpy and Pillow only: it runs
in the serving image.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from slsp import contract

CANARY_FAILURES = 3  # failures in a row before a server counts as stalled (slsp serve, the Kubernetes probes)


def canary_image(side: int = 256) -> bytes:
    """A smooth ramp with sensor-like noise, as PNG: decodes, passes every size limit and is not flat."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    img = (60 + 0.4 * yy + 0.2 * xx)[..., None] + rng.normal(0, 2.0, (side, side, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Busy(RuntimeError):
    """The server refused the canary because its bounded queue is full: alive, and shedding load."""


def canary(url: str = "http://127.0.0.1:8000", timeout: float = 5.0, image: bytes | None = None) -> float:
    """The ensemble's score for the canary image; raises Busy when the queue refuses it, RuntimeError when no
    answer comes within `timeout` s or it fails otherwise."""
    data = canary_image() if image is None else image
    tensor = struct.pack("<I", len(data)) + data  # one BYTES element: 4-byte length, then the bytes
    header = json.dumps({
        "inputs": [{"name": contract.ENSEMBLE_INPUT.name, "shape": [1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": contract.served(contract.SCORE), "parameters": {"binary_data": False}}],
    }).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v2/models/{contract.ENSEMBLE}/infer", data=header + tensor, method="POST",
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")[:300]
        if e.code == 503 or "maximum queue size" in text:
            raise Busy(f"canary inference at {url} refused, the queue is full: {text}") from e
        raise RuntimeError(f"canary inference at {url} failed: HTTP {e.code} {text}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:  # refused, timed out, bad JSON
        raise RuntimeError(f"canary inference at {url} failed: {e}") from e
    return float(body["outputs"][0]["data"][0])


def completed(url: str, timeout: float = 5.0) -> int | None:
    """Requests the ensemble has answered successfully since it loaded (Triton's statistics), None if unreadable."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/{contract.ENSEMBLE}/stats", timeout=timeout) as r:
            stats = json.loads(r.read())
        return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None


def health(url: str = "http://127.0.0.1:8000", timeout: float = 5.0) -> tuple[str, str]:
    """("ok" | "busy" | "stalled", what was seen): the canary answered; it was refused by the full queue or timed out
    while other requests completed; it failed and nothing completed meanwhile."""
    before = completed(url, timeout)
    try:
        return "ok", f"score {canary(url, timeout):.4f}"
    except Busy as e:
        return "busy", str(e)
    except RuntimeError as e:
        after = completed(url, timeout)
        if before is not None and after is not None and after > before:
            return "busy", f"{e}; meanwhile {after - before} other requests completed"
        return "stalled", str(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Exit 0 unless the slsp pipeline is stalled (a liveness probe); with "
                                 "--ready, unless it is stalled or busy (a readiness probe).")
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--ready", action="store_true", help="fail when busy too (shed load)")
    args = ap.parse_args(argv)
    state, seen = health(args.url, args.timeout)
    print(f"{state}: {seen}", file=sys.stdout if state == "ok" else sys.stderr)
    return 1 if state == "stalled" or (args.ready and state == "busy") else 0


if __name__ == "__main__":
    sys.exit(main())
