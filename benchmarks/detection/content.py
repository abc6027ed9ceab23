"""What limits the weakest generator: painted content or the generator? The dev fakes split by their prompt.

    python benchmarks/detection/content.py [--model RUN ...] [--out benchmarks/results/content.json]
    python benchmarks/detection/content.py --recipes   # every seeded recipe of DETECTION.md whose runs are here

Each model (default: the shipped one) scores the dev split as `slsp eval` does (bottom 16 rows trimmed; as stored and
with both classes re-encoded as JPEG q95). Each generator's fakes are split by the prompt their file name carries:
"painted" (it asks for a painting: "painting" or "oil" in the name) and "other". Each part is scored against all
dev real photos: AUROC of the model's score and of the noise baseline (TrSOR's sigma alone), averaged over the
models, with a 90% interval from a bootstrap that resamples the reals and each part's fakes (every model re-scored
on the same draw); and the share caught at the calibrated threshold. Generated images only evaluate here; nothing
is fit on them, and the split is read from file names only to describe the result.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from detection import CANDIDATES, SEEDED
from seeds import CONDITIONS, DATA, ROOT, TRIM

from slsp.evaluate import evaluate
from slsp.metrics import auroc

PAINTED = re.compile(r"painting|oil", re.IGNORECASE)
METHODS = ("model", "baseline")


def part(path: str) -> str:
    """The prompt class of a generated image's file name."""
    return "painted" if PAINTED.search(Path(path).name) else "other"


def split(run: Path | None, reencode: str) -> dict:
    """One model's per-image scores: the reals', and each (generator, prompt class)'s, with its threshold verdicts."""
    r = evaluate(DATA / "real" / "dev", DATA / "fake" / "dev", run, reencode=reencode, trim_bottom=TRIM, quiet=True)
    real = r["scores"]["real"]["original"]
    out = {"real": {m: real[m] for m in METHODS}, "fake": {}}
    for g, s in r["scores"]["fake"].items():
        s = s["original"]
        for p in ("painted", "other"):
            i = np.array([part(f) == p for f in s["files"]], bool)
            if i.any():
                out["fake"][(g, p)] = {**{m: s[m][i] for m in METHODS}, "verdict": s["verdict"][i]}
    return out


def summarise(per: list[dict], n: int = 1000, seed: int = 0) -> dict:
    """Seed-mean AUROC of each (generator, prompt class) and method, with 90% intervals (same draw for all models)."""
    rng = np.random.default_rng(seed)
    nr = len(per[0]["real"]["model"])
    rows = {}
    for key, f0 in per[0]["fake"].items():
        nf = len(f0["model"])
        row = {"n": nf, "caught at thr": float(np.mean([p["fake"][key]["verdict"].mean() for p in per]))}
        for m in METHODS:
            def mean_auc(ri: np.ndarray, fi: np.ndarray) -> float:
                return float(np.mean([auroc(p["real"][m][ri], p["fake"][key][m][fi]) for p in per]))
            draws = [mean_auc(rng.integers(nr, size=nr), rng.integers(nf, size=nf)) for _ in range(n)]
            row[m] = {"auroc": mean_auc(np.arange(nr), np.arange(nf)), "lo": float(np.percentile(draws, 5)),
                      "hi": float(np.percentile(draws, 95))}
        rows["/".join(key)] = row
    return rows


def report(models: list[Path | None]) -> dict:
    """Per condition, the split's rows over `models` (None: the shipped model)."""
    return {cond: summarise([split(m, reencode) for m in models]) for cond, reencode in CONDITIONS.items()}


def recipes() -> dict[str, list[Path | None]]:
    """The seeded recipes of DETECTION.md ("Over seeds") whose runs are here, each as its runs (None: shipped)."""
    out = {}
    for name, members in SEEDED.items():
        runs = [CANDIDATES[m][0] for m in members]
        missing = [r for r in runs if r is not None and not (ROOT / r).is_dir()]
        if missing:
            print(f"skipped {name!r}: {', '.join(missing)} missing (DETECTION.md's commands rebuild them)")
        else:
            out[name] = [ROOT / r if r else None for r in runs]
    return out


def _line(r: dict) -> str:
    m = r["model"]
    return f"{m['auroc']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", help="a run or model directory (repeatable; default: "
                    "the shipped model)")
    ap.add_argument("--recipes", action="store_true", help="instead, every seeded recipe of DETECTION.md whose runs "
                    "are here, each over its seeds")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/content.json, or content-recipes.json")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / ("content-recipes.json" if args.recipes else "content.json")
    if args.recipes:
        res: dict = {"recipes": {}}
        for name, models in recipes().items():
            rows = report(models)
            res["recipes"][name] = {"models": [str(m.relative_to(ROOT)) if m else "default" for m in models],
                                    "conditions": rows}
            ldm = {c: (_line(r["ldm-txt2img/painted"]), _line(r["ldm-txt2img/other"])) for c, r in rows.items()}
            print(f"{name}\n  LDM painted {ldm['stored'][0]} / q95 {ldm['jpeg95'][0]};  "
                  f"other {ldm['stored'][1]} / q95 {ldm['jpeg95'][1]}", flush=True)
    else:
        models = args.model or [None]
        res = {"models": [str(m) if m else "default" for m in models], "conditions": report(models)}
        for cond, rows in res["conditions"].items():
            print(f"\n{cond}: seed-mean AUROC [90%] against {len(models)} model(s)")
            for key, r in rows.items():
                print(f"  {key:32s} n={r['n']:2d}  model {_line(r)}  noise {r['baseline']['auroc']:.3f} "
                      f"[{r['baseline']['lo']:.3f}, {r['baseline']['hi']:.3f}]  caught {r['caught at thr']:.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
