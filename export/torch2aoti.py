"""PyTorch -> AOTInductor: TrSOR compiled ahead of time into native CPU kernels (`trsor.pt2`).

TrSOR is a chain of memory-bound elementwise passes and window sums. ONNX Runtime runs each as its own operator,
each writing a float32 intermediate; Inductor fuses them into a few C++ loops. The package is built with the
machine's C++ compiler at export time and loads without one. Only TrSOR is compiled: the model stage already runs
near its compute floor in ONNX Runtime, which leaves a compiler little to take (both measured by `slsp bench
engines`, figures in docs/benchmarks-log.md). The package holds one pyramid level; the runner runs it on each level
(`slsp.pyramid`), so its outputs are the ONNX TrSOR stage's, with the same tensor names.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental._config as fx_config

from slsp import contract, pyramid
from slsp.detector import Detector
from slsp.errors import RuntimeMissing
from slsp.export.stages import TrsorStage
from slsp.export.torch2onnx import example_inputs
from slsp.imaging import check_image


def compile_trsor(det: Detector, out_dir: Path) -> Path:
    """Export one TrSOR level with dynamic height and width (>= one crop) into `out_dir/trsor.pt2`."""
    stage = TrsorStage(det.eval(), single_level=True).eval()
    (image,) = example_inputs(det)[contract.TRSOR.name]
    side = {i: torch.export.Dim(contract.DYNAMIC_DIMS[d], min=det.min_side) for i, d in enumerate("HW")}
    path = Path(out_dir) / contract.TRSOR_AOTI
    # Size-oblivious: images below two crops have a 1-row tile grid, and the stride checks of that grid would
    # otherwise specialize the graph to >= 2 crops per side. The parity tests cover 64 x 64 and 65 x 99.
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyTorch's own pytree deprecation, not ours to fix
        try:
            program = torch.export.export(stage, (image,), dynamic_shapes={contract.IMAGE: side})
            # The minimum side travels in the package: the compiled code does not check its input's size.
            torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs={
                "aot_inductor.metadata": {"min_side": str(det.min_side), "levels": str(det.cfg.trsor.levels)}})
        except Exception as e:  # export and Inductor raise many types here; all mean "could not build the package"
            raise RuntimeMissing(
                f"AOTInductor could not build TrSOR with PyTorch {torch.__version__}: {type(e).__name__}: "
                f"{str(e)[:500]}. It needs a C++ compiler (g++ by default, or set CXX) and a PyTorch whose export "
                f"keeps TrSOR's sizes dynamic down to one crop: 2.13 does; 2.11 does not (its export guards on the "
                f"tile grid, and its Inductor cannot lower the size-oblivious slices)") from e
    return path


class AotiRunner:
    """The compiled TrSOR package behind the runner interface; `threads` > 0 sets the OpenMP threads it uses."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        if not Path(path).is_file():
            raise RuntimeMissing(f"no {path} (export with --aoti)")
        self.package = torch._inductor.aoti_load_package(str(path))
        meta = self.package.get_metadata()
        self.min_side, self.levels = int(meta["min_side"]), int(meta.get("levels", 1))
        self.threads, self.name = threads, "aoti-cpu"

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The TrSOR stage: the package on each pyramid level."""
        # The compiled code reads out of bounds below one crop (seen: garbage, or an abort at 10 x 10).
        check_image(feed[contract.IMAGE], self.min_side, contract.IMAGE)
        return pyramid.run(self.level, feed[contract.IMAGE], self.levels, self.min_side)

    def level(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = feed[contract.IMAGE]
        before = torch.get_num_threads()  # process-wide: restored, so PyTorch code around it keeps its own
        torch.set_num_threads(self.threads or before)
        try:
            with torch.inference_mode():
                out = self.package(torch.from_numpy(np.ascontiguousarray(image)))
        finally:
            torch.set_num_threads(before)
        return {n: t.numpy() for n, t in zip(contract.TRSOR.output_names, out)}
