"""benchmarks/detection/refit.py: the fusion recomputed from stored pre-fusion parts is the graph's own score, and a
fusion re-fit on real photos only standardises their parts (slsp.calibrate.fit_fusion)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "detection"))
import refit  # noqa: E402

from conftest import FAKES, PHOTO  # noqa: E402
from slsp import detector as det_io  # noqa: E402
from slsp.calibrate import fit_fusion  # noqa: E402
from slsp.imaging import load  # noqa: E402
from slsp.scoring import noise_score  # noqa: E402


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    det = det_io.load(None)
    out = []
    with torch.inference_mode():
        for f, low in [(PHOTO, False), *[(f, False) for f in FAKES], (PHOTO, True)]:
            img = load(f)
            d = det.detect(img[:96, :96] if low and f == PHOTO else img, str(f))  # a 96-px crop: low resolution
            out.append({"score": float(d.score), **{k: getattr(d, k) for k in (
                "crop_scores", "crop_kurtosis", "valid", "sigma", "low_resolution")}})
    return out


def test_the_kept_fusion_reproduces_the_graph(rows: list[dict]) -> None:
    det = det_io.load(None)
    assert any(bool(r["low_resolution"]) for r in rows) and not all(bool(r["low_resolution"]) for r in rows)
    got = refit.fused(rows, det.scorer, det.cfg.fusion)
    np.testing.assert_allclose(got, [r["score"] for r in rows], atol=1e-6)


def test_a_refit_fusion_moves_only_full_size_scores(rows: list[dict]) -> None:
    det = det_io.load(None)
    full = [r for r in rows if not bool(r["low_resolution"])]
    fusion = fit_fusion([refit.as_detection(r) for r in full], det.scorer, kurtosis=True)
    assert fusion.noise_mean == pytest.approx(np.mean([noise_score(r["sigma"]) for r in full]))
    assert fusion != det.cfg.fusion
    got = refit.fused(rows, det.scorer, fusion)
    low = [i for i, r in enumerate(rows) if bool(r["low_resolution"])]
    np.testing.assert_array_equal(got[low], np.array([rows[i]["score"] for i in low], np.float32))
