"""Per-model orbax checkpoints named by a fingerprint, so finished models are reused and unfinished ones resume.

Layout: `<workdir>/models/<name>-<fingerprint[:16]>/` holds `model.json` (the full fingerprint, the inputs it
was computed from, and `status`: "training" or "complete"), `ckpt/<step>/` (orbax, every N steps and at the
end) and, once complete, nothing else changes. `model.json` is written atomically, and "complete" only after
the final checkpoint is on disk, so a crash can never leave a model that looks finished but is not.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from w2s_jax import distributed

log = logging.getLogger(__name__)


def fingerprint(spec: Any) -> str:
    """sha256 of a JSON-able description of everything that determines a model."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON through a temp file and a rename. In a multi-process run only the primary process
    writes (every process holds the same results; a shared directory must get one writer)."""
    if not distributed.is_primary():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a shared group
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class ModelStore:
    """The checkpoints of one model (one fingerprint)."""

    def __init__(self, workdir: str | os.PathLike, name: str, spec: Any, save_every: int = 0, keep: int = 2):
        self.fingerprint = fingerprint(spec)
        self.spec = spec
        self.directory = Path(workdir) / "models" / f"{name}-{self.fingerprint[:16]}"
        self.save_every = save_every
        self._keep = keep
        self._manager: ocp.CheckpointManager | None = None

    # -- status -------------------------------------------------------------------------------------------
    def _meta(self) -> dict | None:
        try:
            meta = json.loads((self.directory / "model.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return meta if meta.get("fingerprint") == self.fingerprint else None

    @property
    def complete(self) -> bool:
        meta = self._meta()
        return bool(meta and meta.get("status") == "complete" and self.latest_step() is not None)

    def mark(self, status: str, **extra) -> None:
        write_json_atomic(self.directory / "model.json",
                          {"fingerprint": self.fingerprint, "spec": self.spec, "status": status, **extra})

    # -- orbax ----------------------------------------------------------------------------------------------
    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            self._manager = ocp.CheckpointManager(
                (self.directory / "ckpt").absolute(),
                options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True))
        return self._manager

    def latest_step(self) -> int | None:
        if not (self.directory / "ckpt").exists():
            return None
        return self.manager.latest_step()

    def save(self, step: int, state, force: bool = False) -> None:
        if force or (self.save_every and step % self.save_every == 0):
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def finish(self, step: int, state, **extra) -> None:
        if self.manager.latest_step() != step:
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()
        self.mark("complete", steps=step, **extra)

    def restore(self, abstract_state, step: int | None = None):
        """Restore into the shardings carried by `abstract_state` (a tree of jax.ShapeDtypeStruct)."""
        step = self.latest_step() if step is None else step
        self.manager.wait_until_finished()
        return step, self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def abstract_of(tree):
    """ShapeDtypeStructs (with shardings) of a live tree, for `ModelStore.restore`."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
