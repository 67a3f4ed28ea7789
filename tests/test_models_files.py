"""Damaged, incomplete or unsafe model files fail like bad data rows: one ValueError line naming the file and the
cause, nothing executed. Truncated loads (the first k layers) match transformers cut the same way."""
import json
import pathlib

import numpy as np
import pytest

import torch
import transformers
from safetensors.numpy import load_file, save_file

import runs
import tiny_models
from w2s_jax.models.build import build_model
from w2s_jax.models.convert import ModelFileError, from_pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama")
    return directory, tiny_models.build("llama", directory)


def _copy(src, dst, *names):
    for name in names:
        (dst / name).write_bytes((src / name).read_bytes())


def _one_line(e):
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_truncated_safetensors_names_the_file(llama_dir, tmp_path):
    src, _ = llama_dir
    _copy(src, tmp_path, "config.json")
    data = (src / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as e:
        from_pretrained(str(tmp_path))
    assert f"{tmp_path / 'model.safetensors'}: not a readable safetensors file" in _one_line(e)
    assert "incomplete metadata" in str(e.value)


class _Touch:
    """Unpickling this would create a file: the proof that nothing from the checkpoint ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_pickle_that_is_not_plain_weights_is_refused_unexecuted(llama_dir, tmp_path):
    src, torch_model = llama_dir
    _copy(src, tmp_path, "config.json")
    marker = tmp_path / "executed"
    state = dict(torch_model.state_dict())
    state["payload"] = _Touch(str(marker))
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelFileError) as e:
        from_pretrained(str(tmp_path))
    assert f"{tmp_path / 'pytorch_model.bin'}: not a plain PyTorch weights file, refused" in _one_line(e)
    assert not marker.exists()


def test_pickle_of_something_else_than_a_state_dict(llama_dir, tmp_path):
    src, torch_model = llama_dir
    _copy(src, tmp_path, "config.json")
    torch.save(list(torch_model.state_dict().values()), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match=r"pytorch_model\.bin: holds a list, not a name -> tensor state dict"):
        from_pretrained(str(tmp_path))


def test_config_json_that_does_not_parse(llama_dir, tmp_path):
    src, _ = llama_dir
    _copy(src, tmp_path, "model.safetensors")
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,')
    with pytest.raises(ModelFileError) as e:
        from_pretrained(str(tmp_path))
    assert f"{tmp_path / 'config.json'}: does not parse as JSON" in _one_line(e)


def test_config_json_of_an_unknown_model(llama_dir, tmp_path):
    src, _ = llama_dir
    _copy(src, tmp_path, "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    with pytest.raises(ModelFileError) as e:
        from_pretrained(str(tmp_path))
    assert f"{tmp_path / 'config.json'}: not a usable model config" in _one_line(e)


def test_one_layer_that_does_not_fit_the_config(llama_dir, tmp_path):
    """Layer 1's q_proj cut to half its rows: the per-layer weights cannot be stacked."""
    src, _ = llama_dir
    _copy(src, tmp_path, "config.json")
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.1.self_attn.q_proj.weight"] = tensors["model.layers.1.self_attn.q_proj.weight"][:32]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ModelFileError) as e:
        from_pretrained(str(tmp_path))
    assert f"{tmp_path}: weights do not fit config.json" in _one_line(e)


def test_index_naming_a_missing_shard(llama_dir, tmp_path):
    src, _ = llama_dir
    _copy(src, tmp_path, "config.json")
    names = load_file(src / "model.safetensors")
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00002.safetensors" for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match=r"index\.json: names shard file\(s\) that are not there"):
        from_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text("[1, 2")
    with pytest.raises(ModelFileError, match=r"index\.json: not a safetensors index"):
        from_pretrained(str(tmp_path))


def test_damaged_reward_head_file(llama_dir, tmp_path):
    src, _ = llama_dir
    _copy(src, tmp_path, "config.json", "model.safetensors")
    (tmp_path / "reward_head.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelFileError, match=r"reward_head\.safetensors: not a reward head file"):
        from_pretrained(str(tmp_path), reward_head=True)


@pytest.mark.parametrize("variant, full, kept", [("llama", 2, 1), ("gemma3", 4, 2), ("qwen3", 2, 1)])
def test_truncated_load_matches_transformers_truncated_the_same_way(tmp_path, variant, full, kept):
    tiny_models.build(variant, tmp_path)
    ours = from_pretrained(str(tmp_path), num_layers=kept)
    assert ours.config.num_layers == kept
    assert ours.provenance["truncation"]["num_layers"] == kept and ours.provenance["truncation"]["of"] == full
    import jax
    assert {x.shape[0] for x in jax.tree.leaves(ours.params["backbone"]["layers"])} == {kept}
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, num_hidden_layers=kept,
                                                                  dtype=torch.float32).eval()
    ids, mask = tiny_models.right_padded_batch([12, 7, 3], T=12)
    ref = tiny_models.torch_logits(reference, ids, mask)
    out = np.asarray(ours.model.apply({"params": ours.params}, ids, mask))
    assert np.abs((out - ref) * mask[..., None]).max() <= 1e-4
    full_model = tiny_models.torch_logits(
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval(), ids, mask)
    assert np.abs((out - full_model) * mask[..., None]).max() > 1e-2  # the cut is real


def test_truncation_out_of_range_and_through_a_spec(llama_dir):
    src, _ = llama_dir
    with pytest.raises(ValueError, match="num_layers=3 must be an integer in 1..2"):
        from_pretrained(str(src), num_layers=3)
    import jax
    from w2s_jax.models import sharding

    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    spec = {"name": str(src), "init": "pretrained", "num_layers": 1}
    loaded = build_model(spec, what="weak", mesh=mesh, seed=0, max_len=16, runtime={}, tokenizer=list(range(256)))
    assert loaded.config.num_layers == 1 and "reward_head" in loaded.params


HH = ROOT.parent / "shared" / "data" / "hh-single-turn"


@pytest.mark.skipif(not HH.is_dir(), reason=f"needs the shared HH data at {HH}")
def test_entry_point_stops_with_one_line_and_status_2(tmp_path):
    model = tmp_path / "damaged"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**tiny_models.COMMON_LLAMA, "vocab_size": 384})
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) - 1000])
    proc = runs.main("--config=tests/tiny_rm_config.py", f"--workdir={tmp_path / 'wd'}",
                     "--config.weak.init=pretrained", f"--config.weak.name={model}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith(f"error: ") and f"{model / 'model.safetensors'}: not a readable safetensors" in \
        lines[-1], lines[-1]
