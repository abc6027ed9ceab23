"""The serving step of the GPU check (issue 40): the gpu-python repository on the bundled Triton server, on this
machine's GPU, checked and measured in one run.

1. images: JPEGs (q90) of 1 and 4 MP tiled from the checkout's photo, and a parity set of JPEGs and PNGs of several
   sizes and qualities from examples/ and tests/data/;
2. the repository (`slsp export` artifacts -> `repository.write(..., target="gpu-python")`) served by the bundled
   server (the device kit's, SLSP_TRITON_ROOT);
3. parity: `slsp parity --server` against the live server (PNG requests: the CPU decoder, TrSOR and the model in
   PyTorch CUDA), and every JPEG of the parity set scored by the server (nvJPEG) next to the CPU library (libjpeg,
   PyTorch on the CPU): score differences and verdicts;
4. throughput: `slsp bench server` over gRPC at concurrency 1, 8 and 32 for each size, next to the batched model's
   own images/s in PyTorch CUDA (the same GPU, same run) and the GPU memory the server's processes hold.

    python benchmarks/product/gpu_serve.py --artifacts A --checkout SRC --out serve.json [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"1mp": (1024, 1024), "4mp": (1728, 2304)}
CONCURRENCY = (1, 8, 32)
# The nvJPEG comparison: every source photo at each short side and quality (5 photos: 75 JPEGs).
NVJPEG_SIDES, NVJPEG_QUALITIES = (384, 512, 768, 1024, 1536), (75, 90, 95)
# nvJPEG stays the GPU target's decoder if no verdict flips and no score moves more than the served CUDA test allows.
NVJPEG_MAX_DIFF = 1e-2


def jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_images(src: Path, work: Path, max_jpegs: int | None = None) -> tuple[dict[str, Path], Path, list[Path]]:
    """Folders of load images per size, a parity folder (PNG) and the (first `max_jpegs`) JPEGs the nvJPEG
    comparison scores."""
    from slsp.bench.timing import photo_at
    from slsp.imaging import collect, load

    sources = [load(p) for p in collect([src / "examples", src / "tests" / "data"])]
    load_dirs = {}
    for name, (h, w) in SIZES.items():
        d = work / f"load-{name}"
        d.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(sources[:4]):
            (d / f"{i}.jpg").write_bytes(jpeg(photo_at(img, h, w), 90))
        load_dirs[name] = d
    parity = work / "parity"
    parity.mkdir(exist_ok=True)
    for i, img in enumerate(sources):
        Image.fromarray(img).save(parity / f"{i}.png")
    jpegs = []
    wanted = ((i, s, q) for i in range(len(sources)) for s in NVJPEG_SIDES for q in NVJPEG_QUALITIES)
    for i, side, q in itertools.islice(wanted, max_jpegs):
        p = work / f"nvjpeg-{i}-{side}-q{q}.jpg"
        p.write_bytes(jpeg(photo_at(sources[i], side, side * 4 // 3), q))
        jpegs.append(p)
    return load_dirs, parity, jpegs


def gpu_memory_mib() -> dict:
    """Memory each process holds on the GPU (nvidia-smi), the server's stubs among them."""
    if shutil.which("nvidia-smi") is None:
        return {"processes": [], "rc": None, "why": "no nvidia-smi on this machine"}
    r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
                       capture_output=True, text=True)
    rows = [[c.strip() for c in line.split(",")] for line in r.stdout.splitlines() if line.strip()]
    return {"processes": [{"pid": int(p), "name": n, "used": u} for p, n, u in rows], "rc": r.returncode}


def model_images_per_s(det, crops_per_image: int, device: str, images: int = 4, seconds: float = 2.0) -> dict:
    """The batched model stage alone in PyTorch on `device`, `images` images' crops a call: the ceiling serving is
    compared with."""
    import torch

    from slsp.export.runners import TorchRunner
    from slsp.export.stages import ModelStage

    runner = TorchRunner(ModelStage(det.model), "model", device)
    g = torch.Generator().manual_seed(0)
    c = det.cfg.trsor.crop
    n = crops_per_image * images
    feed = {"crops": torch.randint(0, 256, (n, c, c, 3), generator=g, dtype=torch.uint8).to(device),
            "crop_phi": (torch.rand(n, c, c, generator=g) > 0.5).float().to(device)}
    for _ in range(5):
        runner.infer(feed)
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        runner.infer(feed)  # returns host arrays: each call synchronises
        calls += 1
    dt = (time.perf_counter() - t0) / calls
    return {"images_per_call": images, "crops_per_call": n, "ms_per_call": dt * 1e3, "images_per_s": images / dt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--checkout", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("serve-work"))
    ap.add_argument("--requests", type=int, default=96, help="requests per concurrency level and size")
    ap.add_argument("--device", default="cuda", help="cuda; cpu rehearses every step on a machine without a GPU")
    ap.add_argument("--jpegs", type=int, default=None, help="compare only the first N JPEGs with the CPU library")
    args = ap.parse_args(argv)

    from slsp import detector as det_io
    from slsp.bench import server as bench_server
    from slsp.clients.client import SlspClient
    from slsp.export import repository
    from slsp.imaging import decode
    from slsp.server import Server

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"kind": "gpu-serve", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    load_dirs, parity_dir, jpegs = make_images(args.checkout.resolve(), work, args.jpegs)
    det = det_io.load()
    repo = work / "model_repository_gpu"
    res["repository_version"] = repository.write(args.artifacts, repo, repository.ServingConfig(target="gpu-python",
                                                                                   torch_device=args.device))
    log = work / "tritonserver.log"
    srv = Server(repo, log_path=log)
    t0 = time.perf_counter()
    try:
        srv.start(timeout=240)
    except Exception as e:  # noqa: BLE001 - reported with the log
        res |= {"ok": False, "error": f"{type(e).__name__}: {e}", "log_tail": log.read_text(errors="replace")[-4000:]}
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        return 1
    res["server_start_s"] = round(time.perf_counter() - t0, 1)

    def save() -> None:
        """What ran so far, with the server log's tail: a step cut off by its time limit keeps it."""
        args.out.write_text(json.dumps({**res, "log_tail": log.read_text(errors="replace")[-6000:]}, indent=2) + "\n")

    try:
        res["log_head"] = [ln for ln in log.read_text(errors="replace").splitlines() if "slsp_" in ln][:10]
        runtime = "torch-cuda" if args.device == "cuda" else "ort-cpu"  # in-process, beside the live server
        p = subprocess.run([sys.executable, "-P", "-m", "slsp.cli", "parity", "--artifacts", str(args.artifacts),
                            "--images", str(parity_dir), "--sizes", "1", "--runtime", runtime,
                            "--server", srv.grpc_url, "--json", "-q"], capture_output=True, text=True, timeout=300)
        try:
            report = json.loads(p.stdout)
            res["parity"] = {"ok": report["ok"], "rc": p.returncode,
                             "runtimes": [{k: r.get(k) for k in ("runtime", "ok", "images", "max_score_diff",
                                                                 "verdicts_agree")} for r in report["runtimes"]]}
        except ValueError:
            res["parity"] = {"ok": False, "rc": p.returncode, "stderr_tail": p.stderr[-3000:]}
        save()
        client = SlspClient(srv.grpc_url)
        diffs, agree = [], 0
        for f in jpegs:
            data = f.read_bytes()
            served, ref = client.detect(data), det.detect(decode(data))
            diffs.append(abs(served.score - float(ref.score)))
            agree += served.verdict == bool(ref.verdict)
        res["nvjpeg_vs_cpu_library"] = {"images": len(jpegs), "max_abs_score_diff": max(diffs),
                                        "mean_abs_score_diff": float(np.mean(diffs)),
                                        "p90_abs_score_diff": float(np.percentile(diffs, 90)),
                                        "verdicts_agree": agree,
                                        "nvjpeg_default": agree == len(jpegs) and max(diffs) <= NVJPEG_MAX_DIFF,
                                        "rule": f"no verdict flips and every |score diff| <= {NVJPEG_MAX_DIFF}"}
        save()
        res["model_alone"] = model_images_per_s(det, det.cfg.trsor.slots, args.device)
        res["bench"] = {}
        for name, d in load_dirs.items():
            r = bench_server.measure(srv.grpc_url, [d], args.artifacts, CONCURRENCY, args.requests, None, quiet=True)
            res["bench"][name] = r
            save()
            print(f"{name}:\n{bench_server.table(r)}", file=sys.stderr)
        res["gpu_memory"] = gpu_memory_mib()
        one = res["bench"]["1mp"]["rows"]
        best = max(r["throughput_rps"] for r in one)
        c8 = next(r for r in one if r["concurrency"] == 8)
        res["targets"] = {"served_1mp_img_s_best": best, "model_alone_img_s": res["model_alone"]["images_per_s"],
                          "served_share_of_model": best / res["model_alone"]["images_per_s"],
                          "p99_over_p50_c8": c8["p99_over_p50"]}
        res["ok"] = bool(res["parity"]["ok"]) and all(r["errors"] == 0 for b in res["bench"].values()
                                                       for r in b["rows"])
    except Exception as e:  # noqa: BLE001 - what ran so far and the server's log are the diagnosis: keep them
        res |= {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        srv.stop()
        res["log_tail"] = log.read_text(errors="replace")[-6000:]
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res.get(k) for k in ("ok", "parity", "nvjpeg_vs_cpu_library", "targets")}, indent=1),
          file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
