"""Content-preserving pseudo-fakes and the processing chain every training crop goes through (real-only training).

A pseudo-fake keeps a real crop's content and changes only its fluctuations, as self-blended images do for face
forgeries: denoise (Gaussian, median, residual shrinkage), re-noise with the wrong statistics (white per channel,
spatially correlated, luma-only), resample (down 1.5-6x, up again: latent decoders and GANs upsample), or
`decoder`: what a latent decoder does, three x2 upsampling stages (nearest, bilinear or a transposed convolution,
each followed by a random smooth 3 x 3 convolution) from a grid 8x coarser, optionally with structured noise of its
own, or `gan`: two transposed-convolution stages from a grid 4x coarser whose phases differ (a checkerboard), or
`sparse`: denoised, then re-noised with an amplitude that swells and fades across the crop (white noise times a
smooth log-normal field), so the residual is heavy-tailed where a camera's is near-Gaussian, or `latent`: denoised,
then re-noised with noise drawn on a grid 2-4x coarser and brought up by a decoder's stages (a latent decoder
synthesises texture from its latent grid, so its fluctuation carries that grid); on the whole crop or
inside Phi only, blended in at a random strength so that some are hard. The kinds drawn from are a training option
(`FluctOptions.fakes`), so each can be ablated.

The processing chain (nothing, resize 0.5-1, JPEG q70-100 at 4:2:0 or 4:4:4) is applied alike to real crops and
pseudo-fakes after the pseudo-fake is made, so processing history cannot be the cue the model learns.

A batch is made in two parts so that the training device does the arithmetic: every random choice is drawn first,
crop by crop from the step's seeded generators (`draw_input`: cheap), then `make_inputs` makes all the pseudo-fakes
of the batch as batched tensor ops on the device (per-crop parameters as grouped convolutions) and runs the chain's
resize and JPEG, which stay PIL's, in CPU threads.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from slsp.families.fluct import SHIPPED_FAKES
from slsp.fluctuation import residual


def _depthwise(x: Tensor, k: Tensor, transposed: bool = False, **kw: Any) -> Tensor:
    """x (N, C, H, W) convolved with k (N, kh, kw): each crop's own kernel on each of its channels."""
    n, c = x.shape[:2]
    w = k.repeat_interleave(c, dim=0)[:, None]
    conv = F.conv_transpose2d if transposed else F.conv2d
    y = conv(x.reshape(1, n * c, *x.shape[2:]), w, groups=n * c, **kw)
    return y.view(n, c, *y.shape[2:])


def gaussian_blur(x: Tensor, s: float | Tensor) -> Tensor:
    """(N, C, H, W) separable Gaussian blur, reflect-padded, of width `s` (one per crop, or one for all)."""
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device).expand(x.shape[0])
    r = torch.ceil(2.5 * s).clamp(min=1)
    rmax = int(r.max())
    t = torch.arange(-rmax, rmax + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / s[:, None]) ** 2) * (t.abs() <= r[:, None])  # each crop's own radius
    k = k / k.sum(1, keepdim=True)
    x = F.pad(x, (rmax,) * 4, mode="reflect")
    return _depthwise(_depthwise(x, k[:, None, :]), k[:, :, None])


def median3(x: Tensor) -> Tensor:
    """(N, C, H, W) 3 x 3 median, reflect-padded: a 19-exchange min/max network (exact, and far faster than sorting
    nine values per pixel)."""
    h, w = x.shape[2:]
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    v = [p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
                 (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[4]


def _smooth3(x: Tensor, ring: Tensor) -> Tensor:
    """Each crop's 3 x 3 convolution that keeps the mean: centre weight plus a ring (per neighbour: < 0 sharpens,
    > 0 softens)."""
    k = ring[:, None, None].expand(-1, 3, 3).clone()
    k[:, 1, 1] = 1.0 - 8.0 * ring
    return _depthwise(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def _up2(y: Tensor, taps: Tensor) -> Tensor:
    """Stride-2 transposed convolution, each crop's separable 4-tap kernel (N, 4), the output twice the input."""
    return _depthwise(F.pad(y, (1, 1, 1, 1), mode="replicate"), taps[:, :, None] * taps[:, None, :], transposed=True,
                      stride=2, padding=3)


@dataclass
class Fake:
    """The draws of one pseudo-fake: its kind, that kind's parameters, the region (Phi only) and the strength."""

    kind: str
    p: dict[str, Any]
    phi_only: bool
    alpha: float


def _draw_denoise(rng: np.random.Generator) -> dict[str, Any]:
    how = int(rng.integers(3))  # Gaussian, median, or shrinkage of the high-pass residual (keeps edges)
    return {"how": how, "v": float(rng.uniform(0.4, 1.5)) if how == 0 else float(rng.uniform(1.0, 4.0)) if how == 2
            else 0.0}


def _draw_renoise(rng: np.random.Generator, g: torch.Generator, side: int) -> dict[str, Any]:
    p = {"base": _draw_denoise(rng)}
    p["noise"] = torch.randn((1, 1 if rng.random() < 0.3 else 3, side, side), generator=g)  # luma-only or per channel
    p["corr"] = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else 0.0  # spatially correlated
    p["scale"] = float(rng.uniform(0.5, 3.0))
    return p


def _draw_resample(rng: np.random.Generator) -> dict[str, Any]:
    return {"f": float(rng.uniform(1.5, 6.0)), "down": ("bilinear", "bicubic", "area")[rng.integers(3)],
            "up": ("bilinear", "bicubic")[rng.integers(2)]}


def _draw_stages(rng: np.random.Generator, n: int) -> list[tuple[int, float, float]]:
    """n x2 upsampling stages: nearest, bilinear, or a transposed convolution of taps (s, 1-s, 1-s, s); then a 3 x 3
    of ring weight in [-0.08, 0.2]."""
    stages = []
    for _ in range(n):
        mode = int(rng.integers(3))
        s = float(rng.uniform(0.05, 0.45)) if mode == 2 else 0.0
        stages.append((mode, s, float(rng.uniform(-0.08, 0.2))))
    return stages


def _draw_decoder(rng: np.random.Generator, g: torch.Generator, side: int) -> dict[str, Any]:
    p: dict[str, Any] = {"stages": _draw_stages(rng, 3), "noise": None}
    if rng.random() < 0.5:  # the decoder's own fluctuation: small, spatially structured, the same in every channel
        p["noise"] = torch.randn((1, 1, side, side), generator=g)
        p["ring"], p["scale"] = float(rng.uniform(-0.08, 0.2)), float(rng.uniform(0.3, 1.5))
    return p


def _draw_latent(rng: np.random.Generator, g: torch.Generator, side: int) -> dict[str, Any]:
    p = {"base": _draw_denoise(rng)}
    stages = int(rng.integers(1, 3))  # a grid 2 or 4 times coarser (a latent decoder's 8 at the canonical 1/2)
    n = -(-side // 2 ** stages)
    p["noise"] = torch.randn((1, 1 if rng.random() < 0.3 else 3, n, n), generator=g)  # luma-only or per channel
    # RMS up to 2 gray levels, not re-noise's 3: correlated noise moves the 8 x 8 means, the content, more per unit
    p["stages"], p["scale"] = _draw_stages(rng, stages), float(rng.uniform(0.5, 2.0))
    return p


def _draw_sparse(rng: np.random.Generator, g: torch.Generator, side: int) -> dict[str, Any]:
    p = {"base": _draw_denoise(rng)}
    p["noise"] = torch.randn((1, 1 if rng.random() < 0.3 else 3, side, side), generator=g)  # luma-only or per channel
    p["field"] = torch.randn((1, 1, side, side), generator=g)  # the amplitude's log, blurred by `smooth`
    p["smooth"], p["spread"] = float(rng.uniform(1.0, 4.0)), float(rng.uniform(0.5, 1.2))
    p["scale"] = float(rng.uniform(0.5, 3.0))
    return p


def _draw_gan(rng: np.random.Generator) -> dict[str, Any]:
    # Each stage: taps (s, 1-s, 1-s-d, s+d), whose two phases sum to 1-d and 1+d (the checkerboard), then a 3 x 3.
    return {"stages": [tuple(float(v) for v in (rng.uniform(0.05, 0.45), rng.uniform(0.02, 0.15),
                                                 rng.uniform(-0.08, 0.2))) for _ in range(2)]}


def draw_fake(rng: np.random.Generator, g: torch.Generator, side: int, kinds: tuple[str, ...] = SHIPPED_FAKES
              ) -> Fake:
    """One pseudo-fake's draws for a side x side crop, its kind uniform over the entries of `kinds` (names in
    FAKE_KINDS; a kind named twice is drawn twice as often); noise comes from `g`."""
    kind = kinds[rng.integers(len(kinds))]
    p = {"denoise": lambda: _draw_denoise(rng), "renoise": lambda: _draw_renoise(rng, g, side),
         "resample": lambda: _draw_resample(rng), "decoder": lambda: _draw_decoder(rng, g, side),
         "gan": lambda: _draw_gan(rng), "sparse": lambda: _draw_sparse(rng, g, side),
         "latent": lambda: _draw_latent(rng, g, side)}[kind]()
    return Fake(kind, p, phi_only=bool(rng.random() < 0.5), alpha=float(rng.uniform(0.3, 1.0)))


def _col(v: list[float], x: Tensor) -> Tensor:
    """One value per crop, on x's device."""
    return torch.tensor(v, dtype=x.dtype, device=x.device)


def _each(v: list[float], x: Tensor) -> Tensor:
    """One value per crop, shaped to scale (N, C, H, W)."""
    return _col(v, x)[:, None, None, None]


def _denoise(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    out = torch.empty_like(x)
    for how in range(3):
        i = [j for j, p in enumerate(ps) if p["how"] == how]
        if not i:
            continue
        xi, v = x[i], _col([ps[j]["v"] for j in i], x)
        if how == 0:
            out[i] = gaussian_blur(xi, v)
        elif how == 1:
            out[i] = median3(xi)
        else:
            r = residual(xi)
            out[i] = xi - r + torch.sign(r) * (r.abs() - v.view(-1, 1, 1, 1)).clamp(min=0.0)
    return out


def _renoise(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    n = torch.cat([p["noise"].expand(-1, 3, -1, -1) for p in ps]).to(x.device, x.dtype)
    corr = [j for j, p in enumerate(ps) if p["corr"]]
    if corr:
        b = gaussian_blur(n[corr], _col([ps[j]["corr"] for j in corr], x))
        # Each crop's std over its own noise channels (one for luma-only noise, copied into all three here).
        c = _col([ps[j]["noise"].shape[1] for j in corr], x)
        var = (b - b.mean((1, 2, 3), keepdim=True)).square().sum((1, 2, 3)) * c / 3 / (c * b[0, 0].numel() - 1)
        n[corr] = b / var.sqrt().clamp(min=1e-6).view(-1, 1, 1, 1)
    return _denoise(x, [p["base"] for p in ps]) + n * _each([p["scale"] for p in ps], x)


def _resample(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    """Per crop: each has its own intermediate size, and a resize is a handful of kernels on any device."""
    h, w = x.shape[2:]
    out = []
    for xi, p in zip(x.split(1), ps):
        small = F.interpolate(xi, size=(max(2, round(h / p["f"])), max(2, round(w / p["f"]))), mode=p["down"],
                              **({"antialias": True} if p["down"] != "area" else {}))
        out.append(F.interpolate(small, size=(h, w), mode=p["up"], align_corners=False))
    return torch.cat(out)


def _upsample(y: Tensor, stages: list[list[tuple[int, float, float]]]) -> Tensor:
    """Each crop's `_draw_stages` (the same number for all), applied in turn: the output 2^stages times the input."""
    for k in range(len(stages[0])):
        st = [s[k] for s in stages]
        up = torch.empty((*y.shape[:2], 2 * y.shape[2], 2 * y.shape[3]), dtype=y.dtype, device=y.device)
        for mode in range(3):
            i = [j for j, s in enumerate(st) if s[0] == mode]
            if not i:
                continue
            if mode == 2:  # taps (s, 1-s, 1-s, s): the two phases each sum to 1
                s = _col([st[j][1] for j in i], y)[:, None]
                up[i] = _up2(y[i], torch.cat([s, 1 - s, 1 - s, s], 1))
            else:
                up[i] = F.interpolate(y[i], scale_factor=2, mode=("nearest", "bilinear")[mode],
                                      **({"align_corners": False} if mode == 1 else {}))
        y = _smooth3(up, _col([s[2] for s in st], y))
    return y


def _decoder(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    h, w = x.shape[2:]
    y = _upsample(F.adaptive_avg_pool2d(x, (-(-h // 8), -(-w // 8))), [p["stages"] for p in ps])
    y = y[:, :, :h, :w].clone()
    i = [j for j, p in enumerate(ps) if p["noise"] is not None]
    if i:
        n = torch.cat([ps[j]["noise"] for j in i]).to(x.device, x.dtype)
        y[i] += _smooth3(n, _col([ps[j]["ring"] for j in i], x)) * _each([ps[j]["scale"] for j in i], x)
    return y


def _gan(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    h, w = x.shape[2:]
    y = F.adaptive_avg_pool2d(x, (-(-h // 4), -(-w // 4)))
    for k in range(2):
        s, d, ring = (_col([p["stages"][k][m] for p in ps], x)[:, None] for m in range(3))
        y = _smooth3(_up2(y, torch.cat([s, 1 - s, 1 - s - d, s + d], 1)), ring[:, 0])
    return y[:, :, :h, :w]


def _latent(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    """Denoised, then re-noised with noise of RMS `scale` drawn on a grid 2-4x coarser and brought up by a
    decoder's stages: content kept, the fluctuation synthesised as a latent decoder's is, with its grid."""
    h, w = x.shape[2:]
    n = torch.empty_like(x)
    for depth in sorted({len(p["stages"]) for p in ps}):
        i = [j for j, p in enumerate(ps) if len(p["stages"]) == depth]
        y = torch.cat([ps[j]["noise"].expand(-1, 3, -1, -1) for j in i]).to(x.device, x.dtype)
        y = _upsample(y, [ps[j]["stages"] for j in i])[:, :, :h, :w]
        y = y - y.mean((1, 2, 3), keepdim=True)
        n[i] = y / y.square().mean((1, 2, 3), keepdim=True).sqrt().clamp(min=1e-6)
    return _denoise(x, [p["base"] for p in ps]) + n * _each([p["scale"] for p in ps], x)


def _sparse(x: Tensor, ps: list[dict[str, Any]]) -> Tensor:
    """Noise of RMS `scale` whose amplitude is exp(spread x a unit-std smooth field): a scale mixture, so its
    kurtosis grows as exp(4 spread^2) while its mean power stays that of `renoise`."""
    n = torch.cat([p["noise"].expand(-1, 3, -1, -1) for p in ps]).to(x.device, x.dtype)
    f = gaussian_blur(torch.cat([p["field"] for p in ps]).to(x.device, x.dtype), _col([p["smooth"] for p in ps], x))
    f = (f - f.mean((1, 2, 3), keepdim=True)) / f.std((1, 2, 3), keepdim=True).clamp(min=1e-6)
    a = torch.exp(f * _each([p["spread"] for p in ps], x))
    a = a / a.square().mean((1, 2, 3), keepdim=True).sqrt()
    return _denoise(x, [p["base"] for p in ps]) + n * a * _each([p["scale"] for p in ps], x)


_KINDS = {"denoise": _denoise, "renoise": _renoise, "resample": _resample, "decoder": _decoder, "gan": _gan,
          "sparse": _sparse, "latent": _latent}


def pseudo_fakes(x: Tensor, phi: Tensor, fakes: list[Fake]) -> Tensor:
    """x: (N, 3, H, W) float in gray levels; phi: (N, H, W) in {0, 1}; one `draw_fake` per crop. Returns the
    pseudo-fakes, same shape, unrounded, each kind made for all its crops at once on x's device."""
    f = torch.empty_like(x)
    for kind, make in _KINDS.items():
        i = [j for j, d in enumerate(fakes) if d.kind == kind]
        if i:
            f[i] = make(x[i], [fakes[j].p for j in i])
    # The strength, and only the over-smooth region for those drawn so whose Phi is not (nearly) empty: one lerp.
    phi = phi[:, None].to(x.dtype)
    only = _each([d.phi_only for d in fakes], x).bool() & (phi.mean((1, 2, 3), keepdim=True) > 0.05)
    w = torch.where(only, phi, 1.0) * _each([d.alpha for d in fakes], x)
    return torch.lerp(x, f, w)


@dataclass(frozen=True)
class Chain:
    """The draws of one crop's processing: a resize factor and filter (factor 1: none), a JPEG quality (0: none)
    and chroma subsampling (PIL's: 0 is 4:4:4, 2 is 4:2:0)."""

    resize: float = 1.0
    resample: int = Image.BICUBIC
    quality: int = 0
    subsampling: int = 2


def draw_chain(rng: np.random.Generator) -> Chain:
    """Nothing (1/3); else resize 0.5-1 (bicubic, bilinear or Lanczos) and/or JPEG q70-100 (4:2:0 / 4:4:4)."""
    if rng.random() < 1 / 3:
        return Chain()
    resize, jpeg = rng.random() < 0.5, rng.random() < 0.75
    if not (resize or jpeg):
        jpeg = True
    f, how = (float(rng.uniform(0.5, 1.0)), (Image.BICUBIC, Image.BILINEAR, Image.LANCZOS)[rng.integers(3)]) \
        if resize else (1.0, Image.BICUBIC)
    q, sub = (int(rng.integers(70, 101)), int(rng.choice([0, 2]))) if jpeg else (0, 2)
    return Chain(f, how, q, sub)


def chain_side(side: int, c: Chain) -> int:
    """A side after `c`'s resize."""
    return side if c.resize == 1.0 else max(1, round(side * c.resize))


def process(img: np.ndarray, phi: np.ndarray, c: Chain) -> tuple[np.ndarray, np.ndarray]:
    """`c` applied to a uint8 (H, W, 3) crop and its (H, W) Phi (resized alike, nearest)."""
    if c == Chain():
        return img, phi
    pil = Image.fromarray(img)
    if c.resize != 1.0:
        size = (chain_side(pil.width, c), chain_side(pil.height, c))
        pil = pil.resize(size, c.resample)
        phi = np.asarray(Image.fromarray(phi).resize(size, Image.NEAREST))
    if c.quality:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=c.quality, subsampling=c.subsampling)
        pil = Image.open(buf).convert("RGB")
    return np.asarray(pil), phi


@dataclass
class Input:
    """The draws of one model input from a source crop: a rotation by k quarter turns, a mirror, the pseudo-fake
    (None for a real input), the chain, and where the model crop is cut from the processed source."""

    k: int
    mirror: bool
    fake: Fake | None
    chain: Chain
    top: int
    left: int


def draw_input(rng: np.random.Generator, g: torch.Generator, side: int, crop: int, fake: bool, chain: bool = True,
               kinds: tuple[str, ...] = SHIPPED_FAKES) -> Input:
    """The draws of one model input from a side x side source (side >= 2 * crop, so a 0.5 resize still holds one
    crop), in the order the generators are consumed."""
    k, mirror = int(rng.integers(4)), bool(rng.random() < 0.5)
    f = draw_fake(rng, g, side, kinds) if fake else None
    c = draw_chain(rng) if chain else Chain()
    s = chain_side(side, c)
    return Input(k, mirror, f, c, int(rng.integers(s - crop + 1)), int(rng.integers(s - crop + 1)))


def make_inputs(src: Tensor, src_phi: Tensor, draws: list[Input], crop: int, device: torch.device
                ) -> tuple[Tensor, Tensor]:
    """Model inputs (N, crop, crop, 3) uint8 and their Phi (N, crop, crop) uint8 on `device`, from source crops
    (N, S, S, 3) and Phi (N, S, S) uint8 and one `draw_input` each: the pseudo-fakes on `device`, the chain's
    resize and JPEG in CPU threads (PIL releases the GIL), for the inputs that have them."""
    def orient(t: Tensor, d: Input) -> Tensor:
        t = torch.rot90(t, d.k, (0, 1))
        return t.flip(1) if d.mirror else t

    src, src_phi = src.to(device, non_blocking=True), src_phi.to(device, non_blocking=True)
    img = torch.stack([orient(t, d) for t, d in zip(src, draws)])
    phi = torch.stack([orient(t, d) for t, d in zip(src_phi, draws)])
    fi = [j for j, d in enumerate(draws) if d.fake is not None]
    if fi:
        y = pseudo_fakes(img[fi].permute(0, 3, 1, 2).float(), phi[fi], [draws[j].fake for j in fi])
        img[fi] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    out_x, out_phi = list(img), list(phi)
    ci = [j for j, d in enumerate(draws) if d.chain != Chain()]
    if ci:
        host_x, host_phi = img[ci].cpu().numpy(), phi[ci].cpu().numpy()
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            done = pool.map(lambda j: process(host_x[j], host_phi[j], draws[ci[j]].chain), range(len(ci)))
            for j, (a, b) in zip(ci, done):
                out_x[j], out_phi[j] = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
    cut = [(t[d.top:d.top + crop, d.left:d.left + crop], p[d.top:d.top + crop, d.left:d.left + crop])
           for t, p, d in zip(out_x, out_phi, draws)]
    return (torch.stack([t.to(device, non_blocking=True) for t, _ in cut]),
            torch.stack([p.to(device, non_blocking=True) for _, p in cut]))
