"""Model shapes, scores, scoring aggregation, metrics and calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slsp.config import SCORES, ModelConfig
from slsp.errors import ConfigError
from slsp.metrics import auroc, average_precision, roc, threshold_at_fpr, tpr_at_fpr
from slsp.model import SLSPModel
from slsp.scoring import Scorer

TINY = ModelConfig(dim=32, depth=2, heads=2, latent=16, decoder_channels=16)


@pytest.mark.parametrize("score", SCORES)
def test_model_scores_are_probabilities(score: str) -> None:
    torch.manual_seed(0)
    m = SLSPModel(ModelConfig(**{**TINY.__dict__, "score": score})).eval()
    crops = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    phi = (torch.rand(5, 64, 64) > 0.5).float()
    with torch.inference_mode():
        s = m(crops, phi)
        assert s.shape == (5,) and s.dtype == torch.float32
        assert ((s >= 0) & (s <= 1)).all()
        # Batch independence: a crop's score does not depend on its batch mates (what dynamic batching needs).
        torch.testing.assert_close(m(crops[2:3], phi[2:3]), s[2:3], rtol=1e-5, atol=1e-6)


def test_decoder_reconstructs_crop_shape() -> None:
    m = SLSPModel(TINY)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    enc = m.encoder(x, torch.ones(2, 1, 64, 64))
    assert m.decoder(enc.latent).shape == x.shape
    assert enc.latent.shape == (2, TINY.latent)


def test_paper_config_is_valid() -> None:
    cfg = ModelConfig.paper()
    assert (cfg.crop, cfg.dim, cfg.latent) == (256, 768, 512)


@pytest.mark.parametrize("bad", [dict(depth=3), dict(dim=30, heads=4), dict(crop=72), dict(score="nope")])
def test_bad_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        ModelConfig(**{**TINY.__dict__, **bad})


def test_scorer_ignores_invalid_crops() -> None:
    scores = torch.tensor([0.9, 0.1, 0.5, 0.99])
    valid = torch.tensor([True, True, False, False])
    sigma = torch.tensor(1.5)
    s, v = Scorer("mean", 0.4)(scores, valid, sigma)
    assert float(s) == pytest.approx(0.5) and bool(v)
    s, v = Scorer("max", 0.95)(scores, valid, sigma)
    assert float(s) == pytest.approx(0.9) and not bool(v)


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
