"""Training batches of this checkout against the per-sample ones of a checkout before commit 6bb5c9c, same draws.

    git worktree add /tmp/before ec29f08
    python benchmarks/ab_batches.py /tmp/before

Both make the fluct family's batches (64 inputs, 128-px model crops from 256-px TrSOR sources of the first real
training photos) at the same seed and steps; the old one crop by crop (its `training_crop`), this one batched
(`make_batch`). Prints, per set of pseudo-fake kinds, the share of pixels that differ, by more than one gray
level, and the largest difference; Phi must match exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch

from slsp.config import TrsorConfig
from slsp.families.fluct import FAKE_KINDS
from slsp.families.fluct.training import make_batch
from slsp.imaging import collect, load
from slsp.trsor import TrSOR

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", type=Path, help="a checkout with the per-sample `training_crop`")
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared/data/real/train")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("old_pseudofakes",
                                                  args.other / "slsp/families/fluct/pseudofakes.py")
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    trsor, crops, phis = TrSOR(TrsorConfig(crop=256, crops=8)), [], []
    with torch.inference_mode():
        for f in collect([args.photos])[:args.images]:
            o = trsor(torch.from_numpy(np.array(load(f))))
            crops.append(o.crops[o.valid])
            phis.append(o.crop_phi[o.valid].to(torch.uint8))
    src, src_phi = torch.cat(crops), torch.cat(phis)

    def before(step: int, kinds: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        rng, g = np.random.default_rng([0, step]), torch.Generator().manual_seed(step)
        out = [old.training_crop(src[j].numpy(), src_phi[j].numpy(), 128, fake=i >= 32, rng=rng, g=g, kinds=kinds)
               for i, j in enumerate(rng.integers(src.shape[0], size=64))]
        return torch.stack([torch.from_numpy(np.array(x)) for x, _ in out]), \
            torch.stack([torch.from_numpy(np.array(p)) for _, p in out]).float()

    print(f"{src.shape[0]} sources, {args.steps} steps x 64 inputs")
    for kinds in (FAKE_KINDS[:3], ("decoder",), ("gan",), FAKE_KINDS):
        diffs = []
        for step in range(args.steps):
            a, pa = before(step, kinds)
            b, pb, _ = make_batch(src, src_phi, 128, 64, 0, step, kinds=kinds)
            assert torch.equal(pa, pb), "Phi differs"
            diffs.append((a.int() - b.int()).abs().flatten())
        d = torch.cat(diffs)
        print(f"{','.join(kinds)}: {(d > 0).float().mean():.2e} of pixels differ, {(d > 1).float().mean():.2e} by more "
              f"than 1 level, at most {int(d.max())}")


if __name__ == "__main__":
    main()
