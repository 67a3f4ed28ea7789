"""Test setup, before jax is imported: 8 fake CPU devices, fast low-optimisation CPU compiles, one persistent
compilation cache shared by every test, worker and `python -m w2s_jax.main` subprocess of the session, and fp32
matmuls. Compiling dominates runs this small; the cache and the flags change how fast a program is built, never
what it computes (a cache entry is keyed by the program, the flags and the devices)."""
import os

from runs import cache_env, xla_flags

os.environ["XLA_FLAGS"] = xla_flags(8, os.environ.get("XLA_FLAGS", ""))
for key, value in cache_env().items():
    os.environ.setdefault(key, value)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
