"""Detection metrics in NumPy (label 1 = synthetic; higher score = more likely synthetic)."""

from __future__ import annotations

import numpy as np


def roc(scores_real: np.ndarray, scores_fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every distinct threshold (verdict: score >= threshold), from (0, 0) to (1, 1)."""
    thr = np.unique(np.concatenate([scores_real, scores_fake]))[::-1]
    fpr = (scores_real[None, :] >= thr[:, None]).mean(1)
    tpr = (scores_fake[None, :] >= thr[:, None]).mean(1)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def auroc(scores_real: np.ndarray, scores_fake: np.ndarray) -> float:
    """P(fake score > real score) + 0.5 P(tie): the Mann-Whitney form of the area under the ROC curve."""
    r, f = np.asarray(scores_real, float), np.asarray(scores_fake, float)
    gt = (f[:, None] > r[None, :]).mean()
    eq = (f[:, None] == r[None, :]).mean()
    return float(gt + 0.5 * eq)


def average_precision(scores_real: np.ndarray, scores_fake: np.ndarray) -> float:
    """AP = sum over fakes, by descending score, of precision at that fake's rank (ties share a rank)."""
    s = np.concatenate([scores_fake, scores_real]).astype(float)
    y = np.concatenate([np.ones(len(scores_fake)), np.zeros(len(scores_real))])
    ap = 0.0
    for t in np.unique(s[y == 1]):
        at = s >= t
        ap += (y[s == t]).sum() * y[at].sum() / at.sum()
    return float(ap / max(1, len(scores_fake)))


def threshold_at_fpr(scores_real: np.ndarray, fpr: float) -> float:
    """Smallest threshold with at most `fpr` of the real scores >= it (verdict: score >= threshold).

    Computed in the scores' own precision, so a float32 threshold compared with float32 scores (as the exported
    graph does) keeps the bound.
    """
    s = np.sort(np.asarray(scores_real))
    if s.size == 0:
        raise ValueError("a threshold at a false-positive rate needs at least one real score")
    allowed = int(np.floor(fpr * s.size))  # reals allowed at or above the threshold
    return float(np.nextafter(s[s.size - allowed - 1], s.dtype.type(np.inf)))


def tpr_at_fpr(scores_real: np.ndarray, scores_fake: np.ndarray, fpr: float) -> float:
    """TPR at the smallest threshold whose FPR on these reals is <= fpr."""
    thr = threshold_at_fpr(np.asarray(scores_real, float), fpr)
    return float((np.asarray(scores_fake) >= thr).mean())


def summary(scores_real: np.ndarray, scores_fake: np.ndarray, threshold: float | None) -> dict[str, float]:
    out = {
        "auroc": auroc(scores_real, scores_fake),
        "ap": average_precision(scores_real, scores_fake),
        "tpr@1%fpr": tpr_at_fpr(scores_real, scores_fake, 0.01),
        "tpr@5%fpr": tpr_at_fpr(scores_real, scores_fake, 0.05),
    }
    if threshold is not None:
        out["tpr@thr"] = float((np.asarray(scores_fake) >= threshold).mean())
        out["fpr@thr"] = float((np.asarray(scores_real) >= threshold).mean())
    return out


def bootstrap(
    real: dict[str, np.ndarray],
    fakes: dict[str, dict[str, np.ndarray]],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.9,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile intervals of AUROC per generator and of the mean over generators, for every method, and of each
    method's mean AUROC minus every other's (paired: the same resampled images for all methods).

    real: method -> scores of the real images; fakes: generator -> method -> scores. Reals and each generator's
    fakes are resampled separately (stratified), as the dev split is sampled per source.
    Returns {"auroc": {method: {generator | "mean": (lo, hi)}}, "diff": {"a-b": (lo, hi)}}.
    """
    rng = np.random.default_rng(seed)
    methods = list(real)
    gens = list(fakes)
    nr = len(next(iter(real.values())))
    draws: dict[str, dict[str, list[float]]] = {m: {g: [] for g in [*gens, "mean"]} for m in methods}
    for _ in range(n):
        ri = rng.integers(nr, size=nr)
        fi = {g: rng.integers(len(fakes[g][methods[0]]), size=len(fakes[g][methods[0]])) for g in gens}
        for m in methods:
            vals = [auroc(real[m][ri], fakes[g][m][fi[g]]) for g in gens]
            for g, v in zip(gens, vals):
                draws[m][g].append(v)
            draws[m]["mean"].append(float(np.mean(vals)))
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)

    def interval(x: list[float] | np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(x, q)
        return float(lo), float(hi)

    out: dict[str, dict] = {"auroc": {m: {g: interval(v) for g, v in d.items()} for m, d in draws.items()}, "diff": {}}
    for a in methods:
        for b in methods:
            if a != b:
                out["diff"][f"{a}-{b}"] = interval(np.subtract(draws[a]["mean"], draws[b]["mean"]))
    return out


def leave_one_out(per: dict[str, dict[str, float]]) -> dict[str, str]:
    """Per generator: the candidate (per: candidate -> generator -> AUROC) with the best mean AUROC over the other
    generators, i.e. the choice made without seeing that generator."""
    gens = list(next(iter(per.values())))
    return {g: max(per, key=lambda n: float(np.mean([per[n][h] for h in gens if h != g]))) for g in gens}
