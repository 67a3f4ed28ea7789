"""Reading a model directory's files: safetensors (single or sharded), PyTorch `.bin` through
`torch.load(weights_only=True)`, and `config.json`; a file that cannot be used is a `ModelFileError` naming it.

Nothing in a checkpoint is executed: safetensors hold only arrays, a pickle that would build anything but tensors
is refused by `weights_only`, and `trust_remote_code` is off unless the caller turns it on.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import transformers


class ModelFileError(ValueError):
    """A model file or directory that cannot be used as is (damaged, incomplete, unsafe, or not fitting its
    config). Its message is one line naming the file and the cause; the entry point exits with status 2."""


def one_line_cause(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class TensorSource:
    """Name -> numpy array over safetensors files (single, or sharded with an index), read lazily."""

    def __init__(self, directory: Path, prefixes: tuple[str, ...]):
        from safetensors import safe_open

        self.directory, self.prefixes, self._open = directory, prefixes, {}
        self._safe_open = safe_open
        index = directory / "model.safetensors.index.json"
        single = directory / "model.safetensors"
        if index.exists():
            try:
                self.file_of = {k: directory / v for k, v in json.loads(index.read_text())["weight_map"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ModelFileError(f"{index}: not a safetensors index ({one_line_cause(e)})") from None
            missing = sorted({str(f) for f in self.file_of.values() if not f.is_file()})
            if missing:
                raise ModelFileError(f"{index}: names shard file(s) that are not there: {missing[:3]}")
        elif single.exists():
            self.file_of = {k: single for k in self._safe(single).keys()}
        else:
            self.file_of = {}
        self._torch_state = None
        if not self.file_of:
            self._load_torch_bin()

    def _load_torch_bin(self):
        bins = sorted(self.directory.glob("pytorch_model*.bin"))
        if not bins:
            raise FileNotFoundError(f"{self.directory}: no model.safetensors, model.safetensors.index.json or "
                                    f"pytorch_model*.bin")
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{self.directory} has only PyTorch .bin weights; install torch to read them "
                              f"(they are opened with weights_only=True) or convert them to safetensors") from e
        self._torch_state = {}
        for b in bins:
            try:  # weights_only: a pickle that would build anything but tensors is refused, never run
                state = torch.load(b, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ModelFileError(f"{b}: not a plain PyTorch weights file, refused ({one_line_cause(e)})") from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ModelFileError(f"{b}: holds a {type(state).__name__}, not a name -> tensor state dict")
            self._torch_state.update({k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                                      for k, v in state.items()})
        self.file_of = {k: bins[0] for k in self._torch_state}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], prefixes: tuple[str, ...], origin: str):
        self = cls.__new__(cls)
        self.directory, self.prefixes, self._open = Path(origin), prefixes, {}
        self._torch_state, self.file_of = state, {k: Path(origin) for k in state}
        return self

    def resolve(self, name: str, absolute: bool) -> str:
        for prefix in ("",) if absolute else self.prefixes:
            if prefix + name in self.file_of:
                return prefix + name
        files = sorted({p.name for p in self.file_of.values()}) or ["(no tensors)"]
        raise ModelFileError(f"{self.directory}: checkpoint ({', '.join(files[:3])}) has no tensor {name!r} "
                             f"(tried prefixes {list(self.prefixes) if not absolute else ['']})")

    def file_name(self, key: str) -> Path:
        return self.file_of.get(key, self.directory)

    def _safe(self, path: Path):
        if path not in self._open:
            try:
                self._open[path] = self._safe_open(path, "numpy")
            except Exception as e:  # truncated, not safetensors at all, unreadable
                raise ModelFileError(f"{path}: not a readable safetensors file ({one_line_cause(e)})") from None
        return self._open[path]

    def __call__(self, name: str, absolute: bool = False) -> np.ndarray:
        key = self.resolve(name, absolute)
        if self._torch_state is not None:
            return self._torch_state[key]
        path = self.file_of[key]
        try:
            return self._safe(path).get_tensor(key)
        except ModelFileError:
            raise
        except Exception as e:
            raise ModelFileError(f"{path}: tensor {key!r} cannot be read ({one_line_cause(e)})") from None

    def close(self):
        self._open.clear()


def load_hf_config(directory: str | os.PathLike, trust_remote_code: bool = False) -> transformers.PretrainedConfig:
    """`AutoConfig` of a model directory; a config.json that does not parse or names no usable model is a
    `ModelFileError` naming the file."""
    path = Path(directory) / "config.json"
    try:
        json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: does not parse as JSON ({one_line_cause(e)})") from None
    try:
        return transformers.AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ModelFileError(f"{path}: not a usable model config ({one_line_cause(e)})") from None


# ------------------------------------------------------------------------------------------------ writing


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_safetensors(directory: Path, tensors: dict[str, np.ndarray], max_shard_bytes: int = 5 * 2**30) -> None:
    """`model.safetensors`, or shards with `model.safetensors.index.json` above `max_shard_bytes`, atomically."""
    from safetensors.numpy import save_file

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in tensors.items():
        if size and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = np.ascontiguousarray(array)
        size += array.nbytes
    if len(shards) == 1:
        _atomic_write(directory / "model.safetensors", lambda p: save_file(shards[0], p, metadata={"format": "pt"}))
        return
    weight_map = {}
    for n, shard in enumerate(shards, 1):
        fname = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        _atomic_write(directory / fname, lambda p, s=shard: save_file(s, p, metadata={"format": "pt"}))
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
    _atomic_write(directory / "model.safetensors.index.json", lambda p: Path(p).write_text(json.dumps(index, indent=2)))
