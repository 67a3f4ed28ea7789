"""cuDNN attention against XLA's on small bf16 models, padded rows and packed rows (where cuDNN reads the segment
mask as a bias). Runs on a GPU only (`JAX_PLATFORMS=cuda python -m pytest tests/test_attention_gpu.py`); on an
H100 the largest difference of the final hidden states was 1.0-1.1 % of their largest magnitude (bf16 rounding)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.models.build import random_config
from w2s_jax.models.convert import init_params
from w2s_jax.models.heads import Transformer


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cudnn_attention_matches_xla(family):
    rng = np.random.default_rng(1)
    arch = {"family": family, "hidden_size": 256, "num_layers": 2, "num_heads": 4}
    cfgs = {impl: random_config(arch, 512, 256, dtype="bfloat16", attention_impl=impl) for impl in ("xla", "cudnn")}
    params = init_params(cfgs["xla"], None, seed=0)
    ids = jnp.asarray(rng.integers(0, 512, (4, 256)), jnp.int32)
    mask = jnp.asarray(np.arange(256)[None, :] < np.array([256, 200, 77, 3])[:, None], jnp.int32)
    segments = jnp.asarray(np.repeat(np.arange(1, 9), 32)[None, :].repeat(4, 0) * (np.arange(256) < 250), jnp.int32)
    for method, second in (("hidden", mask), ("packed_hidden", segments)):
        h = {impl: np.asarray(Transformer(cfg).apply({"params": params}, ids, second, method=method), np.float32)
             for impl, cfg in cfgs.items()}
        keep = np.asarray(second > 0)[..., None]
        relative = np.abs(np.where(keep, h["cudnn"] - h["xla"], 0)).max() / np.abs(np.where(keep, h["xla"], 0)).max()
        assert relative < 0.03, (method, relative)
