"""A tokenizer built in code: byte-level BPE trained on the run's own texts (no files, no hub)."""
from __future__ import annotations

from typing import Sequence

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD_TOKEN = "<pad>"  # id 0, so the pad id of our batches never collides with a real token


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE with `vocab_size` entries (256 bytes + <pad> + merges); deterministic for the same texts."""
    if vocab_size < 258:
        raise ValueError(f"a byte-level BPE vocabulary needs at least 258 entries, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN,
                                                name_or_path=f"bpe-{vocab_size}")
