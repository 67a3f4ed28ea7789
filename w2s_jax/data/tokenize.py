"""Tokenization of pair texts with a Hugging Face tokenizer, matching the original code, plus an on-disk cache.

Two modes:
* "full" (reward model, original-spec.md §2.3): `tokenizer(text, truncation=True, max_length=max_len)` with
  `truncation_side="left"`, so a long text keeps its END (the answer being judged) and loses the start of the prompt.
* "prompt_response" (SFT/DPO/SimPO, §3.2): split at the last "\\n\\nAssistant:", encode prompt and response
  separately, ids = prompt + response, and a loss mask over the response tokens with the original's three
  truncation cases.
A chat-format text (`chat.Dialogue`) is rendered here, per tokenizer: by its chat template when it has one (then
encoded without added special tokens, as `apply_chat_template(tokenize=True)` does; the prompt is the conversation
before the last message with the generation prompt), else as its HH string.
Tokenizing 12k texts takes seconds to minutes for big vocabularies, and every run of a sweep needs the same
splits, hence the cache keyed by (tokenizer, max_len, mode, texts).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from w2s_jax.data.chat import ASSISTANT_MARKER, render_full, render_key, render_prompt_response, templated
from w2s_jax.progress import progress as progress_bar  # `progress` is a parameter here

TokenizeMode = Literal["full", "prompt_response"]
CACHE_FORMAT_VERSION = 1
PROGRESS_MIN_TEXTS = 2000  # show a progress bar from this many texts on
ENCODE_CHUNK = 512  # texts per tokenizer call: big enough for the Rust batch encoder, small enough for the bar


class TokenCacheWarning(UserWarning):
    """A cache file was unreadable or did not match its key and is being rebuilt."""


@dataclasses.dataclass
class TokenizedTexts:
    """Token ids per text (int32, ragged) and, in "prompt_response" mode, the response loss mask (int32, 1 = loss)."""

    ids: list[np.ndarray]
    loss_mask: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


@contextlib.contextmanager
def left_truncation(tokenizer: Any) -> Iterator[Any]:
    """Temporarily set `truncation_side="left"` (what the original sets for good) and restore the caller's value."""
    previous = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.truncation_side = previous


def _chunks(texts: Sequence[str], progress: bool | None, desc: str) -> Iterator[list[str]]:
    show = len(texts) >= PROGRESS_MIN_TEXTS if progress is None else progress
    with progress_bar(total=len(texts), desc=desc, unit="text", disable=not show) as bar:
        for start in range(0, len(texts), ENCODE_CHUNK):
            chunk = list(texts[start : start + ENCODE_CHUNK])
            yield chunk
            bar.update(len(chunk))


def _encode(tokenizer: Any, texts: Sequence[str], chat: Sequence[bool], **kwargs) -> list[list[int]]:
    """`tokenizer(texts, **kwargs)["input_ids"]`, rendered chat texts without the tokenizer's added special tokens
    (their template writes them)."""
    out: list = [None] * len(texts)
    for flag in (False, True):
        index = [i for i, c in enumerate(chat) if c == flag]
        if index:
            extra = {"add_special_tokens": False} if flag else {}
            encoded = tokenizer([texts[i] for i in index], **kwargs, **extra)["input_ids"]
            for i, ids in zip(index, encoded):
                out[i] = ids
    return out


def tokenize_texts(
    texts: Sequence[str], tokenizer: Any, max_len: int, *, progress: bool | None = None
) -> list[np.ndarray]:
    """"full" mode: left-truncated ids, special tokens as the tokenizer adds them by default (GPT-2: none,
    OPT: a leading `</s>` which left truncation keeps)."""
    ids: list[np.ndarray] = []
    with left_truncation(tokenizer):
        for chunk in _chunks(texts, progress, "tokenize"):
            chat = [templated(t, tokenizer) for t in chunk]
            rendered = [render_full(t, tokenizer) for t in chunk]
            encoded = _encode(tokenizer, rendered, chat, truncation=True, max_length=max_len)
            ids.extend(np.asarray(x, dtype=np.int32) for x in encoded)
    return ids


def split_prompt_response(text: str) -> tuple[str, str]:
    """Split at the LAST "\\n\\nAssistant:"; the prompt keeps the marker, the response starts after it (" ...")."""
    cut = text.rfind(ASSISTANT_MARKER)
    if cut < 0:
        raise ValueError(f"text has no {ASSISTANT_MARKER!r} to split prompt from response: {text[:80]!r}...")
    cut += len(ASSISTANT_MARKER)
    return text[:cut], text[cut:]


def response_loss_mask(
    prompt_ids: Sequence[int], response_ids: Sequence[int], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """ids = prompt + response and the response mask, with the original's three cases (original-spec.md §3.2):

    1. too long but the response fits: keep the last max_len ids; mask = 0 * (max_len - |r|) + 1 * |r|;
    2. the response alone fills the window: keep the last max_len ids; mask all ones;
    3. fits: mask = 0 * |p| + 1 * |r|.
    """
    ids = list(prompt_ids) + list(response_ids)
    n_prompt, n_response = len(prompt_ids), len(response_ids)
    if len(ids) > max_len and n_response < max_len:
        ids, mask = ids[-max_len:], [0] * (max_len - n_response) + [1] * n_response
    elif n_response >= max_len:
        ids, mask = ids[-max_len:], [1] * max_len
    else:
        mask = [0] * n_prompt + [1] * n_response
    return np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=np.int32)


def tokenize_prompt_response(
    texts: Sequence[str], tokenizer: Any, max_len: int, *, progress: bool | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """"prompt_response" mode: (ids, loss_mask) per text. Prompt and response are each encoded like
    `tokenizer.encode` (default special tokens, so OPT/Mistral get a BOS before the response too: the
    original's quirk, kept; a chat-templated text adds none), then cut by `response_loss_mask`."""
    all_ids, all_masks = [], []
    for chunk in _chunks(texts, progress, "tokenize prompt/response"):
        chat = [templated(t, tokenizer) for t in chunk]
        prompts, responses = zip(*(render_prompt_response(t, tokenizer) or split_prompt_response(t) for t in chunk))
        prompt_ids = _encode(tokenizer, prompts, chat)
        response_ids = _encode(tokenizer, responses, chat)
        for p, q in zip(prompt_ids, response_ids):
            ids, mask = response_loss_mask(p, q, max_len)
            all_ids.append(ids)
            all_masks.append(mask)
    return all_ids, all_masks


# ------------------------------------------------------------------------------------------------- cache


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides a tokenizer's output: class, name_or_path, vocab size and its full definition
    (`backend_tokenizer.to_str()` minus the call-dependent truncation/padding state; the vocab for slow ones)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        definition = {"vocab": vocab, "init": repr(sorted(tokenizer.init_kwargs.items()))}
    identity = {
        "class": type(tokenizer).__name__,
        "name_or_path": str(tokenizer.name_or_path),
        "vocab_size": len(tokenizer),
        "definition": definition,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Hash of the texts in order (length-prefixed so that no two lists of texts share a byte stream)."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def cache_key(tokenizer: Any, max_len: int, mode: TokenizeMode, texts: Sequence[str]) -> str:
    parts = {
        "format": CACHE_FORMAT_VERSION,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_len": int(max_len),
        "mode": mode,
        "texts": texts_fingerprint([render_key(t, tokenizer) for t in texts]),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _flatten(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return flat, offsets


def save_tokenized(path: str, tokenized: TokenizedTexts, key: str) -> None:
    """Write atomically (temp file in the same directory + os.replace): readers never see half a file."""
    flat_ids, offsets = _flatten(tokenized.ids)
    arrays = {"key": np.array(key), "flat_ids": flat_ids, "offsets": offsets}
    if tokenized.loss_mask is not None:
        arrays["flat_loss_mask"] = _flatten(tokenized.loss_mask)[0].astype(np.int8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def load_tokenized(path: str, key: str, n_texts: int) -> TokenizedTexts:
    """Read a cache file; raises ValueError (or an I/O error) unless it is complete and belongs to `key`."""
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            raise ValueError("key mismatch")
        flat_ids, offsets = data["flat_ids"], data["offsets"]
        flat_mask = data["flat_loss_mask"] if "flat_loss_mask" in data.files else None
    if len(offsets) != n_texts + 1 or offsets[0] != 0 or offsets[-1] != len(flat_ids) or np.any(np.diff(offsets) < 0):
        raise ValueError("inconsistent offsets")
    if flat_mask is not None and len(flat_mask) != len(flat_ids):
        raise ValueError("loss mask length differs from ids")
    if n_texts == 0:
        return TokenizedTexts([], None if flat_mask is None else [])
    ids = np.split(flat_ids.astype(np.int32), offsets[1:-1])
    mask = None if flat_mask is None else np.split(flat_mask.astype(np.int32), offsets[1:-1])
    return TokenizedTexts(ids, mask)


def tokenize_cached(
    texts: Sequence[str],
    tokenizer: Any,
    max_len: int,
    *,
    mode: TokenizeMode = "full",
    cache_dir: str | os.PathLike | None = None,
    name: str = "texts",
    progress: bool | None = None,
) -> TokenizedTexts:
    """Tokenize in `mode`, reusing `<cache_dir>/<name>-<mode>-<key>.npz` when present (no cache if cache_dir is None).

    `name` only makes the file recognisable; the key alone decides a hit. A corrupt or mismatching file is
    rebuilt with a TokenCacheWarning.
    """
    if mode not in ("full", "prompt_response"):
        raise ValueError(f"unknown tokenize mode {mode!r}; expected 'full' or 'prompt_response'")
    path = None
    if cache_dir is not None:
        key = cache_key(tokenizer, max_len, mode, texts)
        path = os.path.join(os.fspath(cache_dir), f"{name}-{mode}-{key[:32]}.npz")
        if os.path.exists(path):
            try:
                return load_tokenized(path, key, len(texts))
            except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
                reason = f"{type(err).__name__}: {err}"
                warnings.warn(f"token cache {path} unusable ({reason}); rebuilding", TokenCacheWarning)
    if mode == "full":
        tokenized = TokenizedTexts(tokenize_texts(texts, tokenizer, max_len, progress=progress))
    else:
        tokenized = TokenizedTexts(*tokenize_prompt_response(texts, tokenizer, max_len, progress=progress))
    if path is not None:
        save_tokenized(path, tokenized, key)
    return tokenized
