"""TrSOR: training-free skeptical over-smooth region selection, as traceable tensor ops.

Everything here exports to ONNX unchanged: a fixed, unrolled iteration count; masks instead of data-dependent
shapes; sizes only through shape ops; the Gamma constants computed once (SciPy) and baked in as floats.

Null model (METHOD.md 1): a flat p x p patch plus white noise of variance sigma^2 has gradient energy
xi = ||D x||^2 ~ sigma^2 * Gamma(r/2, 2 tr(DD^T)/r), D the stacked central-difference operator of the patch.
The noise variance is re-estimated from the selected patches (a Gamma-mean estimate, corrected for the
truncation at tau; started from a log-domain mean, which texture inflates far less than the plain mean).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special, stats
from torch import Tensor, nn

from slsp.config import TrsorConfig
from slsp.fluctuation import LUMA

_LOG_EPS = 1e-3
_LEFT_OUT = 3.0e38  # the energy of a patch left out of TrSOR (skip_clipped): above every threshold, below float32's max


def derivative_operator(p: int) -> np.ndarray:
    """Stacked central differences [D_h; D_v] of a p x p patch (rows: p(p-2) + (p-2)p, columns: p^2)."""
    rows = []
    for r in range(p):
        for c in range(1, p - 1):
            d = np.zeros((p, p))
            d[r, c + 1], d[r, c - 1] = 0.5, -0.5
            rows.append(d.ravel())
    for r in range(1, p - 1):
        for c in range(p):
            d = np.zeros((p, p))
            d[r + 1, c], d[r - 1, c] = 0.5, -0.5
            rows.append(d.ravel())
    return np.stack(rows)


@dataclass(frozen=True)
class NullModel:
    """Constants of the Gamma null for patch size p and quantile delta, per unit noise variance."""

    trace: float  # tr(D D^T) = E[xi] / sigma^2
    shape: float  # r / 2
    scale: float  # 2 tr(DD^T) / r
    tau: float  # F^-1(delta): threshold = sigma^2 * tau
    truncated_mean: float  # E[xi | xi <= tau] / sigma^2
    log_mean: float  # E[log xi] - log sigma^2

    @staticmethod
    def of(p: int, delta: float) -> "NullModel":
        d = derivative_operator(p)
        trace = float(np.sum(d * d))
        r = int(np.linalg.matrix_rank(d))
        shape, scale = r / 2.0, 2.0 * trace / r
        tau = float(stats.gamma.ppf(delta, shape, scale=scale))
        truncated = trace * float(stats.gamma.cdf(tau, shape + 1, scale=scale)) / delta
        return NullModel(trace, shape, scale, tau, truncated, float(special.digamma(shape) + np.log(scale)))


class TrsorOutput(NamedTuple):
    crops: Tensor  # (K, C, C, 3) uint8
    crop_phi: Tensor  # (K, C, C) float32 in {0, 1}
    positions: Tensor  # (K, 2) int64, top-left (y, x)
    valid: Tensor  # (K,) bool
    sigma: Tensor  # () float32, noise standard deviation in 8-bit units
    phi: Tensor  # (H, W) float32 in {0, 1}


def window_reduce(x: Tensor, k: int, dim: int, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Reduce every k consecutive elements along `dim` (stride 1) with an associative `op`, by doubling.

    Windows of 1, 2, 4, ... elements are built from overlapping halves, then one per set bit of k is combined
    (4 ops for k = 7). Used across rows, where each slice is one contiguous block: ONNX Runtime's pooling with
    k x 1 kernels took 72% of TrSOR at 2048 x 2048 (benchmarks/results/trsor-profile-2048.txt). Along rows a
    1 x k pool stays.
    """
    out_len = x.shape[dim] - k + 1
    windows, size = {1: x}, 1
    while 2 * size <= k:
        w = windows[size]
        n = w.shape[dim] - size
        windows[2 * size] = op(w.narrow(dim, 0, n), w.narrow(dim, size, n))
        size *= 2
    out, offset = None, 0
    for size in sorted(windows, reverse=True):
        if k & size:
            part = windows[size].narrow(dim, offset, out_len)
            out = part if out is None else op(out, part)
            offset += size
    return out


def row_pool_sum(x: Tensor, k: int) -> Tensor:
    """Sum of every k consecutive elements along the last dim of a (C, H, W) tensor, as a 1 x k pool."""
    return F.avg_pool2d(x[None], (1, k), stride=1)[0] * float(k)


def gradient_energy(y: Tensor, p: int) -> Tensor:
    """xi for every p x p patch at stride 1: (C, H, W) float -> (H - p + 1, W - p + 1), summed over C.

    xi = sum over the patch of dh^2 (p rows x p - 2 columns) + dv^2 (p - 2 rows x p columns). With the row sums
    a = rowsum_{p-2}(dh^2) and b = rowsum_p(dv^2), the column direction shares one window of p - 2 rows:
    xi[i] = sum_{r < p-2} (a + b)[i + r] + a[i + p - 2] + a[i + p - 1].
    """
    dh = (y[:, :, 2:] - y[:, :, :-2]) * 0.5
    dv = (y[:, 2:, :] - y[:, :-2, :]) * 0.5
    a = row_pool_sum(dh * dh, p - 2)  # (C, H, W - p + 1)
    b = row_pool_sum(dv * dv, p)  # (C, H - 2, W - p + 1)
    n = a.shape[1] - p + 1
    xi = window_reduce(a.narrow(1, 0, b.shape[1]) + b, p - 2, 1, torch.add) + (
        a.narrow(1, p - 2, n) + a.narrow(1, p - 1, n)
    )
    return xi[0] if xi.shape[0] == 1 else xi.sum(dim=0)  # luma: skip a pass that would only copy


def unclipped_patches(y: Tensor, p: int) -> Tensor:
    """`TrSOR.channels`' output (C, H, W) -> (H - p + 1, W - p + 1) bool, True where the p x p patch holds no
    clipped pixel (0 or 255 in all three channels). Read off the channels TrSOR computes anyway: their mean (luma,
    or the RGB mean) is below 0.05 only where every channel is 0 and above 254.95 only where every channel is 255
    (one level off moves it by at least 0.114). The patch maximum is taken separably, as `dilate` does."""
    m = y[0] if y.shape[0] == 1 else y.mean(dim=0)
    clipped = ((m < 0.05) | (m > 254.95)).to(torch.float32)
    rows = window_reduce(clipped[None, None], p, -2, torch.maximum)
    return F.max_pool2d(rows, (1, p), stride=1)[0, 0] < 0.5


def dilate(mask: Tensor, p: int) -> Tensor:
    """Patch map (H - p + 1, W - p + 1) -> per-pixel union of the selected p x p patches (H, W), separably."""
    m = F.pad(mask[None, None], (p - 1, p - 1, p - 1, p - 1))
    return F.max_pool2d(window_reduce(m, p, -2, torch.maximum), (1, p), stride=1)[0, 0]


class TrSOR(nn.Module):
    """uint8 image (H, W, 3) -> over-smooth mask, noise estimate and K fixed-size crops to score."""

    def __init__(self, cfg: TrsorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.null = NullModel.of(cfg.patch, cfg.delta)

    def channels(self, image: Tensor) -> Tensor:
        """(H, W, 3) uint8 -> (C, H, W) float: luma as a weighted channel sum, or the three channels.

        Elementwise on purpose: as a (H*W x 3) @ (3,) MatMul it dominated ONNX Runtime's TrSOR time
        (docs/benchmarks-log.md, "What changed TrSOR").
        """
        if self.cfg.channel == "rgb":
            return image.permute(2, 0, 1).to(torch.float32)
        # Split the uint8 channels before casting: casting the interleaved image first wrote and re-read
        # 12 bytes per pixel (docs/benchmarks-log.md, "What changed TrSOR").
        ch = [image[:, :, i].to(torch.float32) for i in range(3)]
        return (ch[0] * LUMA[0] + ch[1] * LUMA[1] + ch[2] * LUMA[2]).unsqueeze(0)

    def noise_and_mask(self, xi: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Iterate: tau from sigma^2, select xi <= tau, re-estimate sigma^2 from the selection (fixed count).
        `keep` (per patch, `skip_clipped`): only those patches count; with none kept, sigma^2 is 0 (flat)."""
        n = self.null
        nch = 3.0 if self.cfg.channel == "rgb" else 1.0
        # Start: log-domain mean over all patches (a sum of nch Gammas is treated as nch x one for the start).
        if keep is None:
            start = torch.log(xi + _LOG_EPS).mean()
        else:
            kept = keep.sum().to(torch.float32)
            start = torch.where(keep, torch.log(xi + _LOG_EPS), 0.0).sum() / torch.clamp(kept, min=1.0)
            # A left-out patch gets an energy no threshold reaches (finite, so xi * 0 stays 0 in the sums below).
            xi = torch.where(keep, xi, _LEFT_OUT)
        sigma2 = torch.exp(start - n.log_mean - float(np.log(nch)))
        for _ in range(self.cfg.iterations):
            sel = (xi <= sigma2 * (n.tau * nch)).to(torch.float32)
            count = sel.sum()
            est = (xi * sel).sum() / torch.clamp(count, min=1.0) / (n.truncated_mean * nch)
            sigma2 = torch.where(count > 0.5, est, sigma2)
        mask = (xi <= sigma2 * (n.tau * nch)).to(torch.float32)
        if keep is None:
            return sigma2, mask
        return torch.where(kept > 0.5, sigma2, torch.zeros_like(sigma2)), mask

    def forward(self, image: Tensor) -> TrsorOutput:
        cfg = self.cfg
        p, c = cfg.patch, cfg.crop
        y = self.channels(image)
        xi = gradient_energy(y, p)
        sigma2, mask = self.noise_and_mask(xi, unclipped_patches(y, p) if cfg.skip_clipped else None)
        # A pixel is over-smooth when a selected patch covers it: dilate the patch map back to H x W.
        phi = dilate(mask, p)
        positions, valid = self.select(phi)
        crops, crop_phi = gather_crops(image, phi, positions, c)
        return TrsorOutput(crops, crop_phi, positions, valid, torch.sqrt(sigma2), phi)

    def select(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """Choose K crop positions, most over-smooth area first; ties broken by raster order."""
        c, k = self.cfg.crop, self.cfg.crops
        h, w = phi.shape[0], phi.shape[1]
        # Candidates: the C-grid plus the tiles flush with the bottom and right edges, so small images are
        # covered whole. Edge tiles duplicate the grid when H (W) is a multiple of C and are then invalid.
        main = F.avg_pool2d(phi[None, None], c, stride=c)[0, 0]
        right = F.avg_pool2d(phi[None, None, :, w - c :], c, stride=c)[0, 0]
        bottom = F.avg_pool2d(phi[None, None, h - c :, :], c, stride=c)[0, 0]
        corner = phi[h - c :, w - c :].mean().reshape(1, 1)
        tiles = torch.cat([torch.cat([main, right], 1), torch.cat([bottom, corner], 1)], 0)
        ny, nx = main.shape[0], main.shape[1]
        dev = phi.device  # index tensors live beside the image: a CUDA TrSOR must not mix in CPU tensors
        ys = torch.cat([torch.arange(ny, device=dev) * c, (h - c) * torch.ones(1, dtype=torch.int64, device=dev)])
        xs = torch.cat([torch.arange(nx, device=dev) * c, (w - c) * torch.ones(1, dtype=torch.int64, device=dev)])
        # Tensor ops on the edge positions, not `h % c` in Python: that would be a guard on the image size.
        row_ok = torch.cat([torch.ones(ny, dtype=torch.bool, device=dev), ys[-1:] % c != 0])
        col_ok = torch.cat([torch.ones(nx, dtype=torch.bool, device=dev), xs[-1:] % c != 0])
        ok = (row_ok[:, None] & col_ok[None, :]).reshape(-1)
        count = torch.round(tiles.reshape(-1) * float(c * c)).to(torch.int64)
        n = count.shape[0]
        order = torch.arange(n, device=dev)
        # Unique keys, so every runtime's TopK returns the same order (invalid and padding slots included).
        key = torch.where(ok, count * n + (n - 1 - order), -1 - order)
        key = torch.cat([key, -1 - n - torch.arange(k, device=dev)])
        top, idx = torch.topk(key, k)
        idx = torch.clamp(idx, max=n - 1)
        ny1 = nx + 1
        pos = torch.stack([ys[idx // ny1], xs[idx % ny1]], dim=1)
        return pos, top >= 0


def gather_crops(image: Tensor, phi: Tensor, positions: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Gather (K, C, C, 3) uint8 crops and (K, C, C) Phi crops at the given top-left positions."""
    w = image.shape[1]
    ar = torch.arange(c, device=image.device)
    rows = positions[:, 0, None, None] + ar[None, :, None]
    cols = positions[:, 1, None, None] + ar[None, None, :]
    flat = (rows * w + cols).reshape(-1)
    k = positions.shape[0]
    crops = image.reshape(-1, 3).index_select(0, flat).reshape(k, c, c, 3)
    crop_phi = phi.reshape(-1).index_select(0, flat).reshape(k, c, c)
    return crops, crop_phi


def box_levels(image: Tensor, levels: int) -> list[Tensor]:
    """uint8 (H, W, 3) -> levels 1 .. levels - 1, level l (H // 2^l, W // 2^l, 3): the mean of each 2^l x 2^l
    block, rounded half up. Each level averages the previous level's unrounded means, 2 x 2 at a time: exact in
    float32 (multiples of 4^-l below 256), so it is the block's mean itself, in every runtime and to the bit.
    Each channel is cast and halved in one step, as `TrSOR.channels` splits the uint8 channels first: a float32
    copy of all three channels at full resolution would be the largest tensor of the whole graph (600 MB for a
    50-megapixel image)."""
    if levels == 1:
        return []
    means = [F.avg_pool2d(image[:, :, i].to(torch.float32)[None, None], 2) for i in range(3)]
    out = []
    for lv in range(1, levels):
        if lv > 1:
            means = [F.avg_pool2d(m, 2) for m in means]
        out.append(torch.stack([torch.floor(m[0, 0] + 0.5) for m in means], dim=2).to(torch.uint8))
    return out


def fit(level: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Zero-pad a level to at least one crop per side, so TrSOR runs on it whatever the image's size, and whether it
    held one crop before (if not, its crops are marked invalid and nothing of the padding is scored)."""
    if torch.jit.is_tracing():  # ONNX export: the pads stay functions of the input's size, not traced constants
        size = torch._shape_as_tensor(level)
        pads = [torch.clamp(c - size[1], min=0), torch.clamp(c - size[0], min=0)]
        fits = (size[0] >= c) & (size[1] >= c)
    else:
        h, w = level.shape[0], level.shape[1]
        pads = [max(c - w, 0), max(c - h, 0)]
        fits = torch.tensor(h >= c and w >= c, device=level.device)
    return F.pad(level.permute(2, 0, 1), [0, pads[0], 0, pads[1]]).permute(1, 2, 0), fits


class Pyramid(nn.Module):
    """TrSOR over `levels` box-averaged levels of one image: the crops of each level,
    concatenated level 0 first (`crops` per level; positions in level-0 pixels, so a level-l crop covers
    C * 2^l of them), with level 0's noise estimate and Phi. Coarser levels let the model see fluctuations that a
    generator leaves at the scale of its latent grid; a level too small for one crop contributes invalid crops."""

    def __init__(self, cfg: TrsorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.level = TrSOR(cfg)

    def forward(self, image: Tensor) -> TrsorOutput:
        out = self.level(image)
        parts = [out]
        for lv, level in enumerate(box_levels(image, self.cfg.levels), 1):
            pixels, fits = fit(level, self.cfg.crop)
            o = self.level(pixels)
            parts.append(TrsorOutput(o.crops, o.crop_phi, o.positions * 2**lv, o.valid & fits, o.sigma, o.phi))
        if len(parts) == 1:
            return out
        per_crop = TrsorOutput._fields[:4]  # crops, crop_phi, positions, valid
        return TrsorOutput(*(torch.cat([getattr(p, n) for p in parts]) for n in per_crop), out.sigma, out.phi)
