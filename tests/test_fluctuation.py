"""The crops' log kurtosis (slsp.fluctuation), its median in the score stage, and the two-sided kurtosis part of the
fusion, against independent float64 NumPy references (tests/reference.py); its calibration is in test_fluct.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from conftest import photo_crops
from slsp.config import FusionConfig
from slsp.fluctuation import log_kurtosis
from slsp.scoring import Scorer


def test_log_kurtosis_matches_float64_reference() -> None:
    """Photo-like crops, Gaussian noise (log 3), sparse noise (heavy tails) and a flat crop (NaN)."""
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 117, np.uint8)
    gauss = np.clip(128 + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
    sparse = np.full((64, 64, 3), 100, np.uint8)
    sparse[rng.uniform(size=(64, 64)) < 0.01] = 160
    crops = np.stack([*photo_crops(6, 64, 64), gauss, sparse, flat])
    got = log_kurtosis(torch.from_numpy(crops)).numpy()
    want = np.array([reference.log_kurtosis(c) for c in crops])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=1e-4)
    assert np.isnan(got[-1]) and np.isnan(want[-1])
    assert abs(got[6] - np.log(3.0)) < 0.15 and got[7] > np.log(3.0) + 2.0  # Gaussian ~ log 3; sparse far above


def test_log_kurtosis_holds_in_half_precision() -> None:
    """What a TensorRT FP16 engine may choose for these layers (no TensorRT here: the same ops in float16 on the CPU):
    within 0.02 of float64 on crops whose gray-level residual would overflow float16 at its 4th power (a sparse
    crop, a strong texture), and still NaN on a flat one."""
    rng = np.random.default_rng(1)
    sparse = np.full((64, 64, 3), 90, np.uint8)
    sparse[rng.uniform(size=(64, 64)) < 0.003] = 250  # a few pixels 160 gray levels out: d^4 ~ 6e8
    texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 7, np.uint8)
    crops = np.stack([*photo_crops(4, 64, 64), sparse, texture, flat])
    got = log_kurtosis(torch.from_numpy(crops), torch.float16).numpy()
    want = np.array([reference.log_kurtosis(c) for c in crops])
    assert got.dtype == np.float32 and np.isfinite(got[:-1]).all() and np.isnan(got[-1])
    np.testing.assert_allclose(got[:-1], want[:-1], atol=0.02)
    assert got[4] > 5.0  # the sparse crop's tails survive


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_kurtosis_median_is_nanmedian_over_level_zero(levels: int, k: int, seed: int) -> None:
    """The score stage's median: np.nanmedian over level 0's valid crops, NaN (flat) crops left out, coarser levels
    ignored; no such crop -> absent."""
    rng = np.random.default_rng(seed)
    values = rng.normal(1.5, 0.5, levels * k).astype(np.float32)
    values[rng.uniform(size=values.size) < 0.2] = np.nan
    valid = rng.uniform(size=values.size) < 0.7
    got, has = Scorer("mean", 0.5, levels=levels).kurtosis(torch.from_numpy(values), torch.from_numpy(valid))
    level0 = values[:k][valid[:k] & ~np.isnan(values[:k])]
    assert bool(has) == bool(level0.size)
    if level0.size:
        assert float(got) == pytest.approx(float(np.median(level0.astype(np.float64))), abs=1e-6)
    else:
        assert float(got) == 0.0


def test_kurtosis_part_is_two_sided_and_fused_as_a_fifth_part() -> None:
    """Three levels, noise and the kurtosis distance: sigmoid(2 x the mean of the z-parts); the same distance on
    either side of the center scores the same; without the part (config off, or all crops flat) it is as before."""
    f = FusionConfig(True, 0.4, 0.05, -0.8, 0.4, level_means=(0.5, 0.6), level_stds=(0.1, 0.2), kurtosis=True,
                     kurtosis_center=1.8, kurtosis_mean=0.4, kurtosis_std=0.3)
    off = dataclasses.replace(f, kurtosis=False)
    scorer, plain = Scorer("mean", 0.5, f, levels=3), Scorer("mean", 0.5, off, levels=3)
    rng = np.random.default_rng(2)
    for _ in range(30):
        scores, valid, sigma = rng.uniform(0, 1, 18), rng.uniform(size=18) > 0.2, rng.uniform(0.2, 6)
        valid[[0, 6, 12]] = True
        kurt = rng.normal(1.8, 0.8, 18)
        aggs = [scores[6 * lv : 6 * lv + 6][valid[6 * lv : 6 * lv + 6]].mean() for lv in range(3)]
        parts = [(aggs[0] - 0.4) / 0.05, (-np.log(sigma + 1e-3) + 0.8) / 0.4, (aggs[1] - 0.5) / 0.1,
                 (aggs[2] - 0.6) / 0.2]
        med = np.median(kurt[:6][valid[:6]])
        args = (torch.tensor(scores, dtype=torch.float32), torch.tensor(kurt, dtype=torch.float32),
                torch.tensor(valid), torch.tensor(sigma, dtype=torch.float32), torch.tensor(False))
        want = 1 / (1 + np.exp(-2 * np.mean([*parts, (abs(med - 1.8) - 0.4) / 0.3])))
        assert float(scorer(*args)[0]) == pytest.approx(want, abs=1e-5)
        assert float(plain(*args)[0]) == pytest.approx(1 / (1 + np.exp(-2 * np.mean(parts))), abs=1e-5)
        flat = (args[0], torch.full((18,), float("nan")), *args[2:])
        assert float(scorer(*flat)[0]) == float(plain(*args)[0])
    s, ok, sig, no = torch.full((18,), 0.5), torch.ones(18, dtype=torch.bool), torch.tensor(1.0), torch.tensor(False)
    above, below = (scorer(s, torch.full((18,), 1.8 + d), ok, sig, no)[0] for d in (0.7, -0.7))
    assert float(above) == pytest.approx(float(below), abs=1e-6)
    assert float(above) > float(scorer(s, torch.full((18,), 1.8), ok, sig, no)[0])

