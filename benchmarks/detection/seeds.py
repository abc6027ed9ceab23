"""Candidates against a baseline over several training seeds, on the dev split, paired on the same images.

    python benchmarks/detection/seeds.py --steps 500 --seeds 0 1 2 --candidate decoder="--fakes
    denoise,renoise,resample,decoder"

Trains the baseline (`slsp train` on the two real training folders, family defaults, plus `--baseline`'s arguments)
and every candidate (the same command plus its arguments; `--real` among an arm's arguments replaces the two
folders) once per seed, into runs/seeds/<name>-s<seed> (kept: a rerun reuses a finished run, one trained elsewhere
too). Scores the dev split as stored and with both classes re-encoded as JPEG q95 (the bottom 16 rows trimmed, as in
DETECTION.md), and reports per run the mean AUROC over generators, the worst generator and TPR/FPR at the calibrated
threshold; per candidate, the seed-averaged difference to the baseline with a 90% interval from a paired, stratified
bootstrap of the images (every run re-scored on the same draw), and the same per generator.
Generated images only evaluate here; nothing is fit on them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from slsp.evaluate import evaluate
from slsp.metrics import auroc

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
TRIM = 16
CONDITIONS = {"stored": "none", "jpeg95": "jpeg:95"}
REAL = ["--real", str(DATA / "real" / "train"), "--real", str(DATA / "real" / "train-camera")]


def train(name: str, extra: list[str], seed: int, steps: int, runs: Path) -> Path:
    run = runs / f"{name}-s{seed}"
    if not (run / "config.json").is_file() or json.loads((run / "train.json").read_text())["step"] < steps:
        real = [] if "--real" in extra else REAL  # an arm may bring its own real folders
        cmd = [sys.executable, "-m", "slsp.cli", "train", *real, "--out", str(run), "--steps", str(steps),
               "--seed", str(seed), "-q", *extra]
        print("+", shlex.join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    return run


def scores(run: Path, reencode: str) -> dict:
    r = evaluate(DATA / "real" / "dev", DATA / "fake" / "dev", run, reencode=reencode, trim_bottom=TRIM, quiet=True)
    rows = r["conditions"]["original"]["rows"]["model"]
    return {"real": np.asarray(r["scores"]["real"]["original"]["model"]),
            "fake": {g: np.asarray(s["original"]["model"]) for g, s in r["scores"]["fake"].items()},
            "mean_auroc": rows["mean"]["auroc"], "worst_auroc": rows["worst"]["auroc"],
            "tpr_at_thr": rows["mean"].get("tpr@thr"), "fpr_at_thr": rows["mean"].get("fpr@thr"),
            "auroc": {g: v["auroc"] for g, v in rows.items() if g not in ("mean", "worst")}}


def paired(base: list[dict], cand: list[dict], n: int = 1000, seed: int = 0) -> dict:
    """Seed-averaged AUROC difference (mean over generators, and per generator) with 90% paired bootstrap intervals."""
    rng = np.random.default_rng(seed)
    gens = list(base[0]["fake"])
    nr = len(base[0]["real"])

    def diff(ri: np.ndarray | None, fi: dict | None) -> dict[str, float]:
        out = {}
        for g in gens:
            pick = (lambda s: s["real"][ri], lambda s: s["fake"][g][fi[g]]) if ri is not None else \
                   (lambda s: s["real"], lambda s: s["fake"][g])
            out[g] = float(np.mean([auroc(pick[0](c), pick[1](c)) for c in cand])
                           - np.mean([auroc(pick[0](b), pick[1](b)) for b in base]))
        out["mean"] = float(np.mean([out[g] for g in gens]))
        return out

    point = diff(None, None)
    draws = [diff(rng.integers(nr, size=nr), {g: rng.integers(len(base[0]["fake"][g]), size=len(base[0]["fake"][g]))
                                              for g in gens}) for _ in range(n)]
    return {k: {"diff": point[k], "lo": float(np.percentile([d[k] for d in draws], 5)),
                "hi": float(np.percentile([d[k] for d in draws], 95))} for k in point}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--candidate", action="append", default=[], help='NAME="slsp train arguments" (repeatable)')
    ap.add_argument("--baseline", default="", help="the baseline arm's slsp train arguments (default: none)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "seeds")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "seeds.json")
    args = ap.parse_args(argv)
    arms = {"baseline": shlex.split(args.baseline)}
    arms |= {c.partition("=")[0]: shlex.split(c.partition("=")[2]) for c in args.candidate}
    res: dict = {"steps": args.steps, "seeds": args.seeds, "arms": {k: shlex.join(v) for k, v in arms.items()},
                 "runs": {}, "paired_vs_baseline": {}}
    per: dict[str, dict[str, list[dict]]] = {}
    for name, extra in arms.items():
        for seed in args.seeds:
            run = train(name, extra, seed, args.steps, args.runs)
            for cond, reencode in CONDITIONS.items():
                s = scores(run, reencode)
                per.setdefault(name, {}).setdefault(cond, []).append(s)
                res["runs"][f"{name}-s{seed}/{cond}"] = {k: v for k, v in s.items() if k not in ("real", "fake")}
                print(f"{name} seed {seed} {cond}: mean AUROC {s['mean_auroc']:.3f}, worst {s['worst_auroc']:.3f}",
                      file=sys.stderr, flush=True)
    for name in arms:
        for cond in CONDITIONS:
            means = [s["mean_auroc"] for s in per[name][cond]]
            res.setdefault("summary", {})[f"{name}/{cond}"] = {"mean": float(np.mean(means)), "min": min(means),
                                                               "max": max(means)}
            if name != "baseline":
                res["paired_vs_baseline"][f"{name}/{cond}"] = paired(per["baseline"][cond], per[name][cond],
                                                                     args.bootstrap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    brief = {k: v["mean"] for k, v in res["paired_vs_baseline"].items()}
    print(json.dumps({"summary": res["summary"], "paired": brief}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
