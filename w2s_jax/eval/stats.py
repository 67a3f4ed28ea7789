"""Intervals over test examples and seeds (pure numpy, scipy.stats for the t quantile).

Resampling model, used everywhere in the report:

* Examples. Resample b draws n test indices with replacement (`index_chunks`); the SAME indices serve every model
  and every seed, because the test set is shared, so a difference between two models (or seeds) keeps its pairing.
  A statistic that is a ratio of sums over examples is computed from the resample's counts: with c_b[i] the number
  of times example i was drawn, sum_i c_b[i] * feature[i] (`resample_counts`, one matrix product per chunk).
* Seeds. The two-level bootstrap also draws S seeds with replacement out of the S seeds (`seed_counts`) and takes
  the mean of the per-seed statistic over the drawn seeds (seeds whose value is undefined in that resample are left
  out of the mean); with one seed it is the paired bootstrap.
* Intervals are percentile 95% intervals (2.5th and 97.5th percentiles of the defined resampled values).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from scipy import stats as sps

NAN = float("nan")
CHUNK = 500  # resamples per chunk: fixed, so the indices do not depend on memory settings
ECE_BINS = 10  # equal-width bins of the confidence sigma(|margin|) over [0.5, 1]


def wilson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (NaN, NaN) for n = 0."""
    if n <= 0:
        return NAN, NAN
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_summary(values: np.ndarray, level: float = 0.95) -> dict:
    """Mean, std (ddof=1), median and t-interval of per-seed values; NaN seeds are left out (and counted)."""
    v = np.asarray(values, float)
    ok = v[~np.isnan(v)]
    out = {"mean": NAN, "std": NAN, "median": NAN, "t95": [NAN, NAN], "seeds_defined": int(ok.size)}
    if ok.size:
        out["mean"], out["median"] = float(ok.mean()), float(np.median(ok))
    if ok.size >= 2:
        out["std"] = float(ok.std(ddof=1))
        half = float(sps.t.ppf(0.5 + level / 2, ok.size - 1)) * out["std"] / math.sqrt(ok.size)
        out["t95"] = [out["mean"] - half, out["mean"] + half]
    return out


def index_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Resampled test indices, (rows, n) int arrays of at most CHUNK rows; chunk c comes from default_rng([seed, c])."""
    for c, start in enumerate(range(0, resamples, CHUNK)):
        rows = min(CHUNK, resamples - start)
        yield np.random.default_rng([seed, c]).integers(0, n, size=(rows, n))


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """c[b, i] = how many times example i appears in row b of `idx` (float32: exact for counts below 2**24)."""
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float32)


def seed_counts(n_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """g[b, s] = how many times seed s is drawn in resample b (n_seeds draws with replacement per resample)."""
    draws = np.random.default_rng([seed, 2**31 - 1]).integers(0, n_seeds, size=(resamples, n_seeds))
    flat = (draws + n_seeds * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n_seeds).reshape(resamples, n_seeds).astype(float)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[list[float], float]:
    """([lo, hi], share of undefined values) over the last axis; NaN values are left out."""
    v = np.asarray(values, float)
    ok = v[~np.isnan(v)]
    undefined = 1.0 - ok.size / v.size if v.size else 1.0
    if not ok.size:
        return [NAN, NAN], undefined
    lo, hi = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)], undefined


def two_level(per_seed: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Mean over drawn seeds: per_seed (B, S) resampled values, g (B, S) seed counts -> (B,); NaN where none defined."""
    ok = ~np.isnan(per_seed)
    w = np.where(ok, g, 0.0)
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w * np.where(ok, per_seed, 0.0)).sum(1) / total
    return np.where(total > 0, out, NAN)


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0 (no warning)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    out = np.full(np.broadcast(num, den).shape, NAN)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ------------------------------------------------------------------------------------------------ measures


def auroc_setup(margin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precomputation for `auroc`: the sort order of the margins and, per example, where -margin falls in it."""
    order = np.argsort(margin, kind="stable")
    sorted_m = margin[order]
    return order, np.searchsorted(sorted_m, -margin, "left"), np.searchsorted(sorted_m, -margin, "right")


def auroc(margin: np.ndarray, weights: np.ndarray | None = None, setup=None) -> np.ndarray:
    """AUROC of the ground-truth margin g, each pair counted in both A/B orders (score g_i with label 1, -g_j with
    label 0): sum_ij w_i w_j ([g_i > -g_j] + [g_i = -g_j] / 2) / (sum w)^2, the Mann-Whitney U over n*n pairs with
    ties counted half. It does not depend on the seed's A/B order, and is defined when every label is 1.
    `weights` (B, n) resample counts gives one value per row; None gives the plain value."""
    margin = np.asarray(margin, float)
    w = np.ones((1, margin.size), np.float32) if weights is None else np.asarray(weights, np.float32)
    order, lo, hi = setup if setup is not None else auroc_setup(margin)
    cum = np.zeros((w.shape[0], margin.size + 1), np.float64)
    np.cumsum(w[:, order], axis=1, out=cum[:, 1:])  # float64 sums of integer counts: exact
    at_hi = np.take(cum, hi, axis=1)
    credit = cum[:, -1:] - at_hi  # weight of j with g_j > -g_i, i.e. -g_j < g_i
    if (lo != hi).any():  # some g_i = -g_j: count those pairs half
        credit += 0.5 * (at_hi - np.take(cum, lo, axis=1))
    out = safe_div(np.einsum("bi,bi->b", w, credit), cum[:, -1] ** 2)
    return out if weights is not None else out[0]


def ece_features(margin: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(n, ECE_BINS): column k holds correct - confidence for the examples whose confidence sigma(|margin|) falls in
    bin k of [0.5, 1] (equal width), 0 elsewhere. ECE = sum_k |sum_i c_i f_ik| / sum_i c_i for resample weights c."""
    conf = 1.0 / (1.0 + np.exp(-np.abs(np.asarray(margin, float))))
    bins = np.minimum(((conf - 0.5) * 2 * ECE_BINS).astype(int), ECE_BINS - 1)
    out = np.zeros((conf.size, ECE_BINS))
    out[np.arange(conf.size), bins] = np.asarray(correct, float) - conf
    return out


def brier_feature(margin: np.ndarray) -> np.ndarray:
    """(1 - sigma(g))^2 per example, g the ground-truth margin: the Brier term of sigma(z) against the label."""
    return (1.0 - 1.0 / (1.0 + np.exp(-np.asarray(margin, float)))) ** 2
