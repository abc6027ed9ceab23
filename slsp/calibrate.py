"""Threshold calibration on held-out real photos only: the score quantile at 1 - target FPR."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np

from slsp.detector import Detector
from slsp.errors import SlspError
from slsp.imaging import load
from slsp.metrics import threshold_at_fpr
from slsp.progress import bar


class Calibration(NamedTuple):
    detector: Detector
    threshold: float
    fpr: float
    scores: list[float]


def calibrate(det: Detector, real_files: list[Path], target_fpr: float, quiet: bool = False) -> Calibration:
    scores = []
    with bar(quiet) as pb:
        task = pb.add_task("calibrate", total=len(real_files), info="")
        for f in real_files:
            scores.append(float(det.detect(load(f, max_pixels=det.cfg.max_pixels), str(f)).score))
            pb.advance(task)
    if not scores:
        raise SlspError("calibration needs at least one real image")
    thr = threshold_at_fpr(np.array(scores, dtype=np.float32), target_fpr)
    out = det.with_config(dataclasses.replace(det.cfg, threshold=thr, target_fpr=target_fpr))
    fpr = float(np.mean(np.array(scores, dtype=np.float32) >= np.float32(thr)))
    return Calibration(out, thr, fpr, scores)
