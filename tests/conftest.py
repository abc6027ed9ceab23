from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slsp.config import DetectorConfig, TrsorConfig
from slsp.families.fluct import FluctConfig
from slsp.families.recipe import RecipeConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tiny models of each family: trained, exported and served in seconds by the tests.
TINY_SLSP = RecipeConfig(dim=32, depth=2, heads=2, latent=16, decoder_channels=16)
TINY_FLUCT = FluctConfig(width=8, latent=16)


def tiny_config(family: str = "slsp", crops: int = 4, **fields) -> DetectorConfig:
    """A detector config over a tiny model of `family`, K = `crops`."""
    model = {"slsp": TINY_SLSP, "fluct": TINY_FLUCT}[family]
    return DetectorConfig(trsor=TrsorConfig(crops=crops), model=model, **fields)


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"test data missing: {p} (the shared/ folder must sit beside the checkout)")
    return p


def synthetic_photo(h: int, w: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """A smooth ramp with sensor-like noise, plus a strongly textured quadrant: a stand-in photo of any size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 70 + 100 * yy / h + 50 * xx / w
    img = base[..., None] + rng.normal(0, sigma, (h, w, 3)).astype(np.float32)
    img[: h // 2, : w // 2] += rng.normal(0, 30, (h // 2, w // 2, 3)).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def real_image() -> np.ndarray:
    from slsp.imaging import load

    return load(shared("real", "dev", "bsd100_img_020.png"))


@pytest.fixture(scope="session")
def served_artifacts(tmp_path_factory) -> Path:
    """Artifacts exported with --aoti and --native (one gate photo): the server tests run the C++ TrSOR inside
    Triton (test_serve_cli covers the ONNX Runtime one); test_aoti and test_native check both against PyTorch."""
    from slsp.export import build

    out = tmp_path_factory.mktemp("serve") / "artifacts"
    build.build(None, out, aoti=True, native=True, images=[shared("real", "dev", "bsd100_img_020.png")], sizes=0)
    return out
