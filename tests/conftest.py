from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slsp.config import DetectorConfig, TrsorConfig
from slsp.families.fluct import FluctConfig
from slsp.families.recipe import RecipeConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# Images in the repository (provenance: examples/README.md, tests/data/README.md): the tests need nothing else.
EXAMPLES = ROOT / "examples"
DATA = ROOT / "tests" / "data"
PHOTO = EXAMPLES / "real_kodak24_kodim03.png"  # 500 x 500, scanned film, never JPEG-compressed
PHOTOS = (PHOTO, DATA / "kodim13_crop.png", DATA / "kodim01_crop.png")  # 500 x 500, 320 x 224, 224 x 288
FAKES = tuple(sorted(EXAMPLES.glob("fake_*.png")))  # two Latent Diffusion samples, 256 x 256

# Tiny models of each family: trained, exported and served in seconds by the tests.
TINY_SLSP = RecipeConfig(dim=32, depth=2, heads=2, latent=16, decoder_channels=16)
TINY_FLUCT = FluctConfig(width=8, latent=16)


def tiny_config(family: str = "slsp", crops: int = 4, levels: int = 1, skip_clipped: bool = False, **fields
                ) -> DetectorConfig:
    """A detector config over a tiny model of `family`, `crops` per pyramid level."""
    model = {"slsp": TINY_SLSP, "fluct": TINY_FLUCT}[family]
    return DetectorConfig(trsor=TrsorConfig(crops=crops, levels=levels, skip_clipped=skip_clipped), model=model,
                          **fields)


def shared(*parts: str) -> Path:
    """A file of ../shared/data, for the few tests that need the dev split itself. A clone without ../shared/ skips
    them; where ../shared/ exists (CI), a missing file is a failure, never a skip."""
    if not SHARED.is_dir():
        pytest.skip(f"needs the dev split: no {SHARED} (the shared/ folder beside the checkout)")
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"test data missing: {p}")
    return p


def real_photo(name: str) -> np.ndarray:
    """A repository photo by name (kodim03, kodim13, kodim01); "NAME as jpeg" decodes it from a JPEG at q85."""
    from slsp.imaging import load
    from slsp.transforms import Transform

    base, _, jpg = name.partition(" as ")
    img = load(next(p for p in PHOTOS if base in p.name))
    return Transform("jpeg:85")(img) if jpg == "jpeg" else img


def photo_crops(n: int, h: int, w: int) -> list[np.ndarray]:
    """`n` different h x w crops of the repository's photos: corners and centre of each photo in turn."""
    from slsp.imaging import load

    imgs = [load(p) for p in PHOTOS]
    out = []
    for k in range(n):
        img, j = imgs[k % len(imgs)], k // len(imgs) % 5
        ys, xs = img.shape[0] - h, img.shape[1] - w
        y, x = ((0, 0), (ys, xs), (0, xs), (ys, 0), (ys // 2, xs // 2))[j]
        out.append(np.ascontiguousarray(img[y:y + h, x:x + w]))
    return out


def jpeg(src: Path, dst: Path, quality: int = 90) -> Path:
    """A camera-like JPEG (4:2:0) of a photo: JPEG decoding paths without a camera file in the repository."""
    Image.open(src).convert("RGB").save(dst, format="JPEG", quality=quality, subsampling=2)
    return dst


def synthetic_photo(h: int, w: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """A smooth ramp with sensor-like noise, plus a strongly textured quadrant: a stand-in photo of any size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 70 + 100 * yy / h + 50 * xx / w
    img = base[..., None] + rng.normal(0, sigma, (h, w, 3)).astype(np.float32)
    img[: h // 2, : w // 2] += rng.normal(0, 30, (h // 2, w // 2, 3)).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def clipped_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """`synthetic_photo` with clipped regions: a black band on the left, a white one at the bottom (each more flat
    than any noisy region), a lone clipped pixel in the smooth part, and a red band saturated in one channel only
    (not clipped: its other channels still fluctuate)."""
    img = synthetic_photo(h, w, seed=seed)
    img[:, : w // 5] = 0
    img[h - h // 6 :, :] = 255
    img[h // 2 + 3, w // 2 + 5] = 0
    img[h // 2 : h // 2 + h // 8, :, 0] = 255
    return img


@pytest.fixture(scope="session")
def real_image() -> np.ndarray:
    from slsp.imaging import load

    return load(PHOTO)


@pytest.fixture(scope="session")
def served_artifacts(tmp_path_factory) -> Path:
    """Artifacts exported with --aoti and --native (one gate photo): the server tests run the C++ TrSOR inside
    Triton (test_serve_cli covers the ONNX Runtime one); test_aoti and test_native check both against PyTorch.
    Where this PyTorch cannot build the AOTInductor package (2.11, on the GPU machines), the artifacts go without
    it and the tests that need it skip, giving the reason (AOTI_MISSING)."""
    from slsp.errors import RuntimeMissing
    from slsp.export import build

    global AOTI_MISSING
    out = tmp_path_factory.mktemp("serve") / "artifacts"
    try:
        build.build(None, out, aoti=True, native=True, images=[PHOTO], sizes=0)
    except RuntimeMissing as e:
        import torch

        # Only a PyTorch older than the pinned 2.13 may lack the package; on the CI's torch a failure is a failure.
        if "AOTInductor" not in str(e) or tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 13):
            raise
        AOTI_MISSING = str(e)
        build.build(None, out, native=True, images=[PHOTO], sizes=0)
    return out


AOTI_MISSING = ""  # why this machine's served_artifacts have no trsor.pt2, if they have none


def aoti_package(artifacts: Path) -> Path:
    """The artifacts' AOTInductor package, or a skip that says why this PyTorch could not build it."""
    from slsp import contract

    path = artifacts / contract.TRSOR_AOTI
    if not path.is_file():
        pytest.skip(f"no AOTInductor package in the artifacts: {AOTI_MISSING or 'not built'}")
    return path
