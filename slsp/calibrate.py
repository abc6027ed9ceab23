"""Threshold calibration on held-out real photos only: the score quantile at 1 - target FPR."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np

from slsp.detector import Detector
from slsp.errors import SlspError
from slsp.imaging import load
from slsp.progress import bar


class Calibration(NamedTuple):
    detector: Detector
    threshold: float
    fpr: float
    scores: list[float]


def threshold_at_fpr(real_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold with at most `target_fpr` of real scores >= it (verdict is score >= threshold)."""
    s = np.sort(np.asarray(real_scores, dtype=np.float64))
    if s.size == 0:
        raise SlspError("calibration needs at least one real image")
    allowed = int(np.floor(target_fpr * s.size))  # reals allowed at or above the threshold
    return float(np.nextafter(np.float32(s[s.size - allowed - 1]), np.float32(np.inf)))


def calibrate(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False) -> Calibration:
    scores = []
    with bar(quiet) as pb:
        task = pb.add_task("calibrate", total=len(real_files), info="")
        for f in real_files:
            scores.append(float(det.detect(load(f, max_pixels=det.cfg.max_pixels), str(f)).score))
            pb.advance(task)
    thr = threshold_at_fpr(np.array(scores), target_fpr)
    cfg = dataclasses.replace(det.cfg, threshold=thr, target_fpr=target_fpr)
    out = Detector(cfg)
    out.model.load_state_dict(det.model.state_dict())
    fpr = float(np.mean(np.array(scores, dtype=np.float32) >= np.float32(thr)))
    return Calibration(out.eval(), thr, fpr, scores)
