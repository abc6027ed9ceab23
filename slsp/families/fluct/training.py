"""The fluct training step: real crops vs content-preserving pseudo-fakes (pseudofakes.py), both through the same
processing chain; an auxiliary reconstruction loss trains the decoder from the bottleneck.

Each real folder is split on its own (a seeded `holdout` share of every folder), so the held-out photos that fit
the noise fusion and the threshold span every processing history the training photos have (PNG-history benchmark
photos and in-camera JPEGs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsp.config import TrainConfig
from slsp.families.fluct import SHIPPED_FAKES, FluctOptions
from slsp.families.fluct.camera import clean_content, simulate
from slsp.families.fluct.model import FluctModel
from slsp.families.fluct.pseudofakes import draw_input, make_inputs
from slsp.pyramid import box_level
from slsp.transforms import Transform

REC_WEIGHT = 0.1
HALF = Transform("resize:0.5")  # the shipped canonical transform


def make_batch(crops: Tensor, phis: Tensor, crop: int, batch: int, seed: int, step: int, chain: bool = True,
               kinds: tuple[str, ...] = SHIPPED_FAKES, device: torch.device = torch.device("cpu")
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Half real, half pseudo-fake model inputs (uint8 crops, Phi) and their labels (1 = real) on `device`, drawn
    from generators seeded by the step alone."""
    rng = np.random.default_rng([seed, step])
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.from_numpy(rng.integers(crops.shape[0], size=batch))
    draws = [draw_input(rng, g, crops.shape[1], crop, fake=i >= batch // 2, chain=chain, kinds=kinds)
             for i in range(batch)]
    x, phi = make_inputs(crops[idx], phis[idx], draws, crop, device)
    labels = (torch.arange(batch, device=device) < batch // 2).float()
    return x, phi.float(), labels


def views(image: np.ndarray, scales: tuple[int, ...], min_side: int) -> list[np.ndarray]:
    """`image` at each of `scales` (FluctOptions.scales), in that order, those with both sides >= `min_side`."""
    half = HALF(image) if set(scales) - {1} else image
    out = [image if s == 1 else half if s == 2 else box_level(half, s // 2) for s in scales]
    return [v for v in out if min(v.shape[:2]) >= min_side]


class Objective(nn.Module):
    """Real vs pseudo-fake for the discriminator, plus the decoder's reconstruction of the real crops."""

    def __init__(self, model: FluctModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x8: Tensor, phi: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The loss to minimise, its two parts and the discriminator's accuracy."""
        m = self.model
        x, phi = m.prepare(x8, phi)
        enc = m.encoder(x, phi)
        logit = m.disc(enc.pooled)[:, 0]
        real = y > 0.5
        l_adv = F.binary_cross_entropy_with_logits(logit, y)
        l_rec = F.l1_loss(m.decoder(enc.latent[real]), x[real])
        acc = ((logit > 0).float() == y).float().mean()
        return l_adv + REC_WEIGHT * l_rec, l_adv, l_rec, acc


class FluctTraining:
    """slsp.families.spec.Training for fluct: sources at twice the crop (so the chain's 0.5 resize still leaves one
    full crop), half-real batches, one AdamW; calibration fits the noise fusion."""

    split_per_folder = True
    fuse = True

    def __init__(self, model: FluctModel, tcfg: TrainConfig, options: FluctOptions) -> None:
        self.model, self.tcfg, self.options = model, tcfg, options

    @property
    def source_crop(self) -> int:
        return 2 * self.model.cfg.crop

    def sources(self, image: np.ndarray, index: int) -> list[np.ndarray]:
        """The photo's views at `options.scales` (unless `options.photos` is off), and `options.camera`
        simulated-camera versions of its content (one too small for a source crop is skipped)."""
        out = views(image, self.options.scales, self.source_crop) if self.options.photos else []
        for k in range(self.options.camera):
            rng = np.random.default_rng([self.tcfg.seed, index, k])
            content = clean_content(image, rng, self.source_crop)
            if content is not None:
                out.append(simulate(content, rng))
        return out

    def objectives(self) -> nn.Module:
        return Objective(self.model)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"all": torch.optim.AdamW(self.model.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)}

    def batch(self, crops: Tensor, phis: Tensor, step: int, rank: int, world: int, device: torch.device
              ) -> tuple[Tensor, Tensor, Tensor]:
        t = self.tcfg
        return make_batch(crops, phis, self.model.cfg.crop, t.batch, t.seed, step * world + rank, self.options.chain,
                          self.options.fakes, device)

    def step(self, objectives: nn.Module, opts: dict[str, torch.optim.Optimizer], batch: tuple[Tensor, ...]
             ) -> dict[str, float]:
        loss, l_adv, l_rec, acc = objectives(*batch)
        opts["all"].zero_grad(set_to_none=True)
        loss.backward()
        opts["all"].step()
        return {"adv": l_adv.item(), "rec": l_rec.item(), "acc": acc.item()}
