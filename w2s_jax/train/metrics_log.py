"""Training metrics to `metrics.jsonl` (one line per step, with the model's role) and TensorBoard events.

In a multi-process run only the primary process writes (every process sees the same, gathered metrics)."""
from __future__ import annotations

import json
from pathlib import Path

from w2s_jax import distributed


class MetricsLog:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.enabled = distributed.is_primary()
        self._file = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8") if self.enabled else None
        self._writers: dict = {}

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
        self._file.write(json.dumps({"role": role, **metrics}) + "\n")
        self._file.flush()
        writer = self._writer(role)
        if writer is not None:
            for name, value in metrics.items():
                if name != "step":
                    writer.add_scalar(f"train/{name}", value, metrics["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for writer in self._writers.values():
            if writer is not None:
                writer.close()
