"""Triton Python-backend model `slsp_model`: crops of many requests scored in one ONNX Runtime call.

The dynamic batcher hands this model several requests (each one image's K crops); they are concatenated,
scored together, and split back, so concurrent images share one batched model execution.
"""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np
import triton_python_backend_utils as pb_utils

from slsp import contract
from slsp.onnxrt import triton_session

OUTPUTS = contract.MODEL.output_names


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.session, _ = triton_session(args, contract.MODEL.onnx)

    def execute(self, requests: list) -> list:
        inputs = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests]
                  for n in contract.MODEL.input_names}
        try:
            outs = self.session.run(OUTPUTS, {n: np.concatenate(v) for n, v in inputs.items()})
        except Exception as e:  # noqa: BLE001
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {e!r}")) for _ in requests]
        bounds = np.cumsum([0] + [c.shape[0] for c in inputs[contract.CROPS]])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(n, v[a:b].reshape(-1, 1)) for n, v in zip(OUTPUTS, outs)])
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
