"""`slsp bench train`: training steps per second of a model family, per device and batch-making workers, all in
one run (the first configuration listed is the baseline the others are compared with)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from slsp.bench.timing import machine
from slsp.config import DetectorConfig, TrainConfig
from slsp.families import build_model, family
from slsp.train import Dist, batches, extract_crops


def steps_per_s(cfg: DetectorConfig, tcfg: TrainConfig, crops: torch.Tensor, phis: torch.Tensor, device: str,
                workers: int, steps: int, warmup: int) -> float:
    """Optimiser steps per second on `device`, after `warmup` untimed steps (fresh weights each call)."""
    dev = torch.device(device)
    model = build_model(cfg.model).to(dev).train()
    fam = family(cfg.model.family)
    training = fam.load("training")(model, tcfg, fam.options() if tcfg.options is None else tcfg.options)
    objectives, opts = training.objectives(), training.optimizers()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = 0.0
    for i, batch in enumerate(batches(training, crops, phis, range(warmup + steps), Dist(1, 0, dev), workers)):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        training.step(objectives, opts, batch)
    sync()
    return steps / (time.perf_counter() - t0)


def measure(images: list[Path], configs: list[tuple[str, int]], steps: int, warmup: int, batch: int,
            quiet: bool = True) -> dict:
    """Steps/s of the shipped model's family and size, from fresh weights, for each (device, workers)."""
    from slsp import detector as det_io

    cfg = det_io.load().cfg
    fam = family(cfg.model.family)
    tcfg = TrainConfig(batch=batch, options=fam.options())
    Training = fam.load("training")
    source = Training(build_model(cfg.model), tcfg, tcfg.options).source_crop
    crops, phis = extract_crops(dataclasses.replace(cfg.trsor, crop=source, crops=tcfg.crops_per_image),
                                images, cfg.max_pixels, quiet)
    rows = [{"device": d, "workers": w, "steps_per_s": steps_per_s(cfg, tcfg, crops, phis, d, w, steps, warmup)}
            for d, w in configs]
    for r in rows:
        r["vs_first"] = r["steps_per_s"] / rows[0]["steps_per_s"]
    return {"kind": "train", "family": fam.name, "batch_size": batch, "steps": steps, "warmup": warmup,
            "train_crops": int(crops.shape[0]), "rows": rows, "machine": machine()}


def table(result: dict) -> str:
    head = f"{result['family']}, batch {result['batch_size']}, {result['steps']} timed steps\n"
    head += "device   workers  steps/s  vs first"
    return "\n".join([head, *(f"{r['device']:<8} {r['workers']:>7}  {r['steps_per_s']:7.2f}  {r['vs_first']:7.2f}x"
                              for r in result["rows"])])
