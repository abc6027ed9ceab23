"""`slsp bench engines` smoke test: output shape only (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PHOTO, aoti_package
from slsp.bench import engines
from slsp.bench.timing import photo_at
from slsp.imaging import load


def test_photo_at_tiles_without_resampling() -> None:
    src = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = photo_at(src, 5, 7)
    assert out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out[:2, :3], src)
    np.testing.assert_array_equal(out[:2, 3:6], src[:, ::-1])  # mirrored, so seams stay continuous
    np.testing.assert_array_equal(out[2:4, :3], src[::-1])


@pytest.mark.slow
def test_bench_engines_cli(served_artifacts: Path, tmp_path: Path) -> None:
    art = aoti_package(served_artifacts).parent  # with trsor.pt2: the compiled TrSOR joins the table
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from slsp.cli import main; main()",
            "bench",
            "engines",
            "--artifacts",
            str(art),
            "--source",
            str(PHOTO),
            "--size",
            "96x64",
            "--size",
            "130x70",
            "--min-time",
            "0",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "res"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "trsor ort" in r.stdout and "trsor aoti" in r.stdout and "trsor native" in r.stdout
    (path,) = (tmp_path / "res").iterdir()
    res = json.loads(path.read_text())
    assert [row["size"] for row in res["rows"]] == ["96x64", "130x70"]
    for row in res["rows"]:
        assert {"trsor", "model", "score", "pipeline"} <= set(row["ort"]) == set(row["torch"])
        assert row["ratios"]["trsor_ort_over_floor"] > 0 and row["ratios"]["model_ort_over_compute_floor"] > 0
        assert row["model_gflop"] > 0 and all(row[e][s]["runs"] >= 3 for e in ("ort", "torch") for s in row["ort"])
        for k in ("aoti", "native"):
            assert set(row[k]) == {"trsor", "pipeline"} and row["ratios"][f"trsor_{k}_over_floor"] > 0
    assert res["threads"] == 1 == res["machine"]["torch_threads"]
    assert res["machine"]["cpus"] >= 1 and res["matmul_gflops"] > 0


def engines_result(ms: dict[str, dict[str, float]], size: str = "1024x1024") -> dict:
    """A minimal `bench engines` result: median times per engine and stage."""
    row = {"size": size, "decode_png": {"median_ms": ms["decode"]}}
    row |= {e: {s: {"median_ms": t} for s, t in stages.items()} for e, stages in ms.items() if e != "decode"}
    return {"kind": "engines", "rows": [row]}


def test_compare_flags_an_engine_slower_relative_to_eager() -> None:
    torch_ms = {"trsor": 40.0, "model": 20.0, "score": 0.1, "pipeline": 60.0}
    base = engines_result({"torch": torch_ms, "ort": {"trsor": 20.0, "model": 10.0, "score": 0.03, "pipeline": 30.0},
                           "native": {"trsor": 3.0, "pipeline": 17.0}, "decode": 19.0})
    # A machine twice as slow: every stage doubles, eager too, and nothing is flagged.
    slow = engines_result({"torch": {k: 2 * v for k, v in torch_ms.items()},
                           "ort": {"trsor": 40.0, "model": 20.0, "score": 0.06, "pipeline": 60.0},
                           "native": {"trsor": 6.0, "pipeline": 34.0}, "decode": 38.0})
    cmp = engines.compare(slow, base)
    assert cmp["flagged"] == [] and cmp["missing"] == []
    assert all(r["ratio"] == pytest.approx(1.0) for r in cmp["rows"] if "raw" not in r["stage"])
    # The native TrSOR 20x slower (the pyramid regression of issue 41) on the same machine: flagged, nothing else.
    worse = engines_result({"torch": torch_ms, "ort": {"trsor": 20.0, "model": 10.0, "score": 0.03, "pipeline": 30.0},
                            "native": {"trsor": 60.0, "pipeline": 74.0}, "decode": 19.0})
    cmp = engines.compare(worse, base)
    assert cmp["flagged"] == ["1024x1024 native pipeline", "1024x1024 native trsor"]
    assert "SLOWER" in engines.compare_table(cmp)
    # Stages and sizes only one side has are listed, not compared.
    other = engines_result({"torch": torch_ms, "ort": {"trsor": 20.0, "model": 10.0, "score": 0.03, "pipeline": 30.0},
                            "decode": 19.0}, size="512x512")
    assert engines.compare(other, base)["missing"] == ["512x512: not in the baseline"]
    no_native = engines_result({"torch": torch_ms, "ort": {"trsor": 20.0, "model": 10.0, "score": 0.03,
                                "pipeline": 30.0}, "decode": 19.0})
    assert sorted(engines.compare(no_native, base)["missing"]) == [
        "1024x1024 native pipeline: only in the baseline", "1024x1024 native trsor: only in the baseline"]


def test_compare_refuses_what_is_not_an_engines_result(tmp_path: Path) -> None:
    bad = tmp_path / "server.json"
    bad.write_text(json.dumps({"kind": "server"}))
    r = subprocess.run([sys.executable, "-c", "from slsp.cli import main; main()", "bench", "engines", "--compare",
                        str(bad), "--source", str(PHOTO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "not a `slsp bench engines` result" in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_engines_shape() -> None:
    from slsp import detector

    res = engines.cuda_engines(
        detector.load(), load(PHOTO), [(64, 96), (130, 70)], min_time=0
    )
    assert res["device"] and [r["size"] for r in res["trsor"]] == ["96x64", "70x130"]
    assert all(r["median_ms"] > 0 and r["mpix_per_s"] > 0 for r in res["trsor"])
    k = detector.load().cfg.trsor.slots  # crops per image over all pyramid levels
    assert [r["crops"] for r in res["model"]] == [k, 4 * k, 16 * k, 64 * k]
    assert all(r["images_per_s"] > 0 for r in res["model"])


@pytest.mark.slow
def test_bench_train_cli(tmp_path: Path) -> None:
    """Training throughput per device and batch-making workers, fresh weights each; the first row is the baseline."""
    r = subprocess.run([sys.executable, "-m", "slsp.cli", "bench", "train", "--images", str(PHOTO), "--run", "cpu:0",
                        "--run", "cpu:1", "--steps", "2", "--warmup", "1", "--batch", "4", "--out", str(tmp_path),
                        "--json", "-q"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [(row["device"], row["workers"]) for row in res["rows"]] == [("cpu", 0), ("cpu", 1)]
    assert res["rows"][0]["vs_first"] == 1.0 and all(row["steps_per_s"] > 0 for row in res["rows"])
    assert res["train_crops"] > 0 and len(list(tmp_path.iterdir())) == 1
    bad = subprocess.run([sys.executable, "-m", "slsp.cli", "bench", "train", "--run", "cuda"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "DEVICE:WORKERS" in bad.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_training_runs_on_cuda_with_workers() -> None:
    """Batches made by forked workers reach the GPU step (pinned, non-blocking copies)."""
    from slsp.bench import training

    res = training.measure([PHOTO], [("cuda", 0), ("cuda", 2)], steps=2, warmup=1, batch=8)
    assert all(row["steps_per_s"] > 0 for row in res["rows"])


def test_end_to_end_row_runs_on_any_device() -> None:
    """The GPU end-to-end row of `bench engines` (JPEG bytes to score, library vs DevicePipeline), on the CPU."""
    from slsp import detector

    rows = engines.end_to_end(detector.load(), load(PHOTO), [(160, 200)], "cpu", min_time=0)
    (row,) = rows
    assert row["size"] == "200x160" and row["decoder"] == "cpu" and row["jpeg_bytes"] > 0
    assert row["cpu_library"]["median_ms"] > 0 and row["device"]["median_ms"] > 0 and row["device_score_diff"] < 1e-6
    assert "device_compiled" not in row
