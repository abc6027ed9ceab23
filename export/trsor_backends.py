"""Which TrSOR runs where: one table for the export's parity gate, the repository writer and the decode member.

Fastest first. The compiled backends hold code for the CPU that exported them, so only the CPU target serves them;
ONNX serves the CPU target and the NGC container's GPU target; PyTorch (the family's module over the exported
weights) serves the gpu-python target. Opening a backend imports its runtime only then (the AOTI package and
PyTorch need torch; the native kernel and ONNX Runtime do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slsp import contract
from slsp.errors import SlspError
from slsp.export.runners import OrtRunner, Runner


def _native(folder: Path, device: str, threads: int) -> Runner:
    from slsp.export.trsor_native import NativeRunner

    return NativeRunner(folder, threads)


def _aoti(folder: Path, device: str, threads: int) -> Runner:
    from slsp.export.torch2aoti import AotiRunner

    return AotiRunner(folder / contract.TRSOR_AOTI, threads)


def _torch(folder: Path, device: str, threads: int) -> Runner:
    import torch

    from slsp import detector
    from slsp.export.runners import TorchRunner
    from slsp.export.stages import TrsorStage

    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    return TorchRunner(TrsorStage(detector.load(folder)), contract.TRSOR.name, device)


def _onnx(folder: Path, device: str, threads: int) -> Runner:
    return OrtRunner(folder / contract.TRSOR.onnx, device, threads)


@dataclass(frozen=True)
class TrsorBackend:
    name: str  # runtime name in parity reports and benchmarks
    files: tuple[str, ...]  # artifact files it runs from; the first names it in the decode member's config
    targets: tuple[str, ...]  # repository targets that serve it
    open: Callable[[Path, str, int], Runner]  # (folder holding the files, device, threads) -> runner

    @property
    def compiled(self) -> bool:
        return self.targets == ("cpu",)

    def present(self, folder: Path) -> bool:
        return all((Path(folder) / f).is_file() for f in self.files)


BACKENDS = (
    TrsorBackend("native-cpu", (contract.TRSOR_NATIVE, contract.TRSOR_NATIVE_META), ("cpu",), _native),  # --native
    TrsorBackend("aoti-cpu", (contract.TRSOR_AOTI,), ("cpu",), _aoti),  # --aoti
    TrsorBackend("ort", (contract.TRSOR.onnx,), ("cpu", "gpu"), _onnx),
    # PyTorch from the weights and config (issue 40): the gpu-python target, the bundled server on a GPU.
    TrsorBackend("torch", (contract.WEIGHTS, contract.CONFIG), ("gpu-python",), _torch),
)
COMPILED = {b.name: b for b in BACKENDS if b.compiled}


def served(artifacts: Path, target: str) -> TrsorBackend:
    """The backend a repository of `target` serves from these artifacts: the fastest one present."""
    for b in BACKENDS:
        if target in b.targets and b.present(artifacts):
            return b
    need = " or ".join("+".join(b.files) for b in BACKENDS if target in b.targets)
    raise SlspError(f"{artifacts} has nothing --target {target} serves TrSOR from (it needs {need}); export again "
                    "with this slsp version")


def by_file(name: str) -> TrsorBackend:
    """The backend the decode member's `trsor_file` parameter names."""
    for b in BACKENDS:
        if b.files[0] == name:
            return b
    raise ValueError(f"no TrSOR backend runs from {name!r}; known: {', '.join(b.files[0] for b in BACKENDS)}")
