"""The README's main command and the CLI's contracts (JSON output, exit codes, clear errors)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAKES, PHOTO, PHOTOS

ROOT = Path(__file__).resolve().parents[1]
SLSP = [sys.executable, "-c", "from slsp.cli import main; main()"]


def slsp(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*SLSP, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def readme_detect_command() -> list[str]:
    text = (ROOT / "README.md").read_text()
    line = next(t for t in text.splitlines() if "&& slsp detect" in t)
    return shlex.split(line.split("&& slsp ", 1)[1])


def test_readme_main_command_runs_on_shipped_model(tmp_path: Path) -> None:
    """From a folder without ../shared/ beside it: the examples ship in the repository; as the README says, both
    fakes score above the photo, and all three are under the threshold calibrated on the wide real corpus."""
    args = readme_detect_command()
    assert args[1:] == ["examples"]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    r = slsp(*args, "--json", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert len(results) == 3
    for res in results:
        assert 0.0 <= res["score"] <= 1.0 and res["crops"]
        assert all({"x", "y", "side", "score"} <= set(c) for c in res["crops"])
    fakes = [r for r in results if Path(r["path"]).name.startswith("fake_")]
    (photo,) = [r for r in results if r not in fakes]
    assert photo["verdict"] == "real" and all(f["score"] > photo["score"] for f in fakes), results
    assert [f["verdict"] for f in fakes] == ["real", "real"], results
    plain = slsp(*args, "-q")
    assert plain.returncode == 0 and re.search(r"\t(real|synthetic)\t", plain.stdout)


def bad_files(folder: Path) -> Path:
    folder.mkdir()
    (folder / "broken.png").write_bytes(PHOTO.read_bytes()[:500])
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "tiny.png")
    (folder / "blp.png").write_bytes(b"BLP1" + bytes(range(256)) * 4)  # Pillow's BLP decoder raises its own type
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "icon.png", format="ICO")
    Image.fromarray(np.full((300, 300, 3), 77, np.uint8)).save(folder / "flat.png")
    return folder


def test_detect_reports_bad_files_and_exits_nonzero(tmp_path: Path) -> None:
    r = slsp("detect", str(PHOTO), str(bad_files(tmp_path / "bad")), "--json", "-q", "--explain",
             str(tmp_path / "explain"))
    assert r.returncode == 1
    by_name = {Path(x["path"]).name: x for x in json.loads(r.stdout)}
    assert "score" in by_name[PHOTO.name]
    assert "truncated" in by_name["broken.png"]["error"]
    assert "below the minimum size" in by_name["tiny.png"]["error"]
    assert "not an image in a supported format" in by_name["icon.png"]["error"]
    assert "a flat image, with no pixel fluctuation" in by_name["flat.png"]["error"]  # not "99.998% synthetic"
    assert "blp.png" in by_name["blp.png"]["error"] and "0x" not in by_name["blp.png"]["error"]
    assert (tmp_path / "explain" / PHOTO.name).is_file()


def test_detect_on_a_device_scores_and_refuses_as_the_library(tmp_path: Path) -> None:
    """`--device cpu`: the on-device path (bytes to score in torch) gives the library's results, file by file."""
    args = [str(PHOTO), *map(str, FAKES), str(bad_files(tmp_path / "bad")), "--json", "-q"]
    lib, dev = slsp("detect", *args), slsp("detect", *args, "--device", "cpu")
    assert lib.returncode == dev.returncode == 1, dev.stderr
    for a, b in zip(json.loads(lib.stdout), json.loads(dev.stdout), strict=True):
        assert a["path"] == b["path"] and a.get("error") == b.get("error")
        if "score" in a:
            assert b["score"] == pytest.approx(a["score"], abs=1e-6)
            where = [[(c["y"], c["x"], c["side"]) for c in r["crops"]] for r in (a, b)]
            assert where[0] == where[1]
    for extra, why in ((["--compile"], "give a device"), (["--device", "cpu", "--explain", str(tmp_path)], "--explain"),
                       (["--device", "gpu"], "not a torch device")):
        r = slsp("detect", str(PHOTO), *extra)
        assert r.returncode != 0 and why in r.stderr, r.stderr
    if not torch.cuda.is_available():
        r = slsp("detect", str(PHOTO), "--device", "cuda")
        assert r.returncode != 0 and "no CUDA device" in r.stderr, r.stderr


def test_pixel_limit_is_configurable_on_the_cli() -> None:
    r = slsp("detect", str(PHOTO), "--max-pixels", "100000", "--json", "-q")  # 500 x 500
    assert r.returncode == 1 and "exceeds the limit of 100000" in json.loads(r.stdout)[0]["error"]


def test_missing_path_is_a_clear_error() -> None:
    """Its own error row (the other paths are still scored: tests/test_detect_paths.py), and exit 1."""
    r = slsp("detect", "/nonexistent/image.png")
    assert r.returncode == 1 and "/nonexistent/image.png\tERROR\t" in r.stdout and "no such file or folder" in r.stdout


def test_eval_writes_report_and_roc(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "ldm"
    fake.mkdir(parents=True)
    real = tmp_path / "real"
    real.mkdir()
    for f in FAKES:
        (fake / f.name).write_bytes(f.read_bytes())
    for i, f in enumerate(PHOTOS):
        (real / f"kodak24_{i}.png").write_bytes(f.read_bytes())
    r = slsp("eval", "--real", str(real), "--fake", str(tmp_path / "fake"), "--reencode", "jpeg:95",
             "--perturb", "resize:0.5", "--out", str(tmp_path / "ev"), "--json", "-q")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["conditions"]) == {"original", "resize:0.5"}
    rows = rep["conditions"]["original"]["rows"]
    assert {"ldm", "mean", "worst"} <= set(rows["model"]) and {"ldm", "mean"} <= set(rows["baseline"])
    assert 0 <= rows["model"]["ldm"]["auroc"] <= 1
    assert (tmp_path / "ev" / "roc.png").is_file() and (tmp_path / "ev" / "report.json").is_file()
    assert set(rows) == {"model", "crops", "baseline"}  # the shipped model fuses the noise level: both parts shown
    assert rows["model"]["mean"]["auroc_lo"] <= rows["model"]["mean"]["auroc"] <= rows["model"]["mean"]["auroc_hi"]
    paired = rep["conditions"]["original"]["paired"]
    assert {"model-baseline", "crops-baseline", "model-crops"} <= set(paired)
    assert set(rep["conditions"]["original"]["fpr_by_source"]) == {"kodak24"}
    alt = slsp("eval", "--real", str(real), "--fake", str(tmp_path / "fake"), "--aggregate", "max", "--json", "-q")
    rep = json.loads(alt.stdout)
    assert (rep["aggregate"], rep["threshold"]) == ("max", None)
    assert "tpr@thr" not in rep["conditions"]["original"]["rows"]["model"]["ldm"]
    bad = slsp("eval", "--real", str(real), "--fake", str(tmp_path / "fake"), "--score", "recon", "-q")
    assert bad.returncode == 1 and "scores with 'disc' only" in bad.stderr


def test_print_docker_mounts_this_package(tmp_path: Path) -> None:
    r = slsp("serve", "--repo", str(tmp_path / "repo_gpu"), "--print-docker")
    assert r.returncode == 0, r.stderr
    cmd = shlex.split(r.stdout)
    assert f"{(tmp_path / 'repo_gpu').resolve()}:/models:ro" in cmd and "SLSP_PYTHONPATH=/opt/slsp" in cmd
    assert any(a.endswith("/slsp:/opt/slsp/slsp:ro") for a in cmd)
    assert "127.0.0.1:8001:8001" in " ".join(cmd) and "slsp[" not in r.stdout  # never a PyPI package named slsp


def test_client_imports_from_the_package_without_torch() -> None:
    code = "import sys; from slsp.clients import SlspClient, InvalidInput; assert 'torch' not in sys.modules, 'torch'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_serving_modules_import_without_torch() -> None:
    """The decode member runs the native or ONNX TrSOR through these modules in a process without torch."""
    code = ("import sys; import slsp.contract, slsp.export.runners, slsp.export.trsor_backends, "
            "slsp.export.repository; assert 'torch' not in sys.modules, 'torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


