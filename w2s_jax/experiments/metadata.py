"""What produced a results.json: package version, git commit, date, library versions, devices, processes."""
from __future__ import annotations

import datetime
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

import jax

import w2s_jax

PACKAGE_ROOT = Path(w2s_jax.__file__).resolve().parent.parent


def git_commit(root: Path = PACKAGE_ROOT) -> str | None:
    """The checkout's HEAD commit (with `+dirty` when tracked files changed), or None outside a git checkout or
    without git: an installed package has no commit to report, and that is never an error."""
    if not (root / ".git").exists():
        return None
    try:
        def run(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty and commit else (commit or None)


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def run_metadata() -> dict:
    """The `metadata` block of results.json (README "Outputs and models out")."""
    devices = jax.devices()
    return {"package_version": w2s_jax.__version__, "git_commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jax_version": jax.__version__, "jaxlib_version": _version("jaxlib"), "flax_version": _version("flax"),
            "devices": {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices),
                        "local_count": jax.local_device_count()},
            "process_count": jax.process_count()}
