"""Independent NumPy/SciPy float64 reference of TrSOR, written from METHOD.md without importing slsp.

Box sums use integral images (not pooling), the derivative operator is built with Kronecker products, the
crop ranking is a plain sort, and Liu et al.'s eigenvalue noise estimate is included for comparison. The crops'
log kurtosis (slsp.fluctuation) is here too, as the direct formula in float64.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special, stats


def central_difference_matrix(p: int) -> np.ndarray:
    c = np.zeros((p - 2, p))
    for i in range(p - 2):
        c[i, i], c[i, i + 2] = -0.5, 0.5
    eye = np.eye(p)
    return np.vstack([np.kron(eye, c), np.kron(c, eye)])  # rows: horizontal then vertical differences


def gamma_constants(p: int, delta: float) -> dict[str, float]:
    d = central_difference_matrix(p)
    tr = float(np.trace(d @ d.T))
    r = np.linalg.matrix_rank(d)
    k, theta = r / 2, 2 * tr / r
    tau = stats.gamma.ppf(delta, k, scale=theta)
    trunc = stats.gamma.expect(lambda x: x, args=(k,), scale=theta, ub=tau, conditional=True)
    return {"trace": tr, "tau": tau, "trunc": trunc, "log_mean": special.digamma(k) + np.log(theta)}


def luma(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def box_sum(a: np.ndarray, kh: int, kw: int) -> np.ndarray:
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    s[1:, 1:] = a.cumsum(0).cumsum(1)
    return s[kh:, kw:] - s[:-kh, kw:] - s[kh:, :-kw] + s[:-kh, :-kw]


def gradient_energy(y: np.ndarray, p: int) -> np.ndarray:
    dh = (y[:, 2:] - y[:, :-2]) / 2
    dv = (y[2:, :] - y[:-2, :]) / 2
    return box_sum(dh**2, p, p - 2) + box_sum(dv**2, p - 2, p)


def gradient_energy_explicit(y: np.ndarray, p: int) -> np.ndarray:
    """xi = ||D vec(patch)||^2 patch by patch (small images only): checks `gradient_energy` itself."""
    d = central_difference_matrix(p)
    win = sliding_window_view(y, (p, p)).reshape(y.shape[0] - p + 1, y.shape[1] - p + 1, p * p)
    return ((win @ d.T) ** 2).sum(-1)


def clipped(img: np.ndarray) -> np.ndarray:
    """Pixels black or white in all three channels."""
    return (img == 0).all(-1) | (img == 255).all(-1)


def trsor(img: np.ndarray, p: int = 7, delta: float = 0.99, iterations: int = 3, crop: int = 64, k: int = 16,
          skip_clipped: bool = False) -> dict:
    g = gamma_constants(p, delta)
    xi = gradient_energy(luma(img), p)
    # skip_clipped: a patch holding a clipped pixel is never selected and not in the estimate; none left: sigma 0
    keep = box_sum(clipped(img).astype(np.float64), p, p) < 0.5 if skip_clipped else np.ones(xi.shape, bool)
    sigma2 = np.exp(np.log(xi[keep] + 1e-3).mean() - g["log_mean"]) if keep.any() else 1.0
    for _ in range(iterations):
        sel = keep & (xi <= sigma2 * g["tau"])
        if sel.any():
            sigma2 = xi[sel].mean() / g["trunc"]
    mask = keep & (xi <= sigma2 * g["tau"])
    sigma2 = sigma2 if keep.any() else 0.0
    h, w = img.shape[:2]
    covered = np.zeros((h + p - 1, w + p - 1))
    covered[p - 1 : p - 1 + mask.shape[0], p - 1 : p - 1 + mask.shape[1]] = mask
    phi = (box_sum(covered, p, p) > 0.5).astype(np.float64)[: h, : w]
    ys = sorted(set(list(range(0, h - crop + 1, crop)) + [h - crop]))
    xs = sorted(set(list(range(0, w - crop + 1, crop)) + [w - crop]))
    cands = [(phi[y : y + crop, x : x + crop].sum(), y, x) for y in ys for x in xs]
    # Raster order of the grid first, then the bottom row, with the right column last in each row.
    order = {pos: i for i, pos in enumerate(_raster(ys, xs, h, w, crop))}
    cands.sort(key=lambda c: (-c[0], order[(c[1], c[2])]))
    chosen = cands[:k]
    return {
        "sigma": float(np.sqrt(sigma2)),
        "phi": phi,
        "positions": np.array([(y, x) for _, y, x in chosen]),
        "counts": np.array([c for c, _, _ in chosen]),
        "mask": mask,
    }


def _raster(ys: list[int], xs: list[int], h: int, w: int, crop: int) -> list[tuple[int, int]]:
    grid_y = list(range(0, h - crop + 1, crop))[: h // crop]
    grid_x = list(range(0, w - crop + 1, crop))[: w // crop]
    rows = grid_y + ([h - crop] if h % crop else [])
    cols = grid_x + ([w - crop] if w % crop else [])
    return [(y, x) for y in rows for x in cols]


def liu_noise(img: np.ndarray, mask: np.ndarray, p: int = 7, stride: int = 3) -> float:
    """Liu et al.: sigma^2 = smallest eigenvalue of the covariance of the selected (weak-texture) patches."""
    y = luma(img)
    win = sliding_window_view(y, (p, p))[::stride, ::stride]
    sel = mask[::stride, ::stride][: win.shape[0], : win.shape[1]]
    x = win[sel].reshape(-1, p * p)
    return float(np.sqrt(max(np.linalg.eigvalsh(np.cov(x, rowvar=False))[0], 0.0)))


def log_kurtosis(crop: np.ndarray) -> float:
    """float64: the luma of (pixel minus its reflect-padded 3 x 3 mean), border left out, log(m4 / m2^2)."""
    x = crop.astype(np.float64)
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = x.shape[:2]
    mean3 = sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    luma = ((x - mean3) @ np.array([0.299, 0.587, 0.114]))[1:-1, 1:-1]
    d = luma - luma.mean()
    m2 = (d**2).mean()
    return float(np.log((d**4).mean() / m2**2)) if m2 > 1e-6 else float("nan")


def box_level(img: np.ndarray, f: int) -> np.ndarray:
    """float64: the mean of each whole f x f block, rounded half up."""
    h, w = img.shape[0] // f, img.shape[1] // f
    m = np.array([[img[i * f : (i + 1) * f, j * f : (j + 1) * f].reshape(-1, 3).astype(np.float64).mean(0)
                   for j in range(w)] for i in range(h)]).reshape(h, w, 3)
    return np.floor(m + 0.5).astype(np.uint8)
