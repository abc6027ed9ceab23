"""The training loop under every model family (METHOD.md 2: real images only, then calibration).

The family says what a batch and an optimisation step are (slsp.families.spec.Training); this loop does the rest:
the data split, TrSOR crops extracted once, the run folder with its checkpoints and resume, the learning-rate
schedule, the device, gradients averaged over the ranks under `torchrun`, and calibration on the held-out real
photos, which are never trained on and set the decision threshold at the target false-positive rate.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from slsp import detector as det_io
from slsp import recipes
from slsp.calibrate import calibrate, calibrate_fused, calibrate_low_resolution, low_resolution_sides
from slsp.config import DetectorConfig, TrainConfig, TrsorConfig
from slsp.errors import ConfigError, ImageError, SlspError
from slsp.families import family, spec
from slsp.imaging import check_image, collect, load
from slsp.progress import bar, stderr
from slsp.runs import open_run, restore_state, save_state
from slsp.trsor import TrSOR

T = TypeVar("T")


def split(files: list[Path], holdout: float, seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded `holdout` share of `files` held out, both parts in the files' order."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_hold = max(1, int(round(len(files) * holdout)))
    return [files[i] for i in sorted(order[n_hold:])], [files[i] for i in sorted(order[:n_hold])]


def split_real(real_dirs: list[Path], holdout: float, seed: int, per_folder: bool) -> tuple[list[Path], list[Path]]:
    """Training and held-out photos: a share of every folder (`per_folder`), or of all photos pooled."""
    groups = [[d] for d in real_dirs] if per_folder else [real_dirs]
    train, hold = [], []
    for dirs in groups:
        files = collect(dirs)
        if len(files) < 4:
            raise SlspError(f"found {len(files)} images under {', '.join(map(str, dirs))}; need at least 4"
                            + (" per folder" if per_folder else ""))
        t, h = split(files, holdout, seed)
        train += t
        hold += h
    return train, hold


@torch.inference_mode()
def extract_crops(cfg: TrsorConfig, files: list[Path], max_pixels: int, quiet: bool,
                  sources: Callable[[np.ndarray, int], list[np.ndarray]] = lambda img, _: [img]
                  ) -> tuple[Tensor, Tensor]:
    """TrSOR crops (uint8) and their Phi from every source of every image (`spec.Training.sources`: the photo and
    what the family derives from it), most over-smooth first, valid ones only. An image that cannot be read or is
    too small is left out with a warning, as calibration does: one bad file in a corpus must not end the run."""
    trsor = TrSOR(cfg)
    crops, phis = [], []
    with bar(quiet) as pb:
        task = pb.add_task("TrSOR crops", total=len(files), info="")
        for i, f in enumerate(files):
            try:
                img = load(f, max_pixels=max_pixels)
                check_image(img, cfg.crop, str(f), "one training crop")
            except ImageError as e:
                stderr.print(f"training leaves out {e}", soft_wrap=True)
                pb.advance(task)
                continue
            for src in sources(img, i):
                o = trsor(torch.from_numpy(np.array(src)))  # a copy: a decoded JPEG is read-only
                crops.append(o.crops[o.valid])
                phis.append(o.crop_phi[o.valid].to(torch.uint8))
            pb.advance(task)
    if not crops:
        raise SlspError(f"none of the {len(files)} training images could be read")
    return torch.cat(crops), torch.cat(phis)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then a half-cycle cosine down to `min_lr`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


@dataclasses.dataclass(frozen=True)
class Dist:
    """Where this process trains: one of `world` ranks (1 without torchrun) on `device`."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def average_gradients(module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Data parallelism under torchrun: every rank starts from rank 0's weights, and each parameter's gradient is
    averaged over the ranks as soon as a backward pass has accumulated it (same graph on every rank, so the same
    order). Not DistributedDataParallel: constructing one keeps the process group alive after
    destroy_process_group (torch 2.13, measured with gloo), so the group's threads outlived the run and a rank could
    abort (SIGABRT) at exit, failing a finished run. Returns the hooks, to remove when training ends."""
    world = dist.get_world_size()
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, 0)

    def mean(p: Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(world)

    return [p.register_post_accumulate_grad_hook(mean) for p in module.parameters() if p.requires_grad]


def setup(seed: int, device: str | None = None) -> Dist:
    """Seed, pick the device (`device` "cpu" or "cuda"; default the local GPU under torchrun where there is one, else
    the CPU) and join the process group if any."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in (None, "cpu", "cuda"):
        raise SlspError(f"--device takes cpu or cuda (under torchrun each process takes its local GPU), got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SlspError("--device cuda: PyTorch sees no CUDA device on this machine")
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda and local >= torch.cuda.device_count():
        raise SlspError(f"torchrun started more processes on this machine than it has GPUs ({torch.cuda.device_count()}"
                        f"): local rank {local} has none. Use --nproc-per-node <= the GPU count (one process per GPU), "
                        "or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU with gloo")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(seed)
    if not cuda:
        # before the process group: set after it, the group outlives destroy_process_group (torch 2.13)
        torch.use_deterministic_algorithms(True)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(world, rank, device)


class StepBatches(Dataset):
    """Item `step` is this rank's batch for that step, made on the CPU: families seed a batch by its step alone, so
    any process makes the same batch (a run is the same with or without workers, up to float rounding)."""

    def __init__(self, training: spec.Training, crops: Tensor, phis: Tensor, d: Dist) -> None:
        self.training, self.crops, self.phis, self.d = training, crops, phis, d

    def __getitem__(self, step: int) -> tuple[Tensor, ...]:
        return self.training.batch(self.crops, self.phis, step, self.d.rank, self.d.world, torch.device("cpu"))


def ahead(make: Callable[[int], T], steps: range, depth: int = 2) -> Iterator[T]:
    """`make(step)` for each step in order, up to `depth` of them made ahead in one thread while the caller works
    (an accelerator's step releases the GIL while it waits, so its batches overlap it)."""
    with ThreadPoolExecutor(1) as pool:
        todo = iter(steps)
        queue = collections.deque(pool.submit(make, s) for s in itertools.islice(todo, depth))
        while queue:
            done = queue.popleft().result()
            if (s := next(todo, None)) is not None:
                queue.append(pool.submit(make, s))
            yield done


def batches(training: spec.Training, crops: Tensor, phis: Tensor, steps: range, d: Dist, workers: int
            ) -> Iterator[tuple[Tensor, ...]]:
    """The batches of `steps` on d.device. With `workers` == 0 the training process makes each one with its
    arithmetic (the pseudo-fakes) on d.device, on an accelerator in a thread ahead of the step; with `workers` > 0
    that many forked processes make them on the CPU ahead of the step."""
    if not workers:
        def make(step: int) -> tuple[Tensor, ...]:
            return training.batch(crops, phis, step, d.rank, d.world, d.device)

        yield from map(make, steps) if d.device.type == "cpu" else ahead(make, steps)
        return
    loader = DataLoader(StepBatches(training, crops, phis, d), batch_size=None, sampler=steps, num_workers=workers,
                        pin_memory=d.device.type == "cuda", prefetch_factor=4, multiprocessing_context="fork")
    for batch in loader:
        yield tuple(t.to(d.device, non_blocking=True) for t in batch)


def train(
    real_dirs: list[Path],
    run: Path,
    cfg: DetectorConfig,
    tcfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    checkpoint_every: int = 250,
    workers: int = 0,
    recipe: dict | None = None,
    device: str | None = None,
) -> DetectorConfig:
    """Train `cfg.model`'s family on real images only, checkpoint as it goes, calibrate on the held-out split (and
    fit the noise fusion, for families that fuse); returns the calibrated config. `workers`: batch-making CPU processes
    (0: the training process makes each batch, its pseudo-fakes on the training device); the weights do not depend
    on it. `recipe`: the resolved recipe the configs came from (slsp.recipes), recorded in train.json and written
    as recipe.toml beside the weights."""
    run = Path(run)
    fam = family(cfg.model.family)
    options = fam.options() if tcfg.options is None else tcfg.options
    if not isinstance(options, fam.options):
        raise ConfigError(f"family {fam.name!r} takes {fam.options.__name__}, got {type(options).__name__}")
    tcfg = dataclasses.replace(tcfg, options=options)
    Training = fam.load("training")
    if tcfg.kurtosis and not Training.fuse:
        raise ConfigError(f"family {fam.name!r} does not fuse: the kurtosis part is a part of the fusion")
    d = setup(tcfg.seed, device)
    train_files, hold_files = split_real(real_dirs, tcfg.holdout, tcfg.seed, Training.split_per_folder)
    det, start, resumed = open_run(run, cfg, resume)

    model = det.model.to(d.device).train()
    training = Training(model, tcfg, options)
    source = dataclasses.replace(cfg.trsor, crop=training.source_crop, crops=tcfg.crops_per_image)
    crops, phis = extract_crops(source, train_files, cfg.max_pixels, quiet or not d.main, training.sources)
    opts = training.optimizers()
    if resumed:
        restore_state(run, opts, resumed)
    objectives = training.objectives()
    hooks = average_gradients(objectives) if d.world > 1 else []
    info = {
        "family": fam.name,
        "train_config": dataclasses.asdict(tcfg),
        "train_images": [str(f) for f in train_files],
        "holdout_images": [str(f) for f in hold_files],
        "train_crops": int(crops.shape[0]),
        "source_crop": training.source_crop,
        "world_size": d.world,
        "device": str(d.device),
        **({"recipe": recipe} if recipe is not None else {}),
    }
    if d.main:
        det_io.save(det, run)
        if recipe is not None:
            (run / recipes.RECIPE).write_text(recipes.dumps(recipe, f"slsp train --recipe {recipes.RECIPE} "
                                                                    "reproduces this run (slsp/recipes.py)"))
    with bar(quiet or not d.main) as pb:
        task = pb.add_task("train", total=tcfg.steps, completed=start, info="")
        steps = range(start, tcfg.steps)
        for step, batch in zip(steps, batches(training, crops, phis, steps, d, workers)):
            lr = lr_at(step, tcfg)
            for opt in opts.values():
                for group in opt.param_groups:
                    group["lr"] = lr
            logs = training.step(objectives, opts, batch)
            pb.update(task, advance=1, info="  ".join(f"{k} {v:.3f}" for k, v in logs.items()))
            done = step + 1
            if d.main and (done % checkpoint_every == 0 or done == tcfg.steps):
                det_io.save(det, run)
                save_state(run, done, opts, {**info, "last": logs})
    for hook in hooks:
        hook.remove()
    if d.world > 1:
        dist.barrier()  # every rank done with the collectives before any tears gloo down
        dist.destroy_process_group()
        if not d.main:
            return cfg
    det = det_io.load(run)
    cal = (calibrate_fused(det, hold_files, tcfg.target_fpr, quiet, tcfg.calibration, tcfg.kurtosis) if Training.fuse
           else calibrate(det, hold_files, tcfg.target_fpr, quiet, tcfg.calibration))
    low = calibrate_low_resolution(cal.detector, hold_files, tcfg.target_fpr, quiet=quiet)
    det_io.save(low.detector, run)
    stderr.print(f"{'fusion and threshold' if Training.fuse else 'threshold'} fit on {len(hold_files)} held-out real "
                 f"images: {cal.threshold:.4f} at target FPR {tcfg.target_fpr:.0%} (held-out FPR {cal.fpr:.1%})")
    if low.scores:
        stderr.print(f"low-resolution threshold (native scale, short sides {low_resolution_sides(cal.detector)}): "
                     f"{low.threshold:.4f} (held-out FPR {low.fpr:.1%})")
    return low.detector.cfg
