"""Content-preserving pseudo-fakes and the processing chain every training crop goes through (real-only training).

A pseudo-fake keeps a real crop's content and changes only its fluctuations, as self-blended images do for face
forgeries: denoise (Gaussian, median, residual shrinkage), re-noise with the wrong statistics (white per channel,
spatially correlated, luma-only), resample (down 1.5-6x, up again: latent decoders and GANs upsample), or
`decoder`: what a latent decoder does, three x2 upsampling stages (nearest, bilinear or a transposed convolution,
each followed by a random smooth 3 x 3 convolution) from a grid 8x coarser, optionally with structured noise of its
own, or `gan`: two transposed-convolution stages from a grid 4x coarser whose phases differ (a checkerboard);
on the whole crop or inside Phi only, blended in at a random strength so that some are hard. The kinds drawn from
are a training option (`FluctOptions.fakes`), so each can be ablated.

The processing chain (nothing, resize 0.5-1, JPEG q70-100 at 4:2:0 or 4:4:4) is applied alike to real crops and
pseudo-fakes after the pseudo-fake is made, so processing history cannot be the cue the model learns.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from slsp.families.fluct import SHIPPED_FAKES
from slsp.families.fluct.model import residual


def gaussian_blur(x: Tensor, s: float) -> Tensor:
    """(1, C, H, W) separable Gaussian blur, reflect-padded."""
    r = max(1, int(np.ceil(2.5 * s)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def median3(x: Tensor) -> Tensor:
    """(1, C, H, W) 3 x 3 median, reflect-padded."""
    _, c, h, w = x.shape
    u = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3).view(1, c, 9, h, w)
    return u.median(dim=2).values


def _denoise(x: Tensor, rng: np.random.Generator) -> Tensor:
    kind = rng.integers(3)
    if kind == 0:
        return gaussian_blur(x, float(rng.uniform(0.4, 1.5)))
    if kind == 1:
        return median3(x)
    # Soft shrinkage of the high-pass residual: flattens small fluctuations, keeps edges.
    t = float(rng.uniform(1.0, 4.0))
    r = residual(x)
    return x - r + torch.sign(r) * (r.abs() - t).clamp(min=0.0)


def _renoise(x: Tensor, rng: np.random.Generator, g: torch.Generator) -> Tensor:
    base = _denoise(x, rng)
    shape = (1, 1 if rng.random() < 0.3 else 3, *x.shape[2:])  # luma-only or independent per channel
    n = torch.randn(shape, generator=g, dtype=x.dtype)
    if rng.random() < 0.5:  # spatially correlated
        n = gaussian_blur(n, float(rng.uniform(0.5, 1.5)))
        n = n / n.std().clamp(min=1e-6)
    return base + n * float(rng.uniform(0.5, 3.0))


def _resample(x: Tensor, rng: np.random.Generator) -> Tensor:
    h, w = x.shape[2:]
    f = float(rng.uniform(1.5, 6.0))
    down = ("bilinear", "bicubic", "area")[rng.integers(3)]
    small = F.interpolate(x, size=(max(2, round(h / f)), max(2, round(w / f))), mode=down,
                          **({"antialias": True} if down != "area" else {}))
    up = ("bilinear", "bicubic")[rng.integers(2)]
    return F.interpolate(small, size=(h, w), mode=up, align_corners=False)


def _smooth3(x: Tensor, rng: np.random.Generator) -> Tensor:
    """A random 3 x 3 convolution that keeps the mean: centre weight plus a softening or sharpening ring."""
    ring = float(rng.uniform(-0.08, 0.2))  # per neighbour: < 0 sharpens, > 0 softens
    k = torch.full((3, 3), ring, dtype=x.dtype)
    k[1, 1] = 1.0 - 8.0 * ring
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3).repeat(c, 1, 1, 1), groups=c)


def _decoder(x: Tensor, rng: np.random.Generator, g: torch.Generator) -> Tensor:
    """A latent decoder's pixels: the content of a grid 8x coarser, re-synthesised by three x2 upsampling stages."""
    h, w = x.shape[2:]
    y = F.adaptive_avg_pool2d(x, (-(-h // 8), -(-w // 8)))
    c = x.shape[1]
    for _ in range(3):
        mode = rng.integers(3)
        if mode == 2:  # transposed convolution, stride 2, a separable 4-tap kernel whose two phases each sum to 1
            s = float(rng.uniform(0.05, 0.45))
            a = torch.tensor([s, 1.0 - s, 1.0 - s, s], dtype=x.dtype)
            k = (a[:, None] * a[None, :]).view(1, 1, 4, 4).repeat(c, 1, 1, 1)
            y = F.conv_transpose2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k, stride=2, padding=3, groups=c)
        else:
            y = F.interpolate(y, scale_factor=2, mode=("nearest", "bilinear")[mode],
                              **({"align_corners": False} if mode == 1 else {}))
        y = _smooth3(y, rng)
    y = y[:, :, :h, :w]
    if rng.random() < 0.5:  # the decoder's own fluctuation: small, spatially structured, the same in every channel
        y = y + _smooth3(torch.randn((1, 1, h, w), generator=g, dtype=x.dtype), rng) * float(rng.uniform(0.3, 1.5))
    return y


def _gan(x: Tensor, rng: np.random.Generator) -> Tensor:
    """A GAN generator's upsampling: the content of a grid 4x coarser, two stride-2 transposed convolutions whose
    two phases carry unequal weight (the checkerboard of Odena et al., 2016), each followed by a random 3 x 3
    convolution."""
    h, w = x.shape[2:]
    y = F.adaptive_avg_pool2d(x, (-(-h // 4), -(-w // 4)))
    c = x.shape[1]
    for _ in range(2):
        s, d = float(rng.uniform(0.05, 0.45)), float(rng.uniform(0.02, 0.15))
        a = torch.tensor([s, 1.0 - s, 1.0 - s - d, s + d], dtype=x.dtype)  # phase sums 1 - d and 1 + d
        k = (a[:, None] * a[None, :]).view(1, 1, 4, 4).repeat(c, 1, 1, 1)
        y = F.conv_transpose2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k, stride=2, padding=3, groups=c)
        y = _smooth3(y, rng)
    return y[:, :, :h, :w]


_KINDS = {  # FAKE_KINDS -> (1, C, H, W) x, rng, g -> the fake before blending
    "denoise": lambda x, rng, g: _denoise(x, rng),
    "renoise": _renoise,
    "resample": lambda x, rng, g: _resample(x, rng),
    "decoder": _decoder,
    "gan": lambda x, rng, g: _gan(x, rng),
}


def pseudo_fake(x: Tensor, phi: Tensor, rng: np.random.Generator, g: torch.Generator,
                kinds: tuple[str, ...] = SHIPPED_FAKES) -> Tensor:
    """x: (3, H, W) float in gray levels; phi: (H, W) in {0, 1}. Returns the pseudo-fake, same shape, unrounded.
    The kind is drawn uniformly from `kinds` (names in FAKE_KINDS)."""
    x4 = x[None]
    f = _KINDS[kinds[rng.integers(len(kinds))]](x4, rng, g)
    if rng.random() < 0.5 and float(phi.mean()) > 0.05:
        f = phi * f + (1.0 - phi) * x4  # only the over-smooth region changes
    a = float(rng.uniform(0.3, 1.0))
    return (x4 + a * (f - x4))[0]


def process(img: np.ndarray, phi: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random chain for every crop: nothing (1/3), else resize 0.5-1 and/or JPEG q70-100 (4:2:0 / 4:4:4)."""
    if rng.random() < 1 / 3:
        return img, phi
    resize, jpeg = rng.random() < 0.5, rng.random() < 0.75
    if not (resize or jpeg):
        jpeg = True
    pil = Image.fromarray(img)
    if resize:
        f = float(rng.uniform(0.5, 1.0))
        size = (max(1, round(pil.width * f)), max(1, round(pil.height * f)))
        pil = pil.resize(size, (Image.BICUBIC, Image.BILINEAR, Image.LANCZOS)[rng.integers(3)])
        phi = np.asarray(Image.fromarray(phi).resize(size, Image.NEAREST))
    if jpeg:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(rng.integers(70, 101)), subsampling=int(rng.choice([0, 2])))
        pil = Image.open(buf).convert("RGB")
    return np.asarray(pil), phi


def training_crop(src: np.ndarray, src_phi: np.ndarray, crop: int, fake: bool, rng: np.random.Generator,
                  g: torch.Generator, chain: bool = True, kinds: tuple[str, ...] = SHIPPED_FAKES
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One model input from a larger real crop: flips, the pseudo-fake (if `fake`), the chain, a random crop.

    src: (S, S, 3) uint8 with S >= 2 * crop (so a 0.5 resize still holds one crop); src_phi: (S, S) uint8 {0, 1}.
    """
    k = int(rng.integers(4))
    img, phi = np.rot90(src, k), np.rot90(src_phi, k)
    if rng.random() < 0.5:
        img, phi = img[:, ::-1], phi[:, ::-1]
    img, phi = np.ascontiguousarray(img), np.ascontiguousarray(phi)
    if fake:
        x = torch.from_numpy(img).permute(2, 0, 1).float()
        y = pseudo_fake(x, torch.from_numpy(phi).float(), rng, g, kinds)
        img = y.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    if chain:
        img, phi = process(img, phi, rng)
    h, w = phi.shape
    y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    return img[y0:y0 + crop, x0:x0 + crop], phi[y0:y0 + crop, x0:x0 + crop]
