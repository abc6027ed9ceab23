"""Recipe files (slsp/recipes.py, `slsp train --recipe --set`): each section checked by the dataclass it fills, a
resolved recipe reproducing its configs, the research flags of before as recipe keys, and every documented
`slsp train` command still parsing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from slsp import recipes
from slsp.cli import app
from slsp.detector import default_dir
from slsp.errors import ConfigError
from slsp.recipes import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "slsp" / "default" / "MODEL_CARD.md", ROOT / "benchmarks" / "DETECTION.md",
        ROOT / "benchmarks" / "README.md"]


def print_recipe(*args: str) -> str:
    r = CliRunner().invoke(app, ["train", "--real", "x", "--out", "y", "--print-recipe", *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_the_shipped_recipe_is_the_family_defaults_and_the_shipped_config() -> None:
    shipped = recipes.resolve(recipes.load(default_dir() / recipes.RECIPE))
    assert shipped == recipes.resolve({})
    from slsp.config import DetectorConfig

    cfg = DetectorConfig.load(default_dir() / "config.json")
    # The shipped config is the recipe's after `slsp calibrate --skip-clipped` (MODEL_CARD.md): same model, TrSOR but
    # for the clipped pixels, canonical transform.
    assert cfg.model == shipped.cfg.model and cfg.canonical == shipped.cfg.canonical
    assert cfg.trsor == shipped.cfg.trsor.__class__(**{**vars(shipped.cfg.trsor), "skip_clipped": True})


@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(["fluct", "slsp"]), steps=st.integers(1, 10**5), levels=st.integers(1, 4),
       seed=st.integers(0, 2**31), lr=st.floats(1e-6, 1.0), size=st.sampled_from(["small", "medium"]))
def test_a_resolved_recipe_resolves_to_itself(family: str, steps: int, levels: int, seed: int, lr: float,
                                              size: str) -> None:
    sets = [f"family={family}", f"train.steps={steps}", f"trsor.levels={levels}", f"train.seed={seed}",
            f"train.lr={lr}"] + ([f"size={size}"] if family == "fluct" else [])
    r = recipes.resolve(recipes.override({}, sets))
    again = recipes.resolve(tomllib.loads(recipes.dumps(r.recipe)))
    assert again == r
    assert (r.tcfg.steps, r.cfg.trsor.levels, r.tcfg.seed, r.tcfg.lr) == (steps, levels, seed, lr)
    # [model] keeps what differs from the size: another size on the resolved recipe takes effect.
    if family == "fluct":
        other = "small" if size == "medium" else "medium"
        moved = recipes.resolve(recipes.override(r.recipe, [f"size={other}"]))
        assert moved.cfg.model != r.cfg.model


@pytest.mark.parametrize("recipe, says", [
    ({"bogus": 1}, "a recipe has no key bogus"),
    ({"train": {"stepz": 3}}, r"\[train\] has no key stepz \(TrainConfig takes steps"),
    ({"train": {"steps": "3"}}, "train.steps must be int, got str"),
    ({"train": {"lr": True}}, "train.lr must be float, got bool"),
    ({"options": {"fakes": "sparse"}}, "options.fakes must be a list of str"),
    ({"options": {"fakes": ["nope"]}}, "fakes must be kinds among"),
    ({"trsor": {"crop": 32}}, r"\[trsor\] has no key crop"),
    ({"detector": {"threshold": 0.5}}, r"\[detector\] has no key threshold"),
    ({"family": "nope"}, "unknown model family"),
    ({"size": "huge"}, "has sizes small, medium"),
    ({"model": 3}, r"\[model\] must be a table"),
])
def test_bad_recipes_name_the_key(recipe: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        recipes.resolve(recipe)


@pytest.mark.parametrize("text, says", [("train.steps", "key=value"), ("steps=3", "SECTION.FIELD"),
                                        ("train.steps=x", "expected int"),
                                        ("trsor.skip_clipped=maybe", "true or false")])
def test_bad_sets_name_the_key(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        recipes.override({}, [text])


def test_a_run_records_its_recipe_and_train_json_reproduces_it(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from conftest import photo_crops

    real = tmp_path / "real"
    real.mkdir()
    for i, img in enumerate(photo_crops(8, 128, 160)):
        Image.fromarray(img).save(real / f"r{i}.png")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--real", str(real), "--out", str(run), "--steps", "2", "--set",
                                 "train.batch=4", "--set", "train.crops_per_image=2", "--set", "train.warmup=1",
                                 "--set", "options.fakes=denoise,sparse", "-q"])
    assert r.exit_code == 0, r.output
    written = recipes.resolve(recipes.load(run / recipes.RECIPE))
    assert written == recipes.resolve(recipes.load(run / "train.json"))
    assert written.tcfg.steps == 2 and written.tcfg.batch == 4 and written.tcfg.options.fakes == ("denoise", "sparse")
    assert json.loads((run / "train.json").read_text())["recipe"] == written.recipe


def test_the_flags_of_before_are_recipe_keys() -> None:
    assert print_recipe("--fakes", "denoise,sparse", "--skip-clipped", "--levels", "1", "--calibrate-on", "jpeg:90",
                        "--no-chain") == \
        print_recipe("--set", "options.fakes=denoise,sparse", "--set", "trsor.skip_clipped=true", "--set",
                     "trsor.levels=1", "--set", "train.calibration=none,jpeg:90", "--set", "options.chain=false")


def documented_commands() -> list[str]:
    """Every whole `slsp train --real ... --out ...` command in the READMEs, the model card and the leaderboard
    (placeholders and elisions left out), up to a comment or a parenthesis."""
    out = set()
    for doc in DOCS:
        for m in re.finditer(r"slsp train (--[^|`\n]*)", doc.read_text()):
            cmd = re.split(r"\s+\(|\s+#", m.group(1))[0].strip()
            if "--real" in cmd and "--out" in cmd and not re.search(r"\.\.\.|\[|DIR|RUN\b", cmd):
                out.add(cmd)
    return sorted(out)


def test_documented_commands_parse() -> None:
    cmds = documented_commands()
    assert len(cmds) >= 10  # the leaderboard alone documents dozens
    for cmd in cmds:
        args = shlex.split(cmd)
        r = CliRunner().invoke(app, ["train", *args, "--print-recipe"])
        assert r.exit_code == 0, f"{cmd}\n{r.output}"
        recipes.resolve(tomllib.loads(r.output))


@pytest.mark.parametrize("device, says", [("tpu", "--device takes cpu or cuda"),
                                          ("cuda", "PyTorch sees no CUDA device")])
def test_device_is_checked_before_training(tmp_path: Path, device: str, says: str) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda trains there")
    r = CliRunner().invoke(app, ["train", "--real", str(ROOT / "examples"), "--out", str(tmp_path / "run"),
                                 "--device", device, "--steps", "1"])
    assert r.exit_code != 0 and says in str(r.exception) and not (tmp_path / "run").exists()
