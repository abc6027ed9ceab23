"""`slsp eval`: per-generator metrics for the model and a training-free baseline on the same images.

Bias controls: `reencode` re-encodes both classes identically (PNG, or JPEG at quality Q) before scoring;
`trim_bottom` removes the same number of bottom rows from every image (the DALL-E 2 watermark bar);
`perturbations` add robustness conditions (JPEG re-compression, down-scaling), again applied to both classes.
The baseline scores each image by its TrSOR noise estimate alone (lower noise = more synthetic).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from slsp import detector as det_io
from slsp.errors import ImageError, SlspError
from slsp.imaging import IMAGE_SUFFIXES, collect, load
from slsp.metrics import bootstrap, roc, summary
from slsp.progress import bar
from slsp.scoring import noise_score
from slsp.transforms import Transform


def generators(fake_dir: Path) -> dict[str, list[Path]]:
    """Subfolders of fake_dir are generators; images directly inside form one named after the folder."""
    groups = {d.name: collect([d]) for d in sorted(p for p in fake_dir.iterdir() if p.is_dir())}
    direct = sorted(f for f in fake_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if direct:
        groups[fake_dir.name] = direct
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise SlspError(f"no fake images under {fake_dir}")
    return groups


def source(path: str | Path) -> str:
    """A real photo's source: its file-name prefix before the first '_' (kodak24, bsd100, exif-samples, ...)."""
    return Path(path).name.split("_", 1)[0]


def _score_all(det, files: list[Path], chains: dict[str, Callable], trim: int, pb, task) -> dict[str, dict]:
    """Per condition: the detector's score ("model") and verdict, its crop aggregate before the noise fusion
    ("crops"), and the noise baseline; an image that fails is reported and skipped."""
    out: dict[str, dict] = {name: {"model": [], "crops": [], "baseline": [], "verdict": [], "files": []}
                            for name in chains}
    for f in files:
        try:
            img = load(f, max_pixels=det.cfg.max_pixels)
            img = img[: img.shape[0] - trim] if trim else img
        except ImageError as e:
            pb.console.print(f"[yellow]skipped[/] {e}")
            pb.advance(task, len(chains))
            continue
        for name, fn in chains.items():
            try:
                d = det.detect(fn(img), str(f))
            except ImageError as e:
                pb.console.print(f"[yellow]skipped under {name}[/] {e}")
            else:
                out[name]["model"].append(float(d.score))
                out[name]["verdict"].append(bool(d.verdict))  # by the low-resolution threshold where it applies
                out[name]["crops"].append(float(det.scorer.crop_aggregate(d.crop_scores, d.valid)))
                out[name]["baseline"].append(noise_score(d.sigma))
                out[name]["files"].append(str(f))
            pb.advance(task)
    return {k: {m: np.asarray(v) if m != "files" else v for m, v in d.items()} for k, d in out.items()}


def evaluate(
    real_dir: Path,
    fake_dir: Path,
    run: Path | None = None,
    reencode: str = "none",
    perturb: list[str] | None = None,
    trim_bottom: int = 0,
    quiet: bool = False,
    score: str | None = None,
    aggregate: str | None = None,
) -> dict:
    det = det_io.load(run)
    if score or aggregate:  # same weights, another per-crop score or aggregation (METHOD.md 3 alternatives)
        det = det.with_config(dataclasses.replace(
            det.cfg, model=dataclasses.replace(det.cfg.model, score=score or det.cfg.model.score),
            aggregate=aggregate or det.cfg.aggregate))
    base = Transform(reencode)
    conds = [("original", base)] + [(p, Transform(p)) for p in perturb or []]
    # A perturbation is applied first, then the same re-encoding as the original condition.
    chains = {name: (lambda img, t=t: base(t(img))) if name != "original" else base for name, t in conds}
    reals = collect([real_dir])
    gens = generators(fake_dir)
    n = (len(reals) + sum(map(len, gens.values()))) * len(conds)
    with bar(quiet) as pb:
        task = pb.add_task("eval", total=n, info="")
        real_scores = _score_all(det, reals, chains, trim_bottom, pb, task)
        fake_scores = {g: _score_all(det, fs, chains, trim_bottom, pb, task) for g, fs in gens.items()}
    thr = None if score or aggregate else det.cfg.threshold  # calibrated for the configured score only
    # "crops" differs from "model" only when the score fuses the noise level: then both parts are reported.
    methods = ("model", "crops", "baseline") if det.cfg.fusion.enabled else ("model", "baseline")
    conditions = {}
    for name, _ in conds:
        rows = {}
        for method in methods:
            r = real_scores[name][method]
            if r.size == 0:
                raise SlspError(f"no real image could be scored under {name}")
            per = {
                g: {"n": int(s[name][method].size), **summary(r, s[name][method], None),
                    **(_rates(real_scores[name]["verdict"], s[name]["verdict"]) if method == "model" and thr else {})}
                for g, s in fake_scores.items()
                if s[name][method].size
            }
            keys = [k for k in next(iter(per.values())) if k != "n"]
            per["mean"] = {
                "n": sum(v["n"] for v in per.values()),
                **{k: float(np.mean([v[k] for v in per.values()])) for k in keys},
            }
            gen_rows = [v for g, v in per.items() if g != "mean"]
            per["worst"] = {
                "n": 0,
                **{k: float(min(v[k] for v in gen_rows)) if k != "fpr@thr" else per["mean"][k] for k in keys},
            }
            rows[method] = per
        boot = bootstrap({m: real_scores[name][m] for m in methods},
                         {g: {m: s[name][m] for m in methods} for g, s in fake_scores.items() if s[name]["model"].size})
        for method in methods:
            for g, (lo, hi) in boot["auroc"][method].items():
                rows[method][g]["auroc_lo"], rows[method][g]["auroc_hi"] = lo, hi
        # Each score against the noise baseline, and the fused score against its crop part, paired on the images.
        pairs = [(m, "baseline") for m in methods if m != "baseline"] + [("model", "crops")] * ("crops" in methods)
        paired = {f"{a}-{b}": {"diff": rows[a]["mean"]["auroc"] - rows[b]["mean"]["auroc"],
                               "lo": boot["diff"][f"{a}-{b}"][0], "hi": boot["diff"][f"{a}-{b}"][1]} for a, b in pairs}
        conditions[name] = {"n_real": int(real_scores[name]["model"].size), "rows": rows, "paired": paired,
                            "fpr_by_source": _fpr_by_source(real_scores[name], thr)}
    return {
        "model": str(run) if run else "default",
        "score": det.cfg.model.score,
        "aggregate": det.cfg.aggregate,
        "threshold": thr,
        "low_resolution_threshold": det.cfg.low_resolution.threshold if thr and det.cfg.low_resolution.enabled
        else None,
        "reencode": reencode,
        "trim_bottom": trim_bottom,
        "conditions": conditions,
        "scores": {"real": real_scores, "fake": fake_scores},
    }


def _rates(real_verdicts: np.ndarray, fake_verdicts: np.ndarray) -> dict[str, float]:
    """TPR and FPR of the detector's own verdicts: the calibrated threshold, or the low-resolution one for an image
    scored at native scale."""
    return {"tpr@thr": float(np.mean(fake_verdicts)), "fpr@thr": float(np.mean(real_verdicts))}


def _fpr_by_source(real: dict, thr: float | None) -> dict[str, dict[str, float]]:
    """The detector's false-positive rate on each real source (file-name prefix)."""
    if thr is None:
        return {}
    by: dict[str, list[bool]] = {}
    for f, v in zip(real["files"], real["verdict"]):
        by.setdefault(source(f), []).append(bool(v))
    return {k: {"n": len(v), "fpr": float(np.mean(v))} for k, v in sorted(by.items())}


def plot_roc(report: dict, path: Path, condition: str = "original") -> None:
    """ROC curves (model solid, baseline dashed) per generator, drawn with Pillow."""
    size, m = 520, 50
    img = Image.new("RGB", (size + 2 * m, size + 2 * m), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([m, m, m + size, m + size], outline="black")
    d.line([m, m + size, m + size, m], fill=(200, 200, 200))
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    real = report["scores"]["real"][condition]
    for i, (g, s) in enumerate(report["scores"]["fake"].items()):
        col = colours[i % len(colours)]
        for method, dash in (("model", False), ("baseline", True)):
            fpr, tpr = roc(real[method], s[condition][method])
            pts = [(m + f * size, m + size - t * size) for f, t in zip(fpr, tpr)]
            for j, (a, b) in enumerate(zip(pts, pts[1:])):
                if not dash or j % 2 == 0:
                    d.line([a, b], fill=col, width=2)
        d.text((m + size - 190, m + size - 20 - 14 * (i + 1)), f"{g}", fill=col)
    d.text((m, m - 30), f"ROC ({condition}; solid: model, dashed: noise baseline)", fill="black")
    d.text((m + size // 2 - 10, m + size + 10), "FPR", fill="black")
    d.text((8, m + size // 2), "TPR", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def table(report: dict) -> str:
    cols = ["auroc", "auroc_lo", "auroc_hi", "ap", "tpr@5%fpr", "tpr@thr", "fpr@thr"]
    shown = "n/a (score overridden)" if report["threshold"] is None else f"{report['threshold']:.4f}"
    lines = [f"threshold {shown}  score {report['score']}  aggregate {report['aggregate']}  "
             f"reencode {report['reencode']}  trim_bottom {report['trim_bottom']}"]
    head = f"{'condition':<14}{'method':<10}{'generator':<26}{'n':>4} " + " ".join(f"{c:>10}" for c in cols)
    lines.append(head)
    for cond, c in report["conditions"].items():
        for method, rows in c["rows"].items():
            for g, r in rows.items():
                vals = " ".join(f"{r[k]:>10.3f}" if k in r else f"{'-':>10}" for k in cols)
                lines.append(f"{cond:<14}{method:<10}{g:<26}{r['n']:>4} {vals}")
        for k, p in c["paired"].items():
            lines.append(
                f"{cond:<14}paired mean AUROC {k}: {p['diff']:+.3f}  90% interval [{p['lo']:+.3f}, {p['hi']:+.3f}]"
            )
        if c["fpr_by_source"]:
            lines.append(f"{cond:<14}FPR at threshold by real source: " + ", ".join(
                f"{k} {v['fpr']:.1%} (n={v['n']})" for k, v in c["fpr_by_source"].items()))
    return "\n".join(lines)
