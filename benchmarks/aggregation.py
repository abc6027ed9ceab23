"""How an image's crop scores become its score: aggregation and weighting rules, over seeds, against the shipped rule.

    python benchmarks/aggregation.py [--run RUN ...] [--out benchmarks/results/aggregation.json]

For each run (default: the shipped recipe's three seeds, runs/seeds1500-l3/baseline-s{0,1,2}), every held-out real
photo (train.json) and every dev image (bottom 16 rows trimmed; as stored, and both classes re-encoded as JPEG q95
or q75) is scored once: the crop scores, validity and TrSOR noise level of each pyramid level of the canonical 1/2
view (the detector's box levels, down to 1/16) and the crop scores of each crop's 8 rotations and mirrors (adding
the view as given is `scales.py`'s "1/2 + crops 1/1, 1/4, 1/8"), and of up to 256 tiles per level in TrSOR's
order, most over-smooth first (the detector scores the first 16: selection rules pick others). The scores are
cached beside the run (`aggregation-cache-2.pkl`), so a rule costs no inference.

A rule turns them into an image score. Its parts are standardised on the held-out real photos and averaged (the
shipped rule: the mean crop score of levels 1/2, 1/4, 1/8 and the noise score, equal weights); its threshold is the
held-out scores' 95% quantile. Reported per rule: the seed-mean AUROC over generators (min-max), the worst generator,
TPR and dev FPR at the threshold, the paired difference to the shipped rule with a 90% interval (`seeds.paired`:
the same resampled images for every run), and leave-one-generator-out (the rule with the best mean on the other
generators, scored on the one left out). Generated images only evaluate here; nothing is fit on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from seeds import paired

from slsp import detector as det_io
from slsp.evaluate import generators, source
from slsp.imaging import collect, load
from slsp.metrics import auroc, leave_one_out, threshold_at_fpr
from slsp.progress import bar
from slsp.scoring import noise_score
from slsp.transforms import Transform
from slsp.trsor import TrSOR, box_levels, fit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRIM = 16
LEVELS = 4  # 1/2 .. 1/16
# Both classes alike: as stored, re-encoded as JPEG q95 (issue 16's targets) and as JPEG q75. Not halved: the 256-px
# generators would then fall to the detector's low-resolution path (native scale), which these rules do not model.
CONDITIONS = {"stored": "none", "jpeg95": "jpeg:95", "jpeg75": "jpeg:75"}
CACHE = "aggregation-cache-2.pkl"
TILES = 256  # TrSOR's most over-smooth tiles kept per level for the selection rules (its config's cap)
BASE = "shipped"


def logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 1e-6, 1 - 1e-6)
    return np.log(s / (1 - s))


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": np.mean, "median": np.median, "max": np.max, "top4": lambda s: np.sort(s)[-4:].mean(),
    "logit-mean": lambda s: logit(s).mean(),
}


def spread(s: np.ndarray, pool: int) -> np.ndarray:
    """16 tiles at even ranks among the `pool` most over-smooth (all of them where there are 16 or fewer)."""
    pool = min(len(s), max(16, pool))
    return s[:pool] if pool <= 16 else s[np.arange(16) * pool // 16]


# (ranked tile scores, the level's tile count) -> the scores a rule averages. The spread rules make a large image's
# pick as extreme as a small image's: a 128-px view has 4 tiles and scores all 4; a 2000-px one the top 16 of 700.
SELECTIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "top8": lambda s, n: s[:8], "top32": lambda s, n: s[:32], "top64": lambda s, n: s[:64],
    "pool64": lambda s, n: spread(s, 64), "quarter": lambda s, n: spread(s, -(-n // 4)),
}
RULES: dict[str, dict] = {  # name -> parts of `parts` and how they are combined
    BASE: {},
    "level 1/16 too": {"levels": 4},
    "median of crops": {"aggregate": "median"},
    "max of crops": {"aggregate": "max"},
    "top-4 mean of crops": {"aggregate": "top4"},
    "mean of crop logits": {"aggregate": "logit-mean"},
    "mean over 8 rotations/mirrors": {"views": True},
    "evidence grows with crops (sqrt n)": {"aggregate": "sqrtn"},
    "noise at 1/4, 1/8 too": {"noise_levels": 3},
    "no noise part": {"noise_levels": 0},
    "weights from the real covariance": {"weights": "gls"},
    "noise slope 1/2 -> 1/4, two-sided": {"slope": True},
    "size-corrected (real photos' trend on log side removed)": {"size": True},
    "8 most over-smooth crops": {"select": "top8"},
    "32 most over-smooth crops": {"select": "top32"},
    "64 most over-smooth crops": {"select": "top64"},
    "16 spread over the 64 most over-smooth": {"select": "pool64"},
    "16 spread over the most over-smooth quarter": {"select": "quarter"},
}


@torch.inference_mode()
def _score(det, tiler: TrSOR, img: np.ndarray) -> dict:
    """Per level of the 1/2 view: crop scores (8 views, K), valid (K), sigma, and the scores of its valid tiles in
    TrSOR's order (up to TILES of them). One TrSOR pass per level: `tiler` is the detector's TrSOR with more slots,
    and its first K are the detector's crops (TrSOR's top-K is sorted, valid slots first)."""
    model, c, k = det.model, det.cfg.trsor.crop, det.cfg.trsor.crops
    half = torch.from_numpy(np.ascontiguousarray(Transform("resize:0.5")(img)))
    levels = [(half, torch.tensor(min(half.shape[:2]) >= c))] + [fit(lv, c) for lv in box_levels(half, LEVELS)]
    out: dict = {"levels": []}
    for pixels, fits in levels:
        if not bool(fits) and pixels is half:
            out["levels"].append(None)
            continue
        o = tiler(pixels)
        keep = o.valid & fits
        valid = keep[:k]
        crops, phis = o.crops[:k][valid], o.crop_phi[:k][valid]  # only the crops the detector scores
        views = np.full((8, k), np.nan, dtype=np.float32)
        for i, (rot, flip) in enumerate((rot, flip) for rot in range(4) for flip in (False, True)):
            x, p = torch.rot90(crops, rot, (1, 2)), torch.rot90(phis, rot, (1, 2))
            x, p = (torch.flip(x, (2,)), torch.flip(p, (2,))) if flip else (x, p)
            if len(x):
                views[i, valid.numpy()] = model(x.contiguous(), p.contiguous()).numpy()
        more = keep[k:]
        rest = model(o.crops[k:][more], o.crop_phi[k:][more]).numpy() if more.any() else np.zeros(0, np.float32)
        n = int(np.prod([-(-side // c) for side in pixels.shape[:2]])) if bool(fits) else 0  # the level's tiles
        out["levels"].append({"scores": views, "valid": valid.numpy(), "sigma": float(o.sigma),
                              "tiles": np.concatenate([views[0][valid.numpy()], rest]), "n_tiles": n})
    return out


def image_sets(run: Path) -> dict[str, list[Path]]:
    """The images a run is scored on: 'holdout' (its held-out photos), 'real' and 'fake/<generator>' (dev)."""
    info = json.loads((run / "train.json").read_text())
    held = [Path(p) if Path(p).is_absolute() else ROOT / p for p in info["holdout_images"]]
    sets = {"holdout": held, "real": collect([DATA / "real" / "dev"])}
    return sets | {f"fake/{g}": fs for g, fs in generators(DATA / "fake" / "dev").items()}


def with_sizes(data: dict, run: Path) -> dict:
    """Each cached row gains `short`, its image's short side as scored (dev images trimmed), for size rules; from
    the file's header, so it costs no decoding."""
    for name, files in image_sets(run).items():
        trim = 0 if name == "holdout" else TRIM
        shorts = [min(w, h - trim) for w, h in (Image.open(f).size for f in files)]
        for (n, _), rows in data.items():
            if n == name:
                for row, short in zip(rows, shorts, strict=True):
                    row["short"] = short
    return data


def cached(run: Path, pb) -> dict:
    """{(set, condition): [scores of each image]}; set: 'holdout', 'real' or 'fake/<generator>'. A cache lacking a
    condition (an older one) gains it."""
    path = run / CACHE
    out = pickle.loads(path.read_bytes()) if path.is_file() else {}
    sets = image_sets(run)
    todo = [(name, cond, spec) for name in sets
            for cond, spec in ({"stored": "none"} if name == "holdout" else CONDITIONS).items()
            if (name, cond) not in out]
    if not todo:
        return out
    det = det_io.load(run)
    tiler = TrSOR(dataclasses.replace(det.cfg.trsor, crops=TILES))
    task = pb.add_task(str(run), total=sum(len(sets[name]) for name, _, _ in todo), info="")
    for name, cond, spec in todo:
        rows = []
        for f in sets[name]:
            img = load(f, max_pixels=det.cfg.max_pixels)
            img = img if name == "holdout" else img[: img.shape[0] - TRIM]
            rows.append(_score(det, tiler, Transform(spec)(img)))
            pb.advance(task)
        out[(name, cond)] = rows
    path.write_bytes(pickle.dumps(out))
    return out


def parts(row: dict, mu: dict[int, float], aggregate: str = "mean", levels: int = 3, views: bool = False,
          noise_levels: int = 1, slope: bool = False, select: str | None = None, stats: tuple[str, ...] = (),
          **_: object) -> list[float]:
    """An image's parts under a rule (NaN where the image has none): crop aggregates per level (of the detector's
    crops, or of the tiles `select` picks), noise scores, then the two-sided parts: the noise slope (log sigma at 1/4
    minus at 1/2, where 1/4 holds a crop) and the `stats` named (row['stats'], fluct_stats.py)."""
    out = []
    for lv in range(levels):
        r = row["levels"][lv]
        ok = r is not None and r["valid"].any()
        s = None if not ok else SELECTIONS[select](r["tiles"], r["n_tiles"]) if select else \
            (r["scores"].mean(0) if views else r["scores"][0])[r["valid"]]
        out.append(np.nan if s is None else
                   (s.mean() - mu[lv]) * np.sqrt(len(s)) if aggregate == "sqrtn" else AGGREGATES[aggregate](s))
    for lv in range(noise_levels):  # level 0 always has a noise estimate (the image holds one crop)
        r = row["levels"][lv]
        out.append(noise_score(r["sigma"]) if lv == 0 or (r is not None and r["valid"].any()) else np.nan)
    if slope:  # how the noise level falls with scale: sensor noise falls one way; a deviation either way is unreal
        r = row["levels"][1]
        out.append(noise_score(row["levels"][0]["sigma"]) - noise_score(r["sigma"])
                   if r is not None and r["valid"].any() else np.nan)
    return out + [row["stats"].get(name, np.nan) for name in stats]


def two_sided(rule: dict) -> int:
    """How many of a rule's last parts count by their distance from the real photos' mean, either way."""
    return int(bool(rule.get("slope"))) + len(rule.get("stats", ()))


def rule_scores(data: dict, rule: dict) -> dict:
    """Fit the rule on the held-out reals (standardisation, weights, threshold); score every dev image."""
    held = data[("holdout", "stored")]
    valid = [[r["levels"][lv]["scores"][0][r["levels"][lv]["valid"]] for r in held if r["levels"][lv] is not None]
             for lv in range(LEVELS)]
    mu = {lv: float(np.concatenate(v).mean()) if v else 0.0 for lv, v in enumerate(valid)}
    k = two_sided(rule)
    tails = np.array([parts(r, mu, **rule) for r in held])[:, -k:] if k else None

    def raw(rows: list[dict]) -> np.ndarray:
        p = np.array([parts(r, mu, **rule) for r in rows])
        if tails is not None:  # two-sided: the distance from the real photos' mean (standardised again below)
            p[:, -k:] = np.abs(p[:, -k:] - np.nanmean(tails, 0)) / np.nanstd(tails, 0)
        return p

    h = raw(held)
    m, s = np.nanmean(h, 0), np.nanstd(h, 0)
    use = (~np.isnan(h)).sum(0) >= 10  # as the calibration: a part enters with at least 10 held-out images

    def standardised(rows: list[dict]) -> np.ndarray:
        z = (raw(rows) - m) / s
        z[:, ~use] = np.nan
        return z

    zh = standardised(held)
    cov = np.cov(zh[~np.isnan(zh[:, use]).any(1)][:, use].T) if rule.get("weights") == "gls" else None
    # Held-out real photos score higher the larger they are; `size` removes that linear trend in log side.
    trend = np.polyfit(np.log([r["short"] for r in held]), np.nanmean(zh, 1), 1)[0] if rule.get("size") else 0.0

    def combine(rows: list[dict]) -> np.ndarray:
        z = standardised(rows)
        if cov is None:
            return np.nanmean(z, 1) - (trend * np.log([r["short"] for r in rows]) if trend else 0.0)
        out = []
        for zi in z[:, use]:  # generalised least squares: the best linear unbiased mean of correlated parts
            have = ~np.isnan(zi)
            w = np.linalg.solve(cov[np.ix_(have, have)] + 1e-6 * np.eye(have.sum()), np.ones(have.sum()))
            out.append(w @ zi[have] / np.sqrt(w.sum()))
        return np.array(out)

    return evaluated(data, combine, combine(held))


@functools.cache
def camera_reals() -> np.ndarray:
    """Which dev real photos are camera JPEGs (sources exif-*), in the order every cache holds them; the rest are
    image sets and film scans (BSD100, Urban100, Sun-Hays80, Kodak), most of them downscaled long ago. Listed once
    per process: every rule of every run reads it."""
    return np.array([source(f).startswith("exif") for f in collect([DATA / "real" / "dev"])])


def evaluated(data: dict, combine: Callable[[list], np.ndarray], held: np.ndarray) -> dict:
    """A fitted rule on the dev images, per condition: scores, AUROC per generator, mean AUROC against the camera
    JPEGs and against the other reals apart (a rule that only tells old image sets from fakes shows there), and
    FPR/TPR at the held-out scores' 95% quantile."""
    thr = threshold_at_fpr(held, 0.05)
    camera = camera_reals()
    res = {}
    for cond in (c for c in CONDITIONS if ("real", c) in data):  # those the scores were cached for
        real = combine(data[("real", cond)])
        fake = {k[0][5:]: combine(v) for k, v in data.items()
                if isinstance(k, tuple) and k[0].startswith("fake/") and k[1] == cond}
        a = {g: auroc(real, f) for g, f in fake.items()}
        res[cond] = {"real": real, "fake": fake, "auroc": a, "mean_auroc": float(np.mean(list(a.values()))),
                     "by_real": {group: float(np.mean([auroc(real[keep], f) for f in fake.values()]))
                                 for group, keep in (("camera", camera), ("sets", ~camera))},
                     "worst_auroc": min(a.values()), "tpr_at_thr": float(np.mean([np.mean(f >= thr)
                                                                                 for f in fake.values()])),
                     "fpr_at_thr": float(np.mean(real >= thr))}
    return res


def summarised(per: dict[str, list[dict]], bootstrap: int) -> dict:
    """Rules over runs -> per condition: seed-mean summary and paired difference to the shipped rule, seed-mean
    AUROC per generator, and leave-one-generator-out; printed as a table."""
    res: dict = {"summary": {}, "per_generator": {}, "logo": {}}
    conds = list(next(iter(per.values()))[0])
    for cond in conds:
        for name, rs in per.items():
            m = [r[cond]["mean_auroc"] for r in rs]
            row = {"mean": float(np.mean(m)), "min": min(m), "max": max(m),
                   "worst": float(np.mean([r[cond]["worst_auroc"] for r in rs])),
                   "tpr_at_thr": float(np.mean([r[cond]["tpr_at_thr"] for r in rs])),
                   "fpr_at_thr": float(np.mean([r[cond]["fpr_at_thr"] for r in rs])),
                   "by_real": {g: float(np.mean([r[cond]["by_real"][g] for r in rs])) for g in rs[0][cond]["by_real"]}}
            if name != BASE:
                row["minus_shipped"] = paired([r[cond] for r in per[BASE]], [r[cond] for r in rs], bootstrap)
            res["summary"][f"{name}/{cond}"] = row
        seed_mean = {name: {g: float(np.mean([r[cond]["auroc"][g] for r in rs])) for g in rs[0][cond]["auroc"]}
                     for name, rs in per.items()}
        res["per_generator"][cond] = seed_mean
        res["logo"][cond] = {g: {"chosen": pick, "auroc": seed_mean[pick][g], "shipped": seed_mean[BASE][g]}
                             for g, pick in leave_one_out(seed_mean).items()}
    print(f"| rule | {' | '.join(f'{c}: mean (min-max) / worst | minus shipped [90%]' for c in conds)} |")
    print("|---|" + "---|---|" * len(conds))
    for name in per:
        cells = []
        for cond in conds:
            r = res["summary"][f"{name}/{cond}"]
            d = r.get("minus_shipped", {}).get("mean")
            cells += [f"{r['mean']:.3f} ({r['min']:.3f}-{r['max']:.3f}) / {r['worst']:.3f}",
                      "" if d is None else f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"]
        print(f"| {name} | {' | '.join(cells)} |")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", help="run folder (repeatable; default: the shipped recipe's "
                    "three seeds)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "aggregation.json")
    args = ap.parse_args(argv)
    runs = args.run or [ROOT / "runs" / "seeds1500-l3" / f"baseline-s{s}" for s in range(3)]
    with bar(False) as pb:
        data = [with_sizes(cached(r, pb), r) for r in runs]
    per = {name: [rule_scores(d, rule) for d in data] for name, rule in RULES.items()}
    res = {"runs": [str(r) for r in runs], "rules": {k: v or "shipped" for k, v in RULES.items()},
           **summarised(per, args.bootstrap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    for cond, lo in res["logo"].items():
        print(f"leave-one-generator-out, {cond}: " + ", ".join(f"{g}: {v['chosen']} {v['auroc']:.3f} (shipped "
                                                               f"{v['shipped']:.3f})" for g, v in lo.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
