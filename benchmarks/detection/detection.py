"""The detection leaderboard: every candidate on the same dev images, beside the noise baseline, in five conditions.

    python benchmarks/detection/detection.py [--only NAME ...] [--fresh]

Each candidate is a run folder (or the shipped default); its `slsp eval` reports are cached in
benchmarks/results/detection/<name>/<condition>.json (--fresh recomputes them) and summarised in
benchmarks/DETECTION.md with 90% bootstrap intervals, the paired difference to the noise baseline, the FPR at
the calibrated threshold per real source, and a leave-one-generator-out check of the choice of candidate.
Generated images only evaluate: nothing here fits or selects anything that a model ships with, except the
choice of the shipped candidate, which the leave-one-generator-out table re-makes without each generator.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from seeds import paired

from slsp.evaluate import evaluate
from slsp.metrics import auroc, bootstrap, leave_one_out

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "detection"
DEFAULT_RUN = ROOT / "slsp" / "default"
TRIM = 16  # the DALL-E 2 watermark bar, removed from every image (real and fake alike)
SHIPPED = "fluct-sparse-half-kurt-clip-s0"  # slsp/default holds this run's config.json, model.safetensors, train.json
NOISE_FROM = "fluct-sparse-half-kurt-s0"  # the halved view's TrSOR noise baseline before clipped pixels were left out
REFERENCE = "fluct-a"  # no canonical transform: its baseline column is sigma of the pixels as each condition gives them

# name -> (run folder or None for the shipped default, how it was trained)
CANDIDATES: dict[str, tuple[str | None, str]] = {
    "slsp-recipe": (
        "runs/slsp-recipe",
        "slsp train --family slsp --real ../shared/data/real/train --out runs/slsp-recipe  "
        "(the authors' recipe, small; the weights shipped before this change)",
    ),
    "fluct-a": (
        "runs/fluct-a",
        "slsp train --family fluct --real ../shared/data/real/train --real ../shared/data/real/train-camera "
        "--out runs/fluct-a --steps 1500 --holdout 0.25 --crops-per-image 16 --canonical none",
    ),
    "fluct-a-cal": (
        "runs/fluct-a-cal",
        "(fluct-a) then slsp calibrate --model runs/fluct-a --out runs/fluct-a-cal --variant jpeg:90 "
        "--variant resize:0.75",
    ),
    "fluct-a-k32": (
        "runs/fluct-a-k32",
        '(fluct-a) with "crops": 32 in its config.json, then slsp calibrate --model runs/fluct-a-k32 '
        "--out runs/fluct-a-k32 (32 TrSOR crops per image instead of 16)",
    ),
    "fluct-a-canon-resize0.5": (
        "runs/fluct-a-canon-resize0.5",
        "(fluct-a) then slsp calibrate --model runs/fluct-a --out runs/fluct-a-canon-resize0.5 "
        "--canonical resize:0.5 (every image halved before scoring; images too small for that scored at native "
        "scale under their own calibration); shipped before the pyramid levels, and the same as "
        "slsp calibrate --model slsp/default --out runs/fluct-a-canon-resize0.5 --levels 1",
    ),
    "fluct-a-canon-resize0.5-levels3": (
        "runs/fluct-a-canon-resize0.5-levels3",
        "(fluct-a-canon-resize0.5) then slsp calibrate --model runs/fluct-a-canon-resize0.5 --out "
        "runs/fluct-a-canon-resize0.5-levels3 --levels 3 (crop scores at 1/2, 1/4 and 1/8 of the image, fused); "
        "shipped before the kurtosis part (slsp/default at c848d46)",
    ),
    "fluct-a-canon-jpeg75": (
        "runs/fluct-a-canon-jpeg75",
        "(fluct-a) then slsp calibrate --model runs/fluct-a --out runs/fluct-a-canon-jpeg75 "
        "--canonical jpeg:75 (every image re-encoded as JPEG q75 before scoring)",
    ),
    "fluct-a-no-chain": (
        "runs/fluct-a-no-chain",
        "slsp train --family fluct --real ../shared/data/real/train --real ../shared/data/real/train-camera "
        "--out runs/fluct-a-no-chain --steps 1500 --holdout 0.25 --crops-per-image 16 --no-chain "
        "--canonical none",
    ),
    "fluct-a-no-residual": (
        "runs/fluct-a-no-residual",
        "slsp train --family fluct --real ../shared/data/real/train --real ../shared/data/real/train-camera "
        "--out runs/fluct-a-no-residual --steps 1500 --holdout 0.25 --crops-per-image 16 "
        "--no-residual --canonical none",
    ),
    "fluct-a-no-camera": (
        "runs/fluct-a-no-camera",
        "slsp train --family fluct --real ../shared/data/real/train "
        "--out runs/fluct-a-no-camera --steps 1500 --holdout 0.25 --crops-per-image 16 --canonical none",
    ),
    "fluct-a-no-camera-canon-resize0.5": (
        "runs/fluct-a-no-camera-canon-resize0.5",
        "(fluct-a-no-camera) then slsp calibrate --model runs/fluct-a-no-camera "
        "--out runs/fluct-a-no-camera-canon-resize0.5 --canonical resize:0.5",
    ),
    "fluct-levels3-s1": (
        "runs/seeds1500/levels3-s1",
        "the shipped recipe with seed 1: python benchmarks/detection/seeds.py --steps 1500 --seeds 1 2 --runs "
        "runs/seeds1500 "
        "--out benchmarks/results/seeds-baseline-1500.json, then slsp calibrate --model runs/seeds1500/baseline-s1 "
        "--out runs/seeds1500/levels3-s1 --levels 3",
    ),
    "fluct-levels3-s2": (
        "runs/seeds1500/levels3-s2",
        "the shipped recipe with seed 2: as fluct-levels3-s1, with baseline-s2",
    ),
    "fluct-levels1-s1": (
        "runs/seeds1500/baseline-s1",
        "the shipped recipe with seed 1, one level (as shipped before the pyramid levels): python "
        "benchmarks/detection/seeds.py "
        "--steps 1500 --seeds 1 2 --runs runs/seeds1500 --out benchmarks/results/seeds-baseline-1500.json",
    ),
    "fluct-levels1-s2": (
        "runs/seeds1500/baseline-s2",
        "the shipped recipe with seed 2, one level: as fluct-levels1-s1",
    ),
    "fluct-sparse-s0": (
        "runs/seeds1500-l3/sparse-s0",
        "the shipped recipe with the sparse pseudo-fake (seed 0; today's code): python benchmarks/detection/seeds.py "
        "--steps "
        "1500 --seeds 0 1 2 --runs runs/seeds1500-l3 --candidate sparse='--fakes "
        "denoise,renoise,resample,resample,sparse,sparse' --out benchmarks/results/seeds-sparse-1500.json",
    ),
    "fluct-sparse-s1": ("runs/seeds1500-l3/sparse-s1", "as fluct-sparse-s0, seed 1"),
    "fluct-sparse-s2": ("runs/seeds1500-l3/sparse-s2", "as fluct-sparse-s0, seed 2"),
    "fluct-kurt": (
        "runs/kurtosis/shipped",
        "fluct-a-canon-resize0.5-levels3 with the kurtosis part: slsp calibrate --model "
        "runs/fluct-a-canon-resize0.5-levels3 --out runs/kurtosis/shipped --kurtosis (the same weights; the crops' "
        "median log kurtosis, two-sided, a fifth part of the fusion); shipped as slsp/default at d5f9129",
    ),
    "fluct-kurt-s1": (
        "runs/kurtosis/baseline-s1",
        "the shipped recipe (today's code, seed 1; the baseline arm of python benchmarks/detection/seeds.py --steps "
        "1500 "
        "--seeds 0 1 2 3 4 --runs runs/seeds1500-l3 --candidate resample-half='--fakes "
        "denoise,renoise,resample,resample' --out benchmarks/results/seeds-resample-half-1500.json) with the "
        "kurtosis part: slsp calibrate --model runs/seeds1500-l3/baseline-s1 --out runs/kurtosis/baseline-s1 "
        "--kurtosis",
    ),
    "fluct-kurt-s2": ("runs/kurtosis/baseline-s2", "as fluct-kurt-s1, seed 2"),
    "fluct-sparse-kurt-s0": (
        "runs/kurtosis/sparse-s0",
        "fluct-sparse-s0 with the kurtosis part: slsp calibrate --model runs/seeds1500-l3/sparse-s0 --out "
        "runs/kurtosis/sparse-s0 --kurtosis",
    ),
    "fluct-sparse-kurt-s1": ("runs/kurtosis/sparse-s1", "as fluct-sparse-kurt-s0, seed 1"),
    "fluct-sparse-kurt-s2": ("runs/kurtosis/sparse-s2", "as fluct-sparse-kurt-s0, seed 2"),
    "fluct-sparse-half-kurt-s0": (
        "runs/kurtosis/sparse-resample-half-s0",
        "the sparse pseudo-fake with the 1/2 resample share (seed 0): python benchmarks/detection/seeds.py --steps "
        "1500 --seeds "
        "0 1 2 --runs runs/seeds1500-l3 --candidate sparse-resample-half='--fakes "
        "denoise,renoise,resample,resample,resample,resample,sparse,sparse' --out "
        "benchmarks/results/seeds-sparse-resample-half-1500.json, then slsp calibrate --model "
        "runs/seeds1500-l3/sparse-resample-half-s0 --out runs/kurtosis/sparse-resample-half-s0 --kurtosis; "
        "the same run as slsp train --real ../shared/data/real/train --real ../shared/data/real/train-camera --out "
        "runs/default (the family's defaults since); shipped until clipped pixels were left out of TrSOR",
    ),
    "fluct-sparse-half-kurt-s1": ("runs/kurtosis/sparse-resample-half-s1", "as fluct-sparse-half-kurt-s0, seed 1"),
    "fluct-sparse-half-kurt-s2": ("runs/kurtosis/sparse-resample-half-s2", "as fluct-sparse-half-kurt-s0, seed 2"),
    "fluct-sparse-half-kurt-s3": (
        "runs/shipped-recipe/s3",
        "the shipped recipe, seed 3: slsp train --real ../shared/data/real/train --real "
        "../shared/data/real/train-camera --out runs/shipped-recipe/s3 --seed 3 (the family's defaults)",
    ),
    "fluct-sparse-half-kurt-s4": ("runs/shipped-recipe/s4", "as fluct-sparse-half-kurt-s3, seed 4"),
    "fluct-sparse-heavy-kurt-s0": (
        "runs/sparse-heavy/s0",
        "sparse for half the pseudo-fakes, resample for a quarter: slsp train --real ../shared/data/real/train --real "
        "../shared/data/real/train-camera --out runs/sparse-heavy/s0 --seed 0 --fakes "
        "denoise,renoise,resample,resample,sparse,sparse,sparse,sparse (kurtosis part by the family's default)",
    ),
    "fluct-sparse-heavy-kurt-s1": ("runs/sparse-heavy/s1", "as fluct-sparse-heavy-kurt-s0, seed 1"),
    "fluct-sparse-heavy-kurt-s2": ("runs/sparse-heavy/s2", "as fluct-sparse-heavy-kurt-s0, seed 2"),
    "fluct-sparse-heavy-kurt-s3": ("runs/sparse-heavy/s3", "as fluct-sparse-heavy-kurt-s0, seed 3"),
    "fluct-sparse-heavy-kurt-s4": ("runs/sparse-heavy/s4", "as fluct-sparse-heavy-kurt-s0, seed 4"),
    "fluct-sparse-half-kurt-clip-s0": (  # scored as shipped: slsp/default holds this run
        None,
        "fluct-sparse-half-kurt-s0's weights recalibrated with clipped pixels left out of TrSOR: slsp calibrate "
        "--model runs/kurtosis/sparse-resample-half-s0 --out runs/clip-cal/s0 --skip-clipped (or --model runs/default, "
        "trained as that row says); copied to slsp/default",
    ),
    **{f"fluct-sparse-half-kurt-clip-s{s}": (f"runs/clip-cal/s{s}", f"as fluct-sparse-half-kurt-clip-s0, from "
                                             f"fluct-sparse-half-kurt-s{s}'s run") for s in range(1, 5)},
    "fluct-skip-clipped-s0": (
        "runs/skip-clipped/s0",
        "the shipped recipe trained with clipped pixels left out of TrSOR: slsp train --real ../shared/data/real/train "
        "--real ../shared/data/real/train-camera --out runs/skip-clipped/s0 --seed 0 --skip-clipped",
    ),
    **{f"fluct-skip-clipped-s{s}": (f"runs/skip-clipped/s{s}", f"as fluct-skip-clipped-s0, seed {s}")
       for s in range(1, 3)},
    "fluct-latent-s0": (
        "runs/latent/s0",
        "fluct-skip-clipped-s0's recipe with the latent pseudo-fake for 2 of 10 draws: slsp train --real "
        "../shared/data/real/train --real ../shared/data/real/train-camera --out runs/latent/s0 --seed 0 "
        "--skip-clipped --fakes denoise,renoise,resample,resample,resample,resample,sparse,sparse,latent,latent",
    ),
    **{f"fluct-latent-s{s}": (f"runs/latent/s{s}", f"as fluct-latent-s0, seed {s}") for s in range(1, 3)},
    "fluct-latent4-s0": (
        "runs/latent4/s0",
        "as fluct-latent-s0 with the latent pseudo-fake for 4 of 12 draws: --out runs/latent4/s0 --fakes "
        "denoise,renoise,resample,resample,resample,resample,sparse,sparse,latent,latent,latent,latent",
    ),
    **{f"fluct-latent4-s{s}": (f"runs/latent4/s{s}", f"as fluct-latent4-s0, seed {s}") for s in range(1, 3)},
    "fluct-decoder-s0": (
        "runs/decoder-clip/s0",
        "as fluct-latent-s0 with the decoder pseudo-fake in its place: --out runs/decoder-clip/s0 --fakes "
        "denoise,renoise,resample,resample,resample,resample,sparse,sparse,decoder,decoder",
    ),
    **{f"fluct-decoder-s{s}": (f"runs/decoder-clip/s{s}", f"as fluct-decoder-s0, seed {s}") for s in range(1, 3)},
    "fluct-camera-s0": (
        "runs/camera-clip/s0",
        "fluct-skip-clipped-s0's recipe with two simulated-camera versions of each training photo's content added to "
        "the real sources: --out runs/camera-clip/s0 --camera 2",
    ),
    **{f"fluct-camera-s{s}": (f"runs/camera-clip/s{s}", f"as fluct-camera-s0, seed {s}") for s in range(1, 3)},
    "fluct-rgb-s0": (
        "runs/rgb-cal/s0",
        "fluct-sparse-half-kurt-clip-s0 (the shipped model) recalibrated with TrSOR reading each colour channel's "
        "gradient energy (summed) instead of luma: slsp calibrate --model runs/clip-cal/s0 --out runs/rgb-cal/s0 "
        "--channel rgb",
    ),
    **{f"fluct-rgb-s{s}": (f"runs/rgb-cal/s{s}", f"as fluct-rgb-s0, from fluct-sparse-half-kurt-clip-s{s}'s run")
       for s in range(1, 5)},
    "fluct-b": (
        "runs/fluct-b",
        "slsp train --family fluct --real ../shared/data/real/train --real ../shared/data/real/train-camera "
        "--out runs/fluct-b --steps 4000 --holdout 0.25 --crops-per-image 16 --canonical none",
    ),
}
CURRENT_RECIPE = "fluct, three levels, sparse pseudo-fake, 1/2 resample, kurtosis part"
# The shipped weights recalibrated with skip_clipped, and the recipe trained with it (what the training changes in
# ABLATIONS are paired against).
SHIPPED_CLIP = ("the sparse, 1/2 resample, kurtosis recipe's weights, clipped pixels left out of TrSOR (recalibrated; "
                "shipped)")
TRAINED_CLIP = "the sparse, 1/2 resample, kurtosis recipe trained and calibrated with clipped pixels left out of TrSOR"
# recipe -> its candidates, one per training seed: the rows the shipped default is chosen by (every other
# candidate above is one seed); the first is the recipe the others are paired against (shipped before this round's
# kurtosis part)
SEEDED: dict[str, list[str]] = {
    "fluct, three levels": ["fluct-a-canon-resize0.5-levels3", "fluct-levels3-s1", "fluct-levels3-s2"],
    "fluct, one level": ["fluct-a-canon-resize0.5", "fluct-levels1-s1", "fluct-levels1-s2"],
    "fluct, three levels, sparse pseudo-fake": ["fluct-sparse-s0", "fluct-sparse-s1", "fluct-sparse-s2"],
    "fluct, three levels, kurtosis part": ["fluct-kurt", "fluct-kurt-s1", "fluct-kurt-s2"],
    "fluct, three levels, sparse pseudo-fake, kurtosis part": ["fluct-sparse-kurt-s0", "fluct-sparse-kurt-s1",
                                                              "fluct-sparse-kurt-s2"],
    CURRENT_RECIPE: [f"fluct-sparse-half-kurt-s{s}" for s in range(5)],
    "fluct, three levels, sparse 1/2 of the pseudo-fakes, resample 1/4, kurtosis part": [
        "fluct-sparse-heavy-kurt-s0", "fluct-sparse-heavy-kurt-s1", "fluct-sparse-heavy-kurt-s2",
        "fluct-sparse-heavy-kurt-s3", "fluct-sparse-heavy-kurt-s4"],
    SHIPPED_CLIP: [f"fluct-sparse-half-kurt-clip-s{s}" for s in range(5)],
    TRAINED_CLIP: [f"fluct-skip-clipped-s{s}" for s in range(3)],
    "the same, with the latent pseudo-fake (noise upsampled from a coarse grid) for 2 of 10 draws": [
        f"fluct-latent-s{s}" for s in range(3)],
    "the same, with the latent pseudo-fake for 4 of 12 draws": [f"fluct-latent4-s{s}" for s in range(3)],
    "the same, with the decoder pseudo-fake for 2 of 10 draws": [f"fluct-decoder-s{s}" for s in range(3)],
    "the same, with two simulated-camera versions of each photo as extra real sources": [
        f"fluct-camera-s{s}" for s in range(3)],
    "the shipped recipe's weights recalibrated with TrSOR on the three colour channels (rgb), clipped pixels left "
    "out": [f"fluct-rgb-s{s}" for s in range(5)],
}
# One change at a time: recipe -> the seeded recipe it changes one thing in, paired seed for seed (same seeds).
ABLATIONS: dict[str, str] = {
    "the same, with the latent pseudo-fake (noise upsampled from a coarse grid) for 2 of 10 draws": TRAINED_CLIP,
    "the same, with the latent pseudo-fake for 4 of 12 draws": TRAINED_CLIP,
    "the same, with the decoder pseudo-fake for 2 of 10 draws": TRAINED_CLIP,
    "the same, with two simulated-camera versions of each photo as extra real sources": TRAINED_CLIP,
    "the shipped recipe's weights recalibrated with TrSOR on the three colour channels (rgb), clipped pixels left out":
        SHIPPED_CLIP,
}
# condition -> (--reencode, --perturb or None)
CONDITIONS: dict[str, tuple[str, str | None]] = {
    "stored": ("none", None),
    "png": ("png", None),
    "jpeg95": ("jpeg:95", None),
    "jpeg75": ("none", "jpeg:75"),
    "resize0.5": ("none", "resize:0.5"),
}


def eval_command(run: str | None, cond: str) -> str:
    reencode, perturb = CONDITIONS[cond]
    cmd = "slsp eval --real ../shared/data/real/dev --fake ../shared/data/fake/dev"
    cmd += f" --trim-bottom {TRIM} --reencode {reencode}"
    cmd += f" --perturb {perturb}" if perturb else ""
    return cmd + (f" --model {run}" if run else "")


def reports(name: str, run: str | None, fresh: bool) -> dict[str, dict]:
    """One eval report per condition (cached). Conditions sharing a re-encoding are scored in one `evaluate` pass
    (the perturbations are its extra rows), as `slsp eval --perturb` does."""
    paths = {cond: OUT / name / f"{cond}.json" for cond in CONDITIONS}
    if not fresh and all(p.is_file() for p in paths.values()):
        return {cond: json.loads(p.read_text()) for cond, p in paths.items()}
    out = {}
    fusion = json.loads((Path(run) if run else DEFAULT_RUN).joinpath("config.json").read_text()).get("fusion")
    for reencode in dict.fromkeys(r for r, _ in CONDITIONS.values()):
        conds = {cond: perturb for cond, (r, perturb) in CONDITIONS.items() if r == reencode}
        perturbs = [p for p in conds.values() if p]
        r = evaluate(DATA / "real" / "dev", DATA / "fake" / "dev", Path(run) if run else None, reencode=reencode,
                     perturb=perturbs or None, trim_bottom=TRIM, quiet=True)
        for cond, perturb in conds.items():
            key = perturb or "original"
            scores = {
                "real": {m: [float(x) for x in v] if m != "files" else v for m, v in r["scores"]["real"][key].items()},
                "fake": {
                    g: {m: [float(x) for x in v] if m != "files" else v for m, v in s[key].items()}
                    for g, s in r["scores"]["fake"].items()
                },
            }
            out[cond] = {"command": eval_command(run, cond), "threshold": r["threshold"], "fusion": fusion,
                         "condition": r["conditions"][key], "scores": scores}
            paths[cond].parent.mkdir(parents=True, exist_ok=True)
            paths[cond].write_text(json.dumps(out[cond], indent=1) + "\n")
    return {cond: out[cond] for cond in CONDITIONS}


def raw_baseline_diff(rec: dict, ref: dict) -> str:
    """Paired difference of mean AUROC between a candidate's score and the noise baseline of `ref` (a candidate
    scored without a canonical transform: sigma of the pixels as the condition gives them), on the same images."""
    real, fake = rec["scores"]["real"], rec["scores"]["fake"]
    rreal, rfake = ref["scores"]["real"], ref["scores"]["fake"]
    if len(real["model"]) != len(rreal["baseline"]) or any(
        len(fake[g]["model"]) != len(rfake[g]["baseline"]) for g in fake
    ):
        return "n/a (images skipped)"
    out = bootstrap({"model": np.asarray(real["model"]), "raw": np.asarray(rreal["baseline"])},
                    {g: {"model": np.asarray(fake[g]["model"]), "raw": np.asarray(rfake[g]["baseline"])} for g in fake})
    lo, hi = out["diff"]["model-raw"]
    m = rec["condition"]["rows"]["model"]["mean"]["auroc"] - ref["condition"]["rows"]["baseline"]["mean"]["auroc"]
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _fmt(row: dict) -> str:
    return f"{row['auroc']:.3f} [{row['auroc_lo']:.2f}, {row['auroc_hi']:.2f}]"


def per_generator(reps: list[dict], cond: str) -> dict[str, float]:
    """AUROC per generator in `cond`, averaged over `reps` (one candidate's reports, or a recipe's seeds)."""
    rows = [r[cond]["condition"]["rows"]["model"] for r in reps]
    return {g: float(np.mean([r[g]["auroc"] for r in rows])) for g in rows[0] if g not in ("mean", "worst")}


def logo(per: dict[str, dict[str, float]]) -> list[str]:
    """Leave-one-generator-out: choose the candidate by mean AUROC over the other generators, score the left-out one."""
    lines = [
        "| left out | chosen on the rest | its AUROC on the left-out generator | best candidate there |",
        "|---|---|---|---|",
    ]
    for g, chosen in leave_one_out(per).items():
        best = max(per, key=lambda n: per[n][g])
        lines.append(f"| {g} | {chosen} | {per[chosen][g]:.3f} | {best} ({per[best][g]:.3f}) |")
    return lines


def _scores(rec: dict, column: str) -> dict:
    """One report's per-image scores of `column` ("model" or "baseline"), as benchmarks/detection/seeds.py pairs
    them."""
    real, fake = rec["scores"]["real"], rec["scores"]["fake"]
    return {"real": np.asarray(real[column]), "fake": {g: np.asarray(s[column]) for g, s in fake.items()}}


def over_seeds(all_reports: dict[str, dict]) -> list[str]:
    """Each seeded recipe (SEEDED): mean (min-max) over its seeds, and the seed-averaged paired differences to the
    noise baseline on untransformed pixels and to the shipped recipe, with 90% intervals over the dev images."""
    groups = {k: v for k, v in SEEDED.items() if all(n in all_reports for n in v)}
    if not groups or REFERENCE not in all_reports:
        return []
    shipped = next(iter(groups.values()))  # the first recipe: the one the others are paired against
    current = groups.get(CURRENT_RECIPE)  # and the recipe of this round's weights, paired the same way
    lines = ["", "## Over seeds: the rows the shipped default is chosen by", "",
             "Each recipe trained at every seed listed and calibrated alike; mean (min-max) over the seeds. The "
             "differences are seed-averaged AUROC differences, paired on the same dev images, with a 90% bootstrap "
             f"interval (1000 draws; `benchmarks/detection/seeds.py`'s `paired`): to the noise baseline on the pixels "
             f"as the "
             f"condition gives them ({REFERENCE}'s baseline column), to the first recipe's seeds (the recipe "
             "shipped before the kurtosis part) and to the seeds of the sparse, 1/2 resample, kurtosis recipe (the "
             "weights shipped since). Every other "
             "leaderboard row is one seed. jpeg75 and resize0.5 perturb both classes alike (as in the leaderboard "
             "below); issue 16's targets are on the stored and jpeg95 rows.", "",
             "| recipe | seeds (candidates) | condition | mean AUROC | worst generator | minus noise baseline [90%] | "
             "minus first recipe [90%] | minus sparse, 1/2 resample, kurtosis recipe [90%] | FPR / TPR at thr |",
             "|---|---|---|---|---|---|---|---|---|"]
    for recipe, names in groups.items():
        for cond in ("stored", "jpeg95", "jpeg75", "resize0.5"):
            recs = [all_reports[n][cond] for n in names]
            rows = [r["condition"]["rows"]["model"] for r in recs]
            means = [r["mean"]["auroc"] for r in rows]
            worst = [min(v["auroc"] for g, v in r.items() if g not in ("mean", "worst")) for r in rows]
            model = [_scores(r, "model") for r in recs]
            cells = [f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in (means, worst)]
            noise = paired([_scores(all_reports[REFERENCE][cond], "baseline")], model)["mean"]
            ship = None if names == shipped else paired([_scores(all_reports[n][cond], "model") for n in shipped],
                                                        model)["mean"]
            now = None if current in (None, names) else paired(
                [_scores(all_reports[n][cond], "model") for n in current], model)["mean"]
            cells += ["" if d is None else f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                      for d in (noise, ship, now)]
            fpr, tpr = [[r["mean"][k] for r in rows] for k in ("fpr@thr", "tpr@thr")]
            cells.append(f"{np.mean(fpr):.1%} ({min(fpr):.1%}-{max(fpr):.1%}) / {np.mean(tpr):.2f} "
                         f"({min(tpr):.2f}-{max(tpr):.2f})")
            lines.append(f"| {recipe} | {len(names)} ({', '.join(names)}) | {cond} | " + " | ".join(cells) + " |")
    for cond in ("stored", "jpeg95"):
        per = {k: per_generator([all_reports[n] for n in v], cond) for k, v in groups.items()}
        lines += ["", f"Leave one generator out, recipes by their seed-mean AUROC ({cond}):", ""] + logo(per)
    lines += ablations(all_reports) + two_sided_noise(all_reports)
    lines += ["", "Would averaging the seeds help? Each recipe as an ensemble of its seeds (their fused scores "
              "averaged per image in logit space; AUROC needs no new threshold):", "",
              "| recipe | condition | each seed: mean / worst AUROC | ensemble: mean / worst |", "|---|---|---|---|"]
    for recipe, names in groups.items():
        for cond in ("stored", "jpeg95"):
            seeds = [_scores(all_reports[n][cond], "model") for n in names]
            each = [_mean_worst(s) for s in seeds]
            ens = _mean_worst({"real": np.mean([_logit(s["real"]) for s in seeds], axis=0),
                               "fake": {g: np.mean([_logit(s["fake"][g]) for s in seeds], axis=0)
                                        for g in seeds[0]["fake"]}})
            lines.append(f"| {recipe} | {cond} | " + ", ".join(f"{m:.3f} / {w:.3f}" for m, w in each)
                         + f" | {ens[0]:.3f} / {ens[1]:.3f} |")
    return lines


def ablations(all_reports: dict[str, dict]) -> list[str]:
    """Each ABLATIONS recipe minus the recipe it changes one thing in, seed-averaged and paired on the dev images,
    over generators and for each (90% bootstrap intervals)."""
    pairs = {k: v for k, v in ABLATIONS.items() if all(n in all_reports for n in SEEDED[k] + SEEDED[v])}
    if not pairs:
        return []
    gens = list(all_reports[SEEDED[next(iter(pairs))][0]]["stored"]["scores"]["fake"])
    lines = ["", "One change at a time: each recipe minus the one it changes one thing in (the same seeds; "
             "seed-averaged, paired on the dev images, 90% bootstrap interval):", "",
             "| recipe | minus | condition | mean [90%] | " + " | ".join(gens) + " |",
             "|---|---|---|---|" + "---|" * len(gens)]
    for recipe, base in pairs.items():
        for cond in ("stored", "jpeg95"):
            d = paired([_scores(all_reports[n][cond], "model") for n in SEEDED[base]],
                       [_scores(all_reports[n][cond], "model") for n in SEEDED[recipe]])
            lines.append(f"| {recipe} | {base} | {cond} | {d['mean']['diff']:+.3f} [{d['mean']['lo']:+.3f}, "
                         f"{d['mean']['hi']:+.3f}] | " + " | ".join(f"{d[g]['diff']:+.3f}" for g in gens) + " |")
    return lines


def two_sided_noise(all_reports: dict[str, dict]) -> list[str]:
    """The noise part made two-sided, as the kurtosis part is: |noise score - the held-out photos' mean| (each run's
    fusion `noise_mean`), so an image noisier than typical photos counts too, against the one-sided noise score;
    over the shipped recipe's seeds, paired on the dev images."""
    names = SEEDED[SHIPPED_CLIP]
    if not all(n in all_reports for n in names):
        return []
    centers = [all_reports[n]["stored"]["fusion"]["noise_mean"] for n in names]  # cached: no run folder needed
    lines = ["", "The noise part two-sided (|noise score - the held-out photos' mean|, as the kurtosis part is), "
             f"against the one-sided noise score alone, over {SHIPPED_CLIP}'s seeds (paired, 90% bootstrap "
             "interval):", "",
             "| condition | one-sided | two-sided | minus one-sided [90%] | worst generator's difference |",
             "|---|---|---|---|---|"]
    for cond in ("stored", "jpeg95"):
        one = [_scores(all_reports[n][cond], "baseline") for n in names]
        two = [{"real": np.abs(o["real"] - c), "fake": {g: np.abs(f - c) for g, f in o["fake"].items()}}
               for o, c in zip(one, centers)]
        d = paired(one, two)
        worst = min((g for g in d if g != "mean"), key=lambda g: d[g]["diff"])
        lines.append(f"| {cond} | {np.mean([_mean_worst(o)[0] for o in one]):.3f} | "
                     f"{np.mean([_mean_worst(t)[0] for t in two]):.3f} | {d['mean']['diff']:+.3f} "
                     f"[{d['mean']['lo']:+.3f}, {d['mean']['hi']:+.3f}] | {worst} {d[worst]['diff']:+.3f} |")
    return lines


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _mean_worst(s: dict) -> tuple[float, float]:
    per = [auroc(s["real"], f) for f in s["fake"].values()]
    return float(np.mean(per)), float(min(per))


def _noise_row(noise: dict[str, dict], before: int, after: int) -> str:
    """The noise baseline (TrSOR's sigma after the canonical halving, no model): the same for every model that
    halves, so one row serves the seeded and the scale tables; `before` / `after`: empty cells around it."""
    values = [_fmt(noise[c]) for c in ("stored", "jpeg95")]
    cells = ["noise baseline (no model)", *[""] * before, *values, *[""] * after]
    return "| " + " | ".join(cells) + " |"


def seeded(noise: dict[str, dict]) -> list[str]:
    """The seeded comparisons (`benchmarks/detection/seeds.py`, results/seeds-*.json): every arm over its seeds,
    beside the
    baseline arm trained the same way, with the seed-averaged paired difference, and the noise baseline."""
    lines = ["", "## Seeded comparisons (`benchmarks/detection/seeds.py`)", "",
             "Each arm is `slsp train` on the two real training folders (plus the arm's arguments) at every seed; "
             "mean AUROC over generators, mean (min-max) over seeds; the difference to the baseline arm is "
             "seed-averaged, with a 90% paired bootstrap interval over the dev images. Most arms ran 500 steps, "
             "shorter than the shipped 1,500, so they compare arms, not the shipped model; the 1,500-step baseline "
             "seeds are the shipped recipe (seed 0 is the shipped model). With more than one arm, leave one "
             "generator out follows each table. Every run is calibrated as `slsp train` did when it ran: with one "
             "pyramid level, except in `seeds-scales-*`, `seeds-medium-*`, `seeds-steps3000`, "
             "`seeds-no-resample-1500`, `seeds-resample-*-1500`, `seeds-crops32-1500`, `seeds-gpu-subset` and "
             "`seeds-before-batching-1500`, which score three (the shipped default; their baseline runs are the "
             "one-level runs recalibrated with `slsp calibrate --levels 3`, or trained with three levels by today's "
             "`slsp train`). An arm whose arguments give `--steps` trains that long (the last `--steps` wins). "
             "`seeds-gpu-subset` is the exception to the training folders: every arm, its baseline too, trains on "
             "the 191 real photos a device call carries (`benchmarks/detection/gpu_data.py`: the camera JPEGs, "
             "BSD100, Set14 "
             "and Set5), all but `cpu` on an H200 (`benchmarks/detection/gpu_train.sh`), `cpu` here with the same "
             "command, so "
             "its rows compare arms on that subset, not with the shipped model. In `seeds-before-batching`, "
             "`before-batching` is the baseline's command run from a checkout of ec29f08 (the code that trained the "
             "shipped model, before the batched pseudo-fakes) and `baseline` today's code; `seeds-resample-*`, "
             "`seeds-no-resample`, `seeds-crops32` and `seeds-steps3000` paired today's arms with ec29f08's baseline"
             " seeds 0-2 (`seeds-resample-half-today` re-pairs the 1/2 share with today's).", ""]
    for path in sorted((ROOT / "benchmarks" / "results").glob("seeds-*.json")):
        res = json.loads(path.read_text())
        lines += [f"### `{path.name}`: {res['steps']} steps, seeds {', '.join(map(str, res['seeds']))}", "",
                  "| arm | `slsp train` arguments | stored | jpeg95 | minus baseline, stored [90%] | jpeg95 [90%] | "
                  "FPR / TPR at thr (stored, seed mean) |", "|---|---|---|---|---|---|---|"]
        for arm, args in res["arms"].items():
            cells = []
            for cond in ("stored", "jpeg95"):
                s = res["summary"][f"{arm}/{cond}"]
                cells.append(f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})")
            for cond in ("stored", "jpeg95"):
                p = res["paired_vs_baseline"].get(f"{arm}/{cond}", {}).get("mean")
                cells.append("" if p is None else f"{p['diff']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]")
            runs = [v for k, v in res["runs"].items() if k.startswith(f"{arm}-s") and k.endswith("/stored")]
            fpr, tpr = np.mean([r["fpr_at_thr"] for r in runs]), np.mean([r["tpr_at_thr"] for r in runs])
            lines.append(f"| {arm} | `{args or '(none)'}` | " + " | ".join(cells) + f" | {fpr:.1%} / {tpr:.2f} |")
        lines += [_noise_row(noise, 1, 3), ""]
        if len(res["arms"]) > 1:
            lines += _seeded_logo(res)
    return lines


def _seeded_logo(res: dict) -> list[str]:
    """Leave one generator out over a seeds JSON's arms: the arm with the best seed-mean AUROC on the other
    generators, on the one left out, beside the baseline arm."""
    lines = []
    for cond in ("stored", "jpeg95"):
        per = {arm: {} for arm in res["arms"]}
        for arm in res["arms"]:
            runs = [v["auroc"] for k, v in res["runs"].items() if k.startswith(f"{arm}-s") and k.endswith(f"/{cond}")]
            per[arm] = {g: float(np.mean([r[g] for r in runs])) for g in runs[0]}
        picks = leave_one_out(per)
        lines.append(f"Leave one generator out ({cond}): " + "; ".join(
            f"{g}: {a} {per[a][g]:.3f} (baseline {per['baseline'][g]:.3f})" for g, a in picks.items()) + ".")
    return lines + [""]


def scaled(noise: dict[str, dict]) -> list[str]:
    """The scale fusions (`benchmarks/scales.py` at 45fa3db, results/scales*.json): each rule over the models it
    scored."""
    lines = ["", "## Scale fusion (`benchmarks/scales.py` at 45fa3db)", "",
             "Each model's weights score every dev image at 1/2 and coarser scales (and 1/1, as given, where a rule "
             "names it); each part (crop or noise score) is standardised on that model's held-out real photos, and "
             "a rule averages its parts' z-scores. \"1/2\" ranks images as the one-level fused score does. Mean "
             "AUROC over generators, mean (min-max) over the models; the difference to \"1/2\" is per model, "
             "paired on the same images, with each model's 90% bootstrap interval. Scales below 1/2 are Pillow "
             "bicubic from the image, except in `scales-box-1500.json` (`--pyramid box`): box averages of the 1/2 "
             "view, the pyramid levels the shipped detector scores (\"1/2 + crops 1/4, 1/8\" is its rule).",
             ""]
    for path in sorted((ROOT / "benchmarks" / "results").glob("scales*.json")):
        res = json.loads(path.read_text())
        lines += [f"### `{path.name}`: {', '.join(res)}", "",
                  "| rule | stored | jpeg95 | minus 1/2, stored | jpeg95 | 90% per model, stored | jpeg95 |",
                  "|---|---|---|---|---|---|---|"]
        for rule in next(iter(res.values()))["stored"]["candidates"]:
            cells = []
            for part in ("auroc", "minus"):
                for cond in ("stored", "jpeg95"):
                    v = [m[cond]["candidates"][rule]["auroc"] - (m[cond]["candidates"]["1/2"]["auroc"]
                                                                 if part == "minus" else 0.0) for m in res.values()]
                    cells.append(f"{np.mean(v):+.3f} ({min(v):+.3f} to {max(v):+.3f})" if part == "minus"
                                 else f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
            for cond in ("stored", "jpeg95"):
                ci = [m[cond]["candidates"][rule]["minus_base"] for m in res.values()]
                cells.append(" ".join(f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in ci) if all(ci) else "")
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        lines += [_noise_row(noise, 0, 4), ""]
    return lines


def rules_section(noise: dict[str, dict], script: str, title: str, intro: str) -> list[str]:
    """A seeded comparison of scoring rules on the same weights (`benchmarks/<script>.py`,
    results/<script>.json): summary against the shipped rule, per generator where stored, leave-one-generator-out."""
    path = ROOT / "benchmarks" / "results" / f"{script}.json"
    if not path.is_file():
        return []
    res = json.loads(path.read_text())
    # Newer results also hold JPEG q75 (both classes alike) and the AUROC against the camera JPEGs and the other dev
    # reals apart (`aggregation.evaluated`); older ones only stored and jpeg95.
    more = [c for c in ("jpeg75",) if f"shipped/{c}" in res["summary"]]
    split = "by_real" in res["summary"]["shipped/stored"]
    lines = ["", f"## {title} (`benchmarks/{script}.py`)", "", intro.format(seeds=len(res["runs"])), "",
             "| rule | stored | jpeg95 | worst, stored | minus shipped, stored [90%] | jpeg95 [90%] | "
             + "".join(f"{c} [90%] | " for c in more) + ("camera JPEGs / other reals (stored) | " if split else "")
             + "FPR / TPR at thr (stored) |", "|---|---|---|---|---|---|" + "---|" * (len(more) + split + 1)]
    for rule in res["rules"]:
        s = {c: res["summary"][f"{rule}/{c}"] for c in ("stored", "jpeg95", *more)}
        d = [s[c].get("minus_shipped", {}).get("mean") for c in ("stored", "jpeg95", *more)]
        by = s["stored"].get("by_real")
        lines.append(f"| {rule} | " + " | ".join(f"{s[c]['mean']:.3f} ({s[c]['min']:.3f}-{s[c]['max']:.3f})"
                                                 for c in ("stored", "jpeg95"))
                     + f" | {s['stored']['worst']:.3f} | "
                     + " | ".join("" if x is None else f"{x['diff']:+.3f} [{x['lo']:+.3f}, {x['hi']:+.3f}]" for x in d)
                     + (f" | {by['camera']:.3f} / {by['sets']:.3f}" if split else "")
                     + f" | {s['stored']['fpr_at_thr']:.1%} / {s['stored']['tpr_at_thr']:.2f} |")
    lines.append(_noise_row(noise, 0, 4 + len(more) + split))
    if "per_generator" in res:
        per = res["per_generator"]["stored"]
        gens = list(next(iter(per.values())))
        lines += ["", "Per generator, seed-mean AUROC (stored):", "", "| rule | " + " | ".join(gens) + " |",
                  "|---|" + "---|" * len(gens)]
        lines += [f"| {rule} | " + " | ".join(f"{a[g]:.3f}" for g in gens) + " |" for rule, a in per.items()]
    lines += ["", "Leave one generator out (the rule with the best seed-mean AUROC on the other generators, on the "
              "one left out):", "", "| left out | stored: chosen, its AUROC (shipped) | "
              "jpeg95: chosen, its AUROC (shipped) |", "|---|---|---|"]
    for g in res["logo"]["stored"]:
        lines.append(f"| {g} | " + " | ".join(f"{v['chosen']}, {v['auroc']:.3f} ({v['shipped']:.3f})"
                                              for v in (res["logo"][c][g] for c in ("stored", "jpeg95"))) + " |")
    return lines


def aggregated(noise: dict[str, dict]) -> list[str]:
    """The aggregation and weighting rules (`benchmarks/aggregation.py` at 45fa3db), over seeds."""
    return rules_section(noise, "aggregation", "How crop scores become the image's score",
                         "The same weights ({seeds} seeds of the shipped recipe, retrained with today's code: not the "
                         "shipped weights, see docs/benchmarks-log.md) under other rules; each rule's parts "
                         "standardised on each run's held-out real photos, its threshold their 95% quantile. Mean "
                         "AUROC over generators, mean (min-max) over seeds, the worst generator's seed mean; the "
                         "difference to the shipped rule is seed-averaged, paired on the dev images, with its 90% "
                         "interval.")


def clipped_rules(noise: dict[str, dict], clipped_noise: dict[str, dict]) -> list[str]:
    """Which pixels count as clipped when TrSOR leaves them out (`benchmarks/clipped.py` at 45fa3db,
    results/clipped.json),
    beside the noise baseline with every pixel kept (`noise`) and with the shipped rule (`clipped_noise`)."""
    path = ROOT / "benchmarks" / "results" / "clipped.json"
    if not path.is_file():
        return []
    res = json.loads(path.read_text())["summary"]
    conds = list(res)
    lines = ["", "## Clipped pixels left out of TrSOR: which rule (`benchmarks/clipped.py` at 45fa3db)", "",
             "The same weights (the first three seeds of the sparse, 1/2 resample, kurtosis recipe), each rule "
             "recalibrated on each run's held-out real photos (fusion and threshold). Mean AUROC over generators, "
             "mean (min-max) over seeds; the difference to keeping every pixel is seed-averaged, paired on the dev "
             "images, with its 90% interval. Images some rule refuses as flat (no patch left) are left out of every "
             "rule: " + ", ".join(f"{res[c]['refused_by_some_rule']} {c}" for c in conds) + ".", "",
             "| rule | " + " | ".join(f"{c} | minus keep, {c} [90%]" for c in conds) + " | LDM, stored | "
             "dev FPR / TPR at thr (stored) |", "|---|" + "---|---|" * len(conds) + "---|---|"]
    for rule, r in res[conds[0]]["rules"].items():
        cells = []
        for c in conds:
            x, d = res[c]["rules"][rule], res[c]["rules"][rule]["minus_keep"]
            cells += [f"{x['mean']:.3f} ({x['min']:.3f}-{x['max']:.3f})",
                      "" if d is None else f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"]
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {r['per_generator']['ldm-txt2img']:.3f} | "
                     f"{r['dev_fpr']:.1%} / {r['tpr']:.2f} |")
    for name, base in (("keep", noise), ("all channels", clipped_noise)):
        cells = [f"noise baseline (no model), {name}"] + [x for c in conds for x in (_fmt(base[c]), "")] + ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Leave one generator out (the rule with the best seed-mean AUROC on the other generators; its "
              "AUROC minus keep's on the one left out):", "",
              "| left out | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for g in res[conds[0]]["logo"]:
        lines.append(f"| {g} | " + " | ".join(f"{res[c]['logo'][g]['chosen']} {res[c]['logo'][g]['minus_keep']:+.3f}"
                                              for c in conds) + " |")
    return lines


def ensembled(noise: dict[str, dict]) -> list[str]:
    """Two recipes that fail on different generators, averaged (`benchmarks/ensemble.py` at 45fa3db), over seeds."""
    return rules_section(noise, "ensemble", "Two recipes averaged",
                         "Per seed ({seeds} seeds), the runs of two training recipes (`runs/seeds1500-l3`) and their "
                         "pair: the members' fused scores averaged in logit space, calibrated on the held-out photos "
                         "the runs share (95% quantile). \"shipped\" is the shipped recipe's run of the same seed; "
                         "differences are seed-averaged, paired on the dev images, with their 90% interval. The pair "
                         "costs two models' training and inference.")


def novelty(noise: dict[str, dict]) -> list[str]:
    """Real-only novelty of the encoder's features (`benchmarks/novelty.py` at 45fa3db), over seeds."""
    return rules_section(noise, "novelty", "Novelty of the encoder's features, fit on real crops only",
                         "The same weights ({seeds} seeds of the shipped recipe). A crop's novelty is the Mahalanobis "
                         "distance of its encoder features (the 64-d bottleneck or the 128-d pooled vector the "
                         "discriminator reads) under a Gaussian per pyramid level fit on the crops of the photos the "
                         "run trained on (covariance shrunk towards the identity by lambda); an image's is the mean "
                         "over its crops. Parts standardised on the held-out real photos, threshold their 95% "
                         "quantile, as in the aggregation table. It asks \"unlike any real crop\" where the "
                         "discriminator asks \"like a pseudo-fake\".")


def fluct_statistics(noise: dict[str, dict]) -> list[str]:
    """Hand-made statistics of the crops' fluctuations, no training (`benchmarks/fluct_stats.py` at 45fa3db), over
    seeds."""
    return rules_section(noise, "fluct_stats", "Hand-made statistics of the fluctuations, no training",
                         "The same weights ({seeds} seeds of the shipped recipe). Each statistic is measured on the "
                         "detector's 16 crops of the canonical 1/2 view, on the residual (pixel minus its 3 x 3 "
                         "mean), the median over the crops: `corr` the residual's correlation between colour "
                         "channels, `chroma` log chroma over luma residual std, `ac1` the luma residual's lag-1 "
                         "autocorrelation, `kurt` its excess kurtosis (`logm4`, log(kurt + 3), added after the four "
                         "were scored). Each counts two-sided (its distance from the "
                         "held-out real photos' mean: the side fakes lie on is fit nowhere), alone or as a fifth part "
                         "of the shipped score; standardisation, threshold and intervals as in the aggregation "
                         "table. The camera column is the mean AUROC against the 17 dev camera JPEGs alone, the "
                         "other against the 42 image-set photos and film scans alone.")


def low_resolution() -> list[str]:
    """Thumbnails (`benchmarks/detection/low_resolution.py`, results/low-resolution.json): the shipped model's
    low-resolution path beside the noise baseline on the same pixels."""
    path = ROOT / "benchmarks" / "results" / "low-resolution.json"
    if not path.is_file():
        return []
    lines = ["", "## Low resolution (`benchmarks/detection/low_resolution.py`)", "",
             "Both classes shrunk to a short side of S px (`thumb:S`), then scored as shipped: at native scale under "
             "the low-resolution calibration. `original` is the full-size path on the same images.", "",
             "| condition | both classes | mean AUROC model | worst | noise baseline | model - baseline [90%] | "
             "FPR at thr | TPR at thr |", "|---|---|---|---|---|---|---|---|"]
    for r in json.loads(path.read_text())["rows"]:
        lines.append(f"| {r['condition']} | {r['reencode']} | {r['auroc']:.3f} [{r['auroc_lo']:.2f}, "
                     f"{r['auroc_hi']:.2f}] | {r['worst']:.3f} | {r['baseline']:.3f} | {r['diff']:+.3f} "
                     f"[{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}] | {r['fpr']:.1%} | {r['tpr']:.2f} |")
    return lines


def markdown(all_reports: dict[str, dict]) -> str:
    lines = [
        "# Detection leaderboard (dev split)",
        "",
        f"Shipped default (`slsp/default`): **{SHIPPED}**, its threshold re-fit on the wide real corpus in round 3 "
        "(`shipped-r3` below; this leaderboard's FPR and TPR columns are at each candidate's own threshold).",
        "",
        "Generated by `python benchmarks/detection/detection.py` from the cached reports in "
        "`benchmarks/results/detection/`.",
        f"Dev: {DATA.name}/real/dev (59 real photos) vs {DATA.name}/fake/dev (8 generators, 69 images); the bottom "
        f"{TRIM} rows of every image removed. AUROC with its 90% bootstrap interval (reals and each generator's "
        "fakes resampled, 1000 draws). `model` is the shipped score of the candidate; `crops` its crop score "
        "before the noise fusion; `baseline` TrSOR's sigma alone (no model) on the same images. "
        "stored: pixels as stored; png / jpeg95: both classes re-encoded alike; jpeg75 / resize0.5: both "
        "classes perturbed alike. A candidate with a canonical transform computes its baseline column on the "
        "transformed pixels; the last column compares every candidate with the baseline on the pixels as the "
        f"condition gives them ({REFERENCE}'s baseline column), paired on the same images.",
        "",
    ]
    for part in ("round3.md", "refit.md"):  # `wide.py markdown` and `refit.py report`: the wide corpus, by source
        path = ROOT / "benchmarks" / "results" / "wide" / part
        if path.is_file():
            lines += [path.read_text(), ""]
    lines += over_seeds(all_reports)
    lines += ["", "## Every candidate", ""]
    lines += ["| candidate | condition | mean AUROC model | worst (model) | crops before fusion | noise baseline | "
              "model - baseline [90%] | FPR at thr (pooled) | TPR at thr | model - baseline on untransformed pixels |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, reps in all_reports.items():
        for cond, rec in reps.items():
            rows = rec["condition"]["rows"]
            m, b = rows["model"], rows["baseline"]
            worst_g = min((g for g in m if g not in ("mean", "worst")), key=lambda g: m[g]["auroc"])
            crops = _fmt(rows["crops"]["mean"]) if "crops" in rows else "(same)"
            p = rec["condition"]["paired"]["model-baseline"]
            fpr = f"{m['mean'].get('fpr@thr', float('nan')):.1%}"
            tpr = f"{m['mean'].get('tpr@thr', float('nan')):.2f}"
            raw = raw_baseline_diff(rec, all_reports[REFERENCE][cond]) if REFERENCE in all_reports else "n/a"
            lines.append(
                f"| {name} | {cond} | {_fmt(m['mean'])} | {m[worst_g]['auroc']:.3f} ({worst_g}) | {crops} | "
                f"{_fmt(b['mean'])} | {p['diff']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}] | {fpr} | {tpr} | {raw} |"
            )
    lines += ["", "## Per generator (jpeg95: both classes re-encoded as JPEG q95)", ""]
    gens = [
        g
        for g in next(iter(all_reports.values()))["jpeg95"]["condition"]["rows"]["model"]
        if g not in ("mean", "worst")
    ]
    lines += ["| candidate | " + " | ".join(gens) + " |", "|---|" + "---|" * len(gens)]
    for name, reps in all_reports.items():
        rows = reps["jpeg95"]["condition"]["rows"]["model"]
        lines.append(f"| {name} | " + " | ".join(_fmt(rows[g]) for g in gens) + " |")
    base = next(iter(all_reports.values()))["jpeg95"]["condition"]["rows"]["baseline"]
    lines.append("| noise baseline | " + " | ".join(_fmt(base[g]) for g in gens) + " |")
    for cond in ("stored", "jpeg95"):
        lines += ["", f"## FPR at the calibrated threshold per real source ({cond})", ""]
        for name, reps in all_reports.items():
            by = reps[cond]["condition"]["fpr_by_source"]
            lines.append(f"- {name}: " + ", ".join(f"{k} {v['fpr']:.0%} (n={v['n']})" for k, v in by.items()))
    for cond in ("stored", "jpeg95"):
        per = {n: per_generator([r], cond) for n, r in all_reports.items()}
        lines += ["", f"## Leave-one-generator-out choice of candidate ({cond})", ""] + logo(per)
    # The noise rows of the comparisons below: TrSOR's sigma as they measured it, before skip_clipped (the clipped
    # section shows both).
    noise = {c: all_reports[NOISE_FROM][c]["condition"]["rows"]["baseline"]["mean"] for c in ("stored", "jpeg95")}
    clipped_noise = {c: all_reports[SHIPPED][c]["condition"]["rows"]["baseline"]["mean"] for c in ("stored", "jpeg95")}
    lines += low_resolution() + scaled(noise) + aggregated(noise) + fluct_statistics(noise) + novelty(noise)
    lines += clipped_rules(noise, clipped_noise)
    lines += ensembled(noise) + seeded(noise)
    lines += ["", "## Reproduce", ""]
    for name, (run, train) in CANDIDATES.items():
        if name in all_reports:
            lines.append(f"- **{name}**: `{train}`; rows: `{eval_command(run, 'jpeg95')}` (and the other conditions: "
                         "`--reencode none|png|jpeg:95`, `--perturb jpeg:75|resize:0.5`)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="candidates to (re)compute; others are read from the cache")
    ap.add_argument("--fresh", action="store_true", help="recompute cached reports of the candidates computed")
    args = ap.parse_args()
    all_reports = {}
    for name, (run, _) in CANDIDATES.items():
        cached = (OUT / name).is_dir()
        if args.only is not None and name not in args.only and not cached:
            continue
        print(f"{name} ...", flush=True)
        all_reports[name] = reports(name, run, args.fresh and (args.only is None or name in args.only))
    (ROOT / "benchmarks" / "DETECTION.md").write_text(markdown(all_reports))
    print((ROOT / "benchmarks" / "DETECTION.md").read_text())


if __name__ == "__main__":
    main()
