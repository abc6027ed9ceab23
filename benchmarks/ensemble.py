"""Two recipes that fail on different generators, averaged: does the pair beat one model?

    python benchmarks/ensemble.py --member no-resample --member resample-only [--runs runs/seeds1500-l3]

The `resample` share trades Latent Diffusion against the other generators (`seeds-*resample*-1500.json`): without it
LDM rises and the rest fall; with only it the reverse. Averaging seeds of one recipe gains nothing (DETECTION.md,
"Would averaging the seeds help?"), since they fail alike. Here, per seed, the members' fused scores are averaged
in logit space (each is sigmoid(2 x its mean z-score), so this is the mean of their z-scores) and compared with
the baseline arm's run of the same seed, paired on the same dev images (`seeds.paired`). Runs of one seed share
their held-out photos (the split is seeded), so the pair is calibrated as a model is: its threshold is the 95%
quantile of its held-out scores. Reported as stored and at JPEG q95, beside each member alone, as
`aggregation.summarised` reports rules (paired differences to the shipped recipe, per generator, and
leave-one-generator-out among the shipped recipe, the members and the pair). Dev and held-out scores are cached
beside each run (`ensemble-cache.json`). Generated images only evaluate here; nothing is fit on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from aggregation import BASE, summarised
from seeds import CONDITIONS, scores

from slsp import detector as det_io
from slsp.errors import ImageError
from slsp.imaging import load
from slsp.metrics import auroc, threshold_at_fpr

ROOT = Path(__file__).resolve().parents[1]
CACHE = "ensemble-cache.json"
PAIR = "pair"


def cached(run: Path) -> dict:
    """{'holdout': [score], cond: {'real': [score], 'fake': {generator: [score]}}} of one run, as shipped."""
    path = run / CACHE
    if path.is_file():
        return json.loads(path.read_text())
    det = det_io.load(run)
    files = [str((ROOT / f).resolve()) for f in json.loads((run / "train.json").read_text())["holdout_images"]]
    out: dict = {"holdout_images": files, "holdout": []}
    for f in files:  # as the calibration: a photo the detector refuses is left out
        try:
            out["holdout"].append(float(det.detect(load(f, max_pixels=det.cfg.max_pixels), f).score))
        except ImageError as e:
            print(f"held-out photo left out: {e}", file=sys.stderr)
    for cond, reencode in CONDITIONS.items():
        s = scores(run, reencode)
        out[cond] = {"real": s["real"].tolist(), "fake": {g: v.tolist() for g, v in s["fake"].items()}}
    path.write_text(json.dumps(out) + "\n")
    return out


def _logit(s: list[float] | np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(s / (1 - s))


def rated(holdout: np.ndarray, real: np.ndarray, fake: dict[str, np.ndarray]) -> dict:
    """AUROC per generator, mean and worst, and FPR/TPR at the held-out scores' 95% quantile."""
    thr = threshold_at_fpr(holdout, 0.05)  # as aggregation.evaluated, on scores already combined
    a = {g: auroc(real, f) for g, f in fake.items()}
    return {"real": real, "fake": fake, "auroc": a, "mean_auroc": float(np.mean(list(a.values()))),
            "worst_auroc": min(a.values()), "fpr_at_thr": float(np.mean(real >= thr)),
            "tpr_at_thr": float(np.mean([np.mean(f >= thr) for f in fake.values()]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "seeds1500-l3")
    ap.add_argument("--member", action="append", required=True, help="arm name (repeatable): runs/<arm>-s<seed>")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ensemble.json")
    args = ap.parse_args(argv)
    arms = {BASE: "baseline"} | {m: m for m in args.member}  # name -> arm folder prefix
    per: dict[str, list[dict]] = {}  # name -> one {condition: rating} per seed
    for seed in args.seeds:
        data = {name: cached(args.runs / f"{arm}-s{seed}") for name, arm in arms.items()}
        if len({tuple(d["holdout_images"]) for d in data.values()}) != 1:
            raise SystemExit(f"seed {seed}: the runs hold out different photos; train them with the same seed")
        models = {name: [d] for name, d in data.items()} | {PAIR: [data[m] for m in args.member]}
        for name, members in models.items():  # a model alone, or the pair: its members' logits averaged
            per.setdefault(name, []).append({cond: rated(
                np.mean([_logit(d["holdout"]) for d in members], 0),
                np.mean([_logit(d[cond]["real"]) for d in members], 0),
                {g: np.mean([_logit(d[cond]["fake"][g]) for d in members], 0) for g in members[0][cond]["fake"]})
                for cond in CONDITIONS})
    res = {"runs": [str(args.runs / f"{{{','.join(arms.values())}}}-s{s}") for s in args.seeds],
           "rules": {BASE: "the shipped recipe (baseline arm)"} | {m: f"{m} alone" for m in args.member}
           | {PAIR: " + ".join(args.member) + ", logits averaged"}, **summarised(per, args.bootstrap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
