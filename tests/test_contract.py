"""Every exported graph, generated Triton config and the client against `slsp.contract`: a renamed or retyped tensor
fails here, not in a served request."""

from __future__ import annotations

import ast
import dataclasses
import shutil
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2

from slsp import contract
from slsp.clients.client import Result
from slsp.config import DetectorConfig
from slsp.errors import SlspError
from slsp.export import repository

ROOT = Path(__file__).resolve().parents[1]
ONNX_TYPES = {
    "uint8": TensorProto.UINT8,
    "float32": TensorProto.FLOAT,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}


def test_stage_specs_chain() -> None:
    """Each chained stage's inputs come from the image or an earlier stage (the decode member adds the
    low-resolution flag to TrSOR's outputs); the chain produces every output of the fused graph and of RESULT."""
    have = {contract.IMAGE}
    for stage in contract.CHAIN:
        assert set(stage.input_names) <= have, stage.name
        have |= {t.name for t in (contract.DECODED if stage is contract.TRSOR else stage.outputs)}
    assert set(contract.FUSED.output_names) <= {t.name for t in contract.RESULT} <= have
    assert contract.FUSED.input_names == [*contract.TRSOR.input_names, contract.LOW_RESOLUTION]


def test_exported_graphs_follow_the_contract(served_artifacts: Path) -> None:
    cfg = DetectorConfig.load(served_artifacts / contract.CONFIG)
    c, k = cfg.trsor.crop, cfg.trsor.slots
    for stage in contract.STAGES.values():
        graph = onnx.load(str(served_artifacts / stage.onnx), load_external_data=False).graph
        for specs, values in ((stage.inputs, graph.input), (stage.outputs, graph.output)):
            assert [v.name for v in values] == [t.name for t in specs], stage.name
            for t, v in zip(specs, values):
                tt = v.type.tensor_type
                assert tt.elem_type == ONNX_TYPES[t.dtype], (stage.name, t.name)
                assert len(tt.shape.dim) == len(t.dims), (stage.name, t.name)
                for want, got in zip(t.dims, tt.shape.dim):
                    if want in contract.DYNAMIC_DIMS:
                        assert got.dim_param == contract.DYNAMIC_DIMS[want], (stage.name, t.name)
                    elif want == "K":  # fixed by the config; the exporter may leave an output's K symbolic
                        assert got.dim_value == k or got.dim_param, (stage.name, t.name)
                    else:
                        assert got.dim_value == (c if want == "C" else want), (stage.name, t.name)


def _dims(member, io) -> list[int]:
    """A tensor's full dims as the ensemble sees it: a batching member's come after the batch dim."""
    return ([-1] if member.max_batch_size > 0 else []) + list(io.dims)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_written_configs_follow_the_contract(served_artifacts: Path, tmp_path: Path, target: str) -> None:
    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo, repository.ServingConfig(target=target))
    c = DetectorConfig.load(served_artifacts / contract.CONFIG).trsor.crop
    cfgs = {
        m: repository.read_config(repo / m / "config.pbtxt") for m in (*contract.MEMBERS.values(), contract.ENSEMBLE)
    }
    types = {k: model_config_pb2.DataType.Value(v) for k, v in repository.TRITON_TYPES.items()}
    for stage in contract.CHAIN:
        member = cfgs[contract.MEMBERS[stage.name]]
        inputs = [contract.ENSEMBLE_INPUT] if stage is contract.TRSOR else list(stage.inputs)  # decode takes bytes
        outputs = [(t.name, t.dtype) for t in (contract.DECODED if stage is contract.TRSOR else stage.outputs)]
        if stage is contract.SCORING:  # it forwards what earlier members computed: all ensemble outputs come from it
            inputs += [t for t in contract.FORWARDED if t not in inputs]
            outputs += [(contract.served(t.name), t.dtype) for t in contract.FORWARDED]
        assert [(i.name, i.data_type) for i in member.input] == [(t.name, types[t.dtype]) for t in inputs]
        assert [(o.name, o.data_type) for o in member.output] == [(n, types[d]) for n, d in outputs]
        if member.backend != "python":  # a native backend runs the graph itself: the reshape gives the graph's dims
            for t, io in zip((*stage.inputs, *stage.outputs), (*member.input, *member.output)):
                got = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
                assert got == list(t.shape(c))[1 if member.max_batch_size > 0 else 0 :], (stage.name, t.name)

    ens = cfgs[contract.ENSEMBLE]
    assert [i.name for i in ens.input] == [contract.ENSEMBLE_INPUT.name]
    assert [o.name for o in ens.output] == [t.name for t in contract.ENSEMBLE_OUTPUTS]
    # Every tensor the ensemble passes on: produced once, consumed with the same full dims and type.
    produced = {i.name: (i.data_type, list(i.dims)) for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        member = cfgs[step.model_name]
        for name, tensor in step.input_map.items():
            io = next(i for i in member.input if i.name == name)
            assert produced[tensor] == (io.data_type, _dims(member, io)), (step.model_name, name)
        for name, tensor in step.output_map.items():
            io = next(o for o in member.output if o.name == name)
            assert tensor not in produced, tensor
            produced[tensor] = (io.data_type, _dims(member, io))
    for o in ens.output:
        assert produced[o.name] == (o.data_type, list(o.dims)), o.name
    # No ensemble output is consumed by a step (which breaks requests for some outputs only).
    consumed = {t for step in ens.ensemble_scheduling.step for t in step.input_map.values()}
    assert not consumed & {o.name for o in ens.output}
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [contract.MEMBERS[s.name] for s in contract.CHAIN]


def test_artifacts_of_another_contract_are_refused(served_artifacts: Path, tmp_path: Path) -> None:
    """A score graph exported before the low-resolution flag existed (three inputs) would fail every request once
    served: the repository writer refuses it and says to export again."""
    old = tmp_path / "old"
    shutil.copytree(served_artifacts, old)
    proto = onnx.load(str(old / contract.SCORING.onnx))
    keep = [i for i in proto.graph.input if i.name != contract.LOW_RESOLUTION]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    onnx.save(proto, str(old / contract.SCORING.onnx))
    with pytest.raises(SlspError, match="Export the artifacts again"):
        repository.write(old, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_repository_of_another_contract_is_not_served(served_artifacts: Path, tmp_path: Path) -> None:
    """A repository written before the model stage gave the crops' kurtosis: `slsp serve` refuses it with the reason
    (its members would fail every request), and accepts the one this version writes."""
    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    repository.check_served(repo)
    path = repo / contract.MEMBERS[contract.MODEL.name] / "config.pbtxt"
    cfg = repository.read_config(path)
    del cfg.output[1:]
    path.write_text(text_format.MessageToString(cfg))
    with pytest.raises(SlspError, match="another slsp version's contract.*slsp export --repo"):
        repository.check_served(repo)


def test_client_reads_the_ensemble_outputs() -> None:
    """The client asks for the ensemble's outputs and returns them under SERVED's names (RESULT and provenance)."""
    assert [f.name for f in dataclasses.fields(Result)] == [t.name for t in contract.SERVED]
    assert [t.name for t in contract.ENSEMBLE_OUTPUTS] == [contract.served(t.name) for t in contract.SERVED]


# Plain words that are also tensor or stage names, legitimately written elsewhere: JSON keys of `slsp detect`,
# `slsp eval` and the client's `as_dict` ("score", "verdict", "crops"), config sections and the recipe's family
# name ("model", "trsor", "slsp"), parity failure records ("image"), ONNX metadata keys ("score"), and the
# low-resolution config section, also a key of `slsp detect`'s JSON ("low_resolution"), and TrainConfig's batch size,
# a recipe key ("batch"), and the provenance object's keys in `slsp detect`'s JSON ("provenance", its C2PA part's
# "valid").
PLAIN_WORDS = {"score", "verdict", "crops", "model", "trsor", "slsp", "image", "low_resolution", "batch",
               "provenance", "valid"}


def test_names_are_written_once() -> None:
    """Outside the contract (and tests), no module writes a tensor, artifact or member name as a string literal."""
    names = {v for k, v in vars(contract).items() if isinstance(v, str) and not k.startswith("_")}
    names |= {s.onnx for s in contract.STAGES.values()} | {contract.plan(s) for s in contract.STAGES.values()}
    names |= set(contract.MEMBERS.values()) | {t.name for t in (contract.ENSEMBLE_INPUT, *contract.ENSEMBLE_OUTPUTS)}
    names |= set(contract.DYNAMIC_DIMS.values())
    names -= PLAIN_WORDS
    found = []
    for pkg in ("slsp", "export", "clients"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "contract.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)
