"""The gpu-python repository (issue 40: the bundled server on a GPU, members in PyTorch) served for real. Without a
GPU its PyTorch members run with device=cpu: the same code, configs and files as on a GPU, so CI checks all of it
but nvJPEG and CUDA; with a GPU, the CUDA repository too, within the parity gate's tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAKES, PHOTO, PHOTOS, ROOT, jpeg
from slsp import contract, deploy
from slsp import detector as det_io
from slsp.clients.client import InvalidInput, SlspClient
from slsp.errors import SlspError
from slsp.export import repository, trsor_backends
from slsp.imaging import decode
from slsp.server import Server

pytestmark = pytest.mark.server


def serve(artifacts: Path, root: Path, device: str) -> Server:
    repo = root / f"repo-{device}"
    repository.write(artifacts, repo, repository.ServingConfig(target="gpu-python", torch_device=device))
    srv = Server(repo, log_path=root / f"tritonserver-{device}.log")
    try:
        srv.start(timeout=240)
    except Exception:
        print((root / f"tritonserver-{device}.log").read_text(errors="replace")[-5000:], file=sys.stderr)
        raise
    return srv


def test_repository_configs(served_artifacts: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo, repository.ServingConfig(target="gpu-python"))
    decode_cfg = repository.read_config(repo / repository.DECODE / "config.pbtxt")
    model_cfg = repository.read_config(repo / repository.MODEL / "config.pbtxt")
    assert decode_cfg.parameters["trsor_file"].string_value == contract.WEIGHTS
    assert decode_cfg.parameters["device"].string_value == "cuda" == model_cfg.parameters["device"].string_value
    assert model_cfg.backend == "python" and model_cfg.max_batch_size == 192
    assert trsor_backends.by_file(contract.WEIGHTS).name == "torch"
    version = repo / repository.MODEL / "1"
    files = {p.name for p in version.iterdir()}
    # The weights, not the graph: the member runs the family's module in PyTorch, not ONNX Runtime.
    assert files >= {"model.py", contract.WEIGHTS, contract.CONFIG} and contract.MODEL.onnx not in files
    with pytest.raises(SlspError, match="must be one of"):
        repository.ServingConfig(target="tpu")
    with pytest.raises(SlspError, match="gpu-python repository"):  # the cluster image has no PyTorch
        deploy.check_repository(repo)


def test_artifacts_without_weights_are_refused(served_artifacts: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(served_artifacts, old)
    (old / contract.WEIGHTS).unlink()  # artifacts of an export before the weights travelled with them
    with pytest.raises(SlspError, match="export again"):
        repository.write(old, tmp_path / "repo", repository.ServingConfig(target="gpu-python"))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")])])
@pytest.mark.slow
def test_served_matches_the_library(served_artifacts: Path, tmp_path: Path, device: str) -> None:
    srv = serve(served_artifacts, tmp_path, device)
    try:
        client = SlspClient(srv.grpc_url)
        datas = [PHOTOS[1].read_bytes(), jpeg(PHOTO, tmp_path / "photo.jpg").read_bytes(), FAKES[0].read_bytes()]
        det = det_io.load()
        for data, res in zip(datas, client.detect_many(datas, concurrency=3)):
            ref = det.detect(decode(data))
            # CPU: the same PyTorch ops as the library; CUDA: the parity gate's tolerance (nvJPEG decodes JPEGs).
            tol = 1e-5 if device == "cpu" else 1e-2
            assert res.score == pytest.approx(float(ref.score), abs=tol)
            if device == "cpu":
                assert res.verdict == bool(ref.verdict)
                np.testing.assert_array_equal(res.positions[res.valid], ref.positions.numpy()[ref.valid.numpy()])
        with pytest.raises(InvalidInput):  # a bad image is the client's error, and the server goes on
            client.detect(b"not an image")
        assert client.detect(datas[0]).score == pytest.approx(float(det.detect(decode(datas[0])).score), abs=tol)
    finally:
        srv.stop()
    # The member ran the GPU's path (decoded and resized with PyTorch, pixels kept as a tensor for TrSOR).
    how = "nvJPEG" if device == "cuda" else "the CPU decoder (device cpu), resized in PyTorch on cpu"
    assert f"slsp_decode_trsor: decoding with {how}" in (tmp_path / f"tritonserver-{device}.log").read_text()


@pytest.mark.slow
def test_the_gpu_checks_serving_step_rehearses_on_cpu(served_artifacts: Path, tmp_path: Path) -> None:
    """benchmarks/product/gpu_serve.py, the GPU check's serving step, with device=cpu: every part of it but CUDA, so
    that a mistake in it is found here and not in a device call."""
    out = tmp_path / "serve.json"
    script = ROOT / "benchmarks" / "product" / "gpu_serve.py"
    r = subprocess.run([sys.executable, str(script), "--artifacts", str(served_artifacts), "--checkout", str(ROOT),
                        "--out", str(out), "--work", str(tmp_path / "w"), "--device", "cpu", "--requests", "4",
                        "--jpegs", "4"], capture_output=True, text=True, timeout=600)
    res = json.loads(out.read_text())
    assert r.returncode == 0 and res["ok"], (res.get("error"), r.stderr[-3000:])
    assert res["parity"]["ok"] and {rt["runtime"] for rt in res["parity"]["runtimes"]} >= {"server-grpc"}
    compared = res["nvjpeg_vs_cpu_library"]
    assert compared["images"] == compared["verdicts_agree"] == 4 and compared["max_abs_score_diff"] < 1e-5
    assert compared["nvjpeg_default"]  # on the CPU both decoders are libjpeg: equal
    assert {row["concurrency"] for row in res["bench"]["1mp"]["rows"]} == {1, 8, 32} and res["targets"]
    assert any("decoding with the CPU decoder" in line for line in res["log_head"])


@pytest.fixture(scope="module")
def numpy2_site(tmp_path_factory) -> Path:
    """numpy 2 in a folder of its own: what a GPU machine's PyTorch environment has (issue 40's run)."""
    import subprocess

    site = tmp_path_factory.mktemp("numpy2")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "--target",
                        str(site), "numpy>=2,<3"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"numpy 2 does not install here (no registry?): {r.stderr[-300:]}")
    return site


def test_members_refuse_numpy_2_and_serve_needs_a_numpy_1_site(numpy2_site: Path, served_artifacts: Path,
                                                               tmp_path: Path, monkeypatch) -> None:
    """Regression of issue 40's GPU run: under numpy 2 the bundled stub misread every BYTES input and died on the
    first request ('Stub process ... is not healthy'); reproduced on CPU with numpy 2.2 in the serving venv. Now a
    member refuses to load under numpy 2, and Server puts SLSP_STUB_SITE's numpy 1.x first on the members' path."""
    import subprocess

    from slsp import server as server_mod
    from slsp.errors import RuntimeMissing

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from slsp.onnxrt import check_member_numpy; "
            "check_member_numpy()")
    r = subprocess.run([sys.executable, "-c", code, str(numpy2_site)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SLSP_STUB_SITE" in r.stderr and "numpy 2." in r.stderr
    here = str(Path(np.__file__).parent.parent)  # this interpreter's numpy 1.x: a valid stub site
    for site, ok in ((numpy2_site, False), (tmp_path, False), (here, True)):
        monkeypatch.setenv(server_mod.STUB_SITE, str(site))
        if ok:
            assert server_mod.member_numpy_site() == [here]
            assert Server(tmp_path).environment()["SLSP_PYTHONPATH"].split(":")[0] == here
        else:
            with pytest.raises(RuntimeMissing, match="numpy 1.x"):
                server_mod.member_numpy_site()
    # The real stub with numpy 2 first on its members' path: the models refuse to load, with the reason logged.
    monkeypatch.setattr(server_mod, "member_numpy_site", lambda: [str(numpy2_site)])
    repo = tmp_path / "repo"
    repository.write(served_artifacts, repo)
    with pytest.raises(SlspError):
        Server(repo, log_path=tmp_path / "log").start(timeout=120)
    assert "would die on the first request" in (tmp_path / "log").read_text(errors="replace")
