"""ONNX Runtime sessions, configured the same way in-process and inside Triton's Python backend."""

from __future__ import annotations

from pathlib import Path

from slsp.errors import RuntimeMissing


def providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeMissing(
            "ONNX Runtime CUDA execution provider not available (install onnxruntime-gpu on a GPU machine)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session(path: Path, device: str = "cpu", intra_op_threads: int = 0, inter_op_threads: int = 0):
    """An InferenceSession; 0 threads means ONNX Runtime's default (one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers(device))


# The bundled tritonserver's (2.51) Python backend stub hands each BYTES input to Python as a numpy array built by
# its pybind11, which reads numpy 1.x's array API: under numpy 2 the array is misread and the stub dies on the first
# request (`unpack_from requires a buffer of at least ...`; what issue 40's GPU run hit). `slsp serve` puts a numpy 1.x
# first on the members' path (slsp.server.member_numpy_site); a member refuses to load under numpy 2.
STUB_NUMPY_MAJOR = 1


def check_member_numpy() -> None:
    """Refuse to load a Python-backend member under a numpy its stub cannot read (STUB_NUMPY_MAJOR)."""
    import numpy

    if int(numpy.__version__.split(".")[0]) != STUB_NUMPY_MAJOR:
        raise RuntimeMissing(
            f"this member imports numpy {numpy.__version__} ({numpy.__file__}); the bundled tritonserver's Python "
            f"backend stub reads numpy {STUB_NUMPY_MAJOR}.x arrays and would die on the first request. Install "
            "'numpy<2' into a folder (pip install --target DIR 'numpy<2') and serve with SLSP_STUB_SITE=DIR")


def triton_params(args: dict) -> tuple[Path, dict[str, str]]:
    """For Triton Python-backend models: this version's folder and the config's string parameters (after checking
    the member's numpy)."""
    import json

    check_member_numpy()

    cfg = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
    return Path(args["model_repository"]) / args["model_version"], params


def triton_session(args: dict, filename: str):
    """The session for `filename` in this version folder (device and intra_op_threads from the config's
    parameters), and those parameters."""
    here, params = triton_params(args)
    return session(here / filename, params["device"], int(params["intra_op_threads"]), 1), params
