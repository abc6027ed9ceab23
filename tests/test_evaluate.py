"""Evaluation that tells progress from noise: bootstrap intervals, paired differences, FPR per real source."""

from __future__ import annotations

import numpy as np
import pytest

from slsp.evaluate import _fpr_by_source, source
from slsp.metrics import auroc, bootstrap


def test_bootstrap_of_separated_classes_is_degenerate() -> None:
    real = {"a": np.zeros(20), "b": np.zeros(20)}
    fakes = {"g1": {"a": np.ones(5), "b": np.ones(5)}, "g2": {"a": np.ones(7), "b": np.ones(7)}}
    out = bootstrap(real, fakes, n=50)
    assert out["auroc"]["a"]["g1"] == (1.0, 1.0) and out["auroc"]["b"]["mean"] == (1.0, 1.0)
    assert out["diff"]["a-b"] == (0.0, 0.0)


def test_bootstrap_intervals_hold_the_estimate_and_pair_the_methods() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0, 1, 60)
    fakes = {g: rng.normal(0.8, 1, n) for g, n in (("g1", 15), ("g2", 6))}
    noisy = r + rng.normal(0, 0.3, 60)
    real = {"m": r, "worse": noisy}
    fk = {g: {"m": f, "worse": f + rng.normal(0, 0.3, f.size)} for g, f in fakes.items()}
    out = bootstrap(real, fk, n=400)
    for g, f in fakes.items():
        lo, hi = out["auroc"]["m"][g]
        assert lo <= auroc(r, f) <= hi and hi - lo > 0.05  # 6-15 fakes: wide intervals, as they should be
    mean = np.mean([auroc(r, f) for f in fakes.values()])
    lo, hi = out["auroc"]["m"]["mean"]
    assert lo <= mean <= hi
    d_lo, d_hi = out["diff"]["m-worse"]
    assert d_lo <= d_hi and out["diff"]["worse-m"] == pytest.approx((-d_hi, -d_lo))
    assert out == bootstrap(real, fk, n=400)  # seeded


def test_fpr_per_real_source() -> None:
    real = {"files": ["/x/kodak24_a.png", "/x/kodak24_b.png", "/y/exif-samples_c.jpg", "/y/bsd100_img_001.png"],
            "model": np.array([0.9, 0.1, 0.95, 0.2], np.float32)}
    by = _fpr_by_source(real, 0.9)
    assert by == {"bsd100": {"n": 1, "fpr": 0.0}, "exif-samples": {"n": 1, "fpr": 1.0}, "kodak24": {"n": 2, "fpr": 0.5}}
    assert _fpr_by_source(real, None) == {}
    assert source("a/b/sun-hays80_x_y.png") == "sun-hays80"
