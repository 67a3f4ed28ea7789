"""How tests start the package's entry point in a subprocess: the environment (CPU, fast compiles, the session's
compilation cache, N fake devices) and the command."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# fast, low-optimisation CPU compiles: compiling dominates a run this small
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
CACHE = ROOT / ".pytest_cache" / "w2s-jax-compile-cache"


def xla_flags(devices: int | None, flags: str = "") -> str:
    """`flags` with FAST_COMPILE and, for `devices` > 1, that many fake CPU devices (replacing any count)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", flags)
    for flag in FAST_COMPILE.split():
        if flag.split("=")[0] not in flags:
            flags += " " + flag
    if devices and devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    return " ".join(flags.split())


def cache_env() -> dict:
    """A persistent compilation cache for every program that took 0.3 s or more to compile (not the many tiny
    programs of eager op-by-op execution); a size limit turns on its file lock, so concurrent workers never read
    an entry half written."""
    return {"JAX_COMPILATION_CACHE_DIR": str(CACHE), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30)}


def env(devices: int | None = None, **extra: str) -> dict:
    """The environment of a subprocess: this one's without a `W2S_FAULT` crash hook, on CPU with `devices` fake
    devices (default one), fast compiles and the session's cache, plus `extra`."""
    out = {**{k: v for k, v in os.environ.items() if k != "W2S_FAULT"}, **cache_env(), "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "XLA_FLAGS": xla_flags(devices, os.environ.get("XLA_FLAGS", ""))}
    return out | extra


def main(*args, env_: dict | None = None, cwd=ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m w2s_jax.main ARGS`, its output captured."""
    return subprocess.run([sys.executable, "-m", "w2s_jax.main", *map(str, args)], cwd=cwd,
                          env=env() if env_ is None else env_, capture_output=True, text=True, timeout=timeout)
