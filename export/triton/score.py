"""Triton Python-backend model `slsp_score`: per-crop scores, validity and the noise estimate -> image score and
verdict (score.onnx)."""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import triton_python_backend_utils as pb_utils

from slsp.onnxrt import triton_session


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.session, _ = triton_session(args, "score.onnx")

    def execute(self, requests: list) -> list:
        responses = []
        for r in requests:
            try:
                feed = {
                    "crop_scores": pb_utils.get_input_tensor_by_name(r, "crop_scores").as_numpy().reshape(-1),
                    "valid": pb_utils.get_input_tensor_by_name(r, "valid").as_numpy().reshape(-1),
                    "sigma": pb_utils.get_input_tensor_by_name(r, "sigma").as_numpy().reshape(()),
                }
                score, verdict = self.session.run(["score", "verdict"], feed)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("score", score.reshape(1)), pb_utils.Tensor("verdict", verdict.reshape(1))]))
            except Exception as e:  # noqa: BLE001
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {e!r}")))
        return responses
