"""benchmarks/detection/seeds.py's paired comparison over seeds: the point difference and its bootstrap interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "detection"))
import seeds  # noqa: E402

from slsp.metrics import auroc  # noqa: E402


def _arm(shift: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"real": rng.normal(0, 1, 60), "fake": {"a": rng.normal(1 + shift, 1, 30), "b": rng.normal(0.5, 1, 20)}}


def test_paired_difference_is_the_seed_average_with_an_interval() -> None:
    base = [_arm(0.0, s) for s in range(3)]
    same = seeds.paired(base, base, n=200)
    assert all(v["diff"] == 0.0 and v["lo"] == 0.0 == v["hi"] for v in same.values())
    better = [dict(b, fake={"a": b["fake"]["a"] + 1.0, "b": b["fake"]["b"]}) for b in base]
    got = seeds.paired(base, better, n=200)
    want_a = np.mean([auroc(c["real"], c["fake"]["a"]) for c in better]) - np.mean([auroc(b["real"], b["fake"]["a"])
                                                                                    for b in base])
    assert got["a"]["diff"] == float(want_a) and got["b"]["diff"] == 0.0
    assert got["mean"]["diff"] == (got["a"]["diff"] + got["b"]["diff"]) / 2
    assert 0 < got["a"]["lo"] <= got["a"]["diff"] <= got["a"]["hi"]
