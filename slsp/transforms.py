"""Pixel transforms applied alike to every image of a comparison (evaluation conditions, calibration variants)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from slsp.errors import ConfigError
from slsp.imaging import decode


@dataclass(frozen=True)
class Transform:
    """A pixel transform applied identically to both classes: 'none', 'png', 'jpeg:Q' or 'resize:F'."""

    spec: str = "none"

    def __post_init__(self) -> None:
        kind, _, arg = self.spec.partition(":")
        ok = (kind in ("none", "png") and not arg) or (kind == "jpeg" and arg.isdigit() and 1 <= int(arg) <= 100)
        if kind == "resize":
            try:
                ok = 0.0 < float(arg) <= 1.0
            except ValueError:
                ok = False
        if not ok:
            raise ConfigError(f"bad transform {self.spec!r}: use png, jpeg:Q (1-100) or resize:F (0 < F <= 1)")

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
        buf = io.BytesIO()
        pil.save(buf, format="PNG") if kind == "png" else pil.save(buf, format="JPEG", quality=int(arg))
        return decode(buf.getvalue())
