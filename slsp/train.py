"""Real-only training (METHOD.md 2): alternate reconstruction and pseudo-fake discrimination, then calibrate.

Crops come from TrSOR on each training image (the crops inference will score), extracted once. A held-out
split of the real images is never trained on: it sets the decision threshold at the target false-positive
rate. One process on CPU or GPU; under `torchrun` the same code runs DistributedDataParallel.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from slsp import detector as det_io
from slsp.calibrate import calibrate
from slsp.config import DetectorConfig, TrainConfig
from slsp.contract import CONFIG
from slsp.detector import Detector
from slsp.errors import CheckpointError, SlspError
from slsp.imaging import collect, load
from slsp.model import SLSPModel
from slsp.progress import bar, stderr

STATE = "state.safetensors"
TRAIN = "train.json"


class Objectives(nn.Module):
    """Both training losses behind one forward, so DistributedDataParallel sees every update."""

    def __init__(self, model: SLSPModel, fake_phi: str, fake_mix: str) -> None:
        super().__init__()
        self.model = model
        self.fake_phi = fake_phi
        self.fake_mix = fake_mix

    def forward(self, phase: str, x: Tensor, phi: Tensor, mix: Tensor) -> tuple[Tensor, Tensor]:
        """`mix` (B,) in [0.25, 1): how far each 'partial' pseudo-fake goes towards its reconstruction."""
        m = self.model
        enc = m.encoder(x, phi)
        if phase == "rec":
            rec = m.decoder(enc.latent)
            return F.l1_loss(rec, x), rec
        fake = m.decoder(enc.latent).detach()
        if self.fake_mix == "phi":
            # Only the over-smooth region loses its fluctuations; texture stays real, so D must look at Phi.
            fake = phi * fake + (1.0 - phi) * x
        elif self.fake_mix == "partial":
            # Part of the way to the reconstruction: fluctuations damped by 25-100%, so D must judge how much
            # fluctuation the content should carry rather than spot the decoder's blur.
            fake = x + mix[:, None, None, None] * (fake - x)
        fphi = phi if self.fake_phi == "same" else torch.ones_like(phi)
        real_logit = m.disc(enc.pooled)[:, 0]
        fake_logit = m.disc(m.encoder(fake, fphi).pooled)[:, 0]
        loss = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
        loss = loss + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        acc = ((real_logit > 0).float().mean() + (fake_logit < 0).float().mean()) / 2
        return loss, acc


def split(files: list[Path], holdout: float, seed: int) -> tuple[list[Path], list[Path]]:
    order = np.random.default_rng(seed).permutation(len(files))
    n_hold = max(1, int(round(len(files) * holdout)))
    return [files[i] for i in sorted(order[n_hold:])], [files[i] for i in sorted(order[:n_hold])]


@torch.inference_mode()
def extract_crops(det: Detector, files: list[Path], per_image: int, quiet: bool) -> tuple[Tensor, Tensor]:
    """TrSOR crops (uint8) and their Phi for every image, most over-smooth first, valid ones only."""
    trsor = det.trsor
    trsor_k = type(trsor)(dataclasses.replace(trsor.cfg, crops=per_image))
    crops, phis = [], []
    with bar(quiet) as pb:
        task = pb.add_task("TrSOR crops", total=len(files), info="")
        for f in files:
            img = load(f, max_pixels=det.cfg.max_pixels)
            det.check(img, str(f))
            o = trsor_k(torch.from_numpy(img))
            crops.append(o.crops[o.valid])
            phis.append(o.crop_phi[o.valid].to(torch.uint8))
            pb.advance(task)
    return torch.cat(crops), torch.cat(phis)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _flat_state(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"{prefix}.{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, v in tensors.items():
        p, i, k = name.split(".", 2)
        if p == prefix:
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(run: Path, step: int, opts: dict[str, torch.optim.Optimizer], info: dict) -> None:
    tensors, groups = {}, {}
    for name, opt in opts.items():
        t, g = _flat_state(name, opt)
        tensors.update(t)
        groups[name] = g
    tmp = run / (STATE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, run / STATE)
    info = {**info, "step": step, "param_groups": groups}
    (run / (TRAIN + ".tmp")).write_text(json.dumps(info, indent=2))
    os.replace(run / (TRAIN + ".tmp"), run / TRAIN)


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


@dataclasses.dataclass(frozen=True)
class Dist:
    """Where this process trains: one of `world` ranks (1 without torchrun) on `device`."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(seed: int) -> Dist:
    """Seed, pick the device (the local GPU under torchrun, else the CPU) and join the process group if any."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(seed)
    if not cuda:
        torch.use_deterministic_algorithms(True)
    return Dist(world, rank, device)


def optimizers(model: SLSPModel, tcfg: TrainConfig, run: Path | None = None, resumed: dict | None = None
               ) -> dict[str, torch.optim.Optimizer]:
    """One AdamW per objective (encoder + decoder for reconstruction, encoder + discriminator for the adversarial
    term), restored from the run's state when resuming."""
    enc_dec = list(model.encoder.parameters()) + list(model.decoder.parameters())
    enc_disc = list(model.encoder.parameters()) + list(model.disc.parameters())
    opts = {name: torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
            for name, params in (("rec", enc_dec), ("adv", enc_disc))}
    if resumed:
        tensors = load_file(str(run / STATE))
        for name, opt in opts.items():
            load_optimizer(name, opt, tensors, resumed["param_groups"][name])
    return opts


def batch(crops: Tensor, phis: Tensor, tcfg: TrainConfig, step: int, d: Dist) -> tuple[Tensor, Tensor, Tensor]:
    """The step's batch, a function of (seed, step, rank) alone so a resumed run sees the same batches: crops and Phi
    flipped alike at random, and each pseudo-fake's mix in [0.25, 1)."""
    g = torch.Generator().manual_seed(tcfg.seed * 1_000_003 + step * d.world + d.rank)
    idx = torch.randint(crops.shape[0], (tcfg.batch,), generator=g)
    x, phi = SLSPModel.prepare(crops[idx], phis[idx])
    flip_h = torch.rand(tcfg.batch, generator=g) < 0.5
    flip_v = torch.rand(tcfg.batch, generator=g) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    phi = torch.where(flip_h[:, None, None, None], phi.flip(3), phi)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x).to(d.device)
    phi = torch.where(flip_v[:, None, None, None], phi.flip(2), phi).to(d.device)
    mix = (0.25 + 0.75 * torch.rand(tcfg.batch, generator=g)).to(d.device)
    return x, phi, mix


def train_step(objectives: nn.Module, opts: dict[str, torch.optim.Optimizer], lr: float, x: Tensor, phi: Tensor,
               mix: Tensor) -> dict[str, float]:
    """One reconstruction update, then one adversarial update on the same batch."""
    for opt in opts.values():
        for group in opt.param_groups:
            group["lr"] = lr
    l_rec, _ = objectives("rec", x, phi, mix)
    opts["rec"].zero_grad(set_to_none=True)
    l_rec.backward()
    opts["rec"].step()
    l_adv, acc = objectives("adv", x, phi, mix)
    opts["adv"].zero_grad(set_to_none=True)
    l_adv.backward()
    opts["adv"].step()
    return {"rec": l_rec.item(), "adv": l_adv.item(), "acc": acc.item()}


def train(
    real_dirs: list[Path],
    run: Path,
    cfg: DetectorConfig,
    tcfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    checkpoint_every: int = 250,
) -> DetectorConfig:
    """Train on real images only, checkpoint as it goes, calibrate on the held-out split; returns the config.

    The "fluct" family trains by its own objective (slsp/fluct_train.py); this body is the authors' recipe.
    """
    if cfg.model.family == "fluct":
        from slsp.fluct_train import train_fluct

        return train_fluct(real_dirs, run, cfg, tcfg, resume=resume, quiet=quiet, checkpoint_every=checkpoint_every)
    run = Path(run)
    d = setup(tcfg.seed)
    files = collect(real_dirs)
    if len(files) < 4:
        raise SlspError(f"found {len(files)} images under {', '.join(map(str, real_dirs))}; need at least 4")
    train_files, hold_files = split(files, tcfg.holdout, tcfg.seed)
    det, start, resumed = open_run(run, cfg, resume)

    crops, phis = extract_crops(det, train_files, tcfg.crops_per_image, quiet or not d.main)
    model = det.model.to(d.device).train()
    opts = optimizers(model, tcfg, run, resumed)
    objectives: nn.Module = Objectives(model, tcfg.fake_phi, tcfg.fake_mix)
    if d.world > 1:
        objectives = nn.parallel.DistributedDataParallel(objectives, find_unused_parameters=True)
    info = {
        "train_config": dataclasses.asdict(tcfg),
        "train_images": [str(f) for f in train_files],
        "holdout_images": [str(f) for f in hold_files],
        "train_crops": int(crops.shape[0]),
        "world_size": d.world,
        "device": str(d.device),
    }
    if d.main:
        det_io.save(det, run)
    with bar(quiet or not d.main) as pb:
        task = pb.add_task("train", total=tcfg.steps, completed=start, info="")
        for step in range(start, tcfg.steps):
            losses = train_step(objectives, opts, lr_at(step, tcfg), *batch(crops, phis, tcfg, step, d))
            pb.update(
                task, advance=1, info=f"rec {losses['rec']:.4f}  adv {losses['adv']:.3f}  acc {losses['acc']:.2f}"
            )
            done = step + 1
            if d.main and (done % checkpoint_every == 0 or done == tcfg.steps):
                det_io.save(det, run)
                save_state(run, done, opts, {**info, "last": {"rec": losses["rec"], "adv": losses["adv"]}})
    if d.world > 1:
        dist.destroy_process_group()
        if not d.main:
            return cfg
    det = det_io.load(run)
    cal = calibrate(det, hold_files, tcfg.target_fpr, quiet=quiet)
    det_io.save(cal.detector, run)
    stderr.print(f"calibrated on {len(hold_files)} held-out real images: threshold {cal.threshold:.4f} "
                 f"at target FPR {tcfg.target_fpr:.0%} (held-out FPR {cal.fpr:.1%})")
    return cal.detector.cfg
