"""A training run described by one recipe file (TOML), as Lightning's CLI and timm's train.py describe a run by one
config: the family, its model size and model config, TrSOR, the detector's canonical transform, the training loop
and the family's own options. `slsp train --recipe FILE --set key=value` reads it; every section is checked by the
dataclass it fills (unknown keys and values of the wrong type are errors naming the key), and the resolved recipe
(every field, defaults included) is what `train.json` records and `recipe.toml` in the run folder holds, so either
reproduces the run. Its [model] keeps only what differs from the named size, so `--set size=medium` still takes
that size's model.

    family = "fluct"          # a registered family (slsp/families)
    size = "small"            # one of the family's named model configs
    [model]                   # the family's model config fields (FluctConfig: width, latent, residual, ...)
    [trsor]                   # TrsorConfig (its crop is the model's)
    [detector]                # canonical, aggregate, max_pixels
    [train]                   # TrainConfig (steps, batch, lr, holdout, seed, target_fpr, calibration, kurtosis, ...)
    [options]                 # the family's training options (FluctOptions: fakes, chain, camera, scales, ...)

Torch-free, like the configs it fills.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slsp.config import DetectorConfig, TrainConfig, TrsorConfig
from slsp.errors import ConfigError
from slsp.families import FAMILIES, family

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

SECTIONS = ("model", "trsor", "detector", "train", "options")
TOP = ("family", "size", *SECTIONS)
DETECTOR_KEYS = ("canonical", "aggregate", "max_pixels")  # the rest of DetectorConfig is calibrated, not chosen
DERIVED = {"model": ("family",), "trsor": ("crop",), "train": ("options",)}  # set by the recipe's other keys
RECIPE = "recipe.toml"  # the resolved recipe in a run folder


@dataclass(frozen=True)
class Resolved:
    """What a recipe resolves to: the configs `slsp.train.train` takes, and the recipe with every field filled."""

    cfg: DetectorConfig
    tcfg: TrainConfig
    recipe: dict[str, Any]


def load(path: Path) -> dict[str, Any]:
    """A recipe from a .toml file, or from a run's train.json (its "recipe") or a JSON recipe."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e}") from e
    try:
        if path.suffix == ".json":
            d = json.loads(text)
            if "train_config" in d and "recipe" not in d:
                raise ConfigError(f"{path} is the train.json of a run made before recipes; it records no recipe")
            return d.get("recipe", d)
        return tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"recipe {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from e


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check(value: Any, hint: Any, key: str) -> Any:
    """`value` as the field typed `hint` takes it (a TOML list for a tuple), or a ConfigError naming `key`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        item = args[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {item.__name__}, got {value!r}")
        return tuple(_check(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str)}
    if hint not in ok:
        raise ConfigError(f"{key}: a recipe cannot set a field of type {hint}")
    if not ok[hint]:
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return float(value) if hint is float else value


def _section(recipe: Mapping[str, Any], name: str, cls: type, allowed: tuple[str, ...] | None = None) -> dict:
    """The recipe's section `name`, checked against `cls`'s fields (or `allowed` of them)."""
    given = recipe.get(name, {})
    if not isinstance(given, Mapping):
        raise ConfigError(f"[{name}] must be a table of keys, got {given!r}")
    hints = _hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in DERIVED.get(name, ())]
    fields = [f for f in fields if allowed is None or f in allowed]
    if unknown := sorted(set(given) - set(fields)):
        raise ConfigError(f"[{name}] has no key {', '.join(unknown)} ({cls.__name__} takes {', '.join(fields)})")
    return {k: _check(v, hints[k], f"{name}.{k}") for k, v in given.items()}


def resolve(recipe: Mapping[str, Any]) -> Resolved:
    """The configs of a recipe, the family's defaults (`Family.defaults`) under what the recipe leaves out."""
    if unknown := sorted(set(recipe) - set(TOP)):
        raise ConfigError(f"a recipe has no key {', '.join(unknown)} (it takes {', '.join(TOP)})")
    fam = family(_check(recipe.get("family", next(iter(FAMILIES))), str, "family"))
    size = _check(recipe.get("size", "small"), str, "size")
    d = fam.defaults
    model = fam.model_config(size, **_section(recipe, "model", fam.config))
    trsor = TrsorConfig(crop=model.crop, **{"levels": d["levels"], "skip_clipped": d.get("skip_clipped", False),
                                            **_section(recipe, "trsor", TrsorConfig)})
    options = fam.train_options(**_section(recipe, "options", fam.options))
    train = {"steps": d["steps"], "holdout": d["holdout"], "crops_per_image": d["crops_per_image"],
             "kurtosis": d.get("kurtosis", False), **_section(recipe, "train", TrainConfig)}
    tcfg = TrainConfig(**train, options=options)
    detector = {"canonical": d["canonical"], **_section(recipe, "detector", DetectorConfig, DETECTOR_KEYS)}
    cfg = DetectorConfig(trsor=trsor, model=model, target_fpr=tcfg.target_fpr, **detector)
    full = {
        "family": fam.name,
        "size": size,
        # The model as the size's fields changed: `--set size=medium` on a resolved recipe takes that size.
        "model": {k: v for k, v in _plain(model, "model").items()
                  if v != _plain(fam.sizes[size], "model")[k]},
        "trsor": _plain(trsor, "trsor"),
        "detector": {k: getattr(cfg, k) for k in DETECTOR_KEYS},
        "train": _plain(tcfg, "train"),
        "options": _plain(options, "options"),
    }
    return Resolved(cfg, tcfg, full)


def _plain(obj: Any, section: str) -> dict[str, Any]:
    """A config's chosen fields as TOML/JSON values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()
            if k not in DERIVED.get(section, ())}


def parse_set(text: str, recipe: Mapping[str, Any]) -> tuple[tuple[str, ...], Any]:
    """`--set key=value` (key: family, size or section.field) -> (path, value typed as the field): true/false for
    a bool, comma-separated for a list."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"--set takes key=value (e.g. train.steps=3000), got {text!r}")
    if key in ("family", "size"):
        return (key,), raw
    section, dot, name = key.partition(".")
    if not dot or section not in SECTIONS:
        raise ConfigError(f"--set {key}: the key is family, size or SECTION.FIELD with SECTION one of "
                          f"{', '.join(SECTIONS)}")
    fam = family(recipe.get("family", next(iter(FAMILIES))))
    cls = {"model": fam.config, "trsor": TrsorConfig, "detector": DetectorConfig, "train": TrainConfig,
           "options": fam.options}[section]
    hints = _hints(cls)
    if name not in hints or name in DERIVED.get(section, ()) or (section == "detector" and name not in DETECTOR_KEYS):
        return (section, name), raw  # resolve() names the unknown key with what the section takes
    return (section, name), _parse(raw, hints[name], key)


def _parse(raw: str, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return [_parse(v.strip(), args[0], key) for v in raw.split(",") if v.strip()]
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"--set {key}=...: expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    try:
        return {int: int, float: float}.get(hint, str)(raw)
    except ValueError:
        raise ConfigError(f"--set {key}=...: expected {hint.__name__}, got {raw!r}") from None


def override(recipe: Mapping[str, Any], sets: list[str]) -> dict[str, Any]:
    """The recipe with each `--set key=value` applied, in order."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in recipe.items()}
    for text in sets:
        path, value = parse_set(text, out)
        if len(path) == 1:
            out[path[0]] = value
        else:
            out.setdefault(path[0], {})[path[1]] = value
    return out


def dumps(recipe: Mapping[str, Any], comment: str = "") -> str:
    """A resolved recipe as TOML (its values: strings, numbers, booleans and flat lists of them)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{k} = {value(v)}" for k, v in recipe.items() if not isinstance(v, Mapping)]
    for k, v in recipe.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{k}]", *(f"{name} = {value(x)}" for name, x in v.items())]
    return "\n".join(lines) + "\n"
