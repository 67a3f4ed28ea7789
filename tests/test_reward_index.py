"""The opt-in reward-head position quirk (original-spec §2.4): `(input_ids != 0).sum(-1) - 1`, on hand-made ids."""
import numpy as np
import pytest

import tiny_models
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.convert import from_pretrained
from w2s_jax.models.heads import Transformer, reward_index

# right-padded rows (mask marks the real tokens); id 0 inside a row is GPT-2's "!"
IDS = np.array([[5, 7, 9, 11, 0, 0],      # no "!": both rules read index 3
                [5, 0, 9, 11, 0, 0],      # one "!" at 1: the quirk reads 2 (one left of the last token, 3)
                [0, 0, 8, 0, 6, 4],       # three "!", full row: quirk 2, last 5
                [0, 0, 0, 0, 0, 0]],      # a one-token row "!": torch index -1 = that row's last token, 0
               np.int32)
MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], np.int32)
HAND_QUIRK, HAND_LAST = [3, 2, 2, 0], [3, 3, 5, 0]


def test_index_rules_on_hand_ids():
    assert np.asarray(reward_index(IDS, MASK, "nonzero_count")).tolist() == HAND_QUIRK
    assert np.asarray(reward_index(IDS, MASK)).tolist() == HAND_LAST
    with pytest.raises(ValueError):
        ModelConfig(family="gpt2", model_type="gpt2", vocab_size=8, hidden_size=4, num_layers=1, num_heads=1,
                    num_kv_heads=1, head_dim=4, intermediate_size=8, max_positions=8, reward_index="first")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    tiny_models.build("gpt2", directory)
    return from_pretrained(str(directory), reward_head=True)


def test_the_reward_reads_the_hidden_state_at_the_chosen_index(loaded):
    params = loaded.params
    hidden = np.asarray(loaded.model.apply({"params": params}, IDS, MASK, method=loaded.model.hidden), np.float64)
    w = np.asarray(params["reward_head"]["kernel"], np.float64)[:, 0]
    rows = np.arange(len(IDS))
    assert loaded.model.cfg.reward_index == "last"  # the default is the correct last token
    default = np.asarray(loaded.model.apply({"params": params}, IDS, MASK, method=loaded.model.reward))
    np.testing.assert_allclose(default, hidden[rows, HAND_LAST] @ w, rtol=1e-5, atol=1e-6)
    quirky = Transformer(loaded.model.cfg.replace(reward_index="nonzero_count"))
    got = np.asarray(quirky.apply({"params": params}, IDS, MASK, method=quirky.reward))
    np.testing.assert_allclose(got, hidden[rows, HAND_QUIRK] @ w, rtol=1e-5, atol=1e-6)
    assert got[0] == pytest.approx(default[0], abs=1e-6) and abs(got[1] - default[1]) > 1e-6
