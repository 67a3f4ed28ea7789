"""Loading paths and their errors: .bin fallback, missing files and tensors, tokenizer/model mismatches."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import tiny_models
from w2s_jax.models.build import ModelSpecError, check_compatible, random_config
from w2s_jax.models.convert import ModelFileError, from_pretrained


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    return directory, tiny_models.build("gpt2", directory)


def test_pytorch_bin_checkpoint_loads_with_weights_only(gpt2_dir, tmp_path):
    directory, torch_model = gpt2_dir
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    torch.save(torch_model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = from_pretrained(str(tmp_path))
    ids, mask = tiny_models.right_padded_batch([6, 4], T=6)
    ref = tiny_models.torch_logits(torch_model, ids, mask)
    out = np.asarray(loaded.model.apply({"params": loaded.params}, ids, mask))
    assert np.abs((out - ref) * mask[..., None]).max() <= 1e-4


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        from_pretrained(str(tmp_path / "no_such_model"))


def test_directory_without_weights(gpt2_dir, tmp_path):
    directory, _ = gpt2_dir
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        from_pretrained(str(tmp_path))


def test_missing_tensor_is_named(gpt2_dir, tmp_path):
    directory, _ = gpt2_dir
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    tensors = load_file(directory / "model.safetensors")
    dropped = next(k for k in tensors if k.endswith("h.1.mlp.c_fc.weight"))
    del tensors[dropped]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ModelFileError, match=r"model\.safetensors\) has no tensor 'h\.1\.mlp\.c_fc\.weight'"):
        from_pretrained(str(tmp_path))


def test_shape_mismatch_is_reported(gpt2_dir, tmp_path):
    directory, _ = gpt2_dir
    config = json.loads((directory / "config.json").read_text())
    config["n_inner"] = 96  # weights are 4 * 64 = 256 wide
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match="fc_in/kernel has shape"):
        from_pretrained(str(tmp_path))


class _Tok:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_tokenizer_larger_than_vocabulary_is_refused():
    cfg = random_config({"family": "gpt2", "hidden_size": 32, "num_layers": 1, "num_heads": 2}, 256, 64)
    with pytest.raises(ModelSpecError, match="tokenizer has 300 tokens but the model's vocabulary is 256"):
        check_compatible(cfg, _Tok(300), 64, "weak")
    with pytest.raises(ModelSpecError, match="max_len=128 exceeds the model's 64 learned positions"):
        check_compatible(cfg, _Tok(200), 128, "weak")
    check_compatible(cfg, _Tok(256), 64, "weak")


def test_a_tokenizer_directory_without_a_model_config_loads(tmp_path):
    """`tokenizer=<dir>` may name a directory holding only tokenizer files (no config.json)."""
    from ml_collections import ConfigDict
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from w2s_jax.data.loading import load_tokenizer

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    assert not (tmp_path / "tok" / "config.json").exists()
    tok = load_tokenizer(ConfigDict({"tokenizer": str(tmp_path / "tok"), "name": "x"}), [], False)
    assert tok("hello world")["input_ids"] == [1, 2]
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_tokenizer(ConfigDict({"tokenizer": str(tmp_path / "missing"), "name": "x"}), [], False)
