"""Training metrics to `metrics.jsonl` (one line per step, with the model's role) and TensorBoard events.

In a multi-process run only the primary process writes (every process sees the same, gathered metrics). A run
resumed after a crash appends to the same file: the steps it replays appear again, and a last line cut off by the
crash is dropped first, so every line stays valid JSON. A run that replaces another config's results
(`--overwrite`) first moves that config's log and events aside (`experiments.guard.set_aside_replaced`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from w2s_jax import distributed


class MetricsLog:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.enabled = distributed.is_primary()
        self._file = None  # opened at the first line: a run that trains nothing (all reused) leaves no file
        self._writers: dict = {}

    def _open(self):
        if self._file is None:
            path = self.workdir / "metrics.jsonl"
            if path.exists():
                _drop_partial_last_line(path)
            self._file = open(path, "a", encoding="utf-8")
        return self._file

    def _writer(self, role: str):
        if role not in self._writers:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # TensorBoard events are optional; the JSONL log is not
                self._writers[role] = None
            else:
                self._writers[role] = SummaryWriter(str(self.workdir / "tensorboard" / role))
        return self._writers[role]

    def write(self, role: str, metrics: dict) -> None:
        if not self.enabled:
            return
        f = self._open()
        f.write(json.dumps({"role": role, **metrics}) + "\n")
        f.flush()
        writer = self._writer(role)
        if writer is not None:
            for name, value in metrics.items():
                if name != "step":  # eval_every's points: eval/loss, eval/accuracy
                    tag = f"eval/{name[5:]}" if name.startswith("eval_") else f"train/{name}"
                    writer.add_scalar(tag, value, metrics["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for writer in self._writers.values():
            if writer is not None:
                writer.close()


def _drop_partial_last_line(path: Path) -> None:
    """Truncate `path` after its last newline (a crash mid-write leaves half a line)."""
    with open(path, "rb+") as f:
        end = pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            size = min(1 << 16, pos)
            pos -= size
            f.seek(pos)
            cut = f.read(size).rfind(b"\n")
            if cut >= 0:
                if pos + cut + 1 < end:
                    f.truncate(pos + cut + 1)
                return
        f.truncate(0)
