"""A training run folder: the detector (config.json + model.safetensors, slsp/detector.py), the optimiser state
(state.safetensors) and train.json (settings, data split, step); written atomically at every checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from slsp import detector as det_io
from slsp.config import DetectorConfig
from slsp.contract import CONFIG
from slsp.detector import Detector
from slsp.errors import CheckpointError, SlspError

STATE = "state.safetensors"
TRAIN = "train.json"


def open_run(run: Path, cfg: DetectorConfig, resume: bool) -> tuple[Detector, int, dict]:
    """A new run folder (refusing to overwrite one), or the run to resume: its detector, step and train.json."""
    if resume:
        if not (run / STATE).is_file():
            raise CheckpointError(f"--resume: no {STATE} in {run}")
        if DetectorConfig.load(run / CONFIG).model != cfg.model:
            raise CheckpointError(f"--resume: {run} was trained with another model config")
        resumed = json.loads((run / TRAIN).read_text())
        return det_io.load(run), resumed["step"], resumed
    if (run / STATE).exists():
        raise SlspError(f"{run} already holds a training run; pass --resume or choose a new --out")
    run.mkdir(parents=True, exist_ok=True)
    return Detector(cfg), 0, {}


def save_state(run: Path, step: int, opts: dict[str, torch.optim.Optimizer], info: dict) -> None:
    """The optimisers' state by name, then train.json with the step: each file replaced whole."""
    tensors, groups = {}, {}
    for name, opt in opts.items():
        sd = opt.state_dict()
        tensors.update({f"{name}.{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()})
        groups[name] = sd["param_groups"]
    tmp = run / (STATE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, run / STATE)
    info = {**info, "step": step, "param_groups": groups}
    (run / (TRAIN + ".tmp")).write_text(json.dumps(info, indent=2))
    os.replace(run / (TRAIN + ".tmp"), run / TRAIN)


def restore_state(run: Path, opts: dict[str, torch.optim.Optimizer], resumed: dict) -> None:
    """The optimisers' state as `save_state` wrote it (train.json's param groups, state.safetensors' tensors)."""
    tensors = load_file(str(run / STATE))
    for name, opt in opts.items():
        state: dict[int, dict[str, Tensor]] = {}
        for key, v in tensors.items():
            prefix, i, k = key.split(".", 2)
            if prefix == name:
                state.setdefault(int(i), {})[k] = v
        opt.load_state_dict({"state": state, "param_groups": resumed["param_groups"][name]})
