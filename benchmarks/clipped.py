"""Clipped pixels in TrSOR: which rule for leaving them out, over seeds, against keeping them (no retraining).

    python benchmarks/clipped.py [--run RUN ...] [--out benchmarks/results/clipped.json]
    python benchmarks/clipped.py --coverage [--out benchmarks/results/clipped-coverage.json]

A black or white region has no fluctuation to judge: clipping flattened it, in a photo as in a generated image,
yet TrSOR finds it the most over-smooth part of the image and scores its crops. Each rule below leaves the patches
holding a "clipped" pixel out of the over-smooth selection and the noise estimate (`TrsorConfig.skip_clipped`; the
alternatives swap `slsp.trsor.unclipped_patches` for another definition of clipped, read off the image itself):
- "keep": nothing left out (the shipped TrSOR before it),
- "all channels": 0 or 255 in all three channels (the library's rule),
- "any channel": 0 or 255 in any channel (a saturated red also counts),
- "all channels within 2": <= 2 or >= 253 in all three.

For each run (default: the shipped recipe's five seeds) and rule, the fusion and threshold are refit on the run's
held-out real photos (`calibrate_fused`, as `slsp calibrate --skip-clipped` does), then every dev image (bottom 16
rows trimmed; as stored and both classes re-encoded as JPEG q95) is scored. Reported per rule: the seed-mean AUROC
over generators (min-max), the worst generator, dev FPR and TPR at the threshold, the paired difference to "keep"
(`seeds.paired`, 90% interval) and leave-one-generator-out among the rules. Generated images only evaluate here.

--coverage measures the problem instead: with clipped pixels kept (the shipped model's weights and TrSOR before
`skip_clipped`), the share of each dev image's Phi that is clipped, the share of its scored level-0 crops' pixels,
and the share of images with a crop more than half clipped; for the reals and each generator, as stored.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from seeds import paired
from torch import Tensor

from slsp import detector as det_io
from slsp import trsor
from slsp.calibrate import calibrate_fused
from slsp.errors import ImageError
from slsp.evaluate import generators
from slsp.imaging import collect, load
from slsp.metrics import auroc, leave_one_out
from slsp.progress import bar
from slsp.transforms import Transform

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRIM = 16
CONDITIONS = {"stored": "none", "jpeg95": "jpeg:95"}
RUNS = ["slsp/default", "runs/kurtosis/sparse-resample-half-s1", "runs/kurtosis/sparse-resample-half-s2",
        "runs/shipped-recipe/s3", "runs/shipped-recipe/s4"]
BASE = "keep"


def _patches(clipped: Tensor, p: int) -> Tensor:
    return F.max_pool2d(clipped.to(torch.float32)[None, None], p, stride=1)[0, 0] < 0.5


def any_channel(image: Tensor, p: int) -> Tensor:
    return _patches(((image == 0) | (image == 255)).any(dim=2), p)


def within_2(image: Tensor, p: int) -> Tensor:
    return _patches((image <= 2).all(dim=2) | (image >= 253).all(dim=2), p)


# rule -> the patches it keeps, from the uint8 image (None: keep all, as without skip_clipped; "all channels" is the
# library's own rule, which reads the same off TrSOR's channels)
RULES: dict[str, Callable[[Tensor, int], Tensor] | None] = {
    BASE: None, "all channels": None, "any channel": any_channel, "all channels within 2": within_2}


@contextlib.contextmanager
def rule_in_trsor(rule: str) -> Iterator[None]:
    """TrSOR with `rule`'s patches kept: the image each TrSOR call gets is handed to the rule in place of the
    library's `unclipped_patches` (which sees only TrSOR's channels)."""
    fn = RULES[rule]
    if fn is None:
        yield
        return
    library, forward, image = trsor.unclipped_patches, trsor.TrSOR.forward, {}

    def seen(self: trsor.TrSOR, img: Tensor) -> trsor.TrsorOutput:
        image["now"] = img
        return forward(self, img)

    trsor.TrSOR.forward, trsor.unclipped_patches = seen, lambda y, p: fn(image["now"], p)
    try:
        yield
    finally:
        trsor.TrSOR.forward, trsor.unclipped_patches = forward, library


@torch.inference_mode()
def measure(run: Path, rule: str, pb) -> dict:
    """One run under one rule: its calibration on the held-out photos, then the dev scores per condition."""
    base = det_io.load(run)
    det = base.with_config(dataclasses.replace(base.cfg, trsor=dataclasses.replace(
        base.cfg.trsor, skip_clipped=rule != BASE)))
    with rule_in_trsor(rule):
        info = json.loads((run / "train.json").read_text())
        held = [Path(p) if Path(p).is_absolute() else ROOT / p for p in info["holdout_images"]]
        cal = calibrate_fused(det, held, base.cfg.target_fpr, quiet=True, kurtosis=base.cfg.fusion.kurtosis)
        reals, gens = collect([DATA / "real" / "dev"]), generators(DATA / "fake" / "dev")
        out = {"threshold": cal.threshold}
        for cond, spec in CONDITIONS.items():
            t = Transform(spec)
            task = pb.add_task(f"{run} {rule} {cond}", total=len(reals) + sum(map(len, gens.values())), info="")

            def scores(files: list[Path]) -> list[float]:
                res = []
                for f in files:
                    img = load(f)
                    try:
                        res.append(float(cal.detector.detect(t(img[: img.shape[0] - TRIM])).score))
                    except ImageError:  # a rule that leaves no patch: refused as flat, as the library would
                        res.append(float("nan"))
                    pb.advance(task)
                return res

            out[cond] = {"real": scores(reals), "fake": {g: scores(fs) for g, fs in gens.items()}}
        return out


@torch.inference_mode()
def coverage() -> dict:
    """How much of Phi and of the scored crops is clipped ("all channels"), per dev class, as stored."""
    base = det_io.load()
    det = base.with_config(dataclasses.replace(base.cfg, trsor=dataclasses.replace(base.cfg.trsor, skip_clipped=False)))
    k, c = det.cfg.trsor.crops, det.cfg.trsor.crop

    def one(f: Path) -> tuple[float, float, bool]:
        img = load(f)
        d, phi = det.analyze(img[: img.shape[0] - TRIM])
        pixels = det.canonical(img[: img.shape[0] - TRIM])[0]
        clipped = (pixels == 0).all(axis=2) | (pixels == 255).all(axis=2)
        crops = [clipped[y : y + c, x : x + c].mean() for (y, x), v in zip(d.positions[:k].numpy(), d.valid[:k]) if v]
        return float(clipped[phi > 0.5].mean()) if (phi > 0.5).any() else 0.0, float(np.mean(crops)), max(crops) > 0.5

    groups = {"real": collect([DATA / "real" / "dev"]), **generators(DATA / "fake" / "dev")}
    out = {}
    for name, files in groups.items():
        rows = np.array([one(f) for f in files], dtype=np.float64)
        out[name] = {"images": len(files), "phi_clipped": float(rows[:, 0].mean()),
                     "crop_pixels_clipped": float(rows[:, 1].mean()), "images_with_a_half_clipped_crop":
                     float(rows[:, 2].mean())}
    return out


def summary(results: dict[str, dict[str, dict]]) -> dict:
    """Per condition and rule: seed means, paired differences to BASE, and leave-one-generator-out, on the images
    every rule scored (an image some rule refused as flat is left out of all, and counted)."""
    out = {}
    for cond in CONDITIONS:
        per_rule, rows = {}, {}
        every = [res[rule][cond] for res in results.values() for rule in RULES]
        keep = {"real": ~np.any([np.isnan(e["real"]) for e in every], axis=0),
                "fake": {g: ~np.any([np.isnan(e["fake"][g]) for e in every], axis=0) for g in every[0]["fake"]}}
        refused = int((~keep["real"]).sum() + sum((~k).sum() for k in keep["fake"].values()))
        for rule in RULES:
            runs = [{"real": np.array(r[rule][cond]["real"])[keep["real"]],
                     "fake": {g: np.array(v)[keep["fake"][g]] for g, v in r[rule][cond]["fake"].items()},
                     "threshold": r[rule]["threshold"]} for r in results.values()]
            per = [{g: auroc(s["real"], v) for g, v in s["fake"].items()} for s in runs]
            means = [float(np.mean(list(p.values()))) for p in per]
            per_rule[rule] = {g: float(np.mean([p[g] for p in per])) for g in per[0]}
            rows[rule] = {
                "mean": float(np.mean(means)), "min": min(means), "max": max(means),
                "worst": float(np.mean([min(p.values()) for p in per])),
                "per_generator": per_rule[rule],
                "dev_fpr": float(np.mean([np.mean(s["real"] >= s["threshold"]) for s in runs])),
                "tpr": float(np.mean([np.mean(np.concatenate(list(s["fake"].values())) >= s["threshold"])
                                      for s in runs])),
                "runs": runs,
            }
        for rule in RULES:
            rows[rule]["minus_keep"] = None if rule == BASE else paired(rows[BASE]["runs"], rows[rule]["runs"])["mean"]
        for r in rows.values():
            del r["runs"]
        logo = {g: {"chosen": pick, "minus_keep": per_rule[pick][g] - per_rule[BASE][g]}
                for g, pick in leave_one_out(per_rule).items()}
        out[cond] = {"refused_by_some_rule": refused, "rules": rows, "logo": logo}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append", help="run folder (repeatable; default: the shipped recipe's "
                    "five seeds)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/clipped.json (or clipped-coverage.json)")
    ap.add_argument("--coverage", action="store_true", help="measure how much of Phi and the crops is clipped")
    args = ap.parse_args()
    results_dir = ROOT / "benchmarks" / "results"
    if args.coverage:
        cov = coverage()
        out = args.out or results_dir / "clipped-coverage.json"
        out.write_text(json.dumps(cov, indent=1) + "\n")
        print("| dev class | images | Phi clipped | scored crop pixels clipped | images with a crop > 1/2 clipped |")
        print("|---|---|---|---|---|")
        for name, r in cov.items():
            print(f"| {name} | {r['images']} | {r['phi_clipped']:.1%} | {r['crop_pixels_clipped']:.1%} | "
                  f"{r['images_with_a_half_clipped_crop']:.0%} |")
        return
    args.out = args.out or results_dir / "clipped.json"
    runs = args.run or [ROOT / r for r in RUNS]
    with bar(False) as pb:
        results = {str(r): {rule: measure(r, rule, pb) for rule in RULES} for r in runs}
    res = {"runs": [str(r) for r in runs], "summary": summary(results), "scores": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"| rule | condition | mean AUROC ({len(runs)} runs) | worst generator | minus keep [90%] | LDM | "
          "dev FPR / TPR |")
    print("|---|---|---|---|---|---|---|")
    for cond, s in res["summary"].items():
        for rule, r in s["rules"].items():
            d = r["minus_keep"]
            diff = "" if d is None else f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            print(f"| {rule} | {cond} | {r['mean']:.3f} ({r['min']:.3f}-{r['max']:.3f}) | {r['worst']:.3f} | {diff} | "
                  f"{r['per_generator']['ldm-txt2img']:.3f} | {r['dev_fpr']:.1%} / {r['tpr']:.2f} |")
    for cond, s in res["summary"].items():
        print(f"{cond}: {s['refused_by_some_rule']} images refused as flat by some rule, left out of every rule")
    for cond, s in res["summary"].items():
        picks = ", ".join(f"{g}: {v['chosen']} {v['minus_keep']:+.3f}" for g, v in s["logo"].items())
        print(f"leave one generator out, {cond}: {picks}")


if __name__ == "__main__":
    main()
