"""Metrics against independent definitions: AUROC as the area under the ROC, AP, the threshold at a target FPR,
and bootstrap intervals with paired differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slsp.metrics import auroc, average_precision, bootstrap, leave_one_out, roc, threshold_at_fpr, tpr_at_fpr


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_auroc_equals_area_under_roc(real: list[float], fake: list[float]) -> None:
    r, f = np.array(real), np.array(fake)
    fpr, tpr = roc(r, f)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert auroc(r, f) == pytest.approx(area, abs=1e-9)
    assert 0 <= average_precision(r, f) <= 1


def test_metrics_on_known_cases() -> None:
    r, f = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5])
    assert auroc(r, f) == 1.0 and average_precision(r, f) == 1.0
    assert auroc(f, r) == 0.0
    assert average_precision(np.array([0.9]), np.array([0.5, 1.0])) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert tpr_at_fpr(np.linspace(0, 1, 100), np.array([0.995, 0.5]), 0.01) == 0.5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=200), st.sampled_from([0.01, 0.05, 0.1, 0.2]))
def test_threshold_meets_target_fpr_and_is_tight(scores: list[float], fpr: float) -> None:
    s = np.array(scores, dtype=np.float32)
    thr = threshold_at_fpr(s, fpr)
    assert np.mean(s >= np.float32(thr)) <= fpr
    lower = np.nextafter(np.float32(thr), np.float32(-np.inf))
    # Any lower threshold would admit at least one more real image than allowed, unless none is left to admit.
    assert np.mean(s >= lower) > fpr or np.mean(s >= lower) == np.mean(s >= np.float32(thr))


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


def test_leave_one_out_chooses_without_the_left_out_generator() -> None:
    """Candidate b is best overall only because of generator y; with y left out, the choice is made on x and z."""
    per = {"a": {"x": 0.8, "y": 0.5, "z": 0.8}, "b": {"x": 0.7, "y": 1.0, "z": 0.7}}
    assert leave_one_out(per) == {"x": "b", "y": "a", "z": "b"}
