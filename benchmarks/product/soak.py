"""Soak test: many requests at fixed concurrency against a local server, valid and invalid images mixed.

    python benchmarks/product/soak.py --requests 10000 --concurrency 8 --out benchmarks/results/soak.json

Starts its own server (CPU repository exported from the shipped model unless --repo is given), records the
server's resident memory (server plus its Python-backend stubs) over time, and checks: no valid request failed,
every invalid one got an error, RSS growth after warm-up < 10% (end of run over the peak of the first half after
warm-up; warm-up lasts until every image has been answered once). Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from slsp.clients.client import InvalidInput, SlspClient
from slsp.export import build, repository
from slsp.imaging import collect
from slsp.server import Server


@contextlib.contextmanager
def shipped_server(gate_images: list[Path], repo: Path | None = None) -> Iterator[Server]:
    """A local bundled server of `repo`, or of a CPU repository exported here from the shipped model (its parity
    gate on `gate_images`); everything it wrote is removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        if repo is None:
            build.build(None, Path(tmp) / "artifacts", images=gate_images, sizes=0)
            repo = Path(tmp) / "repo"
            repository.write(Path(tmp) / "artifacts", repo)
        with Server(repo, log_path=Path(tmp) / "server.log") as srv:
            yield srv


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (from /proc), in MiB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _encoded(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def invalid_images() -> list[bytes]:
    """Hostile and broken uploads: empty, garbage, truncated, tiny, a strip, a flat image, formats outside the
    allow-list, a corrupt file for a decoder with its own exception types (BLP), a header declaring 900 MP."""
    noisy = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    jpeg = _encoded(noisy, "JPEG")
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    flat = np.full((300, 300, 3), 90, np.uint8)
    return [b"", b"not an image at all", jpeg[: len(jpeg) // 2], _encoded(noisy[:8, :8], "PNG"),
            _encoded(noisy[:130, :130].repeat(40, axis=1), "PNG"), _encoded(flat, "PNG"),
            _encoded(noisy[:64, :64], "ICO"), _encoded(noisy, "PCX"), b"BLP1" + bytes(range(256)) * 4, bomb]


def soak(url: str, pid: int, valid: list[bytes], requests: int, concurrency: int, invalid_every: int) -> dict:
    client = SlspClient(url, timeout=120)
    bad = invalid_images()
    lock = threading.Lock()
    lat, failed_valid, unanswered_invalid, answered_invalid = [], [], 0, 0
    rss: list[tuple[float, float]] = []
    counter = iter(range(requests))
    # Warm-up ends once every valid image that the run sends has been answered: until then each new image size
    # may still grow the runtimes' memory arenas, which is not a leak.
    to_see = {i % len(valid) for i in range(requests) if not (invalid_every and i % invalid_every == invalid_every - 1)}
    seen: set[int] = set()
    warm_at: list[float] = []
    t0 = time.perf_counter()

    def worker() -> None:
        nonlocal unanswered_invalid, answered_invalid
        for i in counter:
            is_bad = invalid_every and i % invalid_every == invalid_every - 1
            data = bad[i % len(bad)] if is_bad else valid[i % len(valid)]
            s = time.perf_counter()
            try:
                client.detect(data)
                ok, err = True, None
            except Exception as e:  # noqa: BLE001
                ok, err = False, e
            with lock:
                if is_bad:
                    if isinstance(err, InvalidInput):
                        answered_invalid += 1
                    else:
                        unanswered_invalid += 1
                elif ok:
                    lat.append((s - t0, time.perf_counter() - s))
                    seen.add(i % len(valid))
                    if not warm_at and seen == to_see:
                        warm_at.append(time.perf_counter() - t0)
                else:
                    failed_valid.append(f"{type(err).__name__}: {err}"[:200])

    def sampler(stop: threading.Event) -> None:
        while not stop.is_set():
            rss.append((time.perf_counter() - t0, tree_rss_mb(pid)))
            stop.wait(1.0)

    stop = threading.Event()
    threading.Thread(target=sampler, args=(stop,), daemon=True).start()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    stop.set()
    wall = time.perf_counter() - t0
    rss.append((wall, tree_rss_mb(pid)))
    a = np.array([d for _, d in lat]) * 1e3
    half = len(a) // 2
    warm_end = max(warm_at[0] if warm_at else wall, 0.1 * wall)
    # Growth = end over the peak of the first half after warm-up: arenas still settle after warm-up (several
    # large images in flight at once happens later by chance), and settling plateaus where a leak keeps climbing.
    mid = warm_end + (wall - warm_end) / 2
    warm = [max([m for t, m in rss if warm_end <= t <= mid] or [rss[-1][1]])]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": wall,
        "valid_ok": len(lat),
        "valid_failed": len(failed_valid),
        "failure_samples": failed_valid[:5],
        "invalid_answered_with_error": answered_invalid,
        "invalid_unanswered": unanswered_invalid,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "p50_first_half_ms": float(np.percentile(a[:half], 50)),
        "p50_second_half_ms": float(np.percentile(a[half:], 50)),
        "warmup_end_s": warm_end,
        "rss_start_mb": rss[0][1],
        "rss_peak_first_half_after_warmup_mb": warm[0],
        "rss_end_mb": rss[-1][1],
        "rss_growth_after_warmup": rss[-1][1] / warm[0] - 1.0,
        "rss_samples": rss[:: max(1, len(rss) // 50)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--invalid-every", type=int, default=10, help="every N-th request is an invalid image")
    ap.add_argument("--images", type=Path, default=Path("../shared/data/real/dev"))
    ap.add_argument("--repo", type=Path, help="existing CPU repository (default: export the shipped model)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.json"))
    args = ap.parse_args(argv)
    files = [f for f in collect([args.images]) if f.stat().st_size < 4 << 20][:16]
    valid = [f.read_bytes() for f in files]
    with shipped_server(files[:4], args.repo) as srv:
        res = soak(srv.grpc_url, srv.proc.pid, valid, args.requests, args.concurrency, args.invalid_every)
    res["checks"] = {
        "no_failed_valid": res["valid_failed"] == 0,
        "every_invalid_answered": res["invalid_unanswered"] == 0,
        "rss_growth_below_10pct": res["rss_growth_after_warmup"] < 0.10,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "rss_samples"}, indent=2))
    return 0 if all(res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
