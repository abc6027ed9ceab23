"""The simulated camera (slsp/families/fluct/camera.py) and the training sources it adds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import real_photo
from slsp.config import TrainConfig
from slsp.errors import ConfigError
from slsp.families.fluct import FluctConfig, FluctOptions
from slsp.families.fluct.camera import DEMOSAIC, _masks, clean_content, demosaic, simulate
from slsp.families.fluct.model import FluctModel, residual
from slsp.families.fluct.training import FluctTraining


def blocks(a: np.ndarray) -> np.ndarray:
    """8 x 8 block means: the picture without its fluctuations."""
    h, w = a.shape[0] // 8 * 8, a.shape[1] // 8 * 8
    return a[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3))


def fluctuation(a: np.ndarray) -> float:
    return float(residual(torch.from_numpy(np.array(a)).permute(2, 0, 1).float()[None]).std())


@pytest.mark.parametrize("method", DEMOSAIC)
@pytest.mark.parametrize("dy,dx", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_demosaicking_recovers_linear_colour_fields(method: str, dy: int, dx: int) -> None:
    """Every method interpolates a linear field exactly away from the border, on every Bayer phase."""
    h, w = 40, 46
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([0.2 + 0.5 * xx / w, 0.3 + 0.4 * yy / h, 0.6 - 0.3 * xx / w + 0.1 * yy / h])[None]
    x = torch.tensor(rgb, dtype=torch.float32)
    red, green, blue, _ = _masks(h, w, dy, dx)
    assert torch.equal(red + green + blue, torch.ones_like(red)) and float(green.mean()) == 0.5
    out = demosaic(x[:, :1] * red + x[:, 1:2] * green + x[:, 2:] * blue, dy, dx, method)
    np.testing.assert_allclose(out[..., 3:-3, 3:-3].numpy(), rgb[..., 3:-3, 3:-3], atol=1e-5)


def test_a_simulated_camera_keeps_content_and_adds_its_own_fluctuations() -> None:
    """On a noiseless colour gradient: the same picture through another camera's colours, with fluctuations."""
    yy, xx = np.mgrid[0:160, 0:200]
    clean = np.stack([60 + 100 * yy / 160, 80 + 60 * xx / 200, 120 - 50 * yy / 160], -1).round().astype(np.uint8)
    raised = 0
    for seed in range(12):
        out = simulate(clean, np.random.default_rng(seed))
        assert out.shape == clean.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, simulate(clean, np.random.default_rng(seed)))  # seeded alone
        assert float(np.abs(blocks(out) - blocks(clean)).mean()) < 12.0
        raised += fluctuation(out) > fluctuation(clean) + 0.3  # 0.27 gray levels: the gradient's rounding
    assert raised == 12


def test_clean_content_is_downscaled_within_bounds() -> None:
    img = real_photo("kodim03")  # 768 x 512
    for seed in range(10):
        c = clean_content(img, np.random.default_rng(seed), 128)
        f = img.shape[0] / c.shape[0]
        assert 2.0 <= f <= 4.0 + 1e-2 and min(c.shape[:2]) >= 128
    assert clean_content(img[:250, :250], np.random.default_rng(0), 128) is None  # not even 2x fits


def test_training_sources_add_simulated_cameras_once_and_seeded() -> None:
    model = FluctModel(FluctConfig())
    img = real_photo("kodim03")

    def sources(**options) -> list[np.ndarray]:
        return FluctTraining(model, TrainConfig(), FluctOptions(**options)).sources(img, 7)

    assert len(sources()) == 1 and sources()[0] is img
    two = sources(camera=2)
    assert len(two) == 3 and two[0] is img and min(two[1].shape[:2]) >= 128 and not np.array_equal(two[1], two[2])
    assert all(np.array_equal(a, b) for a, b in zip(two, sources(camera=2)))
    alone = sources(camera=2, photos=False)
    assert len(alone) == 2 and np.array_equal(alone[0], two[1])
    with pytest.raises(ConfigError):
        FluctOptions(photos=False)
    with pytest.raises(ConfigError):
        FluctOptions(camera=9)


def test_training_sources_at_the_scales_the_detector_scores() -> None:
    """Scales 2, 4, 8: the canonical halving, then 2 x 2 and 4 x 4 block means of it (float64 reference, rounded half
    up); a view smaller than a source crop is left out; the photo as given stays first where scale 1 is asked."""
    model = FluctModel(FluctConfig(crop=32))  # source crops of 64 px
    img = real_photo("kodim03")  # 500 x 500: the 1/8 view (62 x 62) holds no source crop

    def sources(**options) -> list[np.ndarray]:
        return FluctTraining(model, TrainConfig(), FluctOptions(**options)).sources(img, 7)

    half = np.array(Image.fromarray(img).resize((250, 250), Image.BICUBIC))
    out = sources(scales=(1, 2, 4, 8))
    assert [v.shape[:2] for v in out] == [(500, 500), (250, 250), (125, 125)]
    assert out[0] is img and np.array_equal(out[1], half)
    h = half.astype(np.float64)
    ref = np.floor((h[0:-1:2, 0:-1:2] + h[1::2, 0:-1:2] + h[0:-1:2, 1::2] + h[1::2, 1::2]) / 4 + 0.5)
    np.testing.assert_array_equal(out[2], ref)
    assert [v.shape[:2] for v in sources(scales=(4, 2))] == [(125, 125), (250, 250)]
    with_camera = sources(scales=(2,), camera=1)
    assert len(with_camera) == 2 and np.array_equal(with_camera[0], half)
    for bad in ((), (1, 1), (3,), (16,)):
        with pytest.raises(ConfigError, match="scales"):
            FluctOptions(scales=bad)
