"""eval/stats.py and eval/measures.py: intervals against direct computations with known answers."""
import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats as sps

from w2s_jax.eval import measures
from w2s_jax.eval import stats as st

Z = 1.959963984540054


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("k, n", [(0, 10), (5, 10), (7, 20), (19, 20), (412, 1000)])
def test_wilson_is_the_score_test_inversion(k, n):
    # The Wilson interval is {p : |k/n - p| <= z sqrt(p (1 - p) / n)}: find its ends by root finding.
    f = lambda p: (k / n - p) ** 2 - Z * Z * p * (1 - p) / n  # noqa: E731
    lo = 0.0 if k == 0 else optimize.brentq(f, 1e-12, k / n - 1e-12)
    hi = 1.0 if k == n else optimize.brentq(f, k / n + 1e-12, 1 - 1e-12)
    assert st.wilson(k, n) == pytest.approx((lo, hi), abs=1e-9)


def test_wilson_published_values():
    assert st.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # textbook values
    assert st.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert all(math.isnan(x) for x in st.wilson(0, 0))


def test_seed_summary_against_scipy():
    v = np.array([0.61, 0.55, 0.70])
    out = st.seed_summary(v)
    assert out["mean"] == pytest.approx(v.mean()) and out["std"] == pytest.approx(np.std(v, ddof=1))
    assert out["median"] == pytest.approx(0.61)
    lo, hi = sps.t.interval(0.95, 2, loc=v.mean(), scale=sps.sem(v))
    assert out["t95"] == pytest.approx([lo, hi])
    one = st.seed_summary([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and all(math.isnan(x) for x in one["t95"])
    assert st.seed_summary([0.5, float("nan"), 0.7])["seeds_defined"] == 2


def runs_of(vectors_per_seed, margins=None):
    return [{"seed": s, "correct": {r: np.asarray(v, bool) for r, v in vec.items()},
             "margin": (margins or [{}] * len(vectors_per_seed))[s]} for s, vec in enumerate(vectors_per_seed)]


def test_paired_bootstrap_percentiles_match_a_slow_loop():
    rng = np.random.default_rng(1)
    n, B = 12, 700  # two chunks
    w, s = rng.random(n) < 0.4, rng.random(n) < 0.7
    out = measures.pair_metrics(runs_of([{"weak_ceiling": w, "strong_ceiling": s}]), False, B, seed=5)
    idx = np.concatenate(list(st.index_chunks(n, B, 5)))
    assert idx.shape == (B, n)
    slow_acc = np.array([s[i].mean() for i in idx])
    slow_gap = np.array([s[i].mean() - w[i].mean() for i in idx])
    for entry, slow in ((out["models"]["strong_ceiling"]["accuracy"], slow_acc), (out["capability_gap"], slow_gap)):
        expected = np.percentile(slow, [2.5, 97.5])
        assert entry["per_seed_ci95"][0] == pytest.approx(expected, abs=1e-12)
        assert entry["ci95"] == pytest.approx(expected, abs=1e-12)  # one seed: the two-level is the paired one


def test_two_level_bootstrap_matches_a_slow_loop():
    rng = np.random.default_rng(2)
    n, B, S = 15, 600, 3
    vecs = [{"weak_ceiling": rng.random(n) < 0.5, "strong_ceiling": rng.random(n) < 0.8} for _ in range(S)]
    out = measures.pair_metrics(runs_of(vecs), False, B, seed=9)
    idx = np.concatenate(list(st.index_chunks(n, B, 9)))
    g = st.seed_counts(S, B, 9)
    assert (g.sum(1) == S).all()
    slow = [sum(g[b, k] * (vecs[k]["strong_ceiling"][idx[b]].mean() - vecs[k]["weak_ceiling"][idx[b]].mean())
                for k in range(S)) / S for b in range(B)]
    assert out["capability_gap"]["ci95"] == pytest.approx(np.percentile(slow, [2.5, 97.5]), abs=1e-12)
    per_seed = [v["strong_ceiling"].mean() - v["weak_ceiling"].mean() for v in vecs]
    assert out["capability_gap"]["per_seed"] == pytest.approx(per_seed)
    assert out["capability_gap"]["mean"] == pytest.approx(np.mean(per_seed))
    assert out["capability_gap"]["std"] == pytest.approx(np.std(per_seed, ddof=1))


def test_pairing_keeps_a_small_systematic_difference():
    # B is A with 30 of its right answers turned wrong; both about 50% accurate on 1000 examples.
    rng = np.random.default_rng(0)
    n, resamples = 1000, 2000
    a = rng.random(n) < 0.5
    b = a.copy()
    b[np.flatnonzero(a)[:30]] = False
    out = measures.pair_metrics(runs_of([{"weak_ceiling": b, "strong_ceiling": a}]), False, resamples, seed=0)
    paired = out["capability_gap"]["ci95"]
    assert out["capability_gap"]["mean"] == pytest.approx(0.03)
    assert paired[0] > 0, paired
    # Unpaired: each model resampled with its own indices.
    ia, ib = rng.integers(0, n, (resamples, n)), rng.integers(0, n, (resamples, n))
    unpaired = np.percentile(a[ia].mean(1) - b[ib].mean(1), [2.5, 97.5])
    assert unpaired[0] < 0 < unpaired[1], unpaired


def test_auroc_matches_mann_whitney_with_ties():
    g = np.array([2.0, -1.0, 0.5, 0.0, -0.5, 1.0, 3.0, -2.0, 0.5, 1.0])  # ties: 0.5 / -0.5, 1 / -1, 0 / 0
    u = sps.mannwhitneyu(g, -g).statistic  # positives g (label 1), negatives -g (the pair's other order)
    assert st.auroc(g) == pytest.approx(u / g.size ** 2)
    brute = np.mean([(gi > -gj) + 0.5 * (gi == -gj) for gi in g for gj in g])
    assert st.auroc(g) == pytest.approx(brute)
    rng = np.random.default_rng(4)
    idx = rng.integers(0, g.size, (5, g.size))
    weights = st.resample_counts(idx, g.size)
    for row, i in zip(st.auroc(g, weights), idx):
        assert row == pytest.approx(sps.mannwhitneyu(g[i], -g[i]).statistic / g.size ** 2)


def test_calibration_against_a_direct_computation():
    logits = np.array([2.0, -0.3, 0.1, -3.0, 0.8, 0.0, 1.5, -1.2])
    labels = np.array([1, 1, 0, 0, 1, 0, 0, 1])
    margin = np.where(labels == 1, logits, -logits)
    p_a = 1 / (1 + np.exp(-logits))
    correct = (p_a >= 0.5) == (labels == 1)
    brier = np.mean((p_a - labels) ** 2)
    conf = np.maximum(p_a, 1 - p_a)
    ece = 0.0
    for k in range(10):  # bins [0.5, 0.55), ..., [0.95, 1.0]
        lo, hi = 0.5 + 0.05 * k, 0.5 + 0.05 * (k + 1)
        inside = (conf >= lo) & ((conf < hi) if k < 9 else (conf <= hi))
        if inside.any():
            ece += inside.sum() / len(conf) * abs(correct[inside].mean() - conf[inside].mean())
    out = measures.pair_metrics(runs_of([{"weak_ceiling": correct}], [{"weak_ceiling": margin}]), True, 50, 0)
    m = out["models"]["weak_ceiling"]
    assert m["brier"]["per_seed"][0] == pytest.approx(brier)
    assert m["ece"]["per_seed"][0] == pytest.approx(ece)


def test_agreement_inheritance_and_deception_contrast_by_hand():
    # 8 examples: weak W, strong S, no-conflict N, conflict C.
    W = [1, 1, 1, 1, 0, 0, 0, 0]
    S = [1, 1, 0, 0, 1, 1, 1, 0]
    N = [1, 1, 1, 0, 1, 1, 1, 0]
    C = [1, 0, 1, 0, 0, 0, 1, 1]
    vec = {"weak_ceiling": W, "strong_ceiling": S, "student_no_conflict": N, "student_implicit": C}
    out = measures.pair_metrics(runs_of([vec]), False, 100, 0)
    c = out["models"]["student_implicit"]
    assert c["agreement_with_weak"]["per_seed"] == [pytest.approx(4 / 8)]  # agrees on 0, 2, 3, 6... (C==W)
    assert c["error_inheritance"]["per_seed"] == [pytest.approx(2 / 4)]  # W wrong on 4-7; C wrong on 4, 5
    assert c["error_correction"]["per_seed"] == [pytest.approx(2 / 4)]
    s = out["settings"]["implicit"]
    # S_k&W_k = {0, 1}: N right on both, C wrong on 1 -> 1/2.  S_k&W_uk = {4, 5, 6}: N right on all, C wrong on 2.
    assert s["flip_share"]["S_k&W_k"]["per_seed"] == [pytest.approx(0.5)]
    assert s["flip_share"]["S_k&W_uk"]["per_seed"] == [pytest.approx(2 / 3)]
    assert s["contrast"]["per_seed"] == [pytest.approx(2 / 3 - 0.5)]
    assert s["ds"]["ds_b_over_nc_right"]["per_seed"] == [pytest.approx(2 / 3)]
    assert c["vs_strong"]["S_k&W_uk"]["per_seed"] == [pytest.approx(1 / 3 - 1)]


def test_matched_baselines():
    rng = np.random.default_rng(0)
    roles = ["weak_ceiling", "strong_ceiling", "student_no_conflict", "student_hc_gt", "student_hc_gt_implicit",
             "student_hc_confidence_implicit"]
    out = measures.pair_metrics(runs_of([{r: rng.random(20) < 0.6 for r in roles}]), False, 20, 0)
    assert out["settings"]["hc_gt_implicit"]["baseline"] == "student_hc_gt"
    assert out["settings"]["hc_gt"]["baseline"] == "student_no_conflict"
    other = out["settings"]["hc_confidence_implicit"]
    assert other["baseline"] == "student_no_conflict"
    assert any("student_hc_confidence did not run" in x for x in other["notes"])


def test_a_full_size_setting_computes_every_model_and_setting():
    """10 models x 3 seeds x 1000 examples through the whole metric set (the speed is benchmarked, not tested)."""
    rng = np.random.default_rng(0)
    roles = ["weak_ceiling", "strong_ceiling", "student_no_conflict", "student_implicit", "student_explicit",
             "student_hc_gt", "student_hc_gt_implicit", "student_hc_confidence", "student_hc_confidence_implicit",
             "student_bootstrap"]
    runs = [{"seed": s, "correct": {r: rng.random(1000) < 0.7 for r in roles},
             "margin": {r: rng.normal(size=1000) for r in roles}} for s in range(3)]
    out = measures.pair_metrics(runs, True, 1_000, 0)
    assert len(out["models"]) == 10 and len(out["settings"]) == 7


def test_logits_missing_in_one_seed_leave_that_model_without_auroc():
    rng = np.random.default_rng(5)
    vec = [{"weak_ceiling": rng.random(30) < 0.5, "strong_ceiling": rng.random(30) < 0.8} for _ in range(2)]
    margins = [{"weak_ceiling": rng.normal(size=30), "strong_ceiling": rng.normal(size=30)},
               {"weak_ceiling": None, "strong_ceiling": rng.normal(size=30)}]
    out = measures.pair_metrics(runs_of(vec, margins), True, 50, 0)
    assert "auroc" not in out["models"]["weak_ceiling"] and "ece" not in out["models"]["weak_ceiling"]
    assert len(out["models"]["strong_ceiling"]["auroc"]["per_seed"]) == 2
    assert any("test_logits missing for weak_ceiling" in x for x in out["notes"])
