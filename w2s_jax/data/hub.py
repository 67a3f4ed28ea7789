"""Preference pairs from a Hugging Face dataset, through `datasets.load_dataset` (a hub name or a local folder).

Two paths: the paper's Anthropic/hh-rlhf (`load_hub_hh`: single-turn rows of one subset, cut into D_gt / D_weak /
D_test by a seeded permutation), and any other dataset whose rows are in one of `pairs.ROW_FORMATS`
(`load_hub_dataset`: a split name per role).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from w2s_jax.data.pairs import DataError, Pair, PairSplits, SkipReport, pair_from_row, pairs_from_rows, \
    single_turn_prompt, take_first

HH_NAME = "Anthropic/hh-rlhf"


def filter_single_turn(rows: Iterable[Mapping[str, Any]], source: str) -> tuple[list[Pair], SkipReport]:
    """Keep the single-turn rows of HH-RLHF, as the paper's `hh-single-turn` files are.

    Kept: both sides valid (as in `pair_from_row`), each containing exactly one "\\n\\nHuman:" (at the start)
    and one "\\n\\nAssistant:", and both sides sharing that prompt. Row numbers are 1-based row indices.
    """
    report, pairs = SkipReport(source), []
    for index, row in enumerate(rows):
        report.rows_read += 1
        line = index + 1
        try:
            pair = pair_from_row(dict(row), source, line)
        except DataError as error:
            report.add(error)
            continue
        chosen_prompt, rejected_prompt = single_turn_prompt(pair.chosen), single_turn_prompt(pair.rejected)
        if chosen_prompt is None or rejected_prompt is None:
            report.add(DataError(source, line, None, "not single-turn", "multi_turn"))
        elif chosen_prompt != rejected_prompt:
            report.add(DataError(source, line, None, "chosen and rejected prompts differ", "prompt_mismatch"))
        else:
            pairs.append(pair)
    return pairs, report


def split_pairs(pairs: Sequence[Pair], sizes: Sequence[int], seed: int, source: str = "<split>") -> list[list[Pair]]:
    """Disjoint random splits: `np.random.default_rng(seed).permutation(len(pairs))` cut into consecutive
    blocks of `sizes` (e.g. 4000/4000/4000 for D_gt, D_weak, D_test). Deterministic for a seed and input order."""
    if sum(sizes) > len(pairs):
        cause = f"asked for {list(sizes)} = {sum(sizes)} pairs, have {len(pairs)}"
        raise DataError(source, None, None, cause, "too_few")
    order = np.random.default_rng(seed).permutation(len(pairs))
    blocks, start = [], 0
    for size in sizes:
        blocks.append([pairs[i] for i in order[start : start + size]])
        start += size
    return blocks


def load_hub_hh(
    data_dir: str = "harmless-base",
    *,
    sizes: Sequence[int] = (4000, 4000, 4000),
    seed: int = 0,
    conflict_data_dir: str | None = None,
    n_conflict: int = 0,
    dataset_name: str = "Anthropic/hh-rlhf",
    **load_kwargs: Any,
) -> PairSplits:
    """D_gt/D_weak/D_test from the hub: the `train` split of `dataset_name/data_dir`, filtered by
    `filter_single_turn`, split by `split_pairs(sizes, seed)`. The optional conflict set is the first
    `n_conflict` pairs of the same filter + seeded permutation applied to `conflict_data_dir` (e.g. "helpful-base").
    Needs network access (or a populated HF cache); `load_kwargs` go to `datasets.load_dataset`.
    """
    import datasets  # imported here: the local-file path must not pay for it

    def filtered(sub_dir: str) -> tuple[list[Pair], SkipReport]:
        rows = datasets.load_dataset(dataset_name, data_dir=sub_dir, split="train", **load_kwargs)
        return filter_single_turn(rows, f"hf:{dataset_name}/{sub_dir}:train")

    pairs, report = filtered(data_dir)
    gt, weak, test = split_pairs(pairs, sizes, seed)
    reports = {"gt": report, "weak": report, "test": report}
    conflict = None
    if conflict_data_dir is not None and n_conflict:
        conflict_pairs, reports["conflict"] = filtered(conflict_data_dir)
        (conflict,) = split_pairs(conflict_pairs, [n_conflict], seed)
    return PairSplits(gt, weak, test, conflict, reports)


def load_hub_dataset(
    name: str,
    roles: Mapping[str, tuple[str, int]],
    *,
    config_name: str = "",
    seed: int = 0,
    allow_skips: bool = False,
    **load_kwargs: Any,
) -> tuple[dict[str, list[Pair]], dict[str, SkipReport]]:
    """`roles` maps a role (gt, weak, test, conflict) to (split name, n). A role alone on its split takes the
    split's first n valid rows; roles naming the same split take disjoint blocks of `split_pairs(sizes, seed)` of
    it, in the order given (so D_gt and D_weak can both come from "train" without sharing a pair)."""
    import datasets  # imported here: the local-file path must not pay for it

    by_split: dict[str, list[str]] = {}
    for role, (split, _) in roles.items():
        by_split.setdefault(split, []).append(role)
    out, reports = {}, {}
    for split, members in by_split.items():
        source = f"hf:{name}" + (f"/{config_name}" if config_name else "") + f":{split}"
        try:
            rows = datasets.load_dataset(name, config_name or None, split=split, **load_kwargs)
        except Exception as err:  # noqa: BLE001 - datasets raises many types for a missing dataset, config or split
            fields = ", ".join(f"config.data.hub_splits.{r}" for r in members)
            cause = " ".join(f"{type(err).__name__}: {err}".split())
            raise DataError(source, None, None, f"cannot load it (named by config.data.hub_name and {fields}): "
                            f"{cause}", "missing_file") from None
        pairs, report = pairs_from_rows(((i + 1, dict(row)) for i, row in enumerate(rows)), source,
                                        allow_skips=allow_skips)
        if len(members) == 1:
            role = members[0]
            out[role] = take_first(pairs, roles[role][1], f"split {role!r}", source)
        else:
            blocks = split_pairs(pairs, [roles[r][1] for r in members], seed, source)
            out.update(zip(members, blocks))
        reports.update((role, report) for role in members)
    return out, reports
