"""Evaluation reports: FPR per real source, and the shipped model's leaderboard row (the metrics themselves:
test_metrics.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, shared
from slsp.evaluate import _fpr_by_source, evaluate, source

sys.path.insert(0, str(ROOT / "benchmarks" / "detection"))
from detection import SHIPPED  # noqa: E402


def test_fpr_per_real_source() -> None:
    real = {"files": ["/x/kodak24_a.png", "/x/kodak24_b.png", "/y/exif-samples_c.jpg", "/y/bsd100_img_001.png"],
            "model": np.array([0.9, 0.1, 0.95, 0.2], np.float32), "verdict": np.array([True, False, True, False])}
    by = _fpr_by_source(real, 0.9)
    assert by == {"bsd100": {"n": 1, "fpr": 0.0}, "exif-samples": {"n": 1, "fpr": 1.0}, "kodak24": {"n": 2, "fpr": 0.5}}
    assert _fpr_by_source(real, None) == {}
    assert source("a/b/sun-hays80_x_y.png") == "sun-hays80"


@pytest.mark.slow
def test_shipped_model_reproduces_its_leaderboard_row() -> None:
    """The dev-split row of the shipped model in benchmarks/DETECTION.md is what the shipped model scores today (the
    one test that needs the dev split itself: it skips in a clone without ../shared/)."""
    rec = json.loads((ROOT / "benchmarks" / "results" / "detection" / SHIPPED / "stored.json").read_text())
    report = evaluate(shared("real", "dev"), shared("fake", "dev"), None, trim_bottom=16, quiet=True)
    got = report["scores"]["real"]["original"]
    assert [Path(f).name for f in got["files"]] == [Path(f).name for f in rec["scores"]["real"]["files"]]
    np.testing.assert_allclose(got["model"], rec["scores"]["real"]["model"], atol=1e-4)
    rows, want = report["conditions"]["original"]["rows"]["model"], rec["condition"]["rows"]["model"]
    assert {g: round(r["auroc"], 3) for g, r in rows.items()} == {g: round(r["auroc"], 3) for g, r in want.items()}
