"""Atomic, fsynced file writers: a reader, or a crash at any point, sees the old file or the new one, never half.

Every module that writes results, labels, reports or checkpoint metadata imports these (nothing here imports
upward: only `distributed`, to let the primary process alone write in a multi-process run)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from w2s_jax import distributed


def write_atomic(path: str | os.PathLike, write, mode: str = "w") -> None:
    """`write(file)` into a temp file beside `path`, fsync, rename over `path`, fsync the directory: a reader
    (or a crash at any point) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a shared group
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file and directory under `directory` to disk (a checkpoint before it is declared final)."""
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON atomically (`write_atomic`). In a multi-process run only the primary process
    writes (every process holds the same results; a shared directory must get one writer)."""
    if distributed.is_primary():
        write_atomic(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True, default=str))
