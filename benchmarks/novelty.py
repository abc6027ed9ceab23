"""Real-only novelty of the encoder's features: does "unlike real crops" add to "like a pseudo-fake"?

    python benchmarks/novelty.py [--run RUN ...] [--out benchmarks/results/novelty.json]

The discriminator scores how much a crop looks like the pseudo-fakes it was trained against; a generator whose
fluctuations look like neither real crops nor pseudo-fakes can slip past it. Novelty asks only the first question: a
Gaussian per pyramid level (mean and a covariance shrunk towards a multiple of the identity by `lambda`) is fit on
the encoder features (the 128-d pooled vector the discriminator reads, or the 64-d bottleneck) of the TrSOR crops
of the photos each run trained on, and a crop's novelty is its Mahalanobis distance; an image's is the mean over its
crops, per level. The held-out photos then standardise every part and set the 95% threshold, as the calibration
does, so nothing here is fit on a generated image.

For each run (default: the shipped recipe's three seeds, runs/seeds1500-l3/baseline-s{0,1,2}) every training and
held-out real photo and every dev image (bottom 16 rows trimmed; as stored and re-encoded as JPEG q95) is scored at
the canonical 1/2 view and its box levels 1/4, 1/8 (the crops are the same for every run; cached in runs/). Reported
per rule: seed-mean AUROC over generators (min-max), the worst generator, FPR/TPR at the threshold, the paired
difference to the shipped rule with a 90% interval (`seeds.paired`), per generator, and leave-one-generator-out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from aggregation import BASE, CONDITIONS, TRIM, evaluated, summarised

from slsp import detector as det_io
from slsp.evaluate import generators
from slsp.imaging import collect, load
from slsp.progress import bar
from slsp.scoring import noise_score
from slsp.transforms import Transform
from slsp.trsor import box_levels, fit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LEVELS = 3
# name -> (parts, feature, lambda); parts: "crops" (mean crop score per level), "noise", "novelty" (per level)
RULES: dict[str, tuple[tuple[str, ...], str, float]] = {
    BASE: (("crops", "noise"), "latent", 0.5),
    "novelty, bottleneck (lambda 0.5)": (("novelty",), "latent", 0.5),
    "novelty, pooled (lambda 0.5)": (("novelty",), "pooled", 0.5),
    "novelty + noise, bottleneck": (("novelty", "noise"), "latent", 0.5),
    "shipped + novelty, bottleneck (lambda 0.5)": (("crops", "noise", "novelty"), "latent", 0.5),
    "shipped + novelty, bottleneck (lambda 0.1)": (("crops", "noise", "novelty"), "latent", 0.1),
    "shipped + novelty, pooled (lambda 0.5)": (("crops", "noise", "novelty"), "pooled", 0.5),
}


def _path(p: str) -> str:
    return str((Path(p) if Path(p).is_absolute() else ROOT / p).resolve())


@torch.inference_mode()
def _score(dets: list, img: np.ndarray) -> list[dict | None]:
    """Per level of the 1/2 view: sigma, and per run the crop scores and both feature sets of the valid crops."""
    trsor, c = dets[0].trsor.level, dets[0].cfg.trsor.crop
    half = torch.from_numpy(np.ascontiguousarray(Transform("resize:0.5")(img)))
    levels = [(half, torch.tensor(min(half.shape[:2]) >= c))] + [fit(lv, c) for lv in box_levels(half, LEVELS)]
    out: list[dict | None] = []
    for pixels, fits in levels[:LEVELS]:
        if not bool(fits):
            out.append(None)
            continue
        o = trsor(pixels)
        valid = o.valid & fits
        runs = []
        for d in dets:
            x, phi = d.model.prepare(o.crops[valid], o.crop_phi[valid], d.model.dtype)
            e = d.model.encoder(x, phi)
            runs.append({"score": torch.sigmoid(-d.model.disc(e.pooled)[:, 0]).numpy(), "pooled": e.pooled.numpy(),
                         "latent": e.latent.numpy()})
        out.append({"sigma": float(o.sigma), "runs": runs})
    return out


def cached(runs: list[Path], pb) -> dict:
    """{(set, condition): [per image: `_score`]}; set 'real-train' (every photo of the runs' training folders),
    'real' or 'fake/<generator>'; plus each run's training and held-out photo lists."""
    key = hashlib.sha256("\n".join(str(r.resolve()) for r in runs).encode()).hexdigest()[:12]
    path = ROOT / "runs" / f"novelty-cache-{key}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    dets = [det_io.load(r) for r in runs]
    infos = [json.loads((r / "train.json").read_text()) for r in runs]
    splits = [{k: [_path(p) for p in i[k]] for k in ("train_images", "holdout_images")} for i in infos]
    photos = sorted(set(splits[0]["train_images"]) | set(splits[0]["holdout_images"]))
    if any(set(s["train_images"]) | set(s["holdout_images"]) != set(photos) for s in splits):
        raise SystemExit("the runs must split the same real photos (one recipe, several seeds)")
    sets = {"real-train": [Path(p) for p in photos], "real": collect([DATA / "real" / "dev"])}
    sets |= {f"fake/{g}": fs for g, fs in generators(DATA / "fake" / "dev").items()}
    task = pb.add_task("novelty", total=len(photos) + 2 * sum(len(v) for k, v in sets.items() if k != "real-train"),
                       info="")
    out: dict = {"photos": photos, "splits": splits}
    for name, files in sets.items():
        for cond, spec in ({"stored": "none"} if name == "real-train" else CONDITIONS).items():
            rows = []
            for f in files:
                img = load(f, max_pixels=dets[0].cfg.max_pixels)
                rows.append(_score(dets, Transform(spec)(img if name == "real-train" else img[: len(img) - TRIM])))
                pb.advance(task)
            out[(name, cond)] = rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def _gaussian(x: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse covariance, shrunk towards (trace / d) * I by `lam`."""
    cov = np.cov(x.T)
    cov = (1 - lam) * cov + lam * np.trace(cov) / len(cov) * np.eye(len(cov))
    return x.mean(0), np.linalg.inv(cov)


def rule_scores(data: dict, run: int, rule: tuple[tuple[str, ...], str, float]) -> dict:
    """Fit the rule for one run (Gaussians on its training photos, standardisation and threshold on its held-out
    photos); score every dev image."""
    kinds, feat, lam = rule
    index = {p: i for i, p in enumerate(data["photos"])}
    photos = data[("real-train", "stored")]
    train, held = ([photos[index[p]] for p in data["splits"][run][k]] for k in ("train_images", "holdout_images"))
    gauss = [_gaussian(np.concatenate([r[lv]["runs"][run][feat] for r in train if r[lv] is not None]), lam)
             for lv in range(LEVELS)]

    def parts(row: list[dict | None]) -> list[float]:
        out = []
        for lv, r in enumerate(row):
            q = None if r is None or not len(r["runs"][run]["score"]) else r["runs"][run]
            if "crops" in kinds:
                out.append(np.nan if q is None else float(q["score"].mean()))
            if "novelty" in kinds:
                z = None if q is None else q[feat] - gauss[lv][0]
                out.append(np.nan if z is None else float(np.sqrt(np.einsum("ij,jk,ik->i", z, gauss[lv][1], z)).mean()))
        return out + ([noise_score(row[0]["sigma"])] if "noise" in kinds else [])

    h = np.array([parts(r) for r in held])
    m, s = np.nanmean(h, 0), np.nanstd(h, 0)
    use = (~np.isnan(h)).sum(0) >= 10  # as the calibration: a part enters with at least 10 held-out images

    def combine(rows: list) -> np.ndarray:
        z = (np.array([parts(r) for r in rows]) - m) / s
        return np.nanmean(z[:, use], 1)

    return evaluated(data, combine, combine(held))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", help="run folder (repeatable; default: the shipped recipe's "
                    "three seeds)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "novelty.json")
    args = ap.parse_args(argv)
    runs = args.run or [ROOT / "runs" / "seeds1500-l3" / f"baseline-s{s}" for s in range(3)]
    with bar(False) as pb:
        data = cached(runs, pb)
    per = {name: [rule_scores(data, i, rule) for i in range(len(runs))] for name, rule in RULES.items()}
    res = {"runs": [str(r) for r in runs], "rules": {k: {"parts": v[0], "feature": v[1], "lambda": v[2]}
                                                    for k, v in RULES.items()}, **summarised(per, args.bootstrap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
