"""Scale as an axis: does fusing a model's scores at several scales beat the shipped 1/2 scale alone?

    python benchmarks/scales.py [--model RUN ...] [--out benchmarks/results/scales.json]

Every dev image (bottom 16 rows trimmed; re-encoded first under the JPEG q95 condition) is scored by each model's
weights (default: the shipped ones) at 1/1 (as given), 1/2 (the shipped canonical), 1/4, 1/8 and 1/16 of its size
(Pillow bicubic, `resize:F`; with --pyramid box, 1/4 and below are box averages of the 1/2 view, as the detector's
pyramid levels), wherever one 64-px crop still fits: the crop aggregate and TrSOR's noise score at each scale. Each
part is standardised on the model's held-out real photos (train.json) at the same scale; a candidate's score is the
mean of the z-scores of the parts the image has. "1/2" (crops and noise at 1/2) ranks images as a model's fused
score does. Reported per model, as stored and with both classes re-encoded as JPEG q95: mean AUROC over generators
with 90% intervals, each candidate's paired difference to "1/2" on the same resampled images, and
leave-one-generator-out: the candidate with the best mean on the other generators, scored on the one left out,
against "1/2". With several models (seeds), their mean and range. Generated images only evaluate here; nothing is
fit on them.
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
from slsp.metrics import auroc, bootstrap, leave_one_out
from slsp.progress import bar
from slsp.pyramid import box_level
from slsp.scoring import noise_score
from slsp.transforms import Transform

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRIM = 16
SCALES = (1.0, 0.5, 0.25, 0.125, 0.0625)
BASE = "1/2"
CANDIDATES = {  # name -> parts: (kind, scale)
    BASE: (("crops", 0.5), ("noise", 0.5)),
    "1/2 + crops 1/4": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25)),
    "1/2 + crops, noise 1/4": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25), ("noise", 0.25)),
    "1/2 + crops 1/4, 1/8": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25), ("crops", 0.125)),
    "1/2 + crops 1/4, 1/8, 1/16": (("crops", 0.5), ("noise", 0.5), ("crops", 0.25), ("crops", 0.125),
                                   ("crops", 0.0625)),
    "1/2 + crops 1/1, 1/4, 1/8": (("crops", 0.5), ("noise", 0.5), ("crops", 1.0), ("crops", 0.25), ("crops", 0.125)),
    "crops 1/2, 1/4 (no noise)": (("crops", 0.5), ("crops", 0.25)),
}
CONDITIONS = {"stored": "none", "jpeg95": "jpeg:95"}


def view(img: np.ndarray, s: float, pyramid: str) -> np.ndarray:
    """The image at scale s: Pillow bicubic from the image, or (box) the detector's pyramid level of its 1/2 view."""
    if s == 1.0:
        return img
    if pyramid == "bicubic" or s == 0.5:
        return Transform(f"resize:{s}")(img)
    return box_level(Transform("resize:0.5")(img), round(0.5 / s))


@torch.inference_mode()
def parts(det, img: np.ndarray, pyramid: str = "bicubic") -> dict[tuple[str, float], float]:
    """The crop aggregate and the noise score at each scale where one crop fits (NaN elsewhere)."""
    out = {}
    for s in SCALES:
        small = view(img, s, pyramid)
        if min(small.shape[:2]) < det.min_side:
            out[("crops", s)] = out[("noise", s)] = float("nan")
            continue
        d = det.detect(small)
        out[("crops", s)] = float(det.scorer.crop_aggregate(d.crop_scores, d.valid))
        out[("noise", s)] = noise_score(d.sigma)
    return out


def table(files: list[Path], det, reencode: Transform, pb, task, trim: int, pyramid: str) -> list[dict]:
    rows = []
    for f in files:
        img = load(f)
        # re-encoded, then scaled
        rows.append(parts(det, reencode(img[: img.shape[0] - trim] if trim else img), pyramid))
        pb.advance(task)
    return rows


def scores(rows: list[dict], stats: dict, parts_: tuple) -> np.ndarray:
    z = np.array([[(r[p] - stats[p][0]) / stats[p][1] for p in parts_] for r in rows])
    return np.nanmean(z, axis=1)


def logo(per_generator: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per left-out generator: the candidate with the best mean AUROC on the others, and its AUROC minus BASE's on
    the one left out."""
    return {g: {"chosen": pick, "minus_base": per_generator[pick][g] - per_generator[BASE][g]}
            for g, pick in leave_one_out(per_generator).items()}


def measure(run: Path | None, pb, pyramid: str) -> dict:
    """One model: every candidate under every condition."""
    model = det_io.load(run)
    # The weights on the pixels as given: no canonical step, no fusion (the parts are fused here).
    det = model.with_config(dataclasses.replace(model.cfg, canonical="none", fusion=FusionConfig(),
                                                low_resolution=LowResolutionConfig(),
                                                trsor=dataclasses.replace(model.cfg.trsor, levels=1)))
    info = json.loads(((run or det_io.default_dir()) / "train.json").read_text())
    held = [Path(p) if Path(p).is_absolute() else ROOT / p for p in info["holdout_images"]]
    reals, gens = collect([DATA / "real" / "dev"]), generators(DATA / "fake" / "dev")
    result = {}
    for cond, spec in CONDITIONS.items():
        t = Transform(spec)
        task = pb.add_task(f"{run or 'shipped'} {cond}", total=len(held) + len(reals) + sum(map(len, gens.values())),
                           info="")
        cal = table(held, det, t, pb, task, 0, pyramid)
        stats = {p: (np.nanmean([r[p] for r in cal]), np.nanstd([r[p] for r in cal])) for p in cal[0]}
        real = table(reals, det, t, pb, task, TRIM, pyramid)
        fake = {g: table(fs, det, t, pb, task, TRIM, pyramid) for g, fs in gens.items()}
        rs = {c: scores(real, stats, p) for c, p in CANDIDATES.items()}
        fs = {g: {c: scores(rows, stats, p) for c, p in CANDIDATES.items()} for g, rows in fake.items()}
        boot = bootstrap(rs, fs)
        per = {c: {g: auroc(rs[c], fs[g][c]) for g in gens} for c in CANDIDATES}
        result[cond] = {"candidates": {c: {"auroc": float(np.mean(list(per[c].values()))),
                                           "interval": boot["auroc"][c]["mean"], "per_generator": per[c],
                                           "minus_base": None if c == BASE else boot["diff"][f"{c}-{BASE}"]}
                                       for c in CANDIDATES},
                        "logo": logo(per)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, action="append", help="run folder (repeatable; default: the shipped model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scales.json")
    ap.add_argument("--pyramid", choices=("bicubic", "box"), default="bicubic",
                    help="1/4 and 1/8 by Pillow bicubic from the image, or by box averages of its 1/2 view")
    args = ap.parse_args()
    runs = args.model or [None]
    with bar(False) as pb:
        results = {str(r or "shipped"): measure(r, pb, args.pyramid) for r in runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| model | candidate | " + " | ".join(f"{c} [90%] | minus {BASE} [90%]" for c in CONDITIONS) + " |")
    print("|---|---|" + "---|---|" * len(CONDITIONS))
    for name, res in results.items():
        for c in CANDIDATES:
            cells = []
            for cond in CONDITIONS:
                r = res[cond]["candidates"][c]
                d, gain = r["minus_base"], r["auroc"] - res[cond]["candidates"][BASE]["auroc"]
                cells += [f"{r['auroc']:.3f} [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]",
                          "" if d is None else f"{gain:+.3f} [{d[0]:+.3f}, {d[1]:+.3f}]"]
            print(f"| {name} | {c} | " + " | ".join(cells) + " |")
    print("\n| candidate | " + " | ".join(f"{c}: mean (min-max) over models | minus {BASE}" for c in CONDITIONS) + " |")
    print("|---|" + "---|---|" * len(CONDITIONS))
    for c in CANDIDATES:
        cells = []
        for cond in CONDITIONS:
            a = [res[cond]["candidates"][c]["auroc"] for res in results.values()]
            d = [x - res[cond]["candidates"][BASE]["auroc"] for x, res in zip(a, results.values())]
            cells += [f"{np.mean(a):.3f} ({min(a):.3f}-{max(a):.3f})",
                      f"{np.mean(d):+.3f} ({min(d):+.3f} to {max(d):+.3f})"]
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("\nleave-one-generator-out (chosen on the other generators; AUROC minus 1/2 on the one left out):")
    for name, res in results.items():
        for cond in CONDITIONS:
            lo = res[cond]["logo"]
            mean = np.mean([v["minus_base"] for v in lo.values()])
            picks = ", ".join(f"{g}: {v['chosen']} {v['minus_base']:+.3f}" for g, v in lo.items())
            print(f"{name} {cond}: mean {mean:+.3f}; {picks}")


if __name__ == "__main__":
    main()
