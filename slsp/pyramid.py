"""The TrSOR stage's scale pyramid (`trsor.Pyramid`) in NumPy, around a TrSOR of one level: the compiled backends
(the C++ kernel, the AOTInductor package) implement one level, and the decode member runs them without torch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slsp.contract import CROP_PHI, CROPS, IMAGE, POSITIONS, SIGMA, TRSOR, VALID

Outputs = dict[str, np.ndarray]


def box_level(image: np.ndarray, f: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (H // f, W // f, 3): the mean of each f x f block (f a power of two up to 16), rounded
    half up. The block sums are built 2 x 2 at a time in uint16 (at most 256 * 255), a few strided passes over the
    image: the int64 copy and 5-D reshape-sum it replaced cost 4-9x more (benchmarks/product/trsor_levels.py). Integer
    arithmetic: the graph's float32 mean is exact, so both agree to the bit."""
    if f < 2 or f > 16 or f & (f - 1):
        raise ValueError(f"box level factor must be a power of two in [2, 16], got {f}")
    s = image
    for _ in range(f.bit_length() - 1):
        s = s[: s.shape[0] // 2 * 2, : s.shape[1] // 2 * 2]
        t = s[0::2, 0::2].astype(np.uint16)
        t += s[1::2, 0::2]
        t += s[0::2, 1::2]
        t += s[1::2, 1::2]
        s = t
    s += f * f // 2
    s >>= 2 * (f.bit_length() - 1)
    return s.astype(np.uint8)


def fit(level: np.ndarray, c: int) -> tuple[np.ndarray, bool]:
    """Zero-padded on the bottom and right to at least one crop per side, and whether it held one before."""
    h, w = level.shape[:2]
    return np.pad(level, ((0, max(c - h, 0)), (0, max(c - w, 0)), (0, 0))), h >= c and w >= c


def run(one: Callable[[Outputs], Outputs], image: np.ndarray, levels: int, crop: int,
        box: Callable[[np.ndarray, int], np.ndarray] = box_level) -> Outputs:
    """The TrSOR stage's outputs over `levels` levels from `one`, a TrSOR of one level (contract names in and out);
    `box` builds a level as `box_level` does (the native kernel passes its own)."""
    out = one({IMAGE: image})
    if levels == 1:
        return out
    parts = [out]
    for lv in range(1, levels):
        f = 2**lv
        pixels, fits = fit(box(image, f), crop)
        o = dict(one({IMAGE: np.ascontiguousarray(pixels)}))
        o[POSITIONS], o[VALID] = o[POSITIONS] * f, o[VALID] & fits
        parts.append(o)
    cat = {n: np.concatenate([p[n] for p in parts]) for n in (CROPS, CROP_PHI, POSITIONS, VALID)}
    return {n: out[SIGMA] if n == SIGMA else cat[n] for n in TRSOR.output_names}
