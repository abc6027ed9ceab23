"""Triton Python-backend model `slsp_model`: crops of many requests scored in one batched call.

The dynamic batcher hands this model several requests (each one image's valid crops); they are concatenated,
scored together, and split back, so concurrent images share one batched model execution. The graph runs on ONNX
Runtime; in the gpu-python repository (its version folder holds the weights instead of `model.onnx`) the family's
own module runs it in PyTorch on the configured device, what the parity gate's reference runs.
"""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np
import triton_python_backend_utils as pb_utils

from slsp import contract
from slsp.onnxrt import session, triton_params

OUTPUTS = contract.MODEL.output_names


def torch_model(here, params: dict):
    """The model stage in PyTorch from this version's weights and config (torch imported only here)."""
    import torch

    from slsp import detector
    from slsp.export.runners import TorchRunner
    from slsp.export.stages import ModelStage

    if params["device"] == "cpu" and int(params["intra_op_threads"]):
        torch.set_num_threads(int(params["intra_op_threads"]))
    print(f"slsp_model: PyTorch on {params['device']}", file=sys.stderr, flush=True)
    return TorchRunner(ModelStage(detector.load(here).model), contract.MODEL.name, params["device"]).infer


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        here, params = triton_params(args)
        if (here / contract.WEIGHTS).is_file():
            self.run = torch_model(here, params)
        else:
            ort = session(here / contract.MODEL.onnx, params["device"], int(params["intra_op_threads"]), 1)
            self.run = lambda feed: dict(zip(OUTPUTS, ort.run(OUTPUTS, feed)))

    def execute(self, requests: list) -> list:
        inputs = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests]
                  for n in contract.MODEL.input_names}
        try:
            outs = self.run({n: np.concatenate(v) for n, v in inputs.items()})
        except Exception as e:  # noqa: BLE001
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {e!r}")) for _ in requests]
        bounds = np.cumsum([0] + [c.shape[0] for c in inputs[contract.CROPS]])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(n, outs[n][a:b].reshape(-1, 1)) for n in OUTPUTS])
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
