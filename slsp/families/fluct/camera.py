"""A simulated camera: real-camera pixel fluctuations on clean content, as an extra source of real training photos.

After "Unprocessing Images for Learned Raw Denoising" (Brooks et al., CVPR 2019): a real photo downscaled 3-4x (an
area filter averages its own noise and demosaicking away) is unprocessed to linear camera RGB (inverse tone curve,
inverse gamma, a random camera colour matrix, inverse white balance), mosaicked to a Bayer pattern, given shot and
read noise at a random ISO, and processed again as a camera would: demosaicking (bilinear, Malvar-He-Cutler, or
bilinear with median-filtered colour differences), white balance, colour matrix, gamma, tone curve, optional
in-camera denoising and sharpening, and a camera JPEG. Every parameter is drawn per photo. Only real photos go in.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from slsp.families.fluct.pseudofakes import gaussian_blur, median3

# Brooks et al.'s XYZ -> camera matrices (four cameras) and sRGB -> XYZ; a random convex mix is one camera.
XYZ2CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
])
RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                    [0.0193339, 0.1191920, 0.9503041]])
DEMOSAIC = ("bilinear", "malvar", "median")
_BILINEAR_G = torch.tensor([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=torch.float32) / 4
_BILINEAR_RB = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 4
# Malvar, He and Cutler (2004), gradient-corrected bilinear: green at red/blue; red/blue at green in a red/blue row
# (the column variant is its transpose); red at blue and blue at red.
_MHC_G = torch.tensor([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
                      dtype=torch.float32) / 8
_MHC_ROW = torch.tensor([[0, 0, .5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, .5, 0, 0]],
                        dtype=torch.float32) / 8
_MHC_DIAG = torch.tensor([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0],
                          [0, 0, -1.5, 0, 0]], dtype=torch.float32) / 8


def clean_content(img: np.ndarray, rng: np.random.Generator, min_side: int) -> np.ndarray | None:
    """The photo downscaled 3-4x with an area filter (less where that would leave a side below `min_side`, never
    less than 2x); None if even 2x leaves it too small."""
    h, w = img.shape[:2]
    f = min(float(rng.uniform(3.0, 4.0)), min(h, w) / min_side)
    if f < 2.0:
        return None
    size = (max(1, round(w / f)), max(1, round(h / f)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BOX))


def _conv(x: Tensor, k: Tensor) -> Tensor:
    """(1, 1, H, W) reflect-padded convolution."""
    r = k.shape[-1] // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), k[None, None])


def _masks(h: int, w: int, dy: int, dx: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Red, green and blue sites of an RGGB pattern shifted by (dy, dx), and the rows holding red sites:
    (1, 1, H, W) each."""
    y = ((torch.arange(h)[:, None] + dy) % 2).expand(h, w)
    x = ((torch.arange(w)[None, :] + dx) % 2).expand(h, w)
    red, blue = (y == 0) & (x == 0), (y == 1) & (x == 1)
    return tuple(m[None, None].float() for m in (red, ~(red | blue), blue, y == 0))


def demosaic(raw: Tensor, dy: int, dx: int, method: str) -> Tensor:
    """(1, 1, H, W) Bayer mosaic -> (1, 3, H, W) RGB."""
    red, green, blue, red_row = _masks(raw.shape[-2], raw.shape[-1], dy, dx)
    if method == "malvar":
        g = raw * green + _conv(raw, _MHC_G) * (1 - green)
        row, col, diag = _conv(raw, _MHC_ROW), _conv(raw, _MHC_ROW.T.contiguous()), _conv(raw, _MHC_DIAG)
        # At a green site a colour's neighbours lie in its row (a row with that colour's sites) or its column.
        r = raw * red + green * (row * red_row + col * (1 - red_row)) + diag * blue
        b = raw * blue + green * (row * (1 - red_row) + col * red_row) + diag * red
        return torch.cat([r, g, b], dim=1)
    r = _conv(raw * red, _BILINEAR_RB)
    g = _conv(raw * green, _BILINEAR_G)
    b = _conv(raw * blue, _BILINEAR_RB)
    if method == "median":  # median-filtered colour differences, against zipper and false-colour artefacts
        r, b = g + median3(r - g), g + median3(b - g)
    return torch.cat([r, g, b], dim=1)


def simulate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) clean content -> uint8 (H, W, 3) as a random camera would have recorded it."""
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0
    # Unprocess: tone curve and gamma undone, sRGB -> camera RGB, white balance undone.
    x = 0.5 - torch.sin(torch.asin((1.0 - 2.0 * x).clamp(-1.0, 1.0)) / 3.0)
    x = x.clamp(min=1e-8) ** 2.2
    wts = rng.uniform(1e-8, 1.0, len(XYZ2CAMS))
    rgb2cam = (np.tensordot(wts / wts.sum(), XYZ2CAMS, axes=1) @ RGB2XYZ)
    rgb2cam = rgb2cam / rgb2cam.sum(axis=1, keepdims=True)
    cam2rgb = np.linalg.inv(rgb2cam)
    x = torch.einsum("ij,bjhw->bihw", torch.tensor(rgb2cam, dtype=torch.float32), x)
    gains = np.array([rng.uniform(1.9, 2.4), 1.0, rng.uniform(1.5, 1.9)]) / rng.normal(0.8, 0.1)
    x = (x / torch.tensor(gains, dtype=torch.float32).view(1, 3, 1, 1)).clamp(0.0, 1.0)
    # Mosaic, then shot and read noise at a random ISO (Brooks et al.'s log-linear noise model).
    dy, dx = int(rng.integers(2)), int(rng.integers(2))
    red, green, blue, _ = _masks(x.shape[-2], x.shape[-1], dy, dx)
    raw = x[:, :1] * red + x[:, 1:2] * green + x[:, 2:] * blue
    # Brooks et al. draw up to 1.2e-2 for denoiser training; photos people share are mostly low ISO: up to 2e-3.
    log_shot = rng.uniform(np.log(1e-4), np.log(2e-3))
    shot, read = np.exp(log_shot), np.exp(2.18 * log_shot + 1.2 + rng.normal(0, 0.26))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    raw = raw + torch.randn(raw.shape, generator=g) * (raw * shot + read).sqrt()
    # Process as a camera: demosaic, white balance, colour matrix, gamma, tone curve.
    x = demosaic(raw.clamp(0.0, 1.0), dy, dx, DEMOSAIC[rng.integers(len(DEMOSAIC))])
    x = x * torch.tensor(gains, dtype=torch.float32).view(1, 3, 1, 1)
    x = torch.einsum("ij,bjhw->bihw", torch.tensor(cam2rgb, dtype=torch.float32), x).clamp(0.0, 1.0)
    x = x.clamp(min=1e-8) ** (1 / 2.2)
    x = 3 * x**2 - 2 * x**3
    # In-camera noise reduction, then sharpening, on the 0-255 scale.
    x = x * 255.0
    if rng.random() < 0.5:
        x = x + float(rng.uniform(0.3, 1.0)) * (gaussian_blur(x, float(rng.uniform(0.5, 1.2))) - x)
    if rng.random() < 0.7:
        x = x + float(rng.uniform(0.2, 1.0)) * (x - gaussian_blur(x, float(rng.uniform(0.7, 1.5))))
    out = x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    if rng.random() < 0.9:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(80, 99)),
                                  subsampling=int(rng.choice([2, 2, 1, 0])))
        out = np.asarray(Image.open(buf).convert("RGB"))
    return out
