"""The recipe model (family slsp): shapes, its score registry, config validation; the crop aggregation."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_SLSP as TINY
from slsp.errors import ConfigError
from slsp.families import family
from slsp.families.recipe import SCORES, RecipeConfig
from slsp.families.recipe.model import SCORES as SCORE_FUNCTIONS
from slsp.families.recipe.model import SLSPModel
from slsp.scoring import Scorer


@pytest.mark.parametrize("score", SCORES)
def test_model_scores_are_probabilities(score: str) -> None:
    torch.manual_seed(0)
    m = SLSPModel(RecipeConfig(**{**TINY.__dict__, "score": score})).eval()
    crops = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    phi = (torch.rand(5, 64, 64) > 0.5).float()
    with torch.inference_mode():
        s = m(crops, phi)
        assert s.shape == (5,) and s.dtype == torch.float32
        assert ((s >= 0) & (s <= 1)).all()
        # Batch independence: a crop's score does not depend on its batch mates (what dynamic batching needs).
        torch.testing.assert_close(m(crops[2:3], phi[2:3]), s[2:3], rtol=1e-5, atol=1e-6)


def test_every_configured_score_has_a_function() -> None:
    assert tuple(SCORE_FUNCTIONS) == SCORES


def test_model_config_by_family_and_size() -> None:
    assert family("slsp").model_config("paper") == RecipeConfig.paper()
    assert family("slsp").model_config("small", score="recon", residual=None) == RecipeConfig(score="recon")
    assert family("fluct").model_config(crop=96).crop == 96
    for name, args, kw, why in (("slsp", ("huge",), {}, "sizes small, paper"), ("nope", (), {}, "unknown model family"),
                                ("slsp", (), {"residual": False}, "no option residual")):
        with pytest.raises(ConfigError, match=why):
            family(name).model_config(*args, **kw)


def test_decoder_reconstructs_crop_shape() -> None:
    m = SLSPModel(TINY)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    enc = m.encoder(x, torch.ones(2, 1, 64, 64))
    assert m.decoder(enc.latent).shape == x.shape
    assert enc.latent.shape == (2, TINY.latent)


def test_paper_config_is_valid() -> None:
    cfg = RecipeConfig.paper()
    assert (cfg.crop, cfg.dim, cfg.latent) == (256, 768, 512)


@pytest.mark.parametrize("bad", [dict(depth=3), dict(dim=30, heads=4), dict(crop=72), dict(score="nope")])
def test_bad_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        RecipeConfig(**{**TINY.__dict__, **bad})


def test_scorer_ignores_invalid_crops() -> None:
    scores = torch.tensor([0.9, 0.1, 0.5, 0.99])
    valid = torch.tensor([True, True, False, False])
    sigma = torch.tensor(1.5)
    s, v = Scorer("mean", 0.4)(scores, torch.zeros(4), valid, sigma, torch.tensor(False))
    assert float(s) == pytest.approx(0.5) and bool(v)
    s, v = Scorer("max", 0.95)(scores, torch.zeros(4), valid, sigma, torch.tensor(False))
    assert float(s) == pytest.approx(0.9) and not bool(v)
