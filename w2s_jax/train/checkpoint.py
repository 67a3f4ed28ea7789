"""Per-model orbax checkpoints named by a fingerprint, so finished models are reused and unfinished ones resume.

Layout: `<workdir>/models/<name>-<fingerprint[:16]>/` holds `model.json` (the full fingerprint, the inputs it
was computed from, and `status`: "training" or "complete"), `ckpt/<step>/` (orbax, every N steps and at the
end) and, once complete, nothing else changes. `model.json` is written atomically, and "complete" only after
the final checkpoint is on disk (fsynced), so a crash can never leave a model that looks finished but is not.

`checksums.json` holds, per saved step, a checksum of the state's bits computed on device before the write; a
restore recomputes it, so a checkpoint whose bytes changed on disk (orbax would load a flipped byte silently) is
set aside under `unusable/` with a warning and the previous one is used instead, or the model is retrained.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from w2s_jax import distributed
from w2s_jax.atomic import _fsync_dir, fsync_tree, write_atomic, write_json_atomic  # noqa: F401

log = logging.getLogger(__name__)


def fingerprint(spec: Any) -> str:
    """sha256 of a JSON-able description of everything that determines a model."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _bits(x):
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)  # 8-byte leaves: two words each


@jax.jit
def _digest(tree):
    """Two order-independent sums of every bit pattern times odd position weights (any one flipped bit changes
    both; integer sums are exact whatever the sharding), and whether every float is finite."""
    a = b = jnp.uint32(0)
    finite = jnp.bool_(True)
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        bits = _bits(leaf).ravel()
        idx = jnp.arange(bits.size, dtype=jnp.uint32)
        a += jnp.sum(bits * ((idx * jnp.uint32(0x9E3779B1) + jnp.uint32(i)) * jnp.uint32(2) + jnp.uint32(1)),
                     dtype=jnp.uint32)
        b += jnp.sum(bits * ((idx * jnp.uint32(0x85EBCA77) + jnp.uint32(7 * i + 3)) * jnp.uint32(2) + jnp.uint32(1)),
                     dtype=jnp.uint32)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            finite &= jnp.all(jnp.isfinite(leaf))
    return a, b, finite


def state_checksum(tree) -> tuple[str, bool]:
    """(checksum of the tree's bits, every float finite); a collective in a multi-process run."""
    a, b, finite = (distributed.fetch_global(x) for x in _digest(tree))
    return f"{int(a):08x}{int(b):08x}", bool(finite)


FINAL_KINDS = ("full", "params")


class CorruptCheckpoint(ValueError):
    pass


class ModelStore:
    """The checkpoints of one model (one fingerprint)."""

    def __init__(self, workdir: str | os.PathLike, name: str, spec: Any, save_every: int = 0, keep: int = 2,
                 final: str = "full"):
        """`final="params"` makes a finished model keep only its parameters (no Adam moments: a third of the
        bytes) and drop its earlier checkpoints; "full" keeps the last train state and one before it, so a final
        checkpoint that turns out unusable is resumed from the one before."""
        if final not in FINAL_KINDS:
            raise ValueError(f"final checkpoint kind must be one of {FINAL_KINDS}, got {final!r}")
        self.final = final
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
        """model.json says complete and the final checkpoint it names is there (whether it restores is checked
        by `restore_verified`)."""
        meta = self._meta()
        return bool(meta and meta.get("status") == "complete" and self.latest_step() is not None
                    and self.latest_step() == meta.get("steps", self.latest_step()))

    def mark(self, status: str, **extra) -> None:
        write_json_atomic(self.directory / "model.json",
                          {"fingerprint": self.fingerprint, "spec": self.spec, "status": status, **extra})

    @contextlib.contextmanager
    def exclusive(self):
        """Hold this model's lock file while deciding reuse/resume and training, so concurrent runs that share
        `models/` (a sweep) train a model once: the second waits, then finds it complete. Only the primary
        process locks (the others follow its decisions); `flock` is per host, as are such sweeps."""
        if not distributed.is_primary():
            yield
            return
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        with open(self.directory.parent / f".{self.directory.name}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("%s is being trained by another run; waiting for it", self.directory.name)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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

    def save(self, step: int, state, force: bool = False) -> bool:
        """Start writing `state` as checkpoint `step` when it is due (orbax finishes the write in the background);
        True when a write started."""
        if force or (self.save_every and step % self.save_every == 0):
            self._write(step, state)
            return True
        return False

    def _write(self, step: int, state) -> None:
        checksum, _ = state_checksum(state)  # recorded before the step exists on disk
        sums = self._checksums()
        sums[str(step)] = checksum
        newest = sorted(sums, key=int)[-(self._keep + 2):]
        write_json_atomic(self.directory / "checksums.json", {k: sums[k] for k in newest})
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def _checksums(self) -> dict:
        try:
            sums = json.loads((self.directory / "checksums.json").read_text())
        except (OSError, ValueError):
            return {}
        return sums if isinstance(sums, dict) else {}

    @property
    def final_kind(self) -> str:
        """What the finished model's final checkpoint holds: "full" (a train state) or "params" ({"params": ...})."""
        return (self._meta() or {}).get("final", "full")

    def finish(self, step: int, state, **extra) -> None:
        kind = "full"
        if self.manager.latest_step() != step:
            kind = self.final
            self._write(step, {"params": state.params} if kind == "params" else state)
        self.manager.wait_until_finished()
        fsync_tree(self.directory / "ckpt" / str(step))  # each process its own files
        distributed.sync(f"ckpt-durable:{self.fingerprint}:{step}")
        self.mark("complete", steps=step, final=kind, **extra)
        if self.final == "params":  # only the final parameters are kept
            for old in self.manager.all_steps():
                if old != step:
                    self.manager.delete(old)
            self.manager.wait_until_finished()

    def restore(self, abstract_state, step: int | None = None):
        """Restore into the shardings carried by `abstract_state` (a tree of jax.ShapeDtypeStruct) and check it
        against the checksum recorded at save time; raises CorruptCheckpoint when it does not match."""
        step = self.latest_step() if step is None else step
        self.manager.wait_until_finished()
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        checksum, finite = state_checksum(state)
        expected = self._checksums().get(str(step))
        if expected is not None and checksum != expected:
            raise CorruptCheckpoint(f"checksum {checksum} differs from the {expected} recorded when it was saved")
        if not finite:
            raise CorruptCheckpoint("it holds NaN or Inf values")
        return step, state

    def restore_verified(self, abstract_state, only_step: int | None = None):
        """(step, state) of the newest checkpoint that restores and matches its checksum, or None. Each one
        that does not is moved to `unusable/` with a warning (kept for inspection, never loaded again). Every
        process follows the primary's verdict. `only_step`: look at that step alone (None when it is not the
        newest)."""
        while True:
            found = self.latest_step()
            step = distributed.agree(-1 if found is None else found)
            if step < 0 or (only_step is not None and step != only_step):
                return None
            try:
                restored, error = self.restore(abstract_state, step), None
            except Exception as e:  # orbax/tensorstore raise many types for a truncated or unreadable file
                restored, error = None, e
            if distributed.agree(error is None):
                if error is not None:
                    raise CorruptCheckpoint(f"{self.directory}: step {step} restores in the primary process "
                                            f"but not here: {error}") from error
                return restored
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            log.warning("%s: checkpoint at step %d is unusable (%s: %s); setting it aside and falling back",
                        self.directory, step, type(error).__name__, reason)
            self._set_aside(step)

    def _set_aside(self, step: int) -> None:
        self.close()
        if distributed.is_primary():
            target = self.directory / "unusable" / str(step)
            k = 1
            while target.exists():
                target, k = self.directory / "unusable" / f"{step}.{k}", k + 1
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.directory / "ckpt" / str(step), target)
        distributed.sync(f"ckpt-aside:{self.fingerprint}:{step}")

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def abstract_of(tree):
    """ShapeDtypeStructs (with shardings) of a live tree, for `ModelStore.restore`."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
