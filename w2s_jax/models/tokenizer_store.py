"""The tokenizers a run used, kept beside its models, so a trained model can be loaded and exported later.

`<store root>/tokenizers/<tokenizer fingerprint>/` holds `tokenizer.save_pretrained` output (a BPE vocabulary
trained at start-up included), named by the fingerprint a trained model's spec records (`spec["tokenizer"]`,
`data.tokenize.tokenizer_fingerprint`). Written once, into a temp directory renamed into place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DIRECTORY = "tokenizers"


def tokenizer_dir(root: str | os.PathLike, fingerprint: str) -> Path:
    return Path(root) / DIRECTORY / fingerprint


def save_tokenizer(root: str | os.PathLike, tokenizer: Any, fingerprint: str) -> Path:
    """Keep `tokenizer` under `root`/tokenizers/`fingerprint` (nothing to do when it is there)."""
    target = tokenizer_dir(root, fingerprint)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{fingerprint[:16]}."))
    try:
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if target.is_dir():  # another process put it there first
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_saved_tokenizer(root: str | os.PathLike, fingerprint: str):
    """The tokenizer kept under `root` for `fingerprint`, or None."""
    target = tokenizer_dir(root, fingerprint)
    if not target.is_dir():
        return None
    import transformers

    return transformers.AutoTokenizer.from_pretrained(target)
