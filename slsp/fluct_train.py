"""Real-only training of the "fluct" family: real crops vs content-preserving pseudo-fakes (slsp/pseudofakes.py),
both through the same processing chain; an auxiliary reconstruction loss trains the decoder from the bottleneck.

Each real folder is split on its own (a seeded `holdout` share of every folder), so the held-out photos that fit
the noise fusion and the threshold span every processing history the training photos have (PNG-history benchmark
photos and in-camera JPEGs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from slsp import detector as det_io
from slsp.calibrate import calibrate_fused
from slsp.config import DetectorConfig, TrainConfig
from slsp.detector import Detector
from slsp.errors import SlspError
from slsp.fluct import FluctModel
from slsp.imaging import collect
from slsp.progress import bar, stderr
from slsp.pseudofakes import training_crop
from slsp.train import STATE, extract_crops, load_optimizer, lr_at, open_run, save_state, split

REC_WEIGHT = 0.1


def split_per_folder(real_dirs: list[Path], holdout: float, seed: int) -> tuple[list[Path], list[Path]]:
    train, hold = [], []
    for d in real_dirs:
        files = collect([d])
        if len(files) < 4:
            raise SlspError(f"found {len(files)} images under {d}; need at least 4 per folder")
        t, h = split(files, holdout, seed)
        train += t
        hold += h
    return train, hold


def make_batch(crops: torch.Tensor, phis: torch.Tensor, crop: int, batch: int, seed: int, step: int, chain: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half real, half pseudo-fake model inputs (uint8 crops, Phi) and their labels (1 = real), seeded per step."""
    rng = np.random.default_rng([seed, step])
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = rng.integers(crops.shape[0], size=batch)
    out_x, out_phi = [], []
    for i, j in enumerate(idx):
        x, phi = training_crop(crops[j].numpy(), phis[j].numpy(), crop, fake=i >= batch // 2, rng=rng, g=g, chain=chain)
        out_x.append(torch.from_numpy(np.array(x)))
        out_phi.append(torch.from_numpy(np.array(phi)))
    labels = (torch.arange(batch) < batch // 2).float()
    return torch.stack(out_x), torch.stack(out_phi).float(), labels


def train_step(model: FluctModel, opt: torch.optim.Optimizer, lr: float, x8: torch.Tensor, phi: torch.Tensor,
               y: torch.Tensor) -> dict[str, float]:
    """One update: real vs pseudo-fake for the discriminator, plus the decoder's reconstruction of the real crops."""
    for group in opt.param_groups:
        group["lr"] = lr
    x, phi = model.prepare(x8, phi)
    enc = model.encoder(x, phi)
    logit = model.disc(enc.pooled)[:, 0]
    real = y > 0.5
    l_adv = F.binary_cross_entropy_with_logits(logit, y)
    l_rec = F.l1_loss(model.decoder(enc.latent[real]), x[real])
    opt.zero_grad(set_to_none=True)
    (l_adv + REC_WEIGHT * l_rec).backward()
    opt.step()
    acc = ((logit > 0).float() == y).float().mean()
    return {"adv": l_adv.item(), "rec": l_rec.item(), "acc": acc.item()}


def train_fluct(real_dirs: list[Path], run: Path, cfg: DetectorConfig, tcfg: TrainConfig, resume: bool = False,
                quiet: bool = False, checkpoint_every: int = 250) -> DetectorConfig:
    """Train, checkpoint as it goes, then fit the noise fusion and the threshold on the held-out reals."""
    run = Path(run)
    torch.manual_seed(tcfg.seed)
    torch.use_deterministic_algorithms(True)
    train_files, hold_files = split_per_folder(real_dirs, tcfg.holdout, tcfg.seed)
    det, start, resumed = open_run(run, cfg, resume)

    c = cfg.model.crop
    # Sources twice the crop size, so the chain's 0.5 resize still leaves one full crop.
    src_det = Detector(dataclasses.replace(cfg, trsor=dataclasses.replace(cfg.trsor, crop=2 * c),
                                           model=dataclasses.replace(cfg.model, crop=2 * c), canonical="none"))
    crops, phis = extract_crops(src_det, train_files, tcfg.crops_per_image, quiet)
    model: FluctModel = det.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if resume:
        load_optimizer("all", opt, load_file(str(run / STATE)), resumed["param_groups"]["all"])
    info = {
        "train_config": dataclasses.asdict(tcfg),
        "train_images": [str(f) for f in train_files],
        "holdout_images": [str(f) for f in hold_files],
        "train_crops": int(crops.shape[0]),
        "source_crop": 2 * c,
        "device": "cpu",
    }
    det_io.save(det, run)
    with bar(quiet) as pb:
        task = pb.add_task("train", total=tcfg.steps, completed=start, info="")
        for step in range(start, tcfg.steps):
            batch = make_batch(crops, phis, c, tcfg.batch, tcfg.seed, step, tcfg.chain)
            last = train_step(model, opt, lr_at(step, tcfg), *batch)
            pb.update(task, advance=1, info=f"adv {last['adv']:.3f}  rec {last['rec']:.3f}  acc {last['acc']:.2f}")
            done = step + 1
            if done % checkpoint_every == 0 or done == tcfg.steps:
                det_io.save(det, run)
                save_state(run, done, {"all": opt}, {**info, "last": last})
    det = det_io.load(run)
    cal = calibrate_fused(det, hold_files, tcfg.target_fpr, quiet=quiet, variants=tcfg.calibration)
    det_io.save(cal.detector, run)
    stderr.print(f"fusion and threshold fit on {len(hold_files)} held-out real images: threshold {cal.threshold:.4f} "
                 f"at target FPR {tcfg.target_fpr:.0%} (held-out FPR {cal.fpr:.1%})")
    return cal.detector.cfg
