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
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A tiny random Llama with a reward head (`tiny_models.build`), saved and loaded back by `from_pretrained`,
    once per test module; a module that needs another model defines its own `loaded`."""
    import tiny_models
    from w2s_jax.models.convert import from_pretrained

    directory = tmp_path_factory.mktemp("llama")
    tiny_models.build("llama", directory)
    return from_pretrained(str(directory), reward_head=True)
