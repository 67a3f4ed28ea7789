"""Chat-format answers: a conversation kept as messages, rendered for each tokenizer that reads it.

Weak and strong models may have different tokenizers, hence different chat templates, so a chat row cannot be
turned into one text when it is read. A `Dialogue` is a `str` (its HH rendering, "\\n\\nHuman: ...\\n\\nAssistant:
..."), which is what logs, predictions.jsonl, a BPE tokenizer's training corpus and every tokenizer without a
chat template see, and it carries its `messages`, which `tokenize.py` renders with `apply_chat_template` for a
tokenizer that has one. Being a `str`, it travels through every list of texts of the experiments unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HUMAN_MARKER = "\n\nHuman:"
ASSISTANT_MARKER = "\n\nAssistant:"
# the HH name of each role; a system message has no HH form, so it is written as a turn of its own
HH_ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def render_hh(messages: Sequence[dict]) -> str:
    """The HH-RLHF rendering: " {content}" after "\\n\\n{Human|Assistant|System}:" per message."""
    return "".join(f"\n\n{HH_ROLES[m['role']]}: {m['content']}" for m in messages)


class Dialogue(str):
    """A conversation ending in an assistant message; the string value is its HH rendering."""

    messages: tuple[dict, ...]

    def __new__(cls, messages: Sequence[dict]):
        text = super().__new__(cls, render_hh(messages))
        text.messages = tuple({"role": m["role"], "content": m["content"]} for m in messages)
        return text

    def __reduce__(self):  # pickles (worker processes) as a Dialogue, not as its plain rendering
        return type(self), ([dict(m) for m in self.messages],)


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def templated(text: str, tokenizer: Any) -> bool:
    """Whether `text` is rendered by the tokenizer's chat template (else it is tokenized as the plain string)."""
    return isinstance(text, Dialogue) and has_template(tokenizer)


def render_full(text: str, tokenizer: Any) -> str:
    """The whole conversation as the tokenizer reads it: its chat template's rendering, or the text itself."""
    if not templated(text, tokenizer):
        return str(text)
    return tokenizer.apply_chat_template([dict(m) for m in text.messages], tokenize=False)


def render_prompt_response(text: str, tokenizer: Any) -> tuple[str, str] | None:
    """(prompt, response) under the chat template: the prompt is every message but the last with the template's
    generation prompt, the response the rest of the full rendering. None when `text` is not templated here."""
    if not templated(text, tokenizer):
        return None
    messages = [dict(m) for m in text.messages]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise ValueError(f"the chat template of {tokenizer.name_or_path!r} renders the prompt of {str(text)[:60]!r} "
                         "differently alone and inside the conversation: cannot mark the response's tokens")
    return prompt, full[len(prompt):]


def render_key(text: str, tokenizer: Any) -> str:
    """What the token cache keys a text by: a templated text by the template and its rendering (its prompt/response
    cut depends on both), a plain one by itself, so a changed template or conversation never hits an old entry."""
    if not templated(text, tokenizer):
        return str(text)
    return f"\x00chat\x00{tokenizer.chat_template}\x00{render_full(text, tokenizer)}"
