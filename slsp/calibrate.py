"""Threshold calibration on held-out real photos only: the score quantile at 1 - target FPR."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from slsp import detector as det_io
from slsp.config import FusionConfig, LowResolutionConfig
from slsp.detector import Detection, Detector
from slsp.errors import ImageError, SlspError
from slsp.imaging import collect, load
from slsp.metrics import threshold_at_fpr
from slsp.progress import bar, stderr
from slsp.runs import STATE, TRAIN
from slsp.scoring import Scorer, noise_score
from slsp.transforms import Transform


class Calibration(NamedTuple):
    detector: Detector
    threshold: float
    fpr: float
    scores: list[float]


def _detections(det: Detector, real_files: list[Path], quiet: bool, transforms: Sequence[Transform],
                sources: list[str] | None = None) -> list[Detection]:
    """One detection per photo and transform ('none', 'jpeg:Q', 'resize:F', 'thumb:S'). A photo the detector
    refuses (too small, flat, undecodable) is left out with a warning, as the server would refuse it. `sources`,
    when given, receives each detection's source (its photo's folder)."""
    out = []
    with bar(quiet) as pb:
        task = pb.add_task("calibrate", total=len(real_files) * len(transforms), info="")
        for f in real_files:
            try:
                img = load(f, max_pixels=det.cfg.max_pixels)
                found = [det.detect(t(img), str(f)) for t in transforms]
            except ImageError as e:
                stderr.print(f"calibration leaves out {e}", soft_wrap=True)
            else:
                out.extend(found)
                if sources is not None:
                    sources.extend([str(Path(f).parent)] * len(found))
            pb.advance(task, len(transforms))
    if not out:
        raise SlspError("calibration needs at least one real image")
    return out


MIN_SOURCE = 20  # photos a source needs for its own FPR bound (`source_fpr`)


def _with_threshold(det: Detector, scores: list[float], target_fpr: float, sources: list[str] | None = None,
                    source_fpr: float | None = None) -> Calibration:
    """The smallest threshold with at most `target_fpr` of the scores above it, and (`source_fpr`) at most that share
    of each source's that has MIN_SOURCE scores or more: low-noise sources (wallpapers, low-light photos) score
    higher than most, and a pooled quantile alone lets them be flagged far more often than the target."""
    values = np.array(scores, dtype=np.float32)
    thr = threshold_at_fpr(values, target_fpr)
    if source_fpr is not None:
        labels = np.array(sources)
        thr = max([thr, *(threshold_at_fpr(values[labels == g], source_fpr) for g in np.unique(labels)
                          if (labels == g).sum() >= MIN_SOURCE)])
    out = det.with_config(dataclasses.replace(det.cfg, threshold=thr, target_fpr=target_fpr))
    fpr = float(np.mean(np.array(scores, dtype=np.float32) >= np.float32(thr)))
    return Calibration(out, thr, fpr, scores)


def calibrate(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False,
              variants: tuple[str, ...] = ("none",), source_fpr: float | None = None) -> Calibration:
    """The threshold for the detector's own score, fusion (if any) as configured."""
    sources: list[str] = []
    dets = _detections(det, real_files, quiet, [Transform(v) for v in variants], sources)
    return _with_threshold(det, [float(d.score) for d in dets], target_fpr, sources, source_fpr)


MIN_LEVEL_IMAGES = 10  # a pyramid level enters the fusion only when this many calibration images have it


def fit_fusion(dets: list[Detection], scorer: Scorer, kurtosis: bool = False) -> FusionConfig:
    """Standardise the crop aggregate of each pyramid level and the noise score on these (real) detections, and
    (kurtosis) the distance of the crops' median log kurtosis from these photos' mean.

    A level or the kurtosis enters the fusion where at least MIN_LEVEL_IMAGES of them have it (a level only with
    the levels below it); its statistics come from the images that have it."""
    parts = [scorer.level_aggregates(d.crop_scores, d.valid) for d in dets]
    agg = np.array([a.numpy() for a, _ in parts], dtype=np.float64)
    present = np.array([p.numpy() for _, p in parts])
    noise = np.array([noise_score(d.sigma) for d in dets])
    means, stds = [], []
    for lv in range(1, agg.shape[1]):
        if present[:, lv].sum() < MIN_LEVEL_IMAGES:
            break
        a = agg[present[:, lv], lv]
        means.append(float(a.mean()))
        stds.append(float(max(a.std(), 1e-6)))
    tails = {}
    if kurtosis:
        k = np.array([float(v) for v, have in (scorer.kurtosis(d.crop_kurtosis, d.valid) for d in dets) if have])
        if len(k) >= MIN_LEVEL_IMAGES:
            distance = np.abs(k - k.mean())
            tails = {"kurtosis": True, "kurtosis_center": float(k.mean()), "kurtosis_mean": float(distance.mean()),
                     "kurtosis_std": float(max(distance.std(), 1e-6))}
    return FusionConfig(enabled=True, model_mean=float(agg[:, 0].mean()), model_std=float(max(agg[:, 0].std(), 1e-6)),
                        noise_mean=float(noise.mean()), noise_std=float(max(noise.std(), 1e-6)),
                        level_means=tuple(means), level_stds=tuple(stds), **tails)


@torch.inference_mode()
def calibrate_fused(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False,
                    variants: tuple[str, ...] = ("none",), kurtosis: bool = False,
                    source_fpr: float | None = None) -> Calibration:
    """Fit the noise fusion (FusionConfig; with the kurtosis part if asked) on real photos, then the threshold of the
    fused score on the same photos, each photo as stored and under every variant.

    One detection pass: the exported `Scorer` recomputes the fused score from each photo's crop scores and sigma.
    """
    plain = det.with_config(dataclasses.replace(det.cfg, fusion=FusionConfig()))
    sources: list[str] = []
    dets = _detections(plain, real_files, quiet, [Transform(v) for v in variants], sources)
    fused = det.with_config(dataclasses.replace(det.cfg, fusion=fit_fusion(dets, plain.scorer, kurtosis)))
    scores = [float(fused.scorer(d.crop_scores, d.crop_kurtosis, d.valid, d.sigma, d.low_resolution)[0])
              for d in dets]
    return _with_threshold(fused, scores, target_fpr, sources, source_fpr)


def low_resolution_sides(det: Detector, count: int = 5) -> list[int]:
    """Short sides spread over the low-resolution range [one crop, the canonical transform's minimum)."""
    c = det.canonical
    return sorted({int(round(s)) for s in np.linspace(c.crop, c.full_side - 1, count)})


@torch.inference_mode()
def calibrate_low_resolution(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False
                             ) -> Calibration:
    """The low-resolution fusion (if the model fuses) and threshold (LowResolutionConfig), on the held-out real
    photos downscaled to short sides across the low-resolution range and scored at native scale. Its fusion has no
    kurtosis part: that was measured on full-size images only (docs/benchmarks-log.md).

    A canonical transform that does not shrink leaves no such range: the config's low-resolution part is disabled.
    """
    if det.canonical.full_side <= det.canonical.crop:
        return Calibration(det.with_config(dataclasses.replace(det.cfg, low_resolution=LowResolutionConfig())),
                           det.cfg.threshold, float("nan"), [])
    sides = low_resolution_sides(det)
    plain = det.with_config(dataclasses.replace(det.cfg, canonical="none", fusion=FusionConfig(),
                                                low_resolution=LowResolutionConfig()))
    dets = _detections(plain, real_files, quiet, [Transform(f"thumb:{s}") for s in sides])
    fusion = fit_fusion(dets, plain.scorer) if det.cfg.fusion.enabled else FusionConfig()
    scores = np.array([float(Scorer.fuse(*plain.scorer.level_aggregates(d.crop_scores, d.valid),
                                         *plain.scorer.kurtosis(d.crop_kurtosis, d.valid), d.sigma, fusion))
                       for d in dets], dtype=np.float32)
    thr = threshold_at_fpr(scores, target_fpr)
    fpr = float(np.mean(scores >= np.float32(thr)))
    low = LowResolutionConfig(enabled=True, threshold=thr, fusion=fusion)
    return Calibration(det.with_config(dataclasses.replace(det.cfg, low_resolution=low)), thr, fpr, scores.tolist())


def recalibrate(
    run: Path,
    out: Path,
    target_fpr: float,
    variants: tuple[str, ...] = ("none",),
    fuse: bool | None = None,
    canonical: str | None = None,
    quiet: bool = False,
    low_resolution: bool = True,
    levels: int | None = None,
    skip_clipped: bool | None = None,
    channel: str | None = None,
    kurtosis: bool | None = None,
    reals: Sequence[Path] | None = None,
    source_fpr: float | None = None,
    keep_fusion: bool = False,
) -> Calibration:
    """Calibrate a trained run again on its own held-out reals (train.json), or on the photos of the folders `reals`
    (a pool from many sources the run never trained on), e.g. with other variants, another
    canonical transform (DetectorConfig.canonical), another number of pyramid levels (TrsorConfig.levels), clipped
    pixels left out of TrSOR (TrsorConfig.skip_clipped) or another TrSOR channel (TrsorConfig.channel), then its
    low-resolution scoring; writes `out`.

    fuse: refit the noise fusion (default: whether the run fuses already). kurtosis: with the kurtosis part
    (default: whether the run's fusion has it). low_resolution: False leaves it out, so images too small for the
    canonical transform are refused.
    """
    info_path = Path(run) / TRAIN
    if not info_path.is_file():
        raise SlspError(f"{run}: no {TRAIN}, so its held-out real photos are unknown")
    info = json.loads(info_path.read_text())
    files = collect(list(reals)) if reals else [Path(f) for f in info["holdout_images"]]
    det = det_io.load(run)
    cfg = det.cfg
    if levels is not None:  # the fusion is refit below; its old level statistics may not fit the new pyramid
        cfg = dataclasses.replace(cfg, trsor=dataclasses.replace(cfg.trsor, levels=levels),
                                  fusion=dataclasses.replace(cfg.fusion, level_means=(), level_stds=()))
    if skip_clipped is not None:
        cfg = dataclasses.replace(cfg, trsor=dataclasses.replace(cfg.trsor, skip_clipped=skip_clipped))
    if channel is not None:
        cfg = dataclasses.replace(cfg, trsor=dataclasses.replace(cfg.trsor, channel=channel))
    det = det.with_config(dataclasses.replace(cfg, canonical=canonical or cfg.canonical,
                                              low_resolution=LowResolutionConfig()))
    if keep_fusion and (levels is not None or fuse is not None or kurtosis is not None):
        raise SlspError("keeping the fusion leaves its levels and parts as they are: drop --levels / --kurtosis")
    fuse = False if keep_fusion else det.cfg.fusion.enabled if fuse is None else fuse
    kurtosis = det.cfg.fusion.kurtosis if kurtosis is None else kurtosis
    if kurtosis and not fuse and not keep_fusion:
        raise SlspError("the kurtosis part is a part of the fusion: it needs a model that fuses")
    # fuse False: the threshold of the score as the model computes it, its fusion (if any) unchanged.
    cal = (calibrate_fused(det, files, target_fpr, quiet, variants, kurtosis, source_fpr) if fuse
           else calibrate(det, files, target_fpr, quiet, variants, source_fpr))
    low = (calibrate_low_resolution(cal.detector, files, target_fpr, quiet) if low_resolution
           else Calibration(cal.detector, cal.threshold, float("nan"), []))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    det_io.save(low.detector, out)
    info["calibration"] = {
        "variants": list(variants),
        "target_fpr": target_fpr,
        "fused": bool(fuse or (keep_fusion and det.cfg.fusion.enabled)),
        "kurtosis": cal.detector.cfg.fusion.kurtosis,
        "canonical": det.cfg.canonical,
        "levels": det.cfg.trsor.levels,
        "skip_clipped": det.cfg.trsor.skip_clipped,
        "channel": det.cfg.trsor.channel,
        "threshold": cal.threshold,
        "holdout_fpr": cal.fpr,
        "low_resolution": {"sides": low_resolution_sides(cal.detector), "threshold": low.threshold,
                           "holdout_fpr": low.fpr, "scores": len(low.scores)} if low.scores else None,
        "from": str(run),
        "reals": [str(r) for r in reals] if reals else "held-out",
        "source_fpr": source_fpr,
        "fusion_kept": keep_fusion,
        "images": len(files),
    }
    (out / TRAIN).write_text(json.dumps(info, indent=2) + "\n")
    if Path(run).resolve() != out.resolve() and (Path(run) / STATE).is_file():
        shutil.copy2(Path(run) / STATE, out / STATE)
    return cal
