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

    def min_side(self, side: int) -> int:
        """The smallest input side that is still >= `side` after this transform."""
        kind, _, arg = self.spec.partition(":")
        if kind != "resize":
            return side
        s = max(side, int((side - 0.5) / float(arg)) - 1)
        while max(1, round(s * float(arg))) < side:
            s += 1
        return s

    def __call__(self, img: np.ndarray) -> np.ndarray:
        kind, _, arg = self.spec.partition(":")
        if kind == "none":
            return img
        pil = Image.fromarray(img)
        if kind == "resize":
            f = float(arg)
            return np.array(pil.resize((max(1, round(pil.width * f)), max(1, round(pil.height * f))), Image.BICUBIC))
        buf = io.BytesIO()
        pil.save(buf, format="PNG") if kind == "png" else pil.save(buf, format="JPEG", quality=int(arg))
        return decode(buf.getvalue())
