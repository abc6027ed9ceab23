"""Evaluation reports: FPR per real source (the metrics themselves: test_metrics.py)."""

from __future__ import annotations

import numpy as np

from slsp.evaluate import _fpr_by_source, source


def test_fpr_per_real_source() -> None:
    real = {"files": ["/x/kodak24_a.png", "/x/kodak24_b.png", "/y/exif-samples_c.jpg", "/y/bsd100_img_001.png"],
            "model": np.array([0.9, 0.1, 0.95, 0.2], np.float32)}
    by = _fpr_by_source(real, 0.9)
    assert by == {"bsd100": {"n": 1, "fpr": 0.0}, "exif-samples": {"n": 1, "fpr": 1.0}, "kodak24": {"n": 2, "fpr": 0.5}}
    assert _fpr_by_source(real, None) == {}
    assert source("a/b/sun-hays80_x_y.png") == "sun-hays80"
