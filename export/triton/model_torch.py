"""Triton Python-backend model `slsp_model` of the gpu-python repository: crops of many requests scored in one
PyTorch call on the GPU, by the family's own module over the exported weights (what the parity gate's reference
runs, so served and in-process results differ only by the device's float rounding).

The dynamic batcher hands this model several requests (each one image's valid crops); they are concatenated, moved
to the device once, scored together, and split back.
"""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from slsp import contract, detector
from slsp.export.runners import TorchRunner
from slsp.export.stages import ModelStage
from slsp.onnxrt import triton_params

OUTPUTS = contract.MODEL.output_names


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        here, params = triton_params(args)
        device = params["device"]
        if device == "cpu" and int(params["intra_op_threads"]):
            torch.set_num_threads(int(params["intra_op_threads"]))
        self.runner = TorchRunner(ModelStage(detector.load(here).model), contract.MODEL.name, device)
        print(f"slsp_model: PyTorch on {device}", file=sys.stderr, flush=True)

    def execute(self, requests: list) -> list:
        inputs = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests]
                  for n in contract.MODEL.input_names}
        try:
            outs = self.runner.infer({n: np.concatenate(v) for n, v in inputs.items()})
        except Exception as e:  # noqa: BLE001
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {e!r}")) for _ in requests]
        bounds = np.cumsum([0] + [c.shape[0] for c in inputs[contract.CROPS]])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(n, outs[n][a:b].reshape(-1, 1)) for n in OUTPUTS])
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
