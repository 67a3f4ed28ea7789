"""Pair loading and validation, the hub filter/split, and the original's A/B order (w2s_jax/data/pairs.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from w2s_jax.data import hub, readers
from w2s_jax.data import pairs as pairs_lib
from w2s_jax.data.pairs import DataError, Pair

REAL_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hh-single-turn"


def hh(prompt: str, answer: str) -> str:
    return f"\n\nHuman: {prompt}\n\nAssistant: {answer}"


GOOD_ROW = json.dumps({"chosen": hh("q", "no"), "rejected": hh("q", "sure, here is how")})


def write_jsonl(directory: Path, name: str, lines: list[str | bytes]) -> Path:
    path = directory / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_reads_chosen_rejected_rows_and_records_lines(tmp_path):
    path = write_jsonl(tmp_path, "d.jsonl", [GOOD_ROW, "", GOOD_ROW.replace("no", "never")])
    pairs, report = pairs_lib.read_jsonl_pairs(path)
    assert [p.line for p in pairs] == [1, 3]  # blank lines are skipped but still counted as lines
    assert pairs[0] == Pair(hh("q", "no"), hh("q", "sure, here is how"), str(path), 1)
    assert report.rows_read == 2 and report.skipped == 0


def test_prompt_rows_prepend_the_prompt_unless_already_there(tmp_path):
    prompt = "\n\nHuman: q\n\nAssistant:"
    row = {"prompt": prompt, "chosen": " no", "rejected": prompt + " yes"}
    (pair,), _ = pairs_lib.read_jsonl_pairs(write_jsonl(tmp_path, "p.jsonl", [json.dumps(row)]))
    assert pair.chosen == hh("q", "no") and pair.rejected == hh("q", "yes")


BAD_ROWS = [  # (line content, field named in the message or None, kind)
    (b'{"chosen": "\xff\xfe", "rejected": "b"}', None, "invalid_utf8"),
    ('{"chosen": "a", "rejected": ', None, "malformed_json"),
    ('["a", "b"]', None, "not_an_object"),
    ('{"chosen": "a"}', "rejected", "missing_field"),
    ('{"prompt": "p", "chosen": "a"}', "rejected", "missing_field"),
    ('{"chosen": "", "rejected": "b"}', "chosen", "empty_string"),
    ('{"chosen": "a", "rejected": "   "}', "rejected", "empty_string"),
    ('{"chosen": 3, "rejected": "b"}', "chosen", "not_a_string"),
    ('{"prompt": ["p"], "chosen": "a", "rejected": "b"}', "prompt", "not_a_string"),
    ('{"chosen": "same", "rejected": "same"}', "rejected", "chosen_equals_rejected"),
    ('{"prompt": "P", "chosen": "x", "rejected": "Px"}', "rejected", "chosen_equals_rejected"),
    ('{"chosen": "a\\ud800", "rejected": "b"}', "chosen", "lone_surrogate"),
]


@pytest.mark.parametrize("bad_line, field, kind", BAD_ROWS, ids=[k for _, _, k in BAD_ROWS])
def test_each_bad_row_raises_with_file_line_and_field(tmp_path, bad_line, field, kind):
    path = write_jsonl(tmp_path, "bad_split.jsonl", [GOOD_ROW, "", bad_line, GOOD_ROW])
    with pytest.raises(DataError) as info:
        pairs_lib.read_jsonl_pairs(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert info.value.kind == kind and info.value.line == 3
    assert "bad_split.jsonl:3" in message
    if field is not None:
        assert f"bad_split.jsonl:3:{field}:" in message


def test_allow_skips_counts_each_cause(tmp_path):
    lines = [GOOD_ROW] + [line for line, _, _ in BAD_ROWS] + [GOOD_ROW]
    pairs, report = pairs_lib.read_jsonl_pairs(write_jsonl(tmp_path, "mixed.jsonl", lines), allow_skips=True)
    assert [p.line for p in pairs] == [1, len(lines)]
    expected = {}
    for _, _, kind in BAD_ROWS:
        expected[kind] = expected.get(kind, 0) + 1
    assert dict(report.counts) == expected
    assert report.rows_read == len(lines) and report.skipped == len(BAD_ROWS)
    assert "skipped 12 of 14 rows" in report.summary() and "missing_field=2" in report.summary()


def test_empty_missing_and_all_bad_files_are_clear_errors(tmp_path):
    empty = write_jsonl(tmp_path, "empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match=r"empty\.jsonl: file is empty"):
        pairs_lib.read_jsonl_pairs(empty)
    with pytest.raises(DataError, match=r"nowhere\.jsonl: file not found"):
        pairs_lib.read_jsonl_pairs(tmp_path / "nowhere.jsonl")
    all_bad = write_jsonl(tmp_path, "all_bad.jsonl", ["[1]", "{}"])
    with pytest.raises(DataError, match=r"all_bad\.jsonl: no valid rows .*missing_field=1, not_an_object=1"):
        pairs_lib.read_jsonl_pairs(all_bad, allow_skips=True)


def make_paper_dir(directory: Path, rows_per_split: int = 5, with_conflict: bool = False) -> Path:
    files = dict(readers.PAPER_FILES)
    if with_conflict:
        files["conflict"] = readers.CONFLICT_FILE
    for split, name in files.items():
        rows = [json.dumps({"chosen": hh(f"{split}{i}", "no"), "rejected": hh(f"{split}{i}", "ok")})
                for i in range(rows_per_split)]
        write_jsonl(directory, name, rows)
    return directory


def test_load_paper_dir_slices_first_n(tmp_path):
    splits = readers.load_paper_dir(make_paper_dir(tmp_path), n_gt=3, n_weak=5, n_test=2)
    assert [len(splits.gt), len(splits.weak), len(splits.test)] == [3, 5, 2]
    assert splits.gt[2].chosen == hh("gt2", "no") and splits.test[1].line == 2
    assert splits.conflict is None and set(splits.skip_reports) == {"gt", "weak", "test"}
    assert readers.load_paper_dir(tmp_path, n_conflict=0).conflict == []


def test_load_paper_dir_errors_name_the_path(tmp_path):
    make_paper_dir(tmp_path)
    with pytest.raises(DataError, match=r"harmless_train_gt\.jsonl: split 'gt': asked for 6 pairs, 5 valid"):
        readers.load_paper_dir(tmp_path, n_gt=6)
    with pytest.raises(DataError, match=r"no file for the conflict split: expected one of helpful_train\.jsonl"):
        readers.load_paper_dir(tmp_path, n_conflict=4)
    os.remove(tmp_path / "harmless_test.jsonl")
    with pytest.raises(DataError, match=r"no file for the test split: expected one of harmless_test\.jsonl"):
        readers.load_paper_dir(tmp_path)
    with pytest.raises(DataError, match="data directory not found"):
        readers.load_paper_dir(tmp_path / "absent")


def test_load_paper_dir_with_conflict_set(tmp_path):
    splits = readers.load_paper_dir(make_paper_dir(tmp_path, with_conflict=True), n_conflict=4)
    assert len(splits.conflict) == 4 and splits.conflict[0].chosen == hh("conflict0", "no")


HUB_ROWS = [
    {"chosen": hh("a", "no"), "rejected": hh("a", "yes")},  # kept
    {"chosen": hh("b", "x") + hh("c", "y"), "rejected": hh("b", "x") + hh("c", "z")},  # multi-turn
    {"chosen": hh("d", "no"), "rejected": hh("e", "yes")},  # prompts differ
    {"chosen": hh("f", "same"), "rejected": hh("f", "same")},  # identical
    {"chosen": "no markers at all", "rejected": hh("g", "yes")},  # not HH
    {"chosen": hh("h", "fine"), "rejected": hh("h", "bad")},  # kept
]


def test_single_turn_filter_keeps_only_shared_prompt_single_turn_rows():
    pairs, report = hub.filter_single_turn(HUB_ROWS, "hub")
    assert [p.line for p in pairs] == [1, 6]
    assert dict(report.counts) == {"multi_turn": 2, "prompt_mismatch": 1, "chosen_equals_rejected": 1}
    assert pairs_lib.single_turn_prompt(hh("a", "b")) == "\n\nHuman: a\n\nAssistant:"


def test_split_pairs_is_seeded_disjoint_and_sized():
    pairs = [Pair(f"c{i}", f"r{i}") for i in range(20)]
    first = hub.split_pairs(pairs, [4, 5, 6], seed=7)
    assert first == hub.split_pairs(pairs, [4, 5, 6], seed=7)
    assert first != hub.split_pairs(pairs, [4, 5, 6], seed=8)
    assert [len(b) for b in first] == [4, 5, 6]
    flat = [p.chosen for block in first for p in block]
    order = np.random.default_rng(7).permutation(20)[:15]
    assert flat == [f"c{i}" for i in order] and len(set(flat)) == 15
    with pytest.raises(DataError, match="have 20"):
        hub.split_pairs(pairs, [10, 10, 1], seed=0)


def test_load_hub_hh_wires_filter_and_split(monkeypatch):
    import datasets

    many = [{"chosen": hh(f"q{i}", "no"), "rejected": hh(f"q{i}", "yes")} for i in range(12)]
    calls = []

    def fake_load_dataset(name, data_dir, split, **kwargs):
        calls.append((name, data_dir, split))
        return many + HUB_ROWS[1:3]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = hub.load_hub_hh(sizes=(3, 3, 4), seed=1, conflict_data_dir="helpful-base", n_conflict=2)
    assert calls == [("Anthropic/hh-rlhf", "harmless-base", "train"), ("Anthropic/hh-rlhf", "helpful-base", "train")]
    assert [len(splits.gt), len(splits.weak), len(splits.test), len(splits.conflict)] == [3, 3, 4, 2]
    assert splits.skip_reports["gt"].counts["multi_turn"] == 1
    assert splits.gt[0].source == "hf:Anthropic/hh-rlhf/harmless-base:train"


def test_ab_order_matches_hand_computed_random_0_sequence():
    # random.Random(0).random() -> 0.8444, 0.7580, 0.4206, 0.2589, 0.5113, 0.4049, 0.7838, 0.3033
    # h = int(u < 0.5)          ->   0,      0,      1,      1,      0,      1,      0,      1
    pairs = [Pair(f"good{i}", f"bad{i}") for i in range(8)]
    texts_a, texts_b, labels = pairs_lib.ab_order(pairs, seed=0)
    expected = [0, 0, 1, 1, 0, 1, 0, 1]
    assert labels.tolist() == expected and labels.dtype == np.int32
    assert texts_a == [f"good{i}" if h else f"bad{i}" for i, h in enumerate(expected)]
    assert texts_b == [f"bad{i}" if h else f"good{i}" for i, h in enumerate(expected)]
    # each split gets a fresh Random(seed): the same call twice gives the same order
    assert pairs_lib.ab_order(pairs, seed=0).labels.tolist() == expected
    assert pairs_lib.ab_order(pairs, seed=1).labels.tolist() != expected


@pytest.mark.skipif(not REAL_DATA_DIR.is_dir(), reason=f"real HH data not found at {REAL_DATA_DIR}")
def test_real_hh_test_split_has_4000_valid_pairs():
    pairs, report = pairs_lib.read_jsonl_pairs(REAL_DATA_DIR / "harmless_test.jsonl")
    assert len(pairs) == 4000 and report.skipped == 0
    assert all(p.chosen.startswith("\n\nHuman:") and "\n\nAssistant:" in p.rejected for p in pairs)
