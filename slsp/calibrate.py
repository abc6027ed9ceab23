"""Threshold calibration on held-out real photos only: the score quantile at 1 - target FPR."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from slsp import detector as det_io
from slsp.config import FusionConfig
from slsp.detector import Detection, Detector
from slsp.errors import ImageError, SlspError
from slsp.imaging import load
from slsp.metrics import threshold_at_fpr
from slsp.progress import bar, stderr
from slsp.runs import STATE, TRAIN
from slsp.scoring import noise_score
from slsp.transforms import Transform


class Calibration(NamedTuple):
    detector: Detector
    threshold: float
    fpr: float
    scores: list[float]


def _detections(det: Detector, real_files: list[Path], quiet: bool, variants: tuple[str, ...] = ("none",)
                ) -> list[Detection]:
    """One detection per photo and variant (a transform of the photo: 'none', 'jpeg:Q', 'resize:F'). A photo the
    detector refuses (too small, flat, undecodable) is left out with a warning, as the server would refuse it."""
    transforms = [Transform(v) for v in variants]
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
            pb.advance(task, len(transforms))
    if not out:
        raise SlspError("calibration needs at least one real image")
    return out


def _with_threshold(det: Detector, scores: list[float], target_fpr: float) -> Calibration:
    thr = threshold_at_fpr(np.array(scores, dtype=np.float32), target_fpr)
    out = det.with_config(dataclasses.replace(det.cfg, threshold=thr, target_fpr=target_fpr))
    fpr = float(np.mean(np.array(scores, dtype=np.float32) >= np.float32(thr)))
    return Calibration(out, thr, fpr, scores)


def calibrate(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False,
              variants: tuple[str, ...] = ("none",)) -> Calibration:
    """The threshold for the detector's own score, fusion (if any) as configured."""
    return _with_threshold(det, [float(d.score) for d in _detections(det, real_files, quiet, variants)], target_fpr)


@torch.inference_mode()
def calibrate_fused(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False,
                    variants: tuple[str, ...] = ("none",)) -> Calibration:
    """Fit the noise fusion (FusionConfig) on real photos, then the threshold of the fused score on the same photos,
    each photo as stored and under every variant.

    One detection pass: the exported `Scorer` recomputes the fused score from each photo's crop scores and sigma.
    """
    plain = det.with_config(dataclasses.replace(det.cfg, fusion=FusionConfig()))
    dets = _detections(plain, real_files, quiet, variants)
    agg = np.array([float(plain.scorer.crop_aggregate(d.crop_scores, d.valid)) for d in dets])
    noise = np.array([noise_score(d.sigma) for d in dets])
    fusion = FusionConfig(enabled=True, model_mean=float(agg.mean()), model_std=float(max(agg.std(), 1e-6)),
                          noise_mean=float(noise.mean()), noise_std=float(max(noise.std(), 1e-6)))
    fused = det.with_config(dataclasses.replace(det.cfg, fusion=fusion))
    scores = [float(fused.scorer(d.crop_scores, d.valid, d.sigma)[0]) for d in dets]
    return _with_threshold(fused, scores, target_fpr)


def recalibrate(
    run: Path,
    out: Path,
    target_fpr: float,
    variants: tuple[str, ...] = ("none",),
    fuse: bool | None = None,
    canonical: str | None = None,
    quiet: bool = False,
) -> Calibration:
    """Calibrate a trained run again on its own held-out reals (train.json), e.g. with other variants or another
    canonical transform (DetectorConfig.canonical); writes `out`.

    fuse: refit the noise fusion (default: whether the run fuses already).
    """
    info_path = Path(run) / TRAIN
    if not info_path.is_file():
        raise SlspError(f"{run}: no {TRAIN}, so its held-out real photos are unknown")
    info = json.loads(info_path.read_text())
    files = [Path(f) for f in info["holdout_images"]]
    det = det_io.load(run)
    if canonical is not None:
        det = det.with_config(dataclasses.replace(det.cfg, canonical=canonical))
    fuse = det.cfg.fusion.enabled if fuse is None else fuse
    cal = (calibrate_fused if fuse else calibrate)(det, files, target_fpr, quiet, variants)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    det_io.save(cal.detector, out)
    info["calibration"] = {
        "variants": list(variants),
        "target_fpr": target_fpr,
        "fused": fuse,
        "canonical": det.cfg.canonical,
        "threshold": cal.threshold,
        "holdout_fpr": cal.fpr,
        "from": str(run),
    }
    (out / TRAIN).write_text(json.dumps(info, indent=2) + "\n")
    if Path(run).resolve() != out.resolve() and (Path(run) / STATE).is_file():
        shutil.copy2(Path(run) / STATE, out / STATE)
    return cal
