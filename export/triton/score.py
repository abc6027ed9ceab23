"""Triton Python-backend model `slsp_score`: per-crop scores, validity and the noise estimate -> image score and
verdict (score.onnx); it also forwards the outputs computed earlier (contract.FORWARDED), so that every output of
the ensemble comes from this last step.

The model scored only the valid crops (the decode member drops the others): their scores and kurtosis are put
back in their slots, and an invalid slot holds 0, which nothing reads."""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np
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
                # Back to the graph's own dims: Triton passes crop scores as (valid crops, 1) and scalars as (1,).
                given = {t.name: pb_utils.get_input_tensor_by_name(r, t.name).as_numpy()
                         for t in (*STAGE.inputs, *contract.FORWARDED)}
                valid = given[contract.VALID].reshape(-1)
                for name in contract.MODEL.output_names:
                    slots = np.zeros(valid.shape, np.float32)
                    slots[valid] = given[name].reshape(-1)
                    given[name] = slots.reshape(-1, 1)
                feed = {t.name: given[t.name].reshape(t.shape()) for t in STAGE.inputs}
                out = self.session.run(STAGE.output_names, feed)
                tensors = [pb_utils.Tensor(n, v.reshape(1)) for n, v in zip(STAGE.output_names, out)]
                tensors += [pb_utils.Tensor(contract.served(t.name), given[t.name]) for t in contract.FORWARDED]
                responses.append(pb_utils.InferenceResponse(tensors))
            except Exception as e:  # noqa: BLE001 - one request's failure must not fail the others
                error = pb_utils.TritonError(f"internal error ({type(e).__name__}: {e})", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
