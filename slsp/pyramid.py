"""The TrSOR stage's scale pyramid (`trsor.Pyramid`) in NumPy, around a TrSOR of one level: the compiled backends
(the C++ kernel, the AOTInductor package) implement one level, and the decode member runs them without torch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slsp.contract import CROP_PHI, CROPS, IMAGE, POSITIONS, SIGMA, TRSOR, VALID

Outputs = dict[str, np.ndarray]


def box_level(image: np.ndarray, f: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (H // f, W // f, 3): the mean of each f x f block, rounded half up (integer arithmetic:
    the graph's float32 mean is exact, so both agree to the bit)."""
    h, w = image.shape[0] // f * f, image.shape[1] // f * f
    s = image[:h, :w].astype(np.int64).reshape(h // f, f, w // f, f, 3).sum(axis=(1, 3))
    return ((s + f * f // 2) // (f * f)).astype(np.uint8)


def fit(level: np.ndarray, c: int) -> tuple[np.ndarray, bool]:
    """Zero-padded on the bottom and right to at least one crop per side, and whether it held one before."""
    h, w = level.shape[:2]
    return np.pad(level, ((0, max(c - h, 0)), (0, max(c - w, 0)), (0, 0))), h >= c and w >= c


def run(one: Callable[[Outputs], Outputs], image: np.ndarray, levels: int, crop: int) -> Outputs:
    """The TrSOR stage's outputs over `levels` levels from `one`, a TrSOR of one level (contract names in and out)."""
    out = one({IMAGE: image})
    if levels == 1:
        return out
    parts = [out]
    for lv in range(1, levels):
        f = 2**lv
        pixels, fits = fit(box_level(image, f), crop)
        o = dict(one({IMAGE: np.ascontiguousarray(pixels)}))
        o[POSITIONS], o[VALID] = o[POSITIONS] * f, o[VALID] & fits
        parts.append(o)
    cat = {n: np.concatenate([p[n] for p in parts]) for n in (CROPS, CROP_PHI, POSITIONS, VALID)}
    return {n: out[SIGMA] if n == SIGMA else cat[n] for n in TRSOR.output_names}
