"""The per-device-kind default of pairs per micro-batch (`train.micro_batch_size=0`), against hand values."""
import pytest

from w2s_jax.train.step import CPU_TOKENS_PER_MICRO, CPU_TOKENS_PER_MICRO_FULL_REMAT, default_micro_batch


@pytest.mark.parametrize("batch, max_len, rows, platform, expected", [
    (32, 256, 1, "gpu", None),  # an accelerator keeps the whole batch in one forward
    (32, 256, 1, "tpu", None),
    (32, 256, 1, "cpu", 8),  # 8 pairs x 2 sides x 256 = 4096 tokens
    (32, 128, 1, "cpu", 16),
    (32, 512, 1, "cpu", 4),
    (32, 256, 8, "cpu", 8),  # a multiple of the mesh's rows
    (32, 512, 8, "cpu", None),  # no multiple of 8 fits the budget: the whole batch, as before
    (16, 40, 1, "cpu", None),  # the demo's shape fits whole: unchanged
    (24, 256, 1, "cpu", 8),  # the largest divisor that fits (12 does not)
])
def test_default_micro_batch(batch, max_len, rows, platform, expected):
    assert CPU_TOKENS_PER_MICRO == 4096
    assert default_micro_batch(batch, max_len, rows, platform) == expected


@pytest.mark.parametrize("batch, max_len, rows, remat, expected", [
    (32, 256, 1, "full", 16),  # 16 pairs x 2 sides x 256 = 8192 tokens: full remat keeps only each layer's input
    (32, 256, 1, "dots", 8),  # any other policy keeps more: the no-remat bound
    (32, 256, 1, "none", 8),
    (32, 128, 1, "full", None),  # 32 x 2 x 128 = 8192: the whole batch
    (32, 512, 1, "full", 8),
])
def test_default_micro_batch_under_full_remat(batch, max_len, rows, remat, expected):
    assert CPU_TOKENS_PER_MICRO_FULL_REMAT == 8192
    assert default_micro_batch(batch, max_len, rows, "cpu", remat=remat) == expected
    assert default_micro_batch(batch, max_len, rows, "gpu", remat=remat) is None
