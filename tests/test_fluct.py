"""Family "fluct": the residual input, pseudo-fakes that keep content, the processing chain, the noise fusion
(against a float64 NumPy reference), its calibration on reals only, and real-only training with resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

import reference
from conftest import TINY_FLUCT, photo_crops, real_photo, synthetic_photo, tiny_config
from slsp import detector as det_io
from slsp.config import DetectorConfig, FusionConfig, LowResolutionConfig, TrainConfig
from slsp.detector import Detector
from slsp.errors import ConfigError, SlspError
from slsp.families.fluct import FAKE_KINDS, SHIPPED_FAKES, FluctConfig, FluctOptions
from slsp.families.fluct.model import FluctModel
from slsp.families.fluct.pseudofakes import (
    _KINDS,
    Chain,
    draw_chain,
    draw_fake,
    draw_input,
    gaussian_blur,
    make_inputs,
    median3,
    process,
    pseudo_fakes,
)
from slsp.families.fluct.training import make_batch
from slsp.fluctuation import log_kurtosis, residual
from slsp.imaging import load
from slsp.scoring import Scorer
from slsp.train import split_real, train

CFG = tiny_config("fluct")


def reference_residual(x: np.ndarray) -> np.ndarray:
    """float64: each pixel minus the mean of its 3 x 3 neighbourhood, edges mirrored without repeating the edge."""
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    h, w = x.shape[2:]
    mean = sum(p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
    return x - mean


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 40), st.integers(4, 40), st.integers(0, 2**31 - 1), st.floats(0, 200))
def test_residual_matches_reference_and_ignores_content_offset(h: int, w: int, seed: int, offset: float) -> None:
    x = np.random.default_rng(seed).uniform(0, 255, (2, 3, h, w))
    got = residual(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(got, reference_residual(x), atol=2e-4)
    shifted = residual(torch.from_numpy(x + offset).float()).double().numpy()
    np.testing.assert_allclose(shifted, got, atol=5e-3)  # a flat offset is content, not fluctuation


def test_model_scores_crops_and_rejects_bad_config() -> None:
    m = FluctModel(TINY_FLUCT).eval()
    crops = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    s = m(crops, torch.ones(5, 64, 64))
    assert s.shape == (5,) and s.dtype == torch.float32 and ((s >= 0) & (s <= 1)).all()
    for bad in ({"score": "recon"}, {"crop": 60}, {"gain": 0.0}, {"family": "slsp"}):
        with pytest.raises(ConfigError):
            FluctConfig(**{**dataclasses.asdict(TINY_FLUCT), **bad})


def test_config_round_trips_by_family() -> None:
    cfg = dataclasses.replace(CFG, fusion=FusionConfig(True, 0.5, 0.1, -1.0, 0.3))
    back = DetectorConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and isinstance(back.model, FluctConfig)
    with pytest.raises(ConfigError, match="unknown model family"):
        DetectorConfig.from_dict({"model": {"family": "nope"}})


@pytest.mark.parametrize("kinds", [FAKE_KINDS[:3], ("decoder",), ("gan",), ("sparse",), ("latent",)],
                         ids=["shipped", "decoder", "gan", "sparse", "latent"])
def test_pseudo_fakes_keep_content_and_change_fluctuations(kinds: tuple[str, ...]) -> None:
    img = synthetic_photo(128, 128, sigma=3.0)
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None].repeat(40, 1, 1, 1)
    phi = torch.zeros(40, 128, 128)
    phi[:, 64:, :] = 1.0
    y = pseudo_fakes(x, phi, [draw_fake(np.random.default_rng(s), torch.Generator().manual_seed(s), 128, kinds)
                              for s in range(40)])
    assert y.shape == x.shape
    # Content kept: the 8 x 8 block means move by a fraction of a gray level's noise, not by the image's range.
    blocks = lambda t: torch.nn.functional.avg_pool2d(t, 8)  # noqa: E731
    assert ((blocks(y) - blocks(x)).abs().mean((1, 2, 3)) < 1.5).all()
    changed = (residual(y) - residual(x)).abs().mean((1, 2, 3)) > 0.3
    assert changed.sum() >= 30  # and the fluctuations do change, in (nearly) every draw


@pytest.mark.parametrize("kinds", [FAKE_KINDS[:3], ("decoder",), ("gan",), ("sparse",), ("latent",)],
                         ids=["shipped", "decoder", "gan", "sparse", "latent"])
def test_batched_pseudo_fakes_are_each_crops_own(kinds: tuple[str, ...]) -> None:
    """A batch of pseudo-fakes (each kind's crops through grouped convolutions with per-crop kernels) equals each
    crop made alone: no crop's parameters or pixels leak into another's."""
    x = torch.from_numpy(np.stack([synthetic_photo(96, 96, seed=i, sigma=1.0 + i % 4) for i in range(12)]))
    x = x.permute(0, 3, 1, 2).float()
    phi = (torch.rand(12, 96, 96, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    phi[3] = 0.0  # a Phi too empty to blend inside
    draws = [draw_fake(np.random.default_rng(s), torch.Generator().manual_seed(s), 96, kinds) for s in range(12)]
    together = pseudo_fakes(x, phi, draws)
    alone = torch.cat([pseudo_fakes(x[i:i + 1], phi[i:i + 1], [d]) for i, d in enumerate(draws)])
    torch.testing.assert_close(together, alone, atol=2e-3, rtol=0)


def test_sparse_noise_is_heavy_tailed_at_the_same_power() -> None:
    """The `sparse` kind's added noise has a camera's power but not its Gaussian tails: positive excess kurtosis."""
    x = torch.full((10, 3, 96, 96), 128.0)  # flat: denoising leaves it as it is, so the output minus it is the noise
    draws = [draw_fake(np.random.default_rng(s), torch.Generator().manual_seed(s), 96, ("sparse",)) for s in range(10)]
    n = (_KINDS["sparse"](x, [d.p for d in draws]) - x).double()
    z = (n - n.mean((1, 2, 3), keepdim=True)) / n.std((1, 2, 3), keepdim=True)
    rms = n.square().mean((1, 2, 3)).sqrt()
    np.testing.assert_allclose(rms.numpy(), [d.p["scale"] for d in draws], rtol=0.1)
    assert (z.pow(4).mean((1, 2, 3)) - 3.0).min() > 1.0


def test_latent_noise_has_the_drawn_power_and_the_grid_s_smoothness() -> None:
    """The `latent` kind's added noise has RMS `scale` and, drawn on a coarser grid and upsampled, is correlated
    between neighbouring pixels (lag-1 autocorrelation > 0.5) where white noise is not."""
    x = torch.full((12, 3, 96, 96), 128.0)
    draws = [draw_fake(np.random.default_rng(s), torch.Generator().manual_seed(s), 96, ("latent",)) for s in range(12)]
    assert {len(d.p["stages"]) for d in draws} == {1, 2}  # both grids (2 and 4x coarser) drawn
    n = (_KINDS["latent"](x, [d.p for d in draws]) - x).double()
    np.testing.assert_allclose(n.square().mean((1, 2, 3)).sqrt().numpy(), [d.p["scale"] for d in draws], rtol=1e-3)
    c = n - n.mean((2, 3), keepdim=True)
    lag1 = (c[..., 1:] * c[..., :-1]).mean((1, 2, 3)) / c.square().mean((1, 2, 3))
    assert lag1.min() > 0.5


def reference_median3(x: np.ndarray) -> np.ndarray:
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    h, w = x.shape[2:]
    return np.median(np.stack([p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)]), axis=0)


def reference_blur(x: np.ndarray, s: float) -> np.ndarray:
    r = max(1, int(np.ceil(2.5 * s)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
    k /= k.sum()
    p = np.pad(x.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = x.shape[1:]
    p = sum(k[i] * p[:, :, i:i + w] for i in range(2 * r + 1))
    return sum(k[i] * p[:, i:i + h] for i in range(2 * r + 1))


@settings(max_examples=20, deadline=None)
@given(st.integers(6, 30), st.integers(6, 30), st.integers(0, 2**31 - 1))
def test_median_and_blur_match_float64_references(h: int, w: int, seed: int) -> None:
    """The min/max median network and the per-crop-width blur (each crop its own radius) against NumPy."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (3, 2, h, w)).round()  # ties, as in uint8 images
    np.testing.assert_array_equal(median3(torch.from_numpy(x).float()).numpy(), reference_median3(x))
    s = rng.uniform(0.4, 1.5, 3)
    got = gaussian_blur(torch.from_numpy(x).float(), torch.from_numpy(s).float()).double().numpy()
    for i in range(3):
        np.testing.assert_allclose(got[i], reference_blur(x[i], float(np.float32(s[i]))), atol=2e-3)


def test_chain_is_applied_alike_and_keeps_sizes() -> None:
    img = synthetic_photo(128, 128)
    phi = np.ones((128, 128), np.uint8)
    kinds = set()
    for seed in range(30):
        out, ophi = process(img, phi, draw_chain(np.random.default_rng(seed)))
        assert out.dtype == np.uint8 and out.shape[:2] == ophi.shape and min(ophi.shape) >= 64
        kinds.add("none" if out is img else "resized" if out.shape[0] < 128 else "jpeg")
    assert kinds == {"none", "resized", "jpeg"}
    assert process(img, phi, Chain())[0] is img
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    draws = [draw_input(rng, g, 128, 64, fake=i % 2 == 1) for i in range(8)]
    x, p = make_inputs(torch.from_numpy(img)[None].repeat(8, 1, 1, 1), torch.from_numpy(phi)[None].repeat(8, 1, 1),
                       draws, 64, torch.device("cpu"))
    assert x.shape == (8, 64, 64, 3) and x.dtype == torch.uint8 and p.shape == (8, 64, 64)


def test_batches_are_seeded_half_real() -> None:
    crops = torch.from_numpy(np.stack([synthetic_photo(128, 128, seed=i) for i in range(3)]))
    phis = torch.ones(3, 128, 128, dtype=torch.uint8)
    a, pa, ya = make_batch(crops, phis, 64, 6, seed=1, step=5)
    b, pb, _ = make_batch(crops, phis, 64, 6, seed=1, step=5)
    c, _, _ = make_batch(crops, phis, 64, 6, seed=1, step=6)
    assert (a == b).all() and (pa == pb).all() and not (a == c).all()
    assert ya.tolist() == [1, 1, 1, 0, 0, 0]
    d, _, _ = make_batch(crops, phis, 64, 6, seed=1, step=5, kinds=("decoder",))
    assert (d[:3] == a[:3]).all() and not (d[3:] == a[3:]).all()  # same reals; only the pseudo-fakes differ


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_batches_made_on_cuda_are_the_cpu_ones() -> None:
    """The pseudo-fakes made on the GPU (the training process's batches there) are the CPU's, up to rounding."""
    crops = torch.from_numpy(np.stack([synthetic_photo(128, 128, seed=i) for i in range(4)]))
    phis = torch.ones(4, 128, 128, dtype=torch.uint8)
    for kinds in (FAKE_KINDS[:3], FAKE_KINDS[3:]):
        a, pa, ya = make_batch(crops, phis, 64, 16, seed=1, step=3, kinds=kinds)
        b, pb, yb = make_batch(crops, phis, 64, 16, seed=1, step=3, kinds=kinds, device=torch.device("cuda"))
        assert b.device.type == "cuda" and pb.device.type == "cuda" and yb.device.type == "cuda"
        d = (a.int() - b.cpu().int()).abs()
        assert (pa == pb.cpu()).all() and (ya == yb.cpu()).all()
        assert d.max() <= 4 and (d > 0).float().mean() < 1e-3


def test_fake_kinds_are_an_option_and_checked() -> None:
    assert FluctOptions().fakes == SHIPPED_FAKES  # the shipped model's mix: resample half the draws, sparse a quarter
    assert [SHIPPED_FAKES.count(k) for k in ("denoise", "renoise", "resample", "sparse")] == [1, 1, 4, 2]
    assert FluctOptions(fakes=["decoder", "denoise"]).fakes == ("decoder", "denoise")
    for bad in [(), ("blur",), ("denoise", "blur")]:
        with pytest.raises(ConfigError, match="fakes must be kinds"):
            FluctOptions(fakes=bad)


def test_a_kind_named_twice_is_drawn_twice_as_often() -> None:
    """Per-kind weights by repetition: denoise,denoise,resample draws denoise 2/3 of the time."""
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    kinds = [draw_fake(rng, g, 64, ("denoise", "denoise", "resample")).kind for _ in range(3000)]
    assert set(kinds) == {"denoise", "resample"}
    assert abs(kinds.count("denoise") / len(kinds) - 2 / 3) < 0.03


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_fusion_matches_float64_reference(aggregate: str) -> None:
    """Both parameter sets against float64: the full-size fusion and threshold, and the low-resolution ones where
    the flag is set."""
    params = {False: (0.4, 0.05, -0.8, 0.4, 0.5), True: (0.3, 0.1, -1.5, 0.9, 0.7)}
    f = FusionConfig(True, *params[False][:4])
    low = LowResolutionConfig(enabled=True, threshold=0.7, fusion=FusionConfig(True, *params[True][:4]))
    scorer = Scorer(aggregate, 0.5, f, low)
    rng = np.random.default_rng(0)
    for i in range(40):
        scores, valid, sigma = rng.uniform(0, 1, 16), rng.uniform(size=16) > 0.3, rng.uniform(0.2, 6)
        flag = bool(i % 2)
        mm, ms, nm, ns, thr = params[flag]
        v = scores[valid]
        agg = (v.mean() if v.size else 0.0) if aggregate == "mean" else (v.max() if v.size else -1.0)
        z = (agg - mm) / ms + (-np.log(sigma + 1e-3) - nm) / ns
        want = 1 / (1 + np.exp(-z))
        got, verdict = scorer(torch.tensor(scores, dtype=torch.float32), torch.zeros(len(scores)),
                              torch.tensor(valid), torch.tensor(sigma, dtype=torch.float32), torch.tensor(flag))
        assert abs(float(got) - want) < 1e-5 and bool(verdict) == (float(got) >= thr)
    # Lower noise, all else equal, is more synthetic; without fusion sigma changes nothing; without a low-resolution
    # calibration the flag changes nothing.
    s, k = torch.full((16,), 0.4), torch.full((16,), 1.1)
    ok, no, yes = torch.ones(16, dtype=torch.bool), torch.tensor(False), torch.tensor(True)
    fused, plain = Scorer("mean", 0.5, f), Scorer("mean", 0.5)
    assert fused(s, k, ok, torch.tensor(0.5), no)[0] > fused(s, k, ok, torch.tensor(3.0), no)[0]
    assert plain(s, k, ok, torch.tensor(0.5), no)[0] == plain(s, k, ok, torch.tensor(3.0), no)[0]
    assert fused(s, k, ok, torch.tensor(0.5), yes) == fused(s, k, ok, torch.tensor(0.5), no)


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_level_fusion_matches_float64_reference(aggregate: str) -> None:
    """Three pyramid levels of K = 6: sigmoid(2 x the mean of the z-parts the image has); a level without a valid
    crop is left out, and the low-resolution fusion (no level statistics) reads level 0 and the noise alone."""
    f = FusionConfig(True, 0.4, 0.05, -0.8, 0.4, level_means=(0.5, 0.6), level_stds=(0.1, 0.2))
    low = LowResolutionConfig(enabled=True, threshold=0.7, fusion=FusionConfig(True, 0.3, 0.1, -1.5, 0.9))
    scorer = Scorer(aggregate, 0.5, f, low, levels=3)
    rng = np.random.default_rng(1)
    for i in range(60):
        scores, valid, sigma = rng.uniform(0, 1, 18), rng.uniform(size=18) > 0.3, rng.uniform(0.2, 6)
        valid[:6][0] = True  # level 0 always has a crop
        if i % 3 == 0:
            valid[6 + 6 * (i % 2) : 12 + 6 * (i % 2)] = False  # one level too small for a crop
        flag = i % 5 == 0
        aggs = []
        for lv in range(3):
            v = scores[6 * lv : 6 * lv + 6][valid[6 * lv : 6 * lv + 6]]
            aggs.append(None if not v.size else (v.mean() if aggregate == "mean" else v.max()))
        noise = -np.log(sigma + 1e-3)
        if flag:
            z = (aggs[0] - 0.3) / 0.1 + (noise + 1.5) / 0.9
        else:
            parts = [(aggs[0] - 0.4) / 0.05, (noise + 0.8) / 0.4] + [
                (a - m) / sd for a, m, sd in zip(aggs[1:], (0.5, 0.6), (0.1, 0.2)) if a is not None]
            z = 2.0 * np.mean(parts)
        got, verdict = scorer(torch.tensor(scores, dtype=torch.float32), torch.zeros(len(scores)),
                              torch.tensor(valid), torch.tensor(sigma, dtype=torch.float32), torch.tensor(flag))
        assert abs(float(got) - 1 / (1 + np.exp(-z))) < 1e-5
        assert bool(verdict) == (float(got) >= (0.7 if flag else 0.5))
    # Level statistics must fit the pyramid they standardise.
    with pytest.raises(ConfigError, match="pyramid levels"):
        dataclasses.replace(CFG, fusion=f)


@pytest.fixture(scope="module")
def real_dirs(tmp_path_factory) -> list[Path]:
    """Two folders of small real photos (never compressed, and as camera-like JPEGs), as the default model trains on
    PNG-history photos and in-camera JPEGs."""
    crops = photo_crops(12, 144, 160)
    out = []
    for name, part, fmt in (("png", crops[:6], "png"), ("camera", crops[6:], "jpg")):
        d = tmp_path_factory.mktemp(name)
        for i, img in enumerate(part):
            Image.fromarray(img).save(d / f"{name}_{i}.{fmt}", quality=90)
        out.append(d)
    return out


def tcfg(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch=4, warmup=2, crops_per_image=2, holdout=0.34)


def test_split_holds_out_every_folder(real_dirs: list[Path]) -> None:
    train, hold = split_real(real_dirs, 0.34, 0, per_folder=True)
    assert not set(train) & set(hold)
    assert {p.parent for p in hold} == set(real_dirs) and len(hold) == 4


def test_train_fluct_fits_fusion_on_reals_and_resumes(real_dirs: list[Path], tmp_path: Path) -> None:
    cfg = train(real_dirs, tmp_path / "a", CFG, tcfg(4), quiet=True)
    assert cfg.fusion.enabled and cfg.fusion.model_std > 0 and cfg.fusion.noise_std > 0
    det = det_io.load(tmp_path / "a")
    assert det.cfg == cfg
    info = json.loads((tmp_path / "a" / "train.json").read_text())
    scores = [float(det.detect(load(f)).score) for f in info["holdout_images"]]
    assert np.mean(np.array(scores, np.float32) >= np.float32(cfg.threshold)) <= 0.05
    # Interrupted after 2 steps and resumed: the same weights as the uninterrupted run.
    train(real_dirs, tmp_path / "b", CFG, tcfg(2), quiet=True)
    train(real_dirs, tmp_path / "b", CFG, tcfg(4), resume=True, quiet=True)
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_detector_builds_the_configured_family() -> None:
    det = Detector(CFG).eval()
    assert isinstance(det.model, FluctModel)
    d = det.detect(synthetic_photo(150, 170))
    assert 0 <= float(d.score) <= 1 and d.crop_scores.shape == (4,)


def test_recalibrate_on_variants_uses_only_held_out_reals(real_dirs: list[Path], tmp_path: Path) -> None:
    from slsp.calibrate import recalibrate

    train(real_dirs, tmp_path / "a", CFG, tcfg(2), quiet=True)
    cal = recalibrate(tmp_path / "a", tmp_path / "b", 0.05, ("none", "jpeg:90", "resize:0.75"), quiet=True)
    info = json.loads((tmp_path / "b" / "train.json").read_text())
    assert len(cal.scores) == 3 * len(info["holdout_images"]) and cal.fpr <= 0.05
    assert info["calibration"]["variants"] == ["none", "jpeg:90", "resize:0.75"]
    assert det_io.load(tmp_path / "b").cfg.threshold == cal.threshold
    assert not det_io.load(tmp_path / "b").cfg.low_resolution.enabled  # canonical none: no low-resolution range
    # With a shrinking canonical transform, its low-resolution scoring is calibrated too (five sides per photo),
    # unless left out; the full-size threshold is the same either way.
    half = recalibrate(tmp_path / "a", tmp_path / "c", 0.05, canonical="resize:0.5", quiet=True)
    low = det_io.load(tmp_path / "c").cfg.low_resolution
    info = json.loads((tmp_path / "c" / "train.json").read_text())["calibration"]["low_resolution"]
    assert low.enabled and low.fusion.enabled and low.threshold == info["threshold"] and info["holdout_fpr"] <= 0.05
    assert info["scores"] == 5 * len(json.loads((tmp_path / "c" / "train.json").read_text())["holdout_images"])
    recalibrate(tmp_path / "a", tmp_path / "d", 0.05, canonical="resize:0.5", quiet=True, low_resolution=False)
    refused = det_io.load(tmp_path / "d")
    assert not refused.cfg.low_resolution.enabled and refused.min_input_side == 127
    assert refused.cfg.threshold == half.threshold == det_io.load(tmp_path / "c").cfg.threshold


def test_recalibrate_on_other_folders_uses_their_photos(real_dirs: list[Path], tmp_path: Path) -> None:
    """`slsp calibrate --real DIR`: the threshold is the quantile of those photos' scores, not the held-out ones'."""
    from slsp.calibrate import recalibrate
    from slsp.imaging import collect

    train(real_dirs, tmp_path / "a", CFG, tcfg(2), quiet=True)
    cal = recalibrate(tmp_path / "a", tmp_path / "b", 0.05, quiet=True, reals=real_dirs)
    assert len(cal.scores) == len(collect(real_dirs))
    info = json.loads((tmp_path / "b" / "train.json").read_text())["calibration"]
    assert info["reals"] == [str(d) for d in real_dirs] and info["images"] == len(collect(real_dirs))
    assert det_io.load(tmp_path / "b").cfg.threshold == cal.threshold
    # --keep-fusion: the threshold alone is re-fit, on the score as the run computes it.
    kept = recalibrate(tmp_path / "b", tmp_path / "c", 0.2, quiet=True, reals=real_dirs[:1], keep_fusion=True)
    assert det_io.load(tmp_path / "c").cfg.fusion == det_io.load(tmp_path / "b").cfg.fusion
    assert kept.threshold != cal.threshold and json.loads((tmp_path / "c" / "train.json").read_text())[
        "calibration"]["fusion_kept"]
    with pytest.raises(SlspError, match="keeping the fusion"):
        recalibrate(tmp_path / "b", tmp_path / "d", 0.2, quiet=True, keep_fusion=True, levels=1)


def test_recalibrate_with_levels_fits_each_level_on_held_out_reals(real_dirs: list[Path], tmp_path: Path,
                                                                   monkeypatch) -> None:
    """--levels 3 standardises each level's crop aggregate on the held-out photos that have the level (float64
    reference below); --levels 1 gives back the one-level calibration to the bit."""
    from slsp import calibrate

    monkeypatch.setattr(calibrate, "MIN_LEVEL_IMAGES", 2)
    train(real_dirs, tmp_path / "a", CFG, tcfg(2), quiet=True)
    one = calibrate.recalibrate(tmp_path / "a", tmp_path / "one", 0.05, quiet=True)
    three = calibrate.recalibrate(tmp_path / "a", tmp_path / "three", 0.05, quiet=True, levels=3)
    back = calibrate.recalibrate(tmp_path / "three", tmp_path / "back", 0.05, quiet=True, levels=1)
    det = det_io.load(tmp_path / "three")
    assert det.cfg.trsor.levels == 3 and det.cfg.trsor.slots == 3 * CFG.trsor.crops
    assert det_io.load(tmp_path / "back").cfg == det_io.load(tmp_path / "one").cfg and back.threshold == one.threshold
    plain = det.with_config(dataclasses.replace(det.cfg, fusion=FusionConfig()))
    held = json.loads((tmp_path / "three" / "train.json").read_text())["holdout_images"]
    per_level: list[list[float]] = [[], [], []]
    for f in held:
        d = plain.detect(load(f))
        k = CFG.trsor.crops
        for lv in range(3):
            s, v = d.crop_scores[lv * k : (lv + 1) * k].double().numpy(), d.valid[lv * k : (lv + 1) * k].numpy()
            if v.any():
                per_level[lv].append(s[v].mean())
    f = det.cfg.fusion
    fitted = [(m, s) for m, s in zip(f.level_means, f.level_stds)]
    want = [(np.mean(a), np.std(a)) for a in per_level[1:] if len(a) >= 2]
    assert len(fitted) == len(want) >= 1 and three.fpr <= 0.05
    np.testing.assert_allclose(np.array(fitted), np.array(want), rtol=1e-5)
    np.testing.assert_allclose([f.model_mean, f.model_std], [np.mean(per_level[0]), np.std(per_level[0])], rtol=1e-5)


def test_recalibrate_with_kurtosis_fits_it_on_held_out_reals(real_dirs: list[Path], tmp_path: Path,
                                                             monkeypatch) -> None:
    """--kurtosis: center = the held-out photos' mean of their crops' median log kurtosis, mean and std = of the
    distances from it (float64 reference); the other parts and the low-resolution fusion are as without it, the
    held-out FPR stays at the target, and --no-kurtosis gives back the calibration without it to the bit."""
    from slsp import calibrate

    monkeypatch.setattr(calibrate, "MIN_LEVEL_IMAGES", 2)
    train(real_dirs, tmp_path / "a", CFG, tcfg(2), quiet=True)
    plain = calibrate.recalibrate(tmp_path / "a", tmp_path / "plain", 0.05, quiet=True, canonical="resize:0.5")
    kurt = calibrate.recalibrate(tmp_path / "plain", tmp_path / "kurt", 0.05, quiet=True, kurtosis=True)
    back = calibrate.recalibrate(tmp_path / "kurt", tmp_path / "back", 0.05, quiet=True, kurtosis=False)
    again = calibrate.recalibrate(tmp_path / "kurt", tmp_path / "again", 0.05, quiet=True)  # keeps the run's part
    det, ref = det_io.load(tmp_path / "kurt"), det_io.load(tmp_path / "plain")
    f = det.cfg.fusion
    assert f.kurtosis and det_io.load(tmp_path / "again").cfg == det.cfg and again.threshold == kurt.threshold
    assert det_io.load(tmp_path / "back").cfg == ref.cfg and back.threshold == plain.threshold
    assert dataclasses.replace(f, kurtosis=False, kurtosis_center=0.0, kurtosis_mean=0.0, kurtosis_std=1.0) == \
        ref.cfg.fusion and det.cfg.low_resolution == ref.cfg.low_resolution and kurt.fpr <= 0.05
    medians = []
    for file in json.loads((tmp_path / "kurt" / "train.json").read_text())["holdout_images"]:
        d = det.detect(load(file))
        k, v = d.crop_kurtosis.double().numpy(), d.valid.numpy()
        medians.append(np.median(k[: CFG.trsor.crops][v[: CFG.trsor.crops]]))
    distance = np.abs(np.array(medians) - np.mean(medians))
    np.testing.assert_allclose([f.kurtosis_center, f.kurtosis_mean, f.kurtosis_std],
                               [np.mean(medians), distance.mean(), distance.std()], rtol=1e-5)
    with pytest.raises(SlspError, match="needs a model that fuses"):
        calibrate.recalibrate(tmp_path / "a", tmp_path / "x", 0.05, quiet=True, fuse=False, kurtosis=True)


def test_recalibrate_with_skip_clipped_fits_the_noise_part_without_them(tmp_path: Path) -> None:
    """--skip-clipped: the config carries it, the noise part is standardised on the held-out photos' TrSOR noise
    with clipped pixels left out (float64 reference), and --no-skip-clipped gives back the calibration without it
    to the bit. Half the photos hold black and white bands, as over- and under-exposed photos do."""
    from slsp import calibrate

    real = tmp_path / "real"
    real.mkdir()
    for i, img in enumerate(photo_crops(10, 144, 160)):
        if i % 2:
            img[:, :40], img[-30:] = 0, 255
        Image.fromarray(img).save(real / f"{i}.png")
    train([real], tmp_path / "a", CFG, tcfg(2), quiet=True)
    plain = calibrate.recalibrate(tmp_path / "a", tmp_path / "plain", 0.05, quiet=True)
    skip = calibrate.recalibrate(tmp_path / "a", tmp_path / "skip", 0.05, quiet=True, skip_clipped=True)
    back = calibrate.recalibrate(tmp_path / "skip", tmp_path / "back", 0.05, quiet=True, skip_clipped=False)
    det = det_io.load(tmp_path / "skip")
    info = json.loads((tmp_path / "skip" / "train.json").read_text())
    assert det.cfg.trsor.skip_clipped and info["calibration"]["skip_clipped"] and skip.fpr <= 0.05
    assert det_io.load(tmp_path / "back").cfg == det_io.load(tmp_path / "plain").cfg
    assert back.threshold == plain.threshold
    noise = {}
    for f in info["holdout_images"]:
        img = det.canonical(load(f))[0]
        noise[f] = [-np.log(reference.trsor(img, skip_clipped=s)["sigma"] + 1e-3) for s in (False, True)]
    assert any(a != b for a, b in noise.values())  # some held-out photo has clipped pixels
    skipped = [b for _, b in noise.values()]
    np.testing.assert_allclose([det.cfg.fusion.noise_mean, det.cfg.fusion.noise_std],
                               [np.mean(skipped), np.std(skipped)], rtol=1e-3)


def test_recalibrate_with_channel_refits_on_that_trsor(real_dirs: list[Path], tmp_path: Path) -> None:
    """--channel rgb: the config and train.json carry it, the noise part is standardised on the held-out photos'
    sigma from that TrSOR, and --channel luma gives back the calibration to the bit."""
    from slsp import calibrate
    from slsp.scoring import noise_score

    train(real_dirs, tmp_path / "a", CFG, tcfg(2), quiet=True)
    plain = calibrate.recalibrate(tmp_path / "a", tmp_path / "plain", 0.05, quiet=True)
    rgb = calibrate.recalibrate(tmp_path / "a", tmp_path / "rgb", 0.05, quiet=True, channel="rgb")
    back = calibrate.recalibrate(tmp_path / "rgb", tmp_path / "back", 0.05, quiet=True, channel="luma")
    det = det_io.load(tmp_path / "rgb")
    info = json.loads((tmp_path / "rgb" / "train.json").read_text())
    assert det.cfg.trsor.channel == info["calibration"]["channel"] == "rgb" and rgb.fpr <= 0.05
    assert det_io.load(tmp_path / "back").cfg == det_io.load(tmp_path / "plain").cfg
    assert back.threshold == plain.threshold
    noise = [noise_score(det.detect(load(f)).sigma) for f in info["holdout_images"]]
    np.testing.assert_allclose([det.cfg.fusion.noise_mean, det.cfg.fusion.noise_std], [np.mean(noise), np.std(noise)],
                               rtol=1e-4)
    assert det.cfg.fusion.noise_mean != det_io.load(tmp_path / "plain").cfg.fusion.noise_mean


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 256), st.floats(0.1, 1.0))
def test_canonical_min_side_is_the_smallest_that_keeps_a_crop(side: int, f: float) -> None:
    from slsp.transforms import Transform

    t = Transform(f"resize:{f}")
    s = t.min_side(side)
    assert round(s * f) >= side and (s == side or round((s - 1) * f) < side)
    img = np.zeros((s, s + 1, 3), np.uint8)
    assert min(t(img).shape[:2]) >= side


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 200))
def test_thumb_makes_the_short_side_s_and_keeps_the_aspect(h: int, w: int, side: int) -> None:
    from slsp.transforms import Transform

    img = np.zeros((h, w, 3), np.uint8)
    out = Transform(f"thumb:{side}")(img)
    if min(h, w) <= side:
        assert out is img
    else:
        assert min(out.shape[:2]) == side and abs(out.shape[0] / out.shape[1] - h / w) <= 1.0 / side + 1e-9 * h


def test_canonical_transform_runs_before_the_graph() -> None:
    from slsp.errors import ImageError
    from slsp.transforms import Transform

    torch.manual_seed(0)
    plain = Detector(CFG).eval()
    canon = plain.with_config(dataclasses.replace(CFG, canonical="resize:0.5"))
    img = synthetic_photo(200, 230)
    a, b = canon.detect(img), plain.detect(Transform("resize:0.5")(img))
    assert float(a.score) == float(b.score) and (a.positions == b.positions).all()
    assert canon.min_input_side == 127 and canon.min_side == 64
    with pytest.raises(ImageError, match="after the canonical resize:0.5"):
        canon.detect(synthetic_photo(100, 300))
    with pytest.raises(ConfigError):
        dataclasses.replace(CFG, canonical="blur:3")


def test_low_resolution_images_are_scored_at_native_scale_under_their_own_calibration() -> None:
    """Below the canonical transform's minimum and down to one crop: no transform, the flag set, the low-resolution
    fusion and threshold; the shipped model's threshold holds on real photos shrunk to thumbnails."""
    from slsp.calibrate import calibrate_low_resolution, low_resolution_sides
    from slsp.detect import as_dict
    from slsp.errors import ImageError
    from slsp.scoring import Scorer
    from slsp.transforms import Transform

    det = det_io.load()
    low = det.cfg.low_resolution
    assert low.enabled and det.min_input_side == 64 and det.canonical.full_side == 127
    assert low_resolution_sides(det) == [64, 80, 95, 110, 126]
    img = real_photo("kodim13")
    small = Transform("thumb:100")(img)
    assert min(small.shape[:2]) == 100
    d = det.detect(small)
    plain = det.with_config(dataclasses.replace(det.cfg, canonical="none"))
    with torch.inference_mode():
        t = plain.trsor(torch.from_numpy(small))  # the graph on the pixels as given: no resize
        agg, present = det.scorer.level_aggregates(plain.model(t.crops, t.crop_phi), t.valid)
        kurtosis = det.scorer.kurtosis(log_kurtosis(t.crops), t.valid)
    assert bool(d.low_resolution) and (d.positions == t.positions).all()
    assert present.tolist() == [True] + [False] * (det.cfg.trsor.levels - 1)  # no coarser level holds a crop
    assert float(d.score) == pytest.approx(float(Scorer.fuse(agg, present, *kurtosis, t.sigma, low.fusion)), abs=1e-6)
    assert bool(d.verdict) == (float(d.score) >= low.threshold)
    out = as_dict("thumb", d, det)
    assert out["low_resolution"] and out["threshold"] == low.threshold and out["canonical"] == "none"
    # At the transform's minimum the full path is back; below one crop nothing is scored.
    full = det.detect(Transform("thumb:127")(img))
    assert not bool(full.low_resolution) and not as_dict("x", full, det)["low_resolution"]
    with pytest.raises(ImageError, match="minimum size 64 x 64 .one crop at native scale"):
        det.detect(Transform("thumb:63")(img))
    # A canonical transform that does not shrink has no low-resolution range: disabled, the old minimum.
    none = calibrate_low_resolution(det.with_config(dataclasses.replace(det.cfg, canonical="jpeg:95")), [], 0.05)
    assert not none.detector.cfg.low_resolution.enabled and none.detector.min_input_side == 64


@pytest.mark.slow
def test_cli_train_takes_the_family_defaults(real_dirs: list[Path], tmp_path: Path) -> None:
    from test_cli import slsp

    r = slsp("train", "--real", str(real_dirs[0]), "--real", str(real_dirs[1]), "--out", str(tmp_path / "run"),
             "--steps", "2", "--batch", "4", "--crops-per-image", "2", "-q")
    assert r.returncode == 0, r.stderr
    cfg = DetectorConfig.load(tmp_path / "run" / "config.json")
    shipped = DetectorConfig.load(det_io.default_dir() / "config.json")
    assert (cfg.model.family, cfg.canonical, cfg.fusion.enabled) == ("fluct", shipped.canonical, True)
    assert json.loads((tmp_path / "run" / "train.json").read_text())["train_config"]["holdout"] == 0.25
    for bad, why in (("1,x", "options.scales=...: expected int"), ("1,3", "scales must be distinct views")):
        r = slsp("train", "--real", str(real_dirs[0]), "--out", str(tmp_path / "bad"), "--scales", bad, "-q")
        assert r.returncode != 0 and why in r.stderr and not (tmp_path / "bad").exists(), r.stderr
