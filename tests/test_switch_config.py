"""The original's switches in the config: each bad value is one line naming its field; the students' loss."""
from pathlib import Path

import pytest

from w2s_jax.config_check import ConfigError, validate
from w2s_jax.configs import load_config_file

ROOT = Path(__file__).resolve().parents[1]


def demo(tmp_path, name="rm_helpful.py:demo"):
    c = load_config_file(str(ROOT / "configs" / name))
    (tmp_path / "conflict.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n')
    c.data.dir, c.data.conflict_path = str(tmp_path), str(tmp_path / "conflict.jsonl")
    return c


@pytest.mark.parametrize("field, value, message", [
    ("train.w2s_loss", "mse", "config.train.w2s_loss: must be one of ['', 'bce', 'logconf', 'xent'"),
    ("train.loss", "focal", "config.train.loss: must be one of ['bce', 'logconf', 'xent', 'product'"),
    ("train.optim", "sgd", "config.train.optim: must be one of ['adam', 'adafactor'], got 'sgd'"),
    ("train.linear_probe", "yes", "config.train.linear_probe: must be true or false"),
    ("train.freeze_lm", 1, "config.train.freeze_lm: must be true or false"),
    ("train.eval_every", -5, "config.train.eval_every: must be a non-negative integer"),
    ("model.reward_index", "first", "config.model.reward_index: must be one of ['last', 'nonzero_count']"),
])
def test_a_bad_switch_is_one_line_naming_it(tmp_path, field, value, message):
    c = demo(tmp_path)
    section, leaf = field.split(".")
    with c[section].ignore_type():
        c[section][leaf] = value
    with pytest.raises(ConfigError) as e:
        validate(c, n_devices=1)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_quirk_needs_padded_rows_and_the_good_values_validate(tmp_path):
    c = demo(tmp_path)
    c.train.packing = True
    c.model.reward_index = "nonzero_count"
    with pytest.raises(ConfigError, match=r"^config.model.reward_index: .*train.packing=False"):
        validate(c, n_devices=1)
    c.train.packing = False
    c.train.update(w2s_loss="logconf_bce", optim="adafactor", linear_probe=True, eval_every=3)
    validate(c, n_devices=1)


def test_preference_switches(tmp_path):
    c = demo(tmp_path, "dpo_helpful.py:demo")
    assert "w2s_loss" not in c.train and c.po.reward_type == "reverse"  # RM-only switches are not in its config
    c.po.reward_type = "sft"
    validate(c, n_devices=1)
    c.model.reward_index = "nonzero_count"
    with pytest.raises(ConfigError, match=r"^config.model.reward_index: places the reward head, which dpo runs"):
        validate(c, n_devices=1)
    c.model.reward_index = "last"
    c.po.reward_type = "forward"
    with pytest.raises(ConfigError, match=r"^config.po.reward_type: must be one of \['reverse', 'sft'\]"):
        validate(c, n_devices=1)
