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


# The slowest modules, slowest first (per-module seconds of a full run, 2026-12-02): the two xdist workers take
# whole modules in this order (`--dist loadfile --no-loadscope-reorder`, pytest.ini), so no long module starts last
# while the other worker sits idle. The rest keep their collection order.
SLOWEST_FIRST = ("test_packing", "test_pipeline_rm", "test_crash_safety", "test_bad_inputs", "test_cli",
                 "test_multiprocess", "test_models_parity", "test_pipeline_po", "test_models_sharding",
                 "test_lora_dropout", "test_lora", "test_switch_training", "test_losses_policy", "test_lora_training",
                 "test_objectives_trainer", "test_sft_conflict_objective", "test_losses_rm", "test_export",
                 "test_own_data", "test_demo_world", "test_lora_pipeline")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))
