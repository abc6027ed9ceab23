"""Encoded bytes -> Detection on one torch device, the whole path a GPU can take (issue 17).

JPEGs that the decoding policy leaves as a plain YCbCr or grayscale decode (`imaging.plain_jpeg`: no CMYK, no EXIF
rotation) are decoded on a CUDA device by nvJPEG (`torchvision.io.decode_jpeg`) when torchvision is installed; any
other image goes through the CPU decoder and is copied over. The canonical resize runs on the device (PyTorch's
Pillow's bicubic resampling re-implemented in integer tensor ops, `pillow_resize`), then TrSOR, the model and
scoring. Every check of the library runs first, from the header, so a refused image never reaches the device.

Where it is not bit-exact with the library: nvJPEG's IDCT and chroma upsampling are not libjpeg's (a gray level
here and there), and for images more than about twice as tall as wide Pillow runs its vertical pass first, which
rounds its intermediate differently (`pillow_resize` always runs the horizontal pass first). Scores are compared
with `Detector.detect` in tests/test_device_pipeline.py and, on CUDA, in the GPU check.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import Tensor

from slsp.detector import Detection, Detector
from slsp.errors import SlspError
from slsp.imaging import check_fluctuation, decode, plain_jpeg, too_small
from slsp.transforms import Canonical

PRECISION_BITS = 22  # Pillow's fixed-point coefficients for 8-bit images: 32 - 8 - 2


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    return (((x - 5.0) * x + 8.0) * x - 4.0) * a if x < 2.0 else 0.0


@functools.lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int) -> tuple[Tensor, Tensor]:
    """Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for BICUBIC: per output, the input indices it reads
    and their integer weights (zero-padded to one kernel size)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    idx, wts = [], []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), in_size) - xmin
        k = [_bicubic((x + xmin - center + 0.5) / filterscale) for x in range(n)]
        total = sum(k)
        k = [v / total if total != 0.0 else v for v in k]
        idx.append([xmin + x for x in range(n)] + [xmin] * (ksize - n))
        wts.append([int(v * (1 << PRECISION_BITS) + (0.5 if v >= 0 else -0.5)) for v in k] + [0] * (ksize - n))
    return torch.tensor(idx), torch.tensor(wts, dtype=torch.int64)


def _resample(x: Tensor, out_size: int, dim: int) -> Tensor:
    """One pass along `dim` of an int64 (H, W, C) image, rounded and clipped to 0..255 as Pillow's `clip8`."""
    idx, wts = (t.to(x.device) for t in _coefficients(x.shape[dim], out_size))
    shape = (-1, 1, 1) if dim == 0 else (1, -1, 1)
    acc = torch.full((), 1 << (PRECISION_BITS - 1), dtype=torch.int64, device=x.device)
    for k in range(idx.shape[1]):
        acc = acc + x.index_select(dim, idx[:, k]) * wts[:, k].view(shape)
    return torch.clamp(torch.div(acc, 1 << PRECISION_BITS, rounding_mode="floor"), 0, 255)


def pillow_resize(img: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (H, W, 3) -> (h, w, 3) on img's device, as Pillow's `resize(..., BICUBIC)`: horizontal pass, then
    vertical, each in Pillow's fixed point (bit-exact but for tall images, see the module docstring)."""
    x = img.to(torch.int64)
    if size[1] != img.shape[1]:
        x = _resample(x, size[1], 1)
    if size[0] != img.shape[0]:
        x = _resample(x, size[0], 0)
    return x.to(torch.uint8)


def nvjpeg_available(device: torch.device) -> bool:
    """nvJPEG through torchvision: a CUDA device and an importable torchvision with `decode_jpeg`."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class DeviceDecoder:
    """Encoded bytes -> the canonical pixels on `device` (what `DevicePipeline` and the GPU repository's decode
    member share): nvJPEG for plain JPEGs where `nvjpeg_available`, else (and wherever nvJPEG fails on a file) the
    CPU decoder, then the library's size check in its words, then the canonical transform there."""

    def __init__(self, canonical: Canonical, device: torch.device, max_pixels: int, reason: str = "one crop") -> None:
        self.c, self.device, self.max_pixels, self.reason = canonical, device, max_pixels, reason
        self.nvjpeg = nvjpeg_available(device)

    def upload(self, data: bytes, name: str = "<bytes>") -> tuple[Tensor, str]:
        """The decoded image on the device, uint8 H x W x 3, and which decoder made it ("nvjpeg" or "cpu")."""
        img = None
        if self.nvjpeg and plain_jpeg(data, name=name, max_pixels=self.max_pixels):
            from torchvision.io import ImageReadMode, decode_jpeg

            try:
                raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                img = decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device).permute(1, 2, 0)
            except RuntimeError:  # a file nvJPEG cannot take: the CPU decoder decodes it or says what is wrong
                img = None
        how = "nvjpeg" if img is not None else "cpu"
        if img is None:
            img = torch.from_numpy(decode(data, name=name, max_pixels=self.max_pixels)).to(self.device)
        if min(img.shape[:2]) < self.c.min_side:  # the library's check, in its words
            raise too_small(img.shape[1], img.shape[0], self.c.min_side, name, self.reason)
        return img, how

    def canonical(self, img: Tensor) -> tuple[Tensor, bool]:
        """`Canonical` on the device: a resize to Transform's sizes there; a JPEG or PNG round trip on the CPU."""
        low, t = self.c.is_low(tuple(img.shape)), self.c.transform
        if low or t.spec == "none":
            return img, low
        if t.scale is not None:
            return pillow_resize(img, (t.resized(img.shape[0]), t.resized(img.shape[1]))), False
        return torch.from_numpy(t(img.cpu().numpy())).to(self.device), False


def member_decoder(canonical: Canonical, device: str, max_pixels: int) -> tuple[DeviceDecoder, str]:
    """The gpu-python decode member's decoder on its torch device, and how it decodes: nvJPEG on CUDA where
    torchvision has it, else the CPU decoder; the resize on the device either way. With device cpu (CI) the member
    runs the GPU's code path but for nvJPEG itself."""
    dec = DeviceDecoder(canonical, torch.device(device), max_pixels)
    if dec.nvjpeg:
        return dec, "nvJPEG"
    why = "torchvision (nvJPEG) is not installed" if dec.device.type == "cuda" else f"device {device}"
    return dec, f"the CPU decoder ({why}), resized in PyTorch on {device}"


class DevicePipeline:
    """`Detector.detect` from encoded bytes, on `device`; the reference detector is copied, never moved.

    max_pixels: refuse images declaring more (default: the model's). compiled: the detector through
    `torch.compile`, one graph per image size (the first image of a size pays for compiling it; sizes beyond
    dynamo's cache limit run eagerly). On CUDA its "reduce-overhead" mode replays each size as a CUDA graph, so
    TrSOR's many small kernels (launch-bound below about 4 MP) cost one launch."""

    def __init__(self, det: Detector, device: str | torch.device, compiled: bool = False,
                 max_pixels: int | None = None) -> None:
        try:
            self.device = torch.device(device)
        except RuntimeError as e:
            raise SlspError(f"not a torch device: {device!r} (cpu, cuda, cuda:N)") from e
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SlspError(f"device {device!r}: this machine has no CUDA device that PyTorch can use")
        self.det = copy.deepcopy(det).to(self.device).eval()
        self.decoder = DeviceDecoder(det.canonical, self.device, det.cfg.max_pixels if max_pixels is None
                                     else max_pixels, det.min_side_reason)
        self.compiled = compiled
        self.forward = self.det
        if compiled:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.forward = torch.compile(self.det, mode=mode, dynamic=False)

    @torch.inference_mode()
    def detect(self, data: bytes, name: str = "<bytes>") -> Detection:
        img, _ = self.decoder.upload(data, name)
        pixels, low = self.decoder.canonical(img)
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        d = self.forward(pixels, torch.tensor(low, device=self.device))
        if self.compiled:  # a CUDA graph's outputs are overwritten by its next replay: the caller gets copies
            d = Detection(*(t.clone() for t in d))
        check_fluctuation(float(d.sigma), name)
        return d
