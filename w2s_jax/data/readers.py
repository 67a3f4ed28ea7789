"""Where each split's file is, and reading it by its extension (JSONL, JSON, Parquet).

The folder rule: a split's file is `config.data.files.<split>` when set (absolute, or relative to `data.dir`);
otherwise `data.dir` must hold exactly one of the paper's name (`harmless_train_gt.jsonl`, ...) or
`<split>.jsonl`, `<split>.json`, `<split>.parquet`. Every error names the file (or folder) expected and the
config field that named it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping

from w2s_jax.data.bigbench import read_bigbench_pairs
from w2s_jax.data.pairs import DataError, Pair, PairSplits, SkipReport, pairs_from_rows, read_jsonl_pairs, \
    take_first

SPLITS = ("gt", "weak", "test", "conflict")
PAPER_FILES = {
    "gt": "harmless_train_gt.jsonl",  # D_gt: trains the weak and strong ceilings
    "weak": "harmless_train_w2s.jsonl",  # D_weak: labelled by the weak model, trains the students
    "test": "harmless_test.jsonl",  # D_test: never shuffled, same order for every model
}
CONFLICT_FILE = "helpful_train.jsonl"  # GT helpful pairs of the implicit conflict
EXTENSIONS = (".jsonl", ".json", ".parquet")


def default_names(split: str) -> list[str]:
    """The file names `data.dir` may hold `split` under, the paper's first."""
    return [PAPER_FILES.get(split, CONFLICT_FILE)] + [split + ext for ext in EXTENSIONS]


def split_path(directory: str, split: str, named: str = "", field: str = "") -> str:
    """The file of `split`: `named` (by config field `field`; relative to `directory` unless absolute), or the
    one default name present in `directory`."""
    directory = os.fspath(directory)
    if named:
        path = named if os.path.isabs(named) else os.path.join(directory, named)
        if not os.path.isfile(path):
            where = "" if os.path.isabs(named) else ", relative to config.data.dir"
            raise DataError(path, None, None, f"file not found (the {split} split, named by config.{field}{where})",
                            "missing_file")
        return path
    names = default_names(split)
    if not os.path.isdir(directory):
        raise DataError(directory, None, None, f"data directory not found (config.data.dir); it should hold the "
                        f"{split} split as one of {', '.join(names)}", "missing_file")
    found = [n for n in names if os.path.isfile(os.path.join(directory, n))]
    if not found:
        raise DataError(directory, None, None, f"no file for the {split} split: expected one of {', '.join(names)} "
                        f"in config.data.dir, or a path in config.data.files.{split}", "missing_file")
    if len(found) > 1:
        raise DataError(directory, None, None, f"{' and '.join(found)} could both be the {split} split: keep one, "
                        f"or name it in config.data.files.{split}", "ambiguous")
    return os.path.join(directory, found[0])


def read_pairs_file(path: str | os.PathLike, *, allow_skips: bool = False) -> tuple[list[Pair], SkipReport]:
    """Pairs of a `.jsonl` (one row a line), `.json` (a list of rows, or a BIG-bench task) or `.parquet` file
    (one row a record). In errors the number after the file is its line (JSONL) or 1-based row index."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".jsonl":
        return read_jsonl_pairs(path, allow_skips=allow_skips)
    if extension not in EXTENSIONS:
        raise DataError(path, None, None, f"unsupported file type {extension or '(none)'!r}: a split is a .jsonl, "
                        ".json (a list of rows, or a BIG-bench task) or .parquet file", "unsupported")
    if not os.path.isfile(path):
        raise DataError(path, None, None, "file not found", "missing_file")
    if extension == ".parquet":
        rows = _parquet_rows(path)
    else:
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(path, getattr(e, "lineno", None), None, f"not valid JSON ({e})", "malformed_json") from None
        if isinstance(rows, dict):  # a BIG-bench task: {"examples": [{"input", "target_scores"}]}
            pairs = read_bigbench_pairs(path)
            return pairs, SkipReport(path, rows_read=len(pairs))
        if not isinstance(rows, list):
            raise DataError(path, None, None, f"a .json split is a list of rows (or a BIG-bench task object), got "
                            f"a JSON {type(rows).__name__}", "not_a_list")
    return pairs_from_rows(enumerate(rows, start=1), path, allow_skips=allow_skips)


def _parquet_rows(path: str) -> list:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(path, None, None, f"not a readable Parquet file ({' '.join(str(e).split())})",
                        "malformed_parquet") from None


def read_splits(paths: Mapping[str, str], sizes: Mapping[str, int | None], *, allow_skips: bool = False
                ) -> tuple[dict[str, list[Pair]], dict[str, SkipReport]]:
    """Each split's first `sizes[split]` valid pairs (None = all) of its file."""
    out, reports = {}, {}
    for split, path in paths.items():
        pairs, reports[split] = read_pairs_file(path, allow_skips=allow_skips)
        out[split] = take_first(pairs, sizes[split], f"split {split!r}", path)
    return out, reports


def load_paper_dir(
    directory: str | os.PathLike,
    *,
    n_gt: int | None = None,
    n_weak: int | None = None,
    n_test: int | None = None,
    n_conflict: int | None = None,
    conflict_file: str = "",
    allow_skips: bool = False,
) -> PairSplits:
    """The splits of one folder by the folder rule. The conflict file (`conflict_file`, or the default names) is
    read only when `n_conflict` is truthy; `n_conflict=0` yields an empty conflict set without reading it."""
    directory = os.fspath(directory)
    sizes = {"gt": n_gt, "weak": n_weak, "test": n_test}
    if n_conflict:
        sizes["conflict"] = n_conflict
    paths = {s: split_path(directory, s, conflict_file if s == "conflict" else "", "data.files.conflict")
             for s in sizes}
    splits, reports = read_splits(paths, sizes, allow_skips=allow_skips)
    conflict = splits.get("conflict", [] if n_conflict == 0 else None)
    return PairSplits(splits["gt"], splits["weak"], splits["test"], conflict, reports)
