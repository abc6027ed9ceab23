"""One runner per runtime behind `infer(feed) -> dict[str, ndarray]`; torch and the optional runtimes are imported
lazily, so the Triton members use these runners without torch in their process.

A `Pipeline` chains the stages of `contract.CHAIN` (trsor -> model -> score) the way the Triton ensemble does, so
each runtime is checked on exactly the graphs it would serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from slsp import contract, onnxrt
from slsp.errors import RuntimeMissing

if TYPE_CHECKING:
    import torch


class Runner(Protocol):
    name: str

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class TorchRunner:
    """A stage module in PyTorch eager (CPU, or CUDA when asked and present).

    It runs a copy of the module on its device: `.to()` moves a module in place, and the module it is given wraps
    the reference detector that the other runtimes are compared with (and that an export later moves back).
    """

    def __init__(self, module: torch.nn.Module, stage: str, device: str = "cpu") -> None:
        import copy

        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeMissing("PyTorch CUDA requested but torch.cuda.is_available() is False")
        self.module, self.stage, self.device = copy.deepcopy(module).eval().to(device), stage, device
        self.name = f"torch-{device}"

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        spec = contract.STAGES[self.stage]
        # A tensor already on the device (the gpu-python decode member's nvJPEG output) is taken as it is.
        tensors = (feed[n] if isinstance(feed[n], torch.Tensor) else torch.from_numpy(np.asarray(feed[n], order="C"))
                   for n in spec.input_names)
        with torch.inference_mode():
            out = self.module(*(t.to(self.device) for t in tensors))
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return {n: t.cpu().numpy() for n, t in zip(spec.output_names, out)}


class OrtRunner:
    """An ONNX graph in ONNX Runtime; `threads` sets intra-op threads (0 = ORT's default)."""

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0, name: str | None = None) -> None:
        self.session = onnxrt.session(path, device, threads)
        self.name = name or f"ort-{device}"
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs on the graph's own inputs from `feed` (the server's decode member calls this per request)."""
        return dict(zip(self.outputs, self.session.run(self.outputs, {k: feed[k] for k in self.inputs})))


class TrtRunner:
    """A serialized TensorRT engine (a stage's `contract.plan`) run with the TensorRT Python API on the current GPU."""

    def __init__(self, plan: Path) -> None:
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeMissing("TensorRT needs a CUDA GPU; none is visible to PyTorch")
        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise RuntimeMissing(f"{plan}: TensorRT could not deserialize the engine (other GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.name = "tensorrt"

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        trt = self.trt
        keep, outs = [], {}
        for n in self.names:
            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT:
                t = torch.from_numpy(np.asarray(feed[n], order="C")).cuda()
                self.context.set_input_shape(n, tuple(t.shape))
                self.context.set_tensor_address(n, t.data_ptr())
                keep.append(t)
        for n in self.names:
            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT:
                dtype = torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
                t = torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtype, device="cuda")
                self.context.set_tensor_address(n, t.data_ptr())
                outs[n] = t
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeMissing(
            "the tensorrt Python package is not installed (pip install tensorrt on a machine with an NVIDIA GPU "
            "and driver; it cannot run on CPU-only machines)"
        ) from e
    return trt


class Pipeline:
    """The stages of `contract.CHAIN`, one runner each, as the Triton ensemble chains them; returns the fused graph's
    outputs."""

    def __init__(self, name: str, trsor: Runner, model: Runner, score: Runner) -> None:
        self.name, self.trsor, self.model, self.score = name, trsor, model, score

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(feed)
        for stage, runner in zip(contract.CHAIN, (self.trsor, self.model, self.score)):
            values.update(runner.infer({n: values[n] for n in stage.input_names}))
        return {n: values[n] for n in contract.FUSED.output_names}
