"""Preference pairs: the row formats, their validation, and each pair's seeded A/B order.

A pair is two full HH-RLHF strings ("\\n\\nHuman: ...\\n\\nAssistant: ...") or two chat conversations
(`chat.Dialogue`, rendered per tokenizer); `chosen` is the preferred (harmless) one. Rows are validated when they
are read, so a bad row fails here with `file:line:field` instead of deep inside training (DESIGN.md, principle 5).
Files are found and read in `readers.py`, hub datasets in `hub.py`. The A/B order reproduces the original code bit
for bit (original-spec.md §2.2), which is what keeps test example j identical across every model of a sweep.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from w2s_jax.data.chat import ASSISTANT_MARKER, HUMAN_MARKER, Dialogue

ROW_FORMATS = ("accepted rows: {chosen, rejected} full dialogues, {prompt, chosen, rejected} strings, or chat "
               "messages (chosen/rejected as lists of {role, content}, prompt a string or messages)")
ROLES = ("system", "user", "assistant")


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


def _check_text(value: Any, source: str, line: int, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(source, line, name, f"expected a string, got {type(value).__name__} ({ROW_FORMATS})",
                        "not_a_string")
    if not value.strip():
        raise DataError(source, line, name, "empty string", "empty_string")
    try:
        value.encode("utf-8")  # JSON "\\ud800"-style escapes decode to lone surrogates tokenizers reject
    except UnicodeEncodeError as err:
        raise DataError(source, line, name, f"lone surrogate at character {err.start}", "lone_surrogate") from None
    return value


def _messages(value: Any, source: str, line: int, name: str) -> list[dict]:
    """A list of {role, content} messages (extra keys dropped), each role one of ROLES."""
    if not isinstance(value, list) or not value:
        raise DataError(source, line, name, f"expected a non-empty list of messages ({ROW_FORMATS})",
                        "not_messages")
    out = []
    for i, message in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(message, dict):
            raise DataError(source, line, where, f"a message is a {{role, content}} object, got "
                            f"{type(message).__name__}", "not_messages")
        if message.get("role") not in ROLES:
            raise DataError(source, line, f"{where}.role", f"expected one of {list(ROLES)}, got "
                            f"{message.get('role')!r}", "bad_role")
        out.append({"role": message["role"], "content": _check_text(message.get("content"), source, line,
                                                                   f"{where}.content")})
    return out


def _chat_pair(row: dict, source: str, line: int) -> tuple[Dialogue, Dialogue]:
    """A chat row: `chosen`/`rejected` are whole conversations, or answers to `prompt` (a string: one user
    message; or messages). Each conversation must end with an assistant message (the answer judged)."""
    prompt = row.get("prompt")
    if prompt is None:
        prompt_messages = []
    elif isinstance(prompt, str):
        prompt_messages = [{"role": "user", "content": _check_text(prompt, source, line, "prompt")}]
    else:
        prompt_messages = _messages(prompt, source, line, "prompt")
    sides = []
    for name in ("chosen", "rejected"):
        messages = prompt_messages + _messages(row[name], source, line, name)
        if messages[-1]["role"] != "assistant":
            raise DataError(source, line, name, "the conversation must end with an assistant message (the answer "
                            f"judged), it ends with a {messages[-1]['role']!r} one", "no_answer")
        if len(messages) < 2:
            raise DataError(source, line, name, "the answer has no prompt: give a `prompt` or start the "
                            "conversation with a user message", "no_prompt")
        sides.append(Dialogue(messages))
    return sides[0], sides[1]


def pair_from_row(row: Any, source: str, line: int) -> Pair:
    """Validate one decoded row and turn it into a Pair; raises DataError naming `source:line:field`."""
    if not isinstance(row, dict):
        raise DataError(source, line, None, f"row is a JSON {type(row).__name__}, expected an object "
                        f"({ROW_FORMATS})", "not_an_object")
    for name in ("chosen", "rejected"):
        if name not in row:
            raise DataError(source, line, name, f"missing field (row has {sorted(row)}; {ROW_FORMATS})",
                            "missing_field")
    kinds = {name: isinstance(row[name], list) for name in ("chosen", "rejected")}
    if any(kinds.values()):
        if not all(kinds.values()):
            text_side = "chosen" if not kinds["chosen"] else "rejected"
            raise DataError(source, line, text_side, f"a list of messages on one side and a "
                            f"{type(row[text_side]).__name__} on the other ({ROW_FORMATS})", "mixed_formats")
        chosen, rejected = _chat_pair(row, source, line)
    else:
        fields = ("prompt", "chosen", "rejected") if "prompt" in row else ("chosen", "rejected")
        texts = {name: _check_text(row[name], source, line, name) for name in fields}
        chosen, rejected = texts["chosen"], texts["rejected"]
        if "prompt" in row:
            chosen, rejected = join_prompt(texts["prompt"], chosen), join_prompt(texts["prompt"], rejected)
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


def pairs_from_rows(rows, source: str, *, allow_skips: bool = False,
                    decode=None) -> tuple[list[Pair], SkipReport]:
    """Pairs of `(number, row)` items (`decode(row, source, number)` first when given). The first bad row raises
    a DataError unless `allow_skips`, in which case bad rows are dropped and counted in the SkipReport. No usable
    row always raises."""
    report, pairs = SkipReport(source), []
    for number, row in rows:
        report.rows_read += 1
        try:
            pairs.append(pair_from_row(decode(row, source, number) if decode else row, source, number))
        except DataError as error:
            if not allow_skips:
                raise
            report.add(error)
    if not pairs:
        detail = "file is empty" if report.rows_read == 0 else f"no valid rows ({report.summary()})"
        raise DataError(source, None, None, detail, "empty")
    return pairs, report


def read_jsonl_pairs(path: str | os.PathLike, *, allow_skips: bool = False) -> tuple[list[Pair], SkipReport]:
    """Read a JSONL file of rows in any of ROW_FORMATS. Blank lines are ignored (and not counted as rows); extra
    keys are ignored; numbers in errors are line numbers."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise DataError(source, None, None, "file not found", "missing_file")
    with open(source, "rb") as handle:
        rows = [(number, raw) for number, raw in enumerate(handle, start=1) if raw.strip()]
    return pairs_from_rows(rows, source, allow_skips=allow_skips, decode=_decode_line)


def single_turn_prompt(text: str) -> str | None:
    """The prompt (through "\\n\\nAssistant:") of a single-turn HH text, or None if the text is not single-turn."""
    if text.count(HUMAN_MARKER) != 1 or text.count(ASSISTANT_MARKER) != 1:
        return None
    cut = text.find(ASSISTANT_MARKER) + len(ASSISTANT_MARKER)
    return text[:cut] if text.startswith(HUMAN_MARKER) else None


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
