"""The recipe's training step: one reconstruction update, then one adversarial update against the decoder's
reconstructions (the pseudo-fakes), on the same batch of real crops."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsp.config import TrainConfig
from slsp.families.recipe import RecipeOptions
from slsp.families.recipe.model import SLSPModel


class Objectives(nn.Module):
    """Both training losses behind one forward: the module the loop steps (and averages gradients of, under
    torchrun)."""

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


class RecipeTraining:
    """slsp.families.spec.Training for the recipe: batches of real crops, flipped; two AdamWs."""

    split_per_folder = False
    fuse = False

    def __init__(self, model: SLSPModel, tcfg: TrainConfig, options: RecipeOptions) -> None:
        self.model, self.tcfg, self.options = model, tcfg, options

    @property
    def source_crop(self) -> int:
        return self.model.cfg.crop

    def sources(self, image: np.ndarray, index: int) -> list[np.ndarray]:
        return [image]

    def objectives(self) -> nn.Module:
        return Objectives(self.model, self.options.fake_phi, self.options.fake_mix)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One AdamW per objective: encoder + decoder for reconstruction, encoder + discriminator for the adversarial
        term."""
        m, t = self.model, self.tcfg
        enc_dec = list(m.encoder.parameters()) + list(m.decoder.parameters())
        enc_disc = list(m.encoder.parameters()) + list(m.disc.parameters())
        return {name: torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
                for name, params in (("rec", enc_dec), ("adv", enc_disc))}

    def batch(self, crops: Tensor, phis: Tensor, step: int, rank: int, world: int, device: torch.device
              ) -> tuple[Tensor, Tensor, Tensor]:
        """Crops and Phi flipped alike at random, and each pseudo-fake's mix in [0.25, 1), on `device`."""
        t = self.tcfg
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + step * world + rank)
        idx = torch.randint(crops.shape[0], (t.batch,), generator=g)
        x, phi = SLSPModel.prepare(crops[idx].to(device), phis[idx].to(device))
        flip_h = (torch.rand(t.batch, generator=g) < 0.5).to(device)
        flip_v = (torch.rand(t.batch, generator=g) < 0.5).to(device)
        x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
        phi = torch.where(flip_h[:, None, None, None], phi.flip(3), phi)
        x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
        phi = torch.where(flip_v[:, None, None, None], phi.flip(2), phi)
        mix = 0.25 + 0.75 * torch.rand(t.batch, generator=g)
        return x, phi, mix.to(device)

    def step(self, objectives: nn.Module, opts: dict[str, torch.optim.Optimizer], batch: tuple[Tensor, ...]
             ) -> dict[str, float]:
        l_rec, _ = objectives("rec", *batch)
        opts["rec"].zero_grad(set_to_none=True)
        l_rec.backward()
        opts["rec"].step()
        l_adv, acc = objectives("adv", *batch)
        opts["adv"].zero_grad(set_to_none=True)
        l_adv.backward()
        opts["adv"].step()
        return {"rec": l_rec.item(), "adv": l_adv.item(), "acc": acc.item()}
