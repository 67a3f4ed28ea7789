"""Preference-pair datasets: parse, validate, split, and put each pair in its seeded A/B order.

A pair is two full HH-RLHF strings ("\\n\\nHuman: ...\\n\\nAssistant: ..."); `chosen` is the preferred (harmless)
one. Rows are validated when they are read, so a bad row fails here with `file:line:field` instead of deep inside
training (DESIGN.md, principle 5). The A/B order reproduces the original code bit for bit
(original-spec.md §2.2), which is what keeps test example j identical across every model of a sweep.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

HUMAN_MARKER = "\n\nHuman:"
ASSISTANT_MARKER = "\n\nAssistant:"

PAPER_FILES = {
    "gt": "harmless_train_gt.jsonl",  # D_gt: trains the weak and strong ceilings
    "weak": "harmless_train_w2s.jsonl",  # D_weak: labelled by the weak model, trains the students
    "test": "harmless_test.jsonl",  # D_test: never shuffled, same order for every model
}
CONFLICT_FILE = "helpful_train.jsonl"  # GT helpful pairs of the implicit conflict (optional)


class DataError(ValueError):
    """A data row or file is unusable; the message is one line: `file:line:field: cause`."""

    def __init__(self, source: str, line: int | None, field: str | None, cause: str, kind: str):
        location = source if line is None else f"{source}:{line}"
        if field is not None:
            location += f":{field}"
        super().__init__(f"{location}: {cause}")
        self.source, self.line, self.field, self.cause, self.kind = source, line, field, cause, kind

    def __reduce__(self):  # keeps the error picklable (worker processes) despite the extra constructor arguments
        return type(self), (self.source, self.line, self.field, self.cause, self.kind)


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference pair; `source`/`line` (1-based) point back to where it came from, for error messages."""

    chosen: str
    rejected: str
    source: str = "<memory>"
    line: int = 0


@dataclasses.dataclass
class SkipReport:
    """What `allow_skips=True` dropped from one source, counted per cause (the `DataError.kind` values)."""

    source: str
    rows_read: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first_errors: list[str] = dataclasses.field(default_factory=list)  # a few full messages, for the log

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, error: DataError, keep_examples: int = 3) -> None:
        self.counts[error.kind] += 1
        if len(self.first_errors) < keep_examples:
            self.first_errors.append(str(error))

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.source}: {self.rows_read} rows, none skipped"
        causes = ", ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items()))
        return f"{self.source}: skipped {self.skipped} of {self.rows_read} rows ({causes})"


def join_prompt(prompt: str, answer: str) -> str:
    """Full text for a `{prompt, chosen, rejected}` row.

    Rule: if the answer already starts with the prompt it is taken as the full text; otherwise the prompt is
    prepended verbatim, with no separator added, so the prompt should end with "\\n\\nAssistant:" and the
    answer start with a space, as in HH-RLHF.
    """
    return answer if answer.startswith(prompt) else prompt + answer


def pair_from_row(row: Any, source: str, line: int) -> Pair:
    """Validate one decoded JSON row and turn it into a Pair; raises DataError naming `source:line:field`."""
    if not isinstance(row, dict):
        raise DataError(source, line, None, f"row is a JSON {type(row).__name__}, expected an object", "not_an_object")
    fields = ("prompt", "chosen", "rejected") if "prompt" in row else ("chosen", "rejected")
    for name in fields:
        if name not in row:
            raise DataError(source, line, name, f"missing field (row has {sorted(row)})", "missing_field")
        value = row[name]
        if not isinstance(value, str):
            raise DataError(source, line, name, f"expected a string, got {type(value).__name__}", "not_a_string")
        if not value.strip():
            raise DataError(source, line, name, "empty string", "empty_string")
        try:
            value.encode("utf-8")  # JSON "\\ud800"-style escapes decode to lone surrogates tokenizers reject
        except UnicodeEncodeError as err:
            raise DataError(source, line, name, f"lone surrogate at character {err.start}", "lone_surrogate") from None
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" in row:
        chosen, rejected = join_prompt(row["prompt"], chosen), join_prompt(row["prompt"], rejected)
    if chosen == rejected:
        raise DataError(source, line, "rejected", "chosen and rejected are identical", "chosen_equals_rejected")
    return Pair(chosen, rejected, source, line)


def _decode_line(raw: bytes, source: str, line: int) -> Any:
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        cause = f"invalid UTF-8 at byte {err.start}: {err.reason}"
        raise DataError(source, line, None, cause, "invalid_utf8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        cause = f"malformed JSON at column {err.colno}: {err.msg}"
        raise DataError(source, line, None, cause, "malformed_json") from None


def read_jsonl_pairs(path: str | os.PathLike, *, allow_skips: bool = False) -> tuple[list[Pair], SkipReport]:
    """Read a JSONL file of `{chosen, rejected}` or `{prompt, chosen, rejected}` rows.

    Blank lines are ignored (and not counted as rows); extra keys are ignored. The first bad row raises a
    DataError unless `allow_skips`, in which case bad rows are dropped and counted in the returned SkipReport.
    A file with no usable row always raises.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise DataError(source, None, None, "file not found", "missing_file")
    report, pairs = SkipReport(source), []
    with open(source, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            report.rows_read += 1
            try:
                pairs.append(pair_from_row(_decode_line(raw, source, line_number), source, line_number))
            except DataError as error:
                if not allow_skips:
                    raise
                report.add(error)
    if not pairs:
        detail = "file is empty" if report.rows_read == 0 else f"no valid rows ({report.summary()})"
        raise DataError(source, None, None, detail, "empty")
    return pairs, report


@dataclasses.dataclass
class PairSplits:
    """The experiment's splits (original-spec.md §2.1): D_gt, D_weak, D_test and an optional conflict set."""

    gt: list[Pair]
    weak: list[Pair]
    test: list[Pair]
    conflict: list[Pair] | None = None
    skip_reports: dict[str, SkipReport] = dataclasses.field(default_factory=dict)


def take_first(pairs: Sequence[Pair], n: int | None, what: str, source: str) -> list[Pair]:
    """First-n slice like the original's `select(range(n))`; asking for more rows than exist is an error."""
    if n is None:
        return list(pairs)
    if n < 0 or n > len(pairs):
        cause = f"{what}: asked for {n} pairs, {len(pairs)} valid pairs available"
        raise DataError(source, None, None, cause, "too_few")
    return list(pairs[:n])


def load_paper_dir(
    directory: str | os.PathLike,
    *,
    n_gt: int | None = None,
    n_weak: int | None = None,
    n_test: int | None = None,
    n_conflict: int | None = None,
    conflict_file: str = CONFLICT_FILE,
    allow_skips: bool = False,
) -> PairSplits:
    """Load the paper's local layout (`harmless_train_gt/…_w2s/harmless_test.jsonl` + optional conflict file).

    Each split keeps its first n valid rows (None = all). The conflict file is read only when `n_conflict` is
    not None (then it must exist; `n_conflict=0` yields an empty conflict set without reading it).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(directory, None, None, "data directory not found", "missing_file")
    splits: dict[str, list[Pair]] = {}
    reports: dict[str, SkipReport] = {}
    wanted = {"gt": n_gt, "weak": n_weak, "test": n_test}
    named_files = dict(PAPER_FILES)
    if n_conflict:
        wanted["conflict"], named_files["conflict"] = n_conflict, conflict_file
    for split, file_name in named_files.items():
        path = os.path.join(directory, file_name)
        pairs, reports[split] = read_jsonl_pairs(path, allow_skips=allow_skips)
        splits[split] = take_first(pairs, wanted[split], f"split {split!r}", path)
    conflict = splits.get("conflict", [] if n_conflict == 0 else None)
    return PairSplits(splits["gt"], splits["weak"], splits["test"], conflict, reports)


# ----------------------------------------------------------------------------------------- Hugging Face hub


def single_turn_prompt(text: str) -> str | None:
    """The prompt (through "\\n\\nAssistant:") of a single-turn HH text, or None if the text is not single-turn."""
    if text.count(HUMAN_MARKER) != 1 or text.count(ASSISTANT_MARKER) != 1:
        return None
    cut = text.find(ASSISTANT_MARKER) + len(ASSISTANT_MARKER)
    return text[:cut] if text.startswith(HUMAN_MARKER) else None


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


def split_pairs(pairs: Sequence[Pair], sizes: Sequence[int], seed: int) -> list[list[Pair]]:
    """Disjoint random splits: `np.random.default_rng(seed).permutation(len(pairs))` cut into consecutive
    blocks of `sizes` (e.g. 4000/4000/4000 for D_gt, D_weak, D_test). Deterministic for a seed and input order."""
    if sum(sizes) > len(pairs):
        cause = f"asked for {list(sizes)} = {sum(sizes)} pairs, have {len(pairs)}"
        raise DataError("<split>", None, None, cause, "too_few")
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


# ----------------------------------------------------------------------------------------- A/B order


class ABPairs(NamedTuple):
    """Texts in the reward model's A/B slots and `labels[i] = 1` iff A is the preferred (chosen) answer."""

    texts_a: list[str]
    texts_b: list[str]
    labels: np.ndarray  # int32 [n]


def ab_order(pairs: Sequence[Pair], seed: int) -> ABPairs:
    """The original's seeded A/B swap (original-spec.md §2.2), exactly.

    A fresh `random.Random(seed)` per split; for each pair in order `h = int(rng.random() < 0.5)`;
    A = chosen if h else rejected, B = the other; label = h. Call it once per split with the run's seed.
    """
    rng = random.Random(seed)
    texts_a, texts_b, labels = [], [], []
    for pair in pairs:
        chosen_first = int(rng.random() < 0.5)
        texts_a.append(pair.chosen if chosen_first else pair.rejected)
        texts_b.append(pair.rejected if chosen_first else pair.chosen)
        labels.append(chosen_first)
    return ABPairs(texts_a, texts_b, np.asarray(labels, dtype=np.int32))
