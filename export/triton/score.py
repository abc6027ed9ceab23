"""Triton Python-backend model `slsp_score`: per-crop scores, validity and the noise estimate -> image score and
verdict (score.onnx)."""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import triton_python_backend_utils as pb_utils

from slsp import contract
from slsp.onnxrt import triton_session

STAGE = contract.SCORING


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.session, _ = triton_session(args, STAGE.onnx)

    def execute(self, requests: list) -> list:
        responses = []
        for r in requests:
            try:
                # Back to the graph's own dims: Triton passes crop scores as (K, 1) and scalars as (1,).
                feed = {t.name: pb_utils.get_input_tensor_by_name(r, t.name).as_numpy().reshape(t.shape())
                        for t in STAGE.inputs}
                out = self.session.run(STAGE.output_names, feed)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(n, v.reshape(1)) for n, v in zip(STAGE.output_names, out)]))
            except Exception as e:  # noqa: BLE001
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {e!r}")))
        return responses
