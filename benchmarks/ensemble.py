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
from aggregation import BASE, evaluated, logit, summarised
from seeds import CONDITIONS, scores

from slsp import detector as det_io
from slsp.errors import ImageError
from slsp.imaging import load

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


def logits(d: dict) -> dict[tuple[str, str], np.ndarray]:
    """A run's cached scores in logit space, keyed as `aggregation.evaluated` reads them: (set, condition)."""
    out = {("holdout", "stored"): logit(d["holdout"])}
    for cond in CONDITIONS:
        out[("real", cond)] = logit(d[cond]["real"])
        out |= {(f"fake/{g}", cond): logit(v) for g, v in d[cond]["fake"].items()}
    return out


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
            ls = [logits(d) for d in members]
            mean = {k: np.mean([m[k] for m in ls], 0) for k in ls[0]}
            per.setdefault(name, []).append(evaluated(mean, np.asarray, mean[("holdout", "stored")]))
    res = {"runs": [str(args.runs / f"{{{','.join(arms.values())}}}-s{s}") for s in args.seeds],
           "rules": {BASE: "the shipped recipe (baseline arm)"} | {m: f"{m} alone" for m in args.member}
           | {PAIR: " + ".join(args.member) + ", logits averaged"}, **summarised(per, args.bootstrap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
