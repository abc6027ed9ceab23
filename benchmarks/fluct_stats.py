"""Hand-made statistics of the smooth crops' fluctuations, no training: alone, and as a part of the shipped score.

    python benchmarks/fluct_stats.py [--run RUN ...] [--out benchmarks/results/fluct_stats.json]

Runs: the shipped recipe's five seeds (runs/seeds1500-l3/baseline-s{0..4}, as benchmarks/README.md trains them).

Why these: a camera leaves its fluctuations correlated across colour channels (demosaicing fills R and B in from
G's neighbourhood; in-camera chroma denoising; 4:2:0 JPEG), near-Gaussian and short-range; a generator's decoder
need not. Each statistic is measured on the crops the detector scores (TrSOR's 16 most over-smooth 64-px tiles of
the canonical 1/2 view), on the high-pass residual the model reads (each pixel minus its 3 x 3 mean), and per
image is the median over its crops:
- `corr`: the residual's mean correlation between the colour channels;
- `chroma`: log of the chroma residual's std (R - G and B - G, summed) over twice the luma residual's;
- `ac1`: the luma residual's lag-1 autocorrelation (horizontal and vertical averaged);
- `kurt`: the luma residual's excess kurtosis.
A statistic counts two-sided (its distance from the held-out real photos' mean, in their standard deviations): the
side fakes lie on is not fit anywhere. The rules, in aggregation.py's machinery (the same runs, standardisation and
threshold on the held-out real photos, paired intervals against the shipped rule, leave-one-generator-out): each
statistic alone, and each added to the shipped score as a fifth part. Each rule's AUROC is also reported against
the dev's camera JPEGs and against its other reals apart: a statistic that tells old image sets from fakes, and
not cameras, shows it there, and each statistic's median per group of images (dev reals by source, held-out photos by
folder, each generator) says where its values lie. The statistics are model-free and cached per image
(runs/fluct-stats-cache.pkl).
After the kurtosis part was served: the served statistic (slsp.fluctuation.log_kurtosis) per pyramid level, as
more parts (`LEVEL_STATS`); `logm4_l0` is what the shipped detector fuses.
Generated images only evaluate here; nothing is fit on them.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from aggregation import BASE, CONDITIONS, TRIM, cached, image_sets, rule_scores, summarised

from slsp import detector as det_io
from slsp.evaluate import source
from slsp.fluctuation import LUMA, log_kurtosis, residual
from slsp.imaging import load
from slsp.progress import bar
from slsp.transforms import Transform
from slsp.trsor import Pyramid, TrSOR

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "fluct-stats-cache.pkl"
STATS = ("corr", "chroma", "ac1", "kurt")
# Added after the four were scored: log of the fourth standardised moment (kurt + 3 >= 1), where the real photos'
# long right tail no longer sets the two-sided scale. The median commutes with it, so it costs no new pass.
DERIVED = {"logm4": lambda st: float(np.log(st["kurt"] + 3.0))}
# Added after logm4 was served (slsp.fluctuation.log_kurtosis, the served function): its median over the valid crops
# of each pyramid level the detector scores (l0 is the served part; l1, l2 at 1/4 and 1/8 of the image), and over
# levels 0 and 1 pooled.
LEVEL_STATS = ("logm4_l0", "logm4_l1", "logm4_l2", "logm4_l01")
RULES: dict[str, dict] = {BASE: {}} | {f"{s} alone": {"levels": 0, "noise_levels": 0, "stats": (s,)}
                                       for s in (*STATS, *DERIVED)} | {f"shipped + {s}": {"stats": (s,)}
                                                                       for s in (*STATS, *DERIVED)} | {
    "shipped + logm4_l0 (served)": {"stats": ("logm4_l0",)},
    "shipped + logm4_l0, l1": {"stats": ("logm4_l0", "logm4_l1")},
    "shipped + logm4_l0, l1, l2": {"stats": ("logm4_l0", "logm4_l1", "logm4_l2")},
    "shipped + logm4_l01 (pooled)": {"stats": ("logm4_l01",)},
}


def _lag_corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b))) if (a @ a) * (b @ b) > 0 else np.nan


def crop_stats(crop: np.ndarray) -> dict[str, float]:
    """The statistics of one (C, C, 3) uint8 crop (NaN where its residual is flat)."""
    x = torch.from_numpy(crop.astype(np.float64)).permute(2, 0, 1)[None]
    r = residual(x)[0].permute(1, 2, 0).numpy()[1:-1, 1:-1]  # the model's input, without the padded border
    luma = r @ np.array(LUMA)
    s = luma.std()
    if s < 1e-6:
        return dict.fromkeys(STATS, np.nan)
    z = (luma - luma.mean()) / s
    return {"corr": float(np.nanmean([_lag_corr(r[..., i], r[..., j]) for i, j in ((0, 1), (1, 2), (0, 2))])),
            "chroma": float(np.log((np.std(r[..., 0] - r[..., 1]) + np.std(r[..., 2] - r[..., 1]) + 1e-6) / (2 * s))),
            "ac1": 0.5 * (_lag_corr(luma[:, 1:], luma[:, :-1]) + _lag_corr(luma[1:], luma[:-1])),
            "kurt": float((z**4).mean() - 3.0)}


@torch.inference_mode()
def image_stats(tiler: TrSOR, img: np.ndarray) -> dict[str, float]:
    """An image's statistics: the median over the crops the detector scores at the canonical 1/2 view."""
    o = tiler(torch.from_numpy(np.ascontiguousarray(Transform("resize:0.5")(img))))
    rows = [crop_stats(c) for c in o.crops[o.valid].numpy()]
    return {s: float(np.nanmedian([r[s] for r in rows])) if rows and not all(np.isnan(r[s]) for r in rows)
            else np.nan for s in STATS}


@torch.inference_mode()
def level_stats(pyramid: Pyramid, img: np.ndarray) -> dict[str, float]:
    """The served log kurtosis's median over each pyramid level's valid crops of the canonical 1/2 view (NaN where a
    level has none), and over levels 0 and 1 pooled."""
    o = pyramid(torch.from_numpy(np.ascontiguousarray(Transform("resize:0.5")(img))))
    k = log_kurtosis(o.crops).double().numpy().reshape(pyramid.cfg.levels, -1)
    ok = o.valid.numpy().reshape(pyramid.cfg.levels, -1) & ~np.isnan(k)
    med = [float(np.median(k[lv][ok[lv]])) if ok[lv].any() else np.nan for lv in range(pyramid.cfg.levels)]
    pooled = k[:2][ok[:2]]
    return {"logm4_l0": med[0], "logm4_l1": med[1], "logm4_l2": med[2],
            "logm4_l01": float(np.median(pooled)) if pooled.size else np.nan}


def with_stats(data: dict, run: Path, cache: dict, tiler: TrSOR, pyramid: Pyramid, max_pixels: int, pb) -> dict:
    """Each cached row of a run gains `stats`; computed once per image and condition across runs (`cache`)."""
    sets = image_sets(run)
    task = pb.add_task(f"statistics {run.name}", total=sum(len(v) for v in data.values()), info="")
    for (name, cond), rows in data.items():
        for f, row in zip(sets[name], rows, strict=True):
            key = (str(f.resolve()), cond)
            if key not in cache or not set(LEVEL_STATS) <= cache[key].keys():
                img = load(f, max_pixels=max_pixels)
                img = Transform(CONDITIONS[cond])(img if name == "holdout" else img[: img.shape[0] - TRIM])
                cache[key] = (cache.get(key) or image_stats(tiler, img)) | level_stats(pyramid, img)
            row["stats"] = cache[key] | {d: derive(cache[key]) for d, derive in DERIVED.items()}
            pb.advance(task)
    return data


def medians(runs: list[Path], cache: dict) -> dict[str, dict[str, float]]:
    """Each statistic's median (stored) per group of images: the dev reals by source, the held-out photos of all the
    runs by folder (camera JPEGs or image sets), and each generator; where a statistic's values lie, not how well
    it ranks."""
    groups: dict[str, set[str]] = {}
    for run in runs:
        for name, files in image_sets(run).items():
            for f in files:
                group = (f"held-out {'camera' if f.parent.name == 'train-camera' else 'sets'}" if name == "holdout"
                         else f"dev {source(f)}" if name == "real" else name)
                groups.setdefault(group, set()).add(str(f.resolve()))
    return {g: {s: float(np.nanmedian([cache[(f, "stored")][s] for f in fs])) for s in STATS}
            for g, fs in sorted(groups.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", help="run folder (repeatable; default: the shipped recipe's "
                    "five seeds)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fluct_stats.json")
    args = ap.parse_args(argv)
    runs = args.run or [ROOT / "runs" / "seeds1500-l3" / f"baseline-s{s}" for s in range(5)]
    cache = pickle.loads(CACHE.read_bytes()) if CACHE.is_file() else {}
    cfg = det_io.load(runs[0]).cfg
    tiler, pyramid = TrSOR(cfg.trsor), Pyramid(cfg.trsor)  # the detector's crops: the same for every run of the recipe
    with bar(False) as pb:
        data = [with_stats(cached(r, pb), r, cache, tiler, pyramid, cfg.max_pixels, pb) for r in runs]
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_bytes(pickle.dumps(cache))
    per = {name: [rule_scores(d, rule) for d in data] for name, rule in RULES.items()}
    res = {"runs": [str(r) for r in runs], "rules": {k: v or "shipped" for k, v in RULES.items()},
           **summarised(per, args.bootstrap), "medians": medians(runs, cache)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    for cond in CONDITIONS:
        print(f"{cond}, mean AUROC against camera JPEGs / the other reals: " + ", ".join(
            f"{n} {r['by_real']['camera']:.3f} / {r['by_real']['sets']:.3f}"
            for n, r in ((n, res["summary"][f"{n}/{cond}"]) for n in RULES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
