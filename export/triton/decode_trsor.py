"""Triton Python-backend model `slsp_decode_trsor`: encoded image bytes -> TrSOR crops, one request at a time.

Each request is decoded under slsp's decoding policy and goes through the model's canonical transform (as in
`Detector.analyze`; an image too small for it is passed on at native scale and flagged low-resolution). It is run
through the TrSOR backend the repository writer chose (`trsor_backends`: the C++ kernel, the AOTInductor package or
ONNX Runtime, or PyTorch in the gpu-python repository). Only its valid crops are passed on to the model. In the
gpu-python repository each image is decoded and resized with PyTorch on the member's device
(`slsp.device_pipeline.DeviceDecoder`): plain JPEGs by nvJPEG on CUDA where torchvision has it, every other image by
the CPU decoder (how is logged once), and the pixels stay there for TrSOR; with device cpu, CI runs that path.
A bad image gets its own error response; the other requests of the same execution are unaffected.
Each accepted request also carries its file's provenance (`slsp.provenance`, read from the encoded bytes) as a JSON
string, which the score member forwards. Each request adds one to `slsp_images_total{outcome=...}`
(contract.OUTCOMES), and an accepted low-resolution one also to `slsp_low_resolution_images_total`.
"""

import json
import os
import sys

# The bundled server's embedded interpreter ignores PYTHONPATH; `slsp serve` passes our paths here instead.
sys.path[:0] = [p for p in os.environ.get("SLSP_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np
import triton_python_backend_utils as pb_utils

from slsp import contract, provenance
from slsp.config import DetectorConfig
from slsp.errors import ImageError
from slsp.export import trsor_backends
from slsp.imaging import check_fluctuation, decode
from slsp.onnxrt import triton_params
from slsp.transforms import Canonical


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        here, params = triton_params(args)
        # Only the AOTInductor package and PyTorch's TrSOR (gpu-python) bring torch into this process.
        backend = trsor_backends.by_file(params["trsor_file"])
        self.trsor = backend.open(here, params["device"], int(params["intra_op_threads"])).infer
        self.max_pixels = int(params["max_pixels"])
        self.max_bytes = int(params["max_bytes"])
        cfg = DetectorConfig.load(here / contract.SERVED_CONFIG)  # this version's own, like its TrSOR files
        self.canonical = Canonical(cfg.canonical, cfg.trsor.crop, cfg.low_resolution.enabled)
        self.min_side = self.canonical.min_side
        self.device_decoder = None
        if backend.name == "torch":  # gpu-python: decoded and resized with PyTorch, handed to TrSOR where it lies
            from slsp.device_pipeline import member_decoder

            self.device_decoder, how = member_decoder(self.canonical, params["device"], self.max_pixels)
            print(f"slsp_decode_trsor: decoding with {how}; TrSOR: {backend.name}, numpy {np.__version__}",
                  file=sys.stderr, flush=True)
        self.metrics = family = pb_utils.MetricFamily(  # kept: its metrics die with it
            contract.IMAGES_METRIC, "Image requests by outcome: accepted, invalid (the client's fault), error (the "
            "server's)", pb_utils.MetricFamily.COUNTER)
        self.outcomes = {o: family.Metric(labels={"outcome": o}) for o in contract.OUTCOMES}
        self.low_family = pb_utils.MetricFamily(
            contract.LOW_RESOLUTION_METRIC, "Accepted images scored at native scale, too small for the canonical "
            "transform (weaker detection, their own threshold)", pb_utils.MetricFamily.COUNTER)
        self.low = self.low_family.Metric(labels={})

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, contract.ENSEMBLE_INPUT.name).as_numpy().reshape(-1)
                if raw.size != 1:
                    raise ImageError(f"expected exactly one encoded image per request, got {raw.size}")
                data = bytes(raw[0])
                if len(data) > self.max_bytes:
                    raise ImageError(f"request of {len(data)} bytes exceeds the limit of {self.max_bytes} bytes")
                if self.device_decoder is not None:
                    pixels, low = self.device_decoder.canonical(self.device_decoder.upload(data, contract.IMAGE)[0])
                else:
                    image = decode(data, max_pixels=self.max_pixels, min_side=self.min_side, name=contract.IMAGE)
                    pixels, low = self.canonical(image)
                out = self.trsor({contract.IMAGE: pixels})
                check_fluctuation(float(out[contract.SIGMA].reshape(-1)[0]), contract.IMAGE)
                # Only the valid crops go to the model (a small image leaves most of a coarse level's slots
                # invalid); the score member puts their scores back in their slots.
                keep = out[contract.VALID]
                out[contract.CROPS], out[contract.CROP_PHI] = out[contract.CROPS][keep], out[contract.CROP_PHI][keep]
                out[contract.SIGMA] = out[contract.SIGMA].reshape(1)
                out[contract.LOW_RESOLUTION] = np.array([low])
                # From the encoded bytes, apart from the pixels (slsp.provenance); JSON, as in `slsp detect`.
                out[contract.PROVENANCE] = np.array([json.dumps(provenance.read(data)).encode()], dtype=object)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in out.items()]))
                self.outcomes["accepted"].increment(1)
                if low:
                    self.low.increment(1)
            except ImageError as e:  # the client's fault: INVALID_ARGUMENT on gRPC, 400 on HTTP
                error = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                self.outcomes["invalid"].increment(1)
            except Exception as e:  # noqa: BLE001 - one request's failure must not fail the batch or the server
                error = pb_utils.TritonError(f"internal error ({type(e).__name__}: {e})", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
                self.outcomes["error"].increment(1)
        return responses
