"""Pixel transforms applied alike to every image of a comparison (evaluation conditions, calibration variants)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from slsp.errors import ConfigError
from slsp.imaging import decode


@dataclass(frozen=True)
class Transform:
    """A pixel transform applied identically to both classes: 'none', 'png', 'jpeg:Q', 'resize:F', or 'thumb:S'
    (downscaled so the short side is S, as a thumbnail is made; a smaller image is left as it is)."""

    spec: str = "none"

    def __post_init__(self) -> None:
        kind, _, arg = self.spec.partition(":")
        ok = (kind in ("none", "png") and not arg) or (kind == "jpeg" and arg.isdigit() and 1 <= int(arg) <= 100)
        if kind == "resize":
            try:
                ok = 0.0 < float(arg) <= 1.0
            except ValueError:
                ok = False
        if kind == "thumb":
            ok = arg.isdigit() and int(arg) >= 1
        if not ok:
            raise ConfigError(f"bad transform {self.spec!r}: use png, jpeg:Q (1-100), resize:F (0 < F <= 1) or "
                              "thumb:S (short side S >= 1)")

    @property
    def scale(self) -> float | None:
        """The resize factor of 'resize:F', else None."""
        kind, _, arg = self.spec.partition(":")
        return float(arg) if kind == "resize" else None

    def resized(self, side: int) -> int:
        """A side after this transform (Pillow's rounding; at least 1)."""
        return side if self.scale is None else max(1, round(side * self.scale))

    def min_side(self, side: int) -> int:
        """The smallest input side that is still >= `side` after this transform."""
        if self.scale is None:
            return side
        s = max(side, int((side - 0.5) / self.scale) - 1)
        while self.resized(s) < side:
            s += 1
        return s

    def __call__(self, img: np.ndarray) -> np.ndarray:
        kind, _, arg = self.spec.partition(":")
        if kind == "none":
            return img
        pil = Image.fromarray(img)
        if kind == "resize":
            return np.array(pil.resize((self.resized(pil.width), self.resized(pil.height)), Image.BICUBIC))
        if kind == "thumb":
            f = int(arg) / min(pil.size)
            if f >= 1.0:
                return img
            size = tuple(max(int(arg), round(n * f)) for n in pil.size)
            return np.array(pil.resize(size, Image.BICUBIC))
        buf = io.BytesIO()
        pil.save(buf, format="PNG") if kind == "png" else pil.save(buf, format="JPEG", quality=int(arg))
        return decode(buf.getvalue())


@dataclass(frozen=True)
class Canonical:
    """The canonical transform as the detector applies it, by image size (library, decode member, parity).

    An image that still holds one crop after the transform goes through it; a smaller one that holds one crop at
    native scale is scored as is and flagged low-resolution, when the model has a low-resolution calibration
    (`low_resolution`); anything smaller is refused, since slsp never pads or upsamples.
    """

    spec: str
    crop: int
    low_resolution: bool = False

    # Cached: the decode member asks for both on every request.
    @cached_property
    def transform(self) -> Transform:
        return Transform(self.spec)

    @cached_property
    def full_side(self) -> int:
        """The smallest input side that still goes through the transform."""
        return self.transform.min_side(self.crop)

    @property
    def min_side(self) -> int:
        """The smallest input side scored at all: one crop at native scale with a low-resolution calibration."""
        return self.crop if self.low_resolution else self.full_side

    def is_low(self, shape: tuple[int, ...]) -> bool:
        return self.low_resolution and min(shape[:2]) < self.full_side

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, bool]:
        """(the pixels to score, whether they are a low-resolution image at native scale)."""
        low = self.is_low(img.shape)
        return (img if low else self.transform(img)), low
