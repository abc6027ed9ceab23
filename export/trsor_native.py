"""Hand-written C++ TrSOR (`export/trsor.cpp`) -> `trsor_native.so`, built with the machine's C++ compiler at export.

The tensor-op TrSOR writes dozens of full-size intermediates; AOTInductor fuses some of them and still runs far
above TrSOR's memory floor. The kernel makes three passes over the image with the intermediates in row buffers
(`slsp bench engines` measures all three against the floor; figures in docs/benchmarks-log.md, "Native TrSOR"). It
is one more runtime behind the parity gate (`native-cpu`), and the CPU server's decode member runs it without
importing torch.

Beside the library, `trsor_native.json` holds what the kernel needs and the image does not give: the TrSOR
config, the Gamma-null constants (computed here with SciPy) and the instruction-set level it was compiled for.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from slsp import pyramid
from slsp.contract import IMAGE, TRSOR, TRSOR_NATIVE, TRSOR_NATIVE_META
from slsp.errors import RuntimeMissing
from slsp.imaging import check_image

_LEVELS = {  # x86-64 micro-architecture levels (GCC -march) and the /proc/cpuinfo flags each needs
    "x86-64-v3": {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"},
    "x86-64-v4": {
        "avx",
        "avx2",
        "fma",
        "bmi1",
        "bmi2",
        "f16c",
        "movbe",
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
    },
}


def isa_levels() -> list[str]:
    """The -march levels this CPU runs, lowest first (empty off x86-64 or where /proc/cpuinfo is unreadable)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        flags = set(next(row for row in open("/proc/cpuinfo") if row.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return []
    return [level for level, need in _LEVELS.items() if need <= flags]


def build(det, out_dir: Path, march: str | None = None, source: Path | None = None) -> Path:
    """Compile the kernel (`source`, default the packaged trsor.cpp) for `march` (default: the highest level this
    CPU has) and write its metadata; returns the library path."""
    from slsp.trsor import _LOG_EPS, NullModel

    cfg = det.cfg.trsor
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeMissing(f"the native TrSOR needs a C++20 compiler ({cxx} not found; install g++ or set CXX)")
    levels = isa_levels()
    march = march or (levels[-1] if levels else "default")
    out = Path(out_dir) / TRSOR_NATIVE
    with (
        tempfile.TemporaryDirectory() as tmp,
        resources.as_file(resources.files("slsp.export") / "trsor.cpp") as packaged,
    ):
        # -ffp-contract=off: no fused multiply-adds, so luma and differences round as PyTorch's separate ops do;
        # -fopenmp-simd: the `omp simd` reductions vectorise (no OpenMP runtime: the kernel runs its own threads).
        cmd = [
            cxx,
            "-O3",
            *([f"-march={march}"] if march != "default" else []),
            "-std=c++20",
            "-pthread",
            "-fopenmp-simd",
            "-ffp-contract=off",
            "-shared",
            "-fPIC",
            "-o",
            str(Path(tmp) / TRSOR_NATIVE),
            str(source or packaged),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeMissing(f"could not compile the native TrSOR ({' '.join(cmd)}):\n{r.stderr[-2000:]}")
        shutil.copy2(Path(tmp) / TRSOR_NATIVE, out)
    null = NullModel.of(cfg.patch, cfg.delta)
    meta = {
        "patch": cfg.patch,
        "iterations": cfg.iterations,
        "crop": cfg.crop,
        "crops": cfg.crops,
        "levels": cfg.levels,
        "channel": cfg.channel,
        "skip_clipped": cfg.skip_clipped,
        "tau": null.tau,
        "truncated_mean": null.truncated_mean,
        "log_mean": null.log_mean,
        "log_eps": _LOG_EPS,
        "march": march,
        "compiler": cmd[0],
    }
    (Path(out_dir) / TRSOR_NATIVE_META).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def select(counts: np.ndarray, h: int, w: int, c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """K crop positions from Phi's count per candidate tile: the rule of `slsp.trsor.TrSOR.select`, in NumPy."""
    ny, nx = h // c, w // c
    n = (ny + 1) * (nx + 1)
    ys, xs = np.r_[np.arange(ny) * c, h - c], np.r_[np.arange(nx) * c, w - c]
    ok = (
        np.r_[np.ones(ny, bool), (h - c) % c != 0][:, None] & np.r_[np.ones(nx, bool), (w - c) % c != 0][None, :]
    ).ravel()
    order = np.arange(n)
    key = np.r_[np.where(ok, counts * n + (n - 1 - order), -1 - order), -1 - n - np.arange(k)]
    idx = np.argsort(-key, kind="stable")[:k]  # keys are unique: the order is fully determined
    valid = key[idx] >= 0
    idx = np.minimum(idx, n - 1)
    return np.stack([ys[idx // (nx + 1)], xs[idx % (nx + 1)]], 1).astype(np.int64), valid


class NativeRunner:
    """The compiled kernel behind the runner interface (`trsor` stage outputs); `threads` 0 = one per core."""

    def __init__(self, artifacts: Path, threads: int = 0) -> None:
        lib, meta = Path(artifacts) / TRSOR_NATIVE, Path(artifacts) / TRSOR_NATIVE_META
        if not lib.is_file() or not meta.is_file():
            raise RuntimeMissing(f"no {TRSOR_NATIVE} / {TRSOR_NATIVE_META} in {artifacts} (export with --native)")
        self.meta = json.loads(meta.read_text())
        march = self.meta["march"]
        if march != "default" and march not in isa_levels():
            raise RuntimeMissing(f"{lib} was compiled for {march}, which this CPU does not support; export again here")
        dll = ctypes.CDLL(str(lib))
        self.fn = dll.slsp_trsor
        ptr = lambda dtype: np.ctypeslib.ndpointer(dtype, flags="C_CONTIGUOUS")  # noqa: E731
        i64, i32 = ctypes.c_int64, ctypes.c_int
        self.fn.argtypes = [ptr(np.uint8), i64, i64, i32, i32, i32, ptr(np.float64), ctypes.c_float, i32, i32,
                            ptr(np.float32), ptr(np.uint8), ptr(np.int64), i32]
        self.fn.restype = ctypes.c_double
        # Libraries built before the kernel had its own box levels fall back to NumPy's (same result, slower).
        self.box_fn = getattr(dll, "slsp_box_level", None)
        if self.box_fn is not None:
            self.box_fn.argtypes = [ptr(np.uint8), i64, i64, i32, i32, ptr(np.uint8)]
            self.box_fn.restype = i32
        self.null = np.array([self.meta["tau"], self.meta["truncated_mean"], self.meta["log_mean"]])
        self.threads = threads or len(os.sched_getaffinity(0))
        self.name = "native-cpu"
        self.scratch = threading.local()  # per calling thread: concurrent calls never share buffers

    def buffers(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """xi (float32) and Phi (uint8) buffers for an h x w image, kept and grown per thread: a fresh 4 MB array is
        mapped anew on every call and faults in page by page (docs/benchmarks-log.md, "Native TrSOR", step 6)."""
        p, need = self.meta["patch"], h * w
        buf = getattr(self.scratch, "buf", None)
        if buf is None or buf.size < 5 * need:
            buf = self.scratch.buf = np.empty(5 * need, np.uint8)
        return buf[: 4 * (h - p + 1) * (w - p + 1)].view(np.float32), buf[4 * need : 5 * need].reshape(h, w)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The TrSOR stage: the kernel on each pyramid level (slsp.pyramid)."""
        check_image(feed[IMAGE], self.meta["crop"], IMAGE)  # the kernel assumes uint8 (H, W, 3) of >= one crop
        return pyramid.run(self.level, np.ascontiguousarray(feed[IMAGE]), self.meta.get("levels", 1),
                           self.meta["crop"], self.box)

    def box(self, image: np.ndarray, f: int) -> np.ndarray:
        """A pyramid level in one threaded pass over the image (`pyramid.box_level`'s rule, to the bit)."""
        if self.box_fn is None:
            return pyramid.box_level(image, f)
        h, w = image.shape[:2]
        out = np.empty((h // f, w // f, 3), np.uint8)
        if self.box_fn(image, h, w, f, self.threads, out):
            raise RuntimeError(f"native box level refused its arguments ({h}x{w}, f={f})")
        return out

    def level(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = self.meta
        c, image = m["crop"], feed[IMAGE]
        h, w = image.shape[:2]
        xi, phi = self.buffers(h, w)
        counts = np.empty((h // c + 1) * (w // c + 1), np.int64)
        sigma2 = self.fn(image, h, w, m["patch"], 3 if m["channel"] == "rgb" else 1, m["iterations"], self.null,
                         m["log_eps"], c, self.threads, xi, phi, counts, int(m.get("skip_clipped", False)))
        if sigma2 < 0:
            raise RuntimeError(f"native TrSOR refused its arguments ({h}x{w}, {m})")
        positions, valid = select(counts, h, w, c, m["crops"])
        crops = np.stack([image[y : y + c, x : x + c] for y, x in positions])
        crop_phi = np.stack([phi[y : y + c, x : x + c] for y, x in positions]).astype(np.float32)
        sigma = np.array(np.sqrt(np.float32(sigma2)), np.float32).reshape(())
        return dict(zip(TRSOR.output_names, (crops, crop_phi, positions, valid, sigma)))
