"""A canary inference: one small photo-like image through the whole ensemble over HTTP, with a deadline.

Triton's `/v2/health/ready` says the members are loaded, not that a request gets through: a stalled member leaves
it answering 200 while every request hangs. `slsp serve` runs this periodically and stops a server that fails it
(so a supervisor restarts it), and the Kubernetes manifests run it as the pods' readiness and liveness probe
(`python3 -m slsp.canary`). Standard library, numpy and Pillow only: it runs in the serving image.
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


def canary(url: str = "http://127.0.0.1:8000", timeout: float = 5.0, image: bytes | None = None) -> float:
    """The ensemble's score for the canary image; raises RuntimeError when no answer comes within `timeout` s."""
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
    except (urllib.error.URLError, OSError, ValueError) as e:  # refused, timed out, an error status, bad JSON
        raise RuntimeError(f"canary inference at {url} failed: {e}") from e
    return float(body["outputs"][0]["data"][0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Exit 0 if the slsp ensemble answers a canary inference in time.")
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    try:
        score = canary(args.url, args.timeout)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"ok: score {score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
