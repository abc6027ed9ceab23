"""Triton Python-backend model `slsp_decode_trsor`: encoded image bytes -> TrSOR crops, one request at a time.

Each request is decoded under slsp's decoding policy, goes through the model's canonical transform (as in
`Detector.analyze`) and is run through TrSOR: the C++ kernel trsor_native.so
(`slsp export --native` artifacts), trsor.pt2 (AOTInductor, `--aoti`), else trsor.onnx in ONNX Runtime.
A bad image gets its own error response; the other requests of the same execution are unaffected.
"""

import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import triton_python_backend_utils as pb_utils

from slsp.config import DetectorConfig
from slsp.errors import ImageError
from slsp.imaging import decode
from slsp.onnxrt import session, triton_params
from slsp.transforms import Transform

OUTPUTS = ("crops", "crop_phi", "positions", "valid", "sigma")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        here, params = triton_params(args)
        threads = int(params["intra_op_threads"])
        if params["trsor_file"].endswith(".so"):
            from slsp.export.trsor_native import NativeRunner  # ctypes and NumPy: no torch in this process

            self.trsor = NativeRunner(here, threads).infer
        elif params["trsor_file"].endswith(".pt2"):
            from slsp.export.torch2aoti import AotiRunner  # imports torch: only where the package is served

            self.trsor = AotiRunner(here / params["trsor_file"], threads).infer
        else:
            ort = session(here / params["trsor_file"], params["device"], threads, 1)
            self.trsor = lambda feed: dict(zip(OUTPUTS, ort.run(list(OUTPUTS), feed)))
        self.max_pixels = int(params["max_pixels"])
        self.max_bytes = int(params["max_bytes"])
        cfg = DetectorConfig.load(here / "slsp_config.json")  # this version's own, like its TrSOR files
        self.canonical = Transform(cfg.canonical)
        self.min_side = self.canonical.min_side(cfg.trsor.crop)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
                if raw.size != 1:
                    raise ImageError(f"expected exactly one encoded image per request, got {raw.size}")
                data = bytes(raw[0])
                if len(data) > self.max_bytes:
                    raise ImageError(f"request of {len(data)} bytes exceeds the limit of {self.max_bytes} bytes")
                image = decode(data, max_pixels=self.max_pixels, min_side=self.min_side, name="image")
                out = self.trsor({"image": self.canonical(image)})
                out["sigma"] = out["sigma"].reshape(1)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in out.items()]))
            except ImageError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"invalid image: {e}")))
            except Exception as e:  # noqa: BLE001 - one request's failure must not fail the batch or the server
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {e!r}")))
        return responses
