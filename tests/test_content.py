"""benchmarks/detection/content.py: the prompt split of the dev fakes and its seed-mean AUROC with a bootstrap
interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "detection"))
import content  # noqa: E402

from slsp.metrics import auroc  # noqa: E402


def test_prompt_class_is_read_from_the_file_name_only() -> None:
    assert content.part("/d/ldm/a-painting-of-a-fire_0.png") == "painted"
    assert content.part("/d/dalle2/Model2_an_oil_painting_of_a_bowl.png") == "painted"
    assert content.part("/d/ldm/a-photograph-of-a-fire_0.png") == "other"
    assert content.part("/painting/dir/fire_1.png") == "other"  # a folder's name says nothing of the prompt


def _model(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    real = {"model": rng.normal(0, 1, 40), "baseline": rng.normal(0, 1, 40)}
    fake = {("g", "painted"): {"model": rng.normal(-1, 1, 5), "baseline": rng.normal(0, 1, 5),
                               "verdict": np.array([False] * 5)},
            ("g", "other"): {"model": rng.normal(2, 1, 10), "baseline": rng.normal(0, 1, 10),
                             "verdict": np.array([True] * 3 + [False] * 7)}}
    return {"real": real, "fake": fake}


def test_summary_is_the_seed_mean_within_its_interval() -> None:
    per = [_model(s) for s in range(3)]
    rows = content.summarise(per, n=200)
    assert set(rows) == {"g/painted", "g/other"} and rows["g/painted"]["n"] == 5
    for key, r in rows.items():
        want = np.mean([auroc(p["real"]["model"], p["fake"][tuple(key.split("/"))]["model"]) for p in per])
        assert r["model"]["auroc"] == float(want)
        assert r["model"]["lo"] <= r["model"]["auroc"] <= r["model"]["hi"]
    assert rows["g/painted"]["model"]["hi"] < 0.5 < rows["g/other"]["model"]["lo"]
    assert rows["g/other"]["caught at thr"] == 0.3 and rows["g/painted"]["caught at thr"] == 0.0
