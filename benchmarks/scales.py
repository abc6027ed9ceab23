"""Scale as an axis: does fusing the shipped weights' scores at several scales beat the shipped 1/2 scale?

    python benchmarks/scales.py [--out benchmarks/results/scales.json]

Every dev image (bottom 16 rows trimmed; re-encoded first under the JPEG q95 condition) is scored by the shipped
weights at 1/2 (the shipped canonical), 1/4 and 1/8 of its size (Pillow bicubic, `resize:F`), wherever one 64-px
crop still fits: the crop aggregate and TrSOR's noise score at each scale. Each part is standardised on the model's
held-out real photos (train.json) at the same scale; a candidate's score is the mean of its parts' z-scores that the
image has. "shipped" (crops and noise at 1/2) ranks images as the shipped fused score does. Reported as stored and
with both classes re-encoded as JPEG q95: mean AUROC over generators with 90% intervals, and each candidate's paired
difference to "shipped" on the same resampled images. Generated images only evaluate here; nothing is fit on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from slsp import detector as det_io
from slsp.config import FusionConfig, LowResolutionConfig
from slsp.evaluate import generators
from slsp.imaging import collect, load
from slsp.metrics import auroc, bootstrap
from slsp.progress import bar
from slsp.scoring import noise_score
from slsp.transforms import Transform

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRIM = 16
SCALES = (0.5, 0.25, 0.125)
CANDIDATES = {  # name -> parts: (kind, scale)
    "shipped": (("crops", 0.5), ("noise", 0.5)),
    "+crops 1/4": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25)),
    "+crops, noise 1/4": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25), ("noise", 0.25)),
    "+crops 1/4, 1/8": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25), ("crops", 0.125)),
    "crops 1/2, 1/4 (no noise)": (("crops", 0.5), ("crops", 0.25)),
}


@torch.inference_mode()
def parts(det, img: np.ndarray) -> dict[tuple[str, float], float]:
    """The crop aggregate and the noise score at each scale where one crop fits (NaN elsewhere)."""
    out = {}
    for s in SCALES:
        small = Transform(f"resize:{s}")(img)
        if min(small.shape[:2]) < det.min_side:
            out[("crops", s)] = out[("noise", s)] = float("nan")
            continue
        d = det.detect(small)
        out[("crops", s)] = float(det.scorer.crop_aggregate(d.crop_scores, d.valid))
        out[("noise", s)] = noise_score(d.sigma)
    return out


def table(files: list[Path], det, reencode: Transform, pb, task, trim: int) -> list[dict]:
    rows = []
    for f in files:
        img = load(f)
        rows.append(parts(det, reencode(img[: img.shape[0] - trim] if trim else img)))  # re-encoded, then scaled
        pb.advance(task)
    return rows


def scores(rows: list[dict], stats: dict, parts_: tuple) -> np.ndarray:
    z = np.array([[(r[p] - stats[p][0]) / stats[p][1] for p in parts_] for r in rows])
    return np.nanmean(z, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scales.json")
    args = ap.parse_args()
    shipped = det_io.load()
    # The shipped weights on the pixels as given: no canonical step, no fusion (the parts are fused here).
    det = shipped.with_config(dataclasses.replace(shipped.cfg, canonical="none", fusion=FusionConfig(),
                                                  low_resolution=LowResolutionConfig()))
    held = [ROOT / p for p in json.loads((det_io.default_dir() / "train.json").read_text())["holdout_images"]]
    reals, gens = collect([DATA / "real" / "dev"]), generators(DATA / "fake" / "dev")
    result = {}
    with bar(False) as pb:
        for cond, spec in (("stored", "none"), ("jpeg95", "jpeg:95")):
            t = Transform(spec)
            task = pb.add_task(f"scales {cond}", total=len(held) + len(reals) + sum(map(len, gens.values())), info="")
            cal = table(held, det, t, pb, task, 0)
            stats = {p: (np.nanmean([r[p] for r in cal]), np.nanstd([r[p] for r in cal])) for p in cal[0]}
            real = table(reals, det, t, pb, task, TRIM)
            fake = {g: table(fs, det, t, pb, task, TRIM) for g, fs in gens.items()}
            rs = {c: scores(real, stats, p) for c, p in CANDIDATES.items()}
            fs = {g: {c: scores(rows, stats, p) for c, p in CANDIDATES.items()} for g, rows in fake.items()}
            boot = bootstrap(rs, fs)
            result[cond] = {c: {"auroc": float(np.mean([auroc(rs[c], fs[g][c]) for g in gens])),
                                "interval": boot["auroc"][c]["mean"],
                                "per_generator": {g: auroc(rs[c], fs[g][c]) for g in gens},
                                "minus_shipped": None if c == "shipped" else boot["diff"][f"{c}-shipped"]}
                            for c in CANDIDATES}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| candidate | stored [90%] | minus shipped [90%] | jpeg95 [90%] | minus shipped [90%] |")
    print("|---|---|---|---|---|")
    for c in CANDIDATES:
        cells = []
        for cond in result:
            r = result[cond][c]
            lo, hi = r["interval"]
            d = r["minus_shipped"]
            gain = r["auroc"] - result[cond]["shipped"]["auroc"]
            diff = "" if d is None else f"{gain:+.3f} [{d[0]:+.3f}, {d[1]:+.3f}]"
            cells += [f"{r['auroc']:.3f} [{lo:.2f}, {hi:.2f}]", diff]
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
