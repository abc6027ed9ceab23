"""Training steps/s of this checkout against another one (say, the commit before a change), in alternating rounds.

    git worktree add /tmp/before ec29f08
    python benchmarks/ab_train.py /tmp/before --rounds 3

Each round runs `slsp bench train` once per checkout (the shipped family from fresh weights, the same photos, the
same `--run` configurations), each in its own interpreter with that checkout first on the path, alternating which
goes first, so both see the same machine load. Prints per checkout and configuration the median steps/s over the
rounds and this checkout's ratio to the other; `--out FILE` keeps it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bench(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "slsp.cli", "bench", "train",
               *sum((["--images", str(i)] for i in args.images), []), *sum((["--run", r] for r in args.run), []),
               "--steps", str(args.steps), "--batch", str(args.batch), "--out", out, "--json", "-q"]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        r = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return {f"{row['device']}:{row['workers']}": row["steps_per_s"] for row in json.loads(r.stdout)["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", type=Path, help="the checkout to compare with")
    ap.add_argument("--images", type=Path, action="append", help="training photos (default: the checkout's three)")
    ap.add_argument("--run", action="append", help="DEVICE:WORKERS (repeatable; default cpu:0)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    default = [ROOT / "examples/real_kodak24_kodim03.png", ROOT / "tests/data"]
    args.images = [p.resolve() for p in args.images or default]
    args.run = args.run or ["cpu:0"]
    names = {"this": ROOT, "other": args.other.resolve()}
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for k in range(args.rounds):
        for n in list(names)[:: 1 if k % 2 == 0 else -1]:
            runs[n].append(bench(names[n], args))
            print(f"round {k + 1} {n}: {runs[n][-1]}", file=sys.stderr, flush=True)
    res = {"kind": "ab-train", "this": str(ROOT), "other": str(names["other"]), "rounds": args.rounds,
           "steps": args.steps, "batch": args.batch, "cpu_count": os.cpu_count(), "rows": []}
    for cfg in args.run:
        med = {n: float(np.median([r[cfg] for r in runs[n]])) for n in names}
        res["rows"].append({"run": cfg, "steps_per_s": med, "this_over_other": med["this"] / med["other"],
                            "per_round": {n: [r[cfg] for r in runs[n]] for n in names}})
        print(f"{cfg}: this {med['this']:.2f} steps/s, other {med['other']:.2f}, "
              f"ratio {med['this'] / med['other']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
