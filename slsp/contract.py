"""The stage contract: every tensor, artifact and Triton model name the pipeline is built from, written once.

ONNX export, the runners, the Triton repository writer, the Triton member files and the client read their names,
dtypes and dims from here (torch-free, so the client and the server's members import it cheaply), and
tests/test_contract.py checks every exported graph, generated config and the client against it.

Dims are ints or symbols: "H", "W" (image, dynamic), "N" (crop batch, dynamic), "K" (crops per image, from the
config), "C" (crop side, from the config).
"""

from __future__ import annotations

from dataclasses import dataclass

# Tensor names of the stage graphs (and of the Triton members, which pass them on unchanged).
IMAGE, CROPS, CROP_PHI, POSITIONS, VALID, SIGMA = "image", "crops", "crop_phi", "positions", "valid", "sigma"
CROP_SCORES, CROP_KURTOSIS, SCORE, VERDICT = "crop_scores", "crop_kurtosis", "score", "verdict"
LOW_RESOLUTION = "low_resolution"
PROVENANCE = "provenance"  # served only: what the file claims about its origin (slsp.provenance), as JSON
DYNAMIC_DIMS = {"H": "height", "W": "width", "N": "batch"}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its NumPy dtype name and its dims (ints or the symbols above)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def shape(self, crop: int = -1, crops: int = -1) -> tuple[int, ...]:
        """Concrete dims: C and K as given (-1: not fixed), the dynamic dims as -1."""
        fixed = {"C": crop, "K": crops}
        return tuple(d if isinstance(d, int) else fixed.get(d, -1) for d in self.dims)


@dataclass(frozen=True)
class Stage:
    """One exported graph: inputs, outputs and the ONNX file it is written to."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def onnx(self) -> str:
        return f"{self.name}.onnx"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """For `torch.onnx.export`: the symbolic axes of each input and output."""
        out = {}
        for t in (*self.inputs, *self.outputs):
            axes = {i: DYNAMIC_DIMS[d] for i, d in enumerate(t.dims) if d in DYNAMIC_DIMS}
            if axes:
                out[t.name] = axes
        return out


_T = {t.name: t for t in (
    TensorSpec(IMAGE, "uint8", ("H", "W", 3)),
    TensorSpec(CROPS, "uint8", ("K", "C", "C", 3)),
    TensorSpec(CROP_PHI, "float32", ("K", "C", "C")),  # Phi inside each crop, 0 or 1
    TensorSpec(POSITIONS, "int64", ("K", 2)),  # top-left (y, x) of each crop
    TensorSpec(VALID, "bool", ("K",)),
    TensorSpec(SIGMA, "float32", ()),  # TrSOR's noise estimate, gray levels
    TensorSpec(CROP_SCORES, "float32", ("K",)),
    # Each crop's log kurtosis of its fluctuation (slsp.fluctuation.log_kurtosis; NaN where flat), beside its score.
    TensorSpec(CROP_KURTOSIS, "float32", ("K",)),
    TensorSpec(SCORE, "float32", ()),
    TensorSpec(VERDICT, "bool", ()),
    # Set by whoever applies the canonical transform (Detector.analyze, the decode member): the image was too small
    # for it and is scored at native scale, under the low-resolution fusion and threshold (LowResolutionConfig).
    TensorSpec(LOW_RESOLUTION, "bool", ()),
    TensorSpec(PROVENANCE, "bytes", ()),
)}


def _batch(t: TensorSpec) -> TensorSpec:
    """The model stage takes crops of any number of images: K becomes the dynamic batch N."""
    return TensorSpec(t.name, t.dtype, tuple("N" if d == "K" else d for d in t.dims))


TRSOR = Stage("trsor", (_T[IMAGE],), tuple(_T[n] for n in (CROPS, CROP_PHI, POSITIONS, VALID, SIGMA)))
MODEL = Stage("model", (_batch(_T[CROPS]), _batch(_T[CROP_PHI])), (_batch(_T[CROP_SCORES]), _batch(_T[CROP_KURTOSIS])))
SCORING = Stage("score", tuple(_T[n] for n in (CROP_SCORES, CROP_KURTOSIS, VALID, SIGMA, LOW_RESOLUTION)),
                (_T[SCORE], _T[VERDICT]))
FUSED = Stage("slsp", (_T[IMAGE], _T[LOW_RESOLUTION]),
              tuple(_T[n] for n in (SCORE, VERDICT, POSITIONS, CROP_SCORES, VALID, SIGMA)))
# One image's answer (library, ensemble, client): the fused graph's outputs and the low-resolution flag it was given.
RESULT = (*FUSED.outputs, _T[LOW_RESOLUTION])
# What the ensemble and the client return: RESULT and the file's provenance, which the decode member reads from the
# encoded bytes (never part of the pixel score).
SERVED = (*RESULT, _T[PROVENANCE])
STAGES = {s.name: s for s in (TRSOR, MODEL, SCORING, FUSED)}
CHAIN = (TRSOR, MODEL, SCORING)  # what the Triton ensemble and `Pipeline` run, in order

# Artifact files `slsp export` writes beside the stage graphs (`Stage.onnx`).
CONFIG = "config.json"  # the resolved DetectorConfig, also in every run folder
WEIGHTS = "model.safetensors"  # the model's state dict, in every run folder and the artifacts
PARITY_REPORT = "parity.json"
TRSOR_AOTI = "trsor.pt2"  # AOTInductor package (--aoti)
TRSOR_NATIVE, TRSOR_NATIVE_META = "trsor_native.so", "trsor_native.json"  # C++ kernel and its constants (--native)
TRT_TIMING_CACHE = "timing.cache"


def plan(stage: Stage) -> str:
    """The TensorRT engine file of a stage (--trt)."""
    return f"{stage.name}.plan"


# The Triton repository: an ensemble over three members, one per stage of CHAIN.
ENSEMBLE = "slsp"
MEMBERS = {TRSOR.name: "slsp_decode_trsor", MODEL.name: "slsp_model", SCORING.name: "slsp_score"}
SERVED_CONFIG = "slsp_config.json"  # the decode member's copy of CONFIG, one per version folder
# The decode member's outputs: the TrSOR graph's and the low-resolution flag of the transform it applied.
DECODED = (*TRSOR.outputs, _T[LOW_RESOLUTION], _T[PROVENANCE])
# The ensemble takes one encoded image (TYPE_STRING) and returns RESULT, upper-cased.
ENSEMBLE_INPUT = TensorSpec(IMAGE.upper(), "bytes", (1,))
ENSEMBLE_OUTPUTS = tuple(TensorSpec(t.name.upper(), t.dtype, t.dims) for t in SERVED)


# The scoring member also forwards the fused outputs its stage does not compute, so every ensemble output comes from
# the last step and no ensemble output is consumed by a later step: Triton's ensemble, when a client asks for some
# outputs only, stops producing the unrequested ones, and a later step waiting on such a tensor deadlocks.
FORWARDED = tuple(t for t in SERVED if t.name not in SCORING.output_names)


# Triton's operator APIs (shared-memory registration, repository, logging, trace), when restricted, answer only
# requests carrying this header with the server's admin key; gRPC clients send it as metadata under Triton's prefix.
ADMIN_HEADER = "slsp-admin-key"
ADMIN_GRPC_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"

# One count per image request that reached the decode member, by outcome: Triton 2.51's own counters take a refused
# image as a success of the decode member and as two failures of the ensemble.
IMAGES_METRIC = "slsp_images_total"
OUTCOMES = ("accepted", "invalid", "error")  # decoded and passed to TrSOR / the client's fault (400) / ours (500)
# Of the accepted ones, those scored at native scale because they are too small for the canonical transform.
LOW_RESOLUTION_METRIC = "slsp_low_resolution_images_total"


def served(name: str) -> str:
    """The ensemble's name for a fused-stage output."""
    return name.upper()
