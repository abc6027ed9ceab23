"""Low-resolution scoring on the dev split: both classes shrunk to thumbnails, scored exactly as shipped.

    python benchmarks/detection/low_resolution.py [--model RUN] [--out benchmarks/results/low-resolution.json]

Every dev image (the bottom 16 rows trimmed, as in DETECTION.md) is downscaled so its short side is S (`thumb:S`,
Pillow bicubic, for each S of the model's low-resolution calibration sides), so the detector scores it at native
scale under its low-resolution fusion and threshold; the "original" row is the full-size path on the same images.
Each condition is reported as stored and with both classes re-encoded as JPEG q95 after the shrink: mean AUROC over
generators with its 90% interval, the noise baseline on the same pixels, their paired difference, and the FPR and
TPR at the calibrated threshold (pooled and the worst real source with 10 or more images).
Generated images only evaluate here; nothing is fit on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slsp import detector as det_io
from slsp.calibrate import low_resolution_sides
from slsp.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
TRIM = 16


def rows(report: dict, reencode: str) -> list[dict]:
    out = []
    for cond, c in report["conditions"].items():
        model, base = c["rows"]["model"]["mean"], c["rows"]["baseline"]["mean"]
        paired = c["paired"]["model-baseline"]
        sources = [v["fpr"] for v in c["fpr_by_source"].values() if v["n"] >= 10]
        out.append({
            "condition": cond, "reencode": reencode, "n_real": c["n_real"],
            "auroc": model["auroc"], "auroc_lo": model["auroc_lo"], "auroc_hi": model["auroc_hi"],
            "worst": c["rows"]["model"]["worst"]["auroc"], "baseline": base["auroc"],
            "diff": paired["diff"], "diff_lo": paired["lo"], "diff_hi": paired["hi"],
            "fpr": model["fpr@thr"], "worst_source_fpr": max(sources) if sources else None, "tpr": model["tpr@thr"],
        })
    return out


def markdown(table: list[dict]) -> str:
    lines = ["| condition | both classes | reals | mean AUROC [90%] | worst generator | noise baseline | "
             "model - baseline [90%] | FPR at thr (worst source, n >= 10) | TPR at thr |", "|---" * 9 + "|"]
    for r in table:
        worst = "n/a" if r["worst_source_fpr"] is None else f"{r['worst_source_fpr']:.1%}"
        lines.append(
            f"| {r['condition']} | {r['reencode']} | {r['n_real']} | {r['auroc']:.3f} [{r['auroc_lo']:.2f}, "
            f"{r['auroc_hi']:.2f}] | {r['worst']:.3f} | {r['baseline']:.3f} | {r['diff']:+.3f} [{r['diff_lo']:+.3f}, "
            f"{r['diff_hi']:+.3f}] | {r['fpr']:.1%} ({worst}) | {r['tpr']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="run folder (default: the shipped model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "low-resolution.json")
    args = ap.parse_args()
    det = det_io.load(args.model)
    if not det.cfg.low_resolution.enabled:
        raise SystemExit("this model has no low-resolution calibration (slsp calibrate adds one)")
    thumbs = [f"thumb:{s}" for s in low_resolution_sides(det)]
    table = []
    for reencode in ("none", "jpeg:95"):
        report = evaluate(DATA / "real" / "dev", DATA / "fake" / "dev", args.model, reencode=reencode,
                          perturb=thumbs, trim_bottom=TRIM, quiet=True)
        table += rows(report, reencode)
    low = det.cfg.low_resolution
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model or "default"), "threshold": det.cfg.threshold,
                                    "low_resolution_threshold": low.threshold, "rows": table}, indent=2) + "\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
