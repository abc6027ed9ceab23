"""Threshold calibration on held-out real photos only: the score quantile at 1 - target FPR."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from slsp.config import FusionConfig
from slsp.detector import Detection, Detector
from slsp.errors import SlspError
from slsp.imaging import load
from slsp.metrics import threshold_at_fpr
from slsp.progress import bar


class Calibration(NamedTuple):
    detector: Detector
    threshold: float
    fpr: float
    scores: list[float]


def _detections(det: Detector, real_files: list[Path], quiet: bool) -> list[Detection]:
    out = []
    with bar(quiet) as pb:
        task = pb.add_task("calibrate", total=len(real_files), info="")
        for f in real_files:
            out.append(det.detect(load(f, max_pixels=det.cfg.max_pixels), str(f)))
            pb.advance(task)
    if not out:
        raise SlspError("calibration needs at least one real image")
    return out


def _with_threshold(det: Detector, scores: list[float], target_fpr: float) -> Calibration:
    thr = threshold_at_fpr(np.array(scores, dtype=np.float32), target_fpr)
    out = det.with_config(dataclasses.replace(det.cfg, threshold=thr, target_fpr=target_fpr))
    fpr = float(np.mean(np.array(scores, dtype=np.float32) >= np.float32(thr)))
    return Calibration(out, thr, fpr, scores)


def calibrate(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False) -> Calibration:
    """The threshold for the detector's own score, fusion (if any) as configured."""
    return _with_threshold(det, [float(d.score) for d in _detections(det, real_files, quiet)], target_fpr)


@torch.inference_mode()
def calibrate_fused(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False) -> Calibration:
    """Fit the noise fusion (FusionConfig) on real photos, then the threshold of the fused score on the same photos.

    One detection pass: the exported `Scorer` recomputes the fused score from each photo's crop scores and sigma.
    """
    plain = det.with_config(dataclasses.replace(det.cfg, fusion=FusionConfig()))
    dets = _detections(plain, real_files, quiet)
    agg = np.array([float(plain.scorer.crop_aggregate(d.crop_scores, d.valid)) for d in dets])
    noise = np.array([-np.log(float(d.sigma) + 1e-3) for d in dets])
    fusion = FusionConfig(enabled=True, model_mean=float(agg.mean()), model_std=float(max(agg.std(), 1e-6)),
                          noise_mean=float(noise.mean()), noise_std=float(max(noise.std(), 1e-6)))
    fused = det.with_config(dataclasses.replace(det.cfg, fusion=fusion))
    scores = [float(fused.scorer(d.crop_scores, d.valid, d.sigma)[0]) for d in dets]
    return _with_threshold(fused, scores, target_fpr)
