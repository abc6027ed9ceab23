"""The steps of benchmarks/product/gpu_check.sh, each timed and kept in one JSON, each allowed to fail on its own.

1. environment: PyTorch, CUDA device, torchvision (nvJPEG), ONNX Runtime providers, TensorRT if any;
2. export: `slsp export` with its parity gate on this machine (torch-cuda among the runtimes; ORT-CUDA and
   TensorRT where installed), its parity report;
3. serve: the gpu-python repository on the bundled Triton server (the device kit's) on the GPU, parity against the
   live server, nvJPEG against the CPU library, `slsp bench server` at concurrency 1/8/32 over 1 and 4 MP JPEGs, the
   GPU memory it holds (benchmarks/product/gpu_serve.py);
4. gpu-tests: every test marked gpu or tensorrt (what only a device runs);
5. engines: `slsp bench engines` at 1 and 4 MP with the CUDA rows (TrSOR, the batched model, JPEG bytes to score on
   the GPU, eager and compiled with CUDA graphs, next to the CPU library);
6. tests: the CPU regression tests of the GPU bugs (CI runs them too; here under the device's PyTorch);
7. training: `slsp bench train`, steps/s on the CPU cores next to the GPU, with and without batch-making workers.
Exit 1 if any step failed. `--steps` picks steps (run in this order, the device-only ones first) and `--budget`
bounds the whole check: each step's time limit is cut to what is left, so the check ends within a device call's
limit; a step cut short keeps what it printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REGRESSIONS = ["test_export.py", "test_trsor.py::test_runs_on_the_device_of_its_input",
               "test_train.py::test_more_processes_than_gpus_is_a_clear_error",
               "test_train.py::test_batch_making_workers_change_nothing",
               "test_fluct.py::test_batches_made_on_cuda_are_the_cpu_ones", "test_device_pipeline.py", "test_aoti.py",
               "test_gpu_python.py"]
STEPS = ("export", "serve", "gpu-tests", "engines", "tests", "training")


def run(name: str, cmd: list[str], timeout: int, cwd: Path) -> dict:
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, (e.stdout or b"").decode(errors="replace"), f"timed out after {timeout} s"
    step = {"ok": rc == 0, "rc": rc, "seconds": round(time.perf_counter() - t, 1), "cmd": " ".join(cmd),
            "stdout_tail": out[-3000:], "stderr_tail": err[-3000:]}
    print(f"{name}: {'ok' if rc == 0 else f'FAILED (rc {rc})'} in {step['seconds']} s", file=sys.stderr)
    return step


def environment() -> dict:
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "cpus": os.cpu_count()}
    if env["cuda"]:
        env |= {"device": torch.cuda.get_device_name(0), "devices": torch.cuda.device_count(),
                "cuda_runtime": torch.version.cuda}
    # numpy: the bundled server's Python backend stub (tritonserver 2.51) was built for numpy 1.x, and a GPU machine
    # may hold 2.x (the lead on the decode stub that died in issue 40's run).
    for mod in ("numpy", "torchvision", "onnxruntime", "tensorrt"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    if env["onnxruntime"]:
        import onnxruntime

        env["ort_providers"] = onnxruntime.get_available_providers()
    import slsp

    env["slsp_from"] = str(Path(slsp.__file__).parent)
    env["tritonserver"] = os.environ.get("SLSP_TRITON_ROOT")  # the device kit's, where it was unpacked
    if os.path.isdir("/dev/shm"):  # the Python backend's tensors pass through it: a small one starves the stubs
        env["dev_shm_free_mib"] = shutil.disk_usage("/dev/shm").free >> 20
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path, required=True, help="the source tree (tests and images)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    ap.add_argument("--budget", type=float, default=900, help="seconds for the whole check")
    args = ap.parse_args(argv)
    chosen = [s for s in args.steps.split(",") if s]
    if set(chosen) - set(STEPS):
        ap.error(f"unknown steps {sorted(set(chosen) - set(STEPS))}; known: {', '.join(STEPS)}")
    deadline = time.monotonic() + args.budget

    def limit(seconds: int) -> int:
        return max(1, min(seconds, int(deadline - time.monotonic())))

    src = args.checkout.resolve()
    work = Path.cwd()
    py = [sys.executable, "-P"]
    slsp = [*py, "-m", "slsp.cli"]
    photo = src / "examples" / "real_kodak24_kodim03.png"
    images = [str(photo), str(src / "tests" / "data")]
    res: dict = {"kind": "gpu-check", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment()}
    steps = res["steps"] = {}
    tests = src / "tests"
    artifacts = work / "artifacts"
    if "export" in chosen:
        steps["export"] = run("export", [*slsp, "export", "--out", str(artifacts), "--images", str(photo),
                                         "--sizes", "1", *(["--trt"] if res["environment"]["tensorrt"] else [])],
                              limit(150), work)
        report = artifacts / "parity.json"
        if report.is_file():
            steps["export"]["parity"] = json.loads(report.read_text())
    if "serve" in chosen and artifacts.is_dir():
        serve = work / "serve.json"
        script = src / "benchmarks" / "product" / "gpu_serve.py"
        steps["serve"] = run("serve", [*py, str(script), "--artifacts", str(artifacts),
                                       "--checkout", str(src), "--out", str(serve), "--work", str(work / "serve"),
                                       *([] if res["environment"]["cuda"] else ["--device", "cpu", "--requests", "8"])],
                             limit(240), work)
        if serve.is_file():
            steps["serve"]["result"] = json.loads(serve.read_text())
    pytest = [*py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "--rootdir", str(src)]
    if "gpu-tests" in chosen:  # every CUDA/TensorRT test: what only a device can run, first
        steps["gpu-tests"] = run("gpu-tests", [*pytest, "-m", "gpu or tensorrt", str(tests)], limit(300), work)
    engines = work / "engines"
    if "engines" in chosen and artifacts.is_dir():
        steps["engines"] = run("engines", [*slsp, "bench", "engines", "--artifacts", str(artifacts),
                                           "--source", str(photo), "--size", "1024x1024", "--size", "2048x2048",
                                           "--min-time", "0.5", "--out", str(engines), "-q"], limit(240), work)
        for f in engines.glob("*.json"):
            steps["engines"]["result"] = json.loads(f.read_text())
    if "tests" in chosen:  # the CPU regressions of the GPU bugs (CI runs them too; here under the device's PyTorch)
        steps["tests"] = run("tests", [*pytest, "-m", "not gpu and not tensorrt and not server",
                                       *(str(tests / t) for t in REGRESSIONS), str(tests / "test_bench.py")],
                             limit(420), work)
    if "training" in chosen:
        training = work / "train"
        runs = ["cpu:0", "cuda:0", "cuda:8"] if res["environment"]["cuda"] else ["cpu:0", "cpu:1"]
        steps["training"] = run("training", [*slsp, "bench", "train", *sum((["--images", i] for i in images), []),
                                             *sum((["--run", r] for r in runs), []), "--steps", "20", "--out",
                                             str(training), "-q"], limit(150), work)
        for f in training.glob("*.json"):
            steps["training"]["result"] = json.loads(f.read_text())
    res["ok"] = all(s["ok"] for s in steps.values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}: {'all steps passed' if res['ok'] else 'some steps FAILED'}", file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
