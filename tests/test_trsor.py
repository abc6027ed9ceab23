"""TrSOR against the float64 reference, plus its statistical and geometric properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
from conftest import PHOTO, PHOTOS, clipped_photo, synthetic_photo
from slsp import pyramid
from slsp.config import TrsorConfig
from slsp.imaging import load
from slsp.transforms import Transform
from slsp.trsor import NullModel, Pyramid, TrSOR, box_levels, gradient_energy, unclipped_patches, window_reduce

CFG = TrsorConfig()
TRSOR = TrSOR(CFG)


def run(img: np.ndarray):
    with torch.inference_mode():
        return TRSOR(torch.from_numpy(np.ascontiguousarray(img)))


def test_null_constants_match_reference() -> None:
    n, r = NullModel.of(7, 0.99), reference.gamma_constants(7, 0.99)
    assert n.trace == pytest.approx(r["trace"], rel=1e-12)
    assert n.tau == pytest.approx(r["tau"], rel=1e-9)
    assert n.truncated_mean == pytest.approx(r["trunc"], rel=1e-6)
    assert n.log_mean == pytest.approx(r["log_mean"], rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 17), extra=st.integers(0, 30), m=st.integers(1, 5), dim=st.integers(0, 1), seed=st.integers(0, 99)
)
def test_window_reduce_matches_sliding_windows(k: int, extra: int, m: int, dim: int, seed: int) -> None:
    n = k + extra
    x = np.random.default_rng(seed).normal(size=(n, m) if dim == 0 else (m, n))
    windows = np.lib.stride_tricks.sliding_window_view(x, k, axis=dim)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(window_reduce(t, k, dim, torch.add).numpy(), windows.sum(-1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(window_reduce(t, k, dim, torch.maximum).numpy(), windows.max(-1))


def test_box_sum_energy_equals_explicit_operator() -> None:
    y = reference.luma(synthetic_photo(23, 31, seed=3))
    np.testing.assert_allclose(reference.gradient_energy(y, 7), reference.gradient_energy_explicit(y, 7), rtol=1e-10)
    xi = gradient_energy(torch.from_numpy(y.astype(np.float32))[None], 7).numpy()
    np.testing.assert_allclose(xi, reference.gradient_energy(y, 7), rtol=1e-4, atol=1e-3)


def _images():
    yield "min 64x64", synthetic_photo(64, 64, seed=1)
    yield "odd 65x99", synthetic_photo(65, 99, seed=2)
    yield "non-square 200x333", synthetic_photo(200, 333, seed=3)
    yield "real kodak 500x500", load(PHOTO)
    yield "real kodak 320x224", load(PHOTOS[1])
    yield "real kodak as camera jpeg", Transform("jpeg:85")(load(PHOTOS[2]))
    yield "4000x3000", synthetic_photo(4000, 3000, seed=4)


@pytest.mark.parametrize("name,img", list(_images()), ids=lambda v: v if isinstance(v, str) else "")
def test_matches_float64_reference(name: str, img: np.ndarray) -> None:
    got, ref = run(img), reference.trsor(img)
    assert float(got.sigma) == pytest.approx(ref["sigma"], rel=2e-4)
    phi = got.phi.numpy()
    # float32 vs float64 may flip a patch whose energy sits within rounding of tau: allow 1e-4 of pixels.
    assert np.mean(phi != ref["phi"]) <= 1e-4, name
    valid = got.valid.numpy()
    n_cand = len(ref["counts"])
    assert valid.sum() == min(n_cand, CFG.crops)
    pos = got.positions.numpy()[valid]
    if np.array_equal(phi, ref["phi"]):
        np.testing.assert_array_equal(pos, ref["positions"])
    counts = [phi[y : y + CFG.crop, x : x + CFG.crop].sum() for y, x in pos]
    np.testing.assert_allclose(counts, ref["counts"], atol=CFG.crop)  # same ranking up to flipped pixels
    crops = got.crops.numpy()[valid]
    for (y, x), c in zip(pos, crops):
        np.testing.assert_array_equal(c, img[y : y + CFG.crop, x : x + CFG.crop])


SKIP = TrSOR(TrsorConfig(skip_clipped=True))


def _clipped_images():
    yield "synthetic 200x333", clipped_photo(200, 333, seed=7)
    yield "odd 65x99", clipped_photo(65, 99, seed=8)
    # A real photo over-exposed: highlights clip to white in all channels, some to one channel only.
    yield "kodak over-exposed", np.clip(load(PHOTO).astype(np.int32) * 2 - 60, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,img", list(_clipped_images()), ids=lambda v: v if isinstance(v, str) else "")
def test_skip_clipped_matches_float64_reference(name: str, img: np.ndarray) -> None:
    with torch.inference_mode():
        got = SKIP(torch.from_numpy(img))
    ref = reference.trsor(img, skip_clipped=True)
    assert float(got.sigma) == pytest.approx(ref["sigma"], rel=2e-4)
    assert np.mean(got.phi.numpy() != ref["phi"]) <= 1e-4, name
    np.testing.assert_array_equal(got.positions.numpy()[: len(ref["positions"])], ref["positions"])


def test_clipped_pixels_are_never_over_smooth() -> None:
    img = clipped_photo(200, 333, seed=7)
    clipped = reference.clipped(img)
    plain, skip = run(img), SKIP(torch.from_numpy(img))
    assert plain.phi.numpy()[clipped].mean() > 0.99  # without it, the flat clipped bands are the most over-smooth
    assert skip.phi.numpy()[clipped].max() == 0
    assert skip.phi.numpy()[img[..., 0] == 255].mean() > 0  # one saturated channel is not clipped
    # The bands fill about half the image; the noise of the rest is what is estimated.
    assert float(skip.sigma) == pytest.approx(float(run(synthetic_photo(200, 333, seed=7)).sigma), rel=0.1)
    assert float(plain.sigma) < 0.5 * float(skip.sigma)


def test_skip_clipped_changes_nothing_without_clipped_pixels() -> None:
    img = synthetic_photo(200, 333, seed=3)
    assert unclipped_patches(TRSOR.channels(torch.from_numpy(img)), 7).all()
    a, b = run(img), SKIP(torch.from_numpy(img))
    assert float(b.sigma) == pytest.approx(float(a.sigma), rel=1e-5)
    np.testing.assert_array_equal(a.phi.numpy(), b.phi.numpy())


@pytest.mark.parametrize("value", [0, 255])
def test_an_image_clipped_everywhere_has_no_fluctuation(value: int) -> None:
    img = np.full((100, 120, 3), value, np.uint8)
    out = SKIP(torch.from_numpy(img))
    assert float(out.sigma) == 0 and out.phi.numpy().max() == 0
    assert reference.trsor(img, skip_clipped=True)["sigma"] == 0


def test_small_image_is_covered_whole() -> None:
    img = synthetic_photo(150, 100, seed=5)
    o = run(img)
    covered = np.zeros(img.shape[:2], bool)
    for (y, x), v in zip(o.positions.numpy(), o.valid.numpy()):
        if v:
            covered[y : y + CFG.crop, x : x + CFG.crop] = True
    assert covered.all()
    assert len({tuple(p) for p, v in zip(o.positions.numpy(), o.valid.numpy()) if v}) == int(o.valid.sum())


def test_noise_estimate_agrees_with_liu_eigenvalue_estimate() -> None:
    for sigma in (2.0, 5.0):
        img = synthetic_photo(300, 400, seed=int(sigma), sigma=sigma)
        o = run(img)
        ref = reference.trsor(img)
        liu = reference.liu_noise(img, ref["mask"])
        assert float(o.sigma) == pytest.approx(liu, rel=0.15), (sigma, float(o.sigma), liu)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sigma=st.floats(1.5, 12.0), level=st.integers(40, 200), seed=st.integers(0, 2**16))
def test_flat_noise_region_is_selected_and_sigma_recovered(sigma: float, level: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 160, 224
    img = level + rng.normal(0, sigma, (h, w, 1)).repeat(3, 2)
    img[:, w // 2 :] += rng.normal(0, 40 + 4 * sigma, (h, w - w // 2, 1)).repeat(3, 2)  # heavy texture half
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    o = run(img)
    flat = o.phi.numpy()[8:-8, 8 : w // 2 - 8]
    assert flat.mean() >= 0.95
    assert o.phi.numpy()[8:-8, w // 2 + 8 : -8].mean() <= 0.05
    # Rounding to 8 bits adds 1/12 to the variance; sigma is recovered within 7%.
    assert float(o.sigma) == pytest.approx(np.sqrt(sigma**2 + 1 / 12), rel=0.07)


TRANSFORMS = {
    "flip_h": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "flip_v": (lambda a: a[::-1], lambda a: a[::-1]),
    "rot90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 1)),
    "rot270": (lambda a: np.rot90(a, 3), lambda a: np.rot90(a, 3)),
}


@settings(max_examples=8, deadline=None)
@given(
    h=st.integers(64, 180), w=st.integers(64, 180), seed=st.integers(0, 2**16), name=st.sampled_from(sorted(TRANSFORMS))
)
def test_mask_moves_with_the_image(h: int, w: int, seed: int, name: str) -> None:
    fwd, on_mask = TRANSFORMS[name]
    img = synthetic_photo(h, w, seed=seed)
    a, b = run(img), run(np.ascontiguousarray(fwd(img)))
    assert float(b.sigma) == pytest.approx(float(a.sigma), rel=1e-5)
    assert np.mean(on_mask(a.phi.numpy()) != b.phi.numpy()) <= 1e-3


def test_runs_on_the_device_of_its_input() -> None:
    """Every tensor TrSOR and the detector make lives on the input's device: on PyTorch's data-free `meta` device,
    which refuses to mix devices like CUDA does, a stray CPU index tensor fails here without a GPU."""
    from slsp import detector as det_io
    from slsp.export.stages import FusedStage

    image = torch.empty((200, 333, 3), dtype=torch.uint8, device="meta")
    det = det_io.load().to("meta")
    with torch.inference_mode():
        out = det.trsor(image)
        assert {getattr(out, n).device.type for n in out._fields} == {"meta"}
        k = det.cfg.trsor.slots  # every pyramid level's crops, the levels' own ops on meta too
        assert out.crops.shape == (k, CFG.crop, CFG.crop, 3) and out.positions.shape == (k, 2)
        low = torch.zeros((), dtype=torch.bool, device="meta")
        assert all(t.device.type == "meta" for t in FusedStage(det)(image, low))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(8, 70), w=st.integers(8, 70), f=st.sampled_from([2, 4, 8]), seed=st.integers(0, 2**16))
def test_box_level_matches_float64_reference(h: int, w: int, f: int, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = reference.box_level(img, f)
    np.testing.assert_array_equal(box_levels(torch.from_numpy(img), 4)[f.bit_length() - 2].numpy(), want)
    np.testing.assert_array_equal(pyramid.box_level(img, f), want)


def single_level(trsor: TrSOR):
    """A TrSOR of one level behind the compiled backends' interface (contract names), for `pyramid.run`."""
    def one(feed: dict) -> dict:
        with torch.inference_mode():
            o = trsor(torch.from_numpy(np.ascontiguousarray(feed["image"])))
        return {n: getattr(o, n).numpy() for n in ("crops", "crop_phi", "positions", "valid", "sigma")}
    return one


@settings(max_examples=20, deadline=None)
@given(h=st.integers(64, 300), w=st.integers(64, 300), levels=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_pyramid_matches_numpy_pyramid_around_one_level(h: int, w: int, levels: int, seed: int) -> None:
    """The graph's pyramid (torch, exported) and the compiled backends' (NumPy around one level) agree; each level
    is TrSOR of the box-averaged image, positions in level-0 pixels, levels below one crop invalid."""
    cfg = TrsorConfig(crops=5, levels=levels)
    img = synthetic_photo(h, w, seed=seed)
    with torch.inference_mode():
        got = Pyramid(cfg)(torch.from_numpy(img))
    want = pyramid.run(single_level(TrSOR(cfg)), img, levels, cfg.crop)
    for n in ("crops", "crop_phi", "positions", "valid", "sigma"):
        np.testing.assert_array_equal(getattr(got, n).numpy(), want[n], err_msg=n)
    assert got.crops.shape[0] == cfg.slots and got.phi.shape == (h, w)
    level0 = single_level(TrSOR(cfg))({"image": img})
    np.testing.assert_array_equal(got.positions[: cfg.crops].numpy(), level0["positions"])
    valid = got.valid.numpy().reshape(levels, -1)
    for lv in range(1, levels):
        f = 2**lv
        fits = h // f >= cfg.crop and w // f >= cfg.crop
        assert valid[lv].any() == fits, (lv, h, w)
        pos = got.positions.numpy().reshape(levels, -1, 2)[lv][valid[lv]]
        assert (pos % f == 0).all() and (pos + cfg.crop * f <= np.array([h, w])).all()


def test_pyramid_of_one_level_is_trsor() -> None:
    img = synthetic_photo(150, 230, seed=3)
    with torch.inference_mode():
        a, b = Pyramid(CFG)(torch.from_numpy(img)), TRSOR(torch.from_numpy(img))
    for n in ("crops", "positions", "valid", "sigma", "phi"):
        assert torch.equal(getattr(a, n), getattr(b, n)), n
