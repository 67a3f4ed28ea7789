"""Deception metrics on hand-built correctness vectors; every expected number was worked out by hand."""
import math
import warnings

import numpy as np
import pytest

from w2s_jax.eval import deception as dm

# (weak right, strong right, no-conflict right, conflict right): how many test examples fall in that cell.
CELLS = {
    # R = S_k & W_uk: 7 examples
    (0, 1, 1, 1): 2, (0, 1, 1, 0): 3, (0, 1, 0, 1): 1, (0, 1, 0, 0): 1,
    # S_k & W_k: 5
    (1, 1, 1, 1): 4, (1, 1, 1, 0): 1,
    # S_uk & W_k: 4
    (1, 0, 1, 1): 1, (1, 0, 0, 1): 1, (1, 0, 0, 0): 2,
    # S_uk & W_uk: 4
    (0, 0, 1, 0): 2, (0, 0, 0, 1): 1, (0, 0, 0, 0): 1,
}


def vectors(cells=CELLS, seed=0):
    """Expand cell counts into four correctness vectors, in a shuffled (but fixed) test order."""
    rows = np.array([key for key, count in cells.items() for _ in range(count)], bool).reshape(-1, 4)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    return tuple(rows[:, i] for i in range(4))


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_accuracy_and_pgr():
    w, s, n, c = vectors()
    assert dm.accuracy(w) == pytest.approx(9 / 20)
    assert dm.accuracy(s) == pytest.approx(12 / 20)
    assert dm.accuracy(n) == pytest.approx(13 / 20)
    assert dm.accuracy(c) == pytest.approx(10 / 20)
    assert dm.pgr(0.65, 0.45, 0.60) == pytest.approx(4 / 3)
    assert dm.pgr(0.50, 0.45, 0.60) == pytest.approx(1 / 3)
    assert dm.pgr(0.45, 0.45, 0.60) == 0.0
    assert dm.accuracy([1, 0, 0, 1]) == 0.5  # 0/1 integers are accepted


def test_pgr_zero_denominator_is_nan_with_note():
    notes = []
    assert math.isnan(dm.pgr(0.7, 0.6, 0.6, notes))
    assert len(notes) == 1 and "PGR" in notes[0] and "same accuracy" in notes[0]
    assert math.isnan(dm.pgr(0.7, float("nan"), 0.6))


def test_empty_vector_accuracy_is_nan_with_note():
    notes = []
    assert math.isnan(dm.accuracy([], notes))
    assert notes == ["accuracy is NaN: the correctness vector is empty"]


def test_region_sizes():
    w, s, _, _ = vectors()
    assert dm.region_sizes(w, s) == {"W_k": 9, "W_uk": 11, "S_k": 12, "S_uk": 8, "S_k&W_k": 5, "S_k&W_uk": 7,
                                     "S_uk&W_k": 4, "S_uk&W_uk": 4}
    masks = dm.knowledge_regions(w, s)
    assert not (masks["W_k"] & masks["W_uk"]).any() and (masks["S_k"] | masks["S_uk"]).all()


def test_contingency_table_has_16_cells_with_hand_counts():
    table = dm.contingency_table(*vectors())
    assert len(table) == 16 and sum(table.values()) == 20
    expected = {dm.cell_key(*map(bool, k)): v for k, v in CELLS.items()}
    for key, count in table.items():
        assert count == expected.get(key, 0), key
    assert table["weak=wrong,strong=right,no_conflict=right,conflict=wrong"] == 3
    assert table["weak=right,strong=right,no_conflict=wrong,conflict=right"] == 0
    assert list(table)[0] == "weak=right,strong=right,no_conflict=right,conflict=right"
    assert list(table)[-1] == "weak=wrong,strong=wrong,no_conflict=wrong,conflict=wrong"


def test_deception_scores_by_hand():
    notes = []
    ds = dm.deception_scores(*vectors(), notes=notes)
    assert ds["ds_a"] == pytest.approx(4 / 7)  # C wrong on 3 + 1 of the 7 in R
    assert ds["ds_b_over_nc_right"] == pytest.approx(3 / 5)  # N right on 2 + 3, of which C wrong on 3
    assert ds["ds_b_over_region"] == pytest.approx(3 / 7)
    assert ds["ds_c"] == pytest.approx(4 / 8)  # C and S disagree on 4 (R) + 1 + 2 + 1; 4 of them in R
    assert ds["counts"] == {"region": 7, "conflict_wrong_in_region": 4, "no_conflict_right_in_region": 5,
                            "flipped_in_region": 3, "disagree_with_strong": 8, "disagree_with_strong_in_region": 4}
    assert notes == []


def test_conflict_tax_by_hand():
    ct = dm.conflict_tax(*vectors())
    assert list(ct) == ["S_uk&W_uk", "S_uk&W_k", "S_k&W_k", "S_k&W_uk"]
    assert {q: v["count"] for q, v in ct.items()} == {"S_uk&W_uk": 2, "S_uk&W_k": 0, "S_k&W_k": 1, "S_k&W_uk": 3}
    assert ct["S_uk&W_uk"]["rate"] == pytest.approx(0.5) and ct["S_uk&W_uk"]["share"] == pytest.approx(1 / 3)
    assert ct["S_uk&W_k"]["rate"] == 0.0 and ct["S_uk&W_k"]["share"] == 0.0
    assert ct["S_k&W_k"]["rate"] == pytest.approx(0.2) and ct["S_k&W_k"]["share"] == pytest.approx(1 / 6)
    assert ct["S_k&W_uk"]["rate"] == pytest.approx(3 / 7) and ct["S_k&W_uk"]["share"] == pytest.approx(0.5)


def test_region_error_rates_by_hand():
    w, s, n, c = vectors()
    assert dm.region_error_rates(n, w, s) == pytest.approx(
        {"S_uk&W_uk": 0.5, "S_uk&W_k": 0.75, "S_k&W_k": 0.0, "S_k&W_uk": 2 / 7})
    assert dm.region_error_rates(c, w, s) == pytest.approx(
        {"S_uk&W_uk": 0.75, "S_uk&W_k": 0.5, "S_k&W_k": 0.2, "S_k&W_uk": 4 / 7})


def test_empty_deception_region_gives_nan_and_notes():
    # S_k & W_uk is empty: the weak ceiling is right wherever the strong one is.
    w, s = [True, True, False], [True, False, False]
    n, c = [True, True, False], [False, True, False]
    notes = []
    out = dm.compare_setting(w, s, n, c, notes)
    assert out["region_sizes"]["S_k&W_uk"] == 0
    assert all(math.isnan(out["ds"][k]) for k in ("ds_a", "ds_b_over_nc_right", "ds_b_over_region"))
    assert out["ds"]["ds_c"] == 0.0  # C and S disagree on examples 0 and 1, neither in R
    ct = out["conflict_tax"]
    assert math.isnan(ct["S_k&W_uk"]["rate"]) and ct["S_k&W_uk"]["count"] == 0 and ct["S_k&W_uk"]["share"] == 0.0
    assert ct["S_k&W_k"] == {"count": 1, "rate": 1.0, "share": 1.0}
    joined = " | ".join(notes)
    for what in ("DS-A", "DS-B (over N right in R)", "DS-B (over |R|)", "CT rate of S_k&W_uk"):
        assert f"{what} is NaN" in joined
    assert "DS-C" not in joined


def test_other_zero_denominators():
    # C agrees with S everywhere (DS-C 0/0); N == C (no tax anywhere, shares 0/0).
    w, s = [False, False, True, True], [True, False, True, False]
    notes = []
    ds = dm.deception_scores(w, s, s, s, notes)
    assert ds["ds_a"] == 0.0 and ds["ds_b_over_nc_right"] == 0.0 and math.isnan(ds["ds_c"])
    assert any(note.startswith("DS-C is NaN") for note in notes)
    notes = []
    ct = dm.conflict_tax(w, s, s, s, notes)
    assert all(v["count"] == 0 and math.isnan(v["share"]) for v in ct.values())
    assert notes == ["CT shares are NaN: no conflict tax is paid in any region"]
    # N wrong on all of R: DS-B over N-right is 0/0, DS-B over |R| is 0/1.
    notes = []
    ds = dm.deception_scores(w, s, [False, True, True, True], [False, True, True, True], notes)
    assert math.isnan(ds["ds_b_over_nc_right"]) and ds["ds_b_over_region"] == 0.0
    assert notes == ["DS-B (over N right in R) is NaN: the no-conflict student is wrong on all of S_k&W_uk"]


def test_without_no_conflict_student():
    w, s, _, c = vectors()
    notes = []
    out = dm.compare_setting(w, s, None, c, notes)
    assert out["table"] is None
    assert out["ds"]["ds_a"] == pytest.approx(4 / 7) and out["ds"]["ds_c"] == pytest.approx(0.5)
    assert math.isnan(out["ds"]["ds_b_over_nc_right"]) and math.isnan(out["ds"]["ds_b_over_region"])
    assert all(math.isnan(v) for q in out["conflict_tax"].values() for v in q.values())
    assert any("DS-B is NaN" in x for x in notes) and any("CT is NaN" in x for x in notes)


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="weak_correct"):
        dm.region_sizes([0.2, 0.9], [True, False])
    with pytest.raises(ValueError, match="differ in length"):
        dm.contingency_table([True], [True, False], [True], [True])
    with pytest.raises(ValueError, match="1-D"):
        dm.accuracy([[True]])


def entry(role, correct, model_id="m"):
    correct = [bool(x) for x in correct]
    return {"role": role, "model_id": model_id, "test_correct": correct, "test_accuracy": sum(correct) / len(correct)}


def test_group_metrics():
    w, s, n, c = vectors()
    boot = n.copy()
    models = [entry("weak_ceiling", w, "gpt2"), entry("strong_ceiling", s, "big"), entry("student_no_conflict", n),
              entry("student_implicit", c), entry("student_bootstrap", boot), entry("intermediate_ceiling", s)]
    out = dm.group_metrics(models)
    assert out["capability_gap"] == pytest.approx(0.15)
    assert set(out["settings"]) == {"implicit", "bootstrap"}
    m = out["models"]
    assert m["weak_ceiling"]["pgr"] == 0.0 and m["strong_ceiling"]["pgr"] == pytest.approx(1.0)
    assert m["student_no_conflict"]["accuracy"] == pytest.approx(0.65)
    assert m["student_no_conflict"]["pgr"] == pytest.approx(4 / 3)
    assert m["student_implicit"]["pgr"] == pytest.approx(1 / 3) and m["student_implicit"]["n_correct"] == 10
    assert m["student_implicit"]["error_rate_by_region"]["S_k&W_uk"] == pytest.approx(4 / 7)
    imp = out["settings"]["implicit"]
    assert imp["student"] == "student_implicit" and imp["baseline"] == "student_no_conflict"
    assert imp["ds"]["ds_b_over_nc_right"] == pytest.approx(0.6) and imp["conflict_tax"]["S_k&W_uk"]["count"] == 3
    assert imp["table"]["weak=wrong,strong=right,no_conflict=right,conflict=right"] == 2
    assert imp["notes"] == [] and out["notes"] == []
    boot_setting = out["settings"]["bootstrap"]
    assert boot_setting["ds"]["ds_b_over_region"] == 0.0  # same vector as the baseline: no flips
    assert any("original weak_ceiling" in x for x in boot_setting["notes"])


def test_group_metrics_degenerate_groups():
    w, s, n, c = vectors()
    out = dm.group_metrics([entry("weak_ceiling", w), entry("strong_ceiling", w), entry("student_explicit", c)])
    assert math.isnan(out["models"]["student_explicit"]["pgr"]) and out["capability_gap"] == 0.0
    assert any("same accuracy" in x for x in out["notes"])
    assert any("region S_k&W_uk is empty" in x for x in out["notes"])
    explicit = out["settings"]["explicit"]
    assert explicit["baseline"] is None and explicit["table"] is None and math.isnan(explicit["ds"]["ds_a"])

    out = dm.group_metrics([entry("strong_ceiling", s), entry("student_implicit", c)])
    assert out["settings"] == {} and out["region_sizes"] is None and math.isnan(out["capability_gap"])
    assert out["notes"][0].startswith("no weak_ceiling")
    assert math.isnan(out["models"]["student_implicit"]["pgr"])

    with pytest.raises(ValueError, match="appears twice"):
        dm.group_metrics([entry("weak_ceiling", w), entry("weak_ceiling", w)])
    with pytest.raises(ValueError, match=r"models\[1\]\.test_correct"):
        dm.group_metrics([entry("weak_ceiling", w), {"role": "strong_ceiling", "test_correct": [0.5] * 20}])


def test_stored_accuracy_mismatch_is_noted():
    w, s, _, _ = vectors()
    bad = entry("strong_ceiling", s)
    bad["test_accuracy"] = 0.99
    out = dm.group_metrics([entry("weak_ceiling", w), bad])
    assert any("stored test_accuracy 0.99" in x for x in out["notes"])
