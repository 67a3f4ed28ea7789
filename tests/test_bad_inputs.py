"""A corpus of bad inputs (files in tests/bad_inputs/, config overrides, paths): each one stops
`python -m w2s_jax.main` before any compute with a one-line message naming the cause (file:line:field for data
rows), a non-zero exit, and nothing marked complete. The data-row cases run in-process through the experiment the
entry point runs (two of them also through the entry point); bad config values checked in-process are in
test_config_errors.py; the others here go through the real entry point."""
import json
import shutil
from pathlib import Path

import pytest

import runs

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_inputs"
CONFIG = "tests/tiny_rm_config.py"
SPLITS = ("harmless_train_gt.jsonl", "harmless_train_w2s.jsonl", "harmless_test.jsonl")
GT, WEAK, TEST = SPLITS


def good_rows(n: int = 70) -> str:
    rows = [{"chosen": f"\n\nHuman: How do I fix thing {i}?\n\nAssistant: Carefully, step {i} first.",
             "rejected": f"\n\nHuman: How do I fix thing {i}?\n\nAssistant: Break it, {i} times."} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def data_dir(tmp_path):
    """A valid data directory of our own (70 pairs per split, a conflict file); a test swaps one file for a bad
    one."""
    d = tmp_path / "data"
    d.mkdir()
    for name in (*SPLITS, "helpful_train.jsonl", "conflict.jsonl"):
        (d / name).write_text(good_rows())
    return d


def run_main(tmp_path, data_dir, *args, workdir=None, config=CONFIG, devices=1):
    workdir = Path(workdir or tmp_path / "wd")
    defaults = {"--config.data.dir": str(data_dir), "--config.data.conflict_path": str(data_dir / "conflict.jsonl")}
    given = {a.split("=", 1)[0] for a in args}
    flags_ = [f"{k}={v}" for k, v in defaults.items() if k not in given]
    proc = runs.main(f"--config={config}", f"--workdir={workdir}", *flags_, *args, env_=runs.env(devices),
                     timeout=300)
    return proc, workdir


def assert_stopped_cleanly(proc, workdir: Path, expected: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode > 0, (proc.returncode, proc.stderr[-3000:])  # an exit status, not a signal
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert expected in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (workdir / "results.json").exists()
    for meta in workdir.glob("models/*/model.json"):
        assert json.loads(meta.read_text())["status"] != "complete", meta
    assert not list(workdir.glob("models/*/ckpt/*")), "a model was trained before the error"


# (file in tests/bad_inputs/, the data file it replaces, what the last line of stderr must contain)
DATA_CASES = [
    ("malformed_json.jsonl", GT, f"{GT}:2: malformed JSON at column"),
    ("missing_field.jsonl", GT, f"{GT}:2:rejected: missing field"),
    ("empty_string.jsonl", WEAK, f"{WEAK}:2:chosen: empty string"),
    ("whitespace_string.jsonl", TEST, f"{TEST}:2:rejected: empty string"),
    ("non_string_value.jsonl", GT, f"{GT}:2:rejected: expected a string, got int"),
    ("null_value.jsonl", GT, f"{GT}:2:chosen: expected a string, got NoneType"),
    ("invalid_utf8.jsonl", GT, f"{GT}:2: invalid UTF-8 at byte"),
    ("lone_surrogate.jsonl", WEAK, f"{WEAK}:2:chosen: lone surrogate"),
    ("chosen_equals_rejected.jsonl", GT, f"{GT}:2:rejected: chosen and rejected are identical"),
    ("not_an_object.jsonl", GT, f"{GT}:2: row is a JSON list, expected an object"),
    ("prompt_row_missing_answer.jsonl", TEST, f"{TEST}:2:rejected: missing field"),
    ("empty_split.jsonl", TEST, f"{TEST}: file is empty"),
    ("blank_lines_only.jsonl", WEAK, f"{WEAK}: file is empty"),
    ("missing_field.jsonl", "conflict.jsonl", "conflict.jsonl:2:rejected: missing field"),
]


def students_for(target: str) -> list[str]:
    """The conflict set is read only for a student that trains on it."""
    return ["--config.students=implicit"] if "conflict" in target else []


@pytest.mark.parametrize("bad_file, target, expected", DATA_CASES, ids=[f"{c[0]}->{c[1]}" for c in DATA_CASES])
def test_bad_data_row_stops_the_experiment_before_compute(bad_file, target, expected, data_dir, tmp_path):
    """Every row case in-process, through the experiment the entry point runs (the flag parsing and the exit
    status are the entry point's own, checked below on two of these cases): the error the entry point prints."""
    from w2s_jax.config_check import validate
    from w2s_jax.configs import load_config_file
    from w2s_jax.experiments import run
    from w2s_jax.main import USER_ERRORS

    shutil.copyfile(BAD / bad_file, data_dir / target)
    c = load_config_file(str(ROOT / CONFIG))
    c.data.dir, c.data.conflict_path = str(data_dir), str(data_dir / "conflict.jsonl")
    if students_for(target):
        c.students = "implicit"
    workdir = tmp_path / "wd"
    with pytest.raises(USER_ERRORS) as e:
        run(c, workdir, validate(c, n_devices=1))
    assert expected in " ".join(str(e.value).split()), str(e.value)  # the entry point prints it on one line
    assert not (workdir / "results.json").exists() and not list(workdir.glob("models/*/ckpt/*"))
    assert not any(json.loads(m.read_text())["status"] == "complete" for m in workdir.glob("models/*/model.json"))


@pytest.mark.parametrize("bad_file, target, expected", [DATA_CASES[1], DATA_CASES[-1]],
                         ids=[f"{c[0]}->{c[1]}" for c in (DATA_CASES[1], DATA_CASES[-1])])
def test_bad_data_row_stops_the_entry_point_before_compute(bad_file, target, expected, data_dir, tmp_path):
    shutil.copyfile(BAD / bad_file, data_dir / target)
    proc, workdir = run_main(tmp_path, data_dir, *students_for(target))
    assert_stopped_cleanly(proc, workdir, expected)


@pytest.mark.parametrize("bad_file, expected", [
    ("bigbench_not_json.json", "bigbench_not_json.json:1: not valid JSON"),
    ("bigbench_no_examples.json", "bigbench_no_examples.json:examples: missing or empty list of examples"),
])
def test_bad_bigbench_conflict_set(bad_file, expected, data_dir, tmp_path):
    proc, workdir = run_main(tmp_path, data_dir, f"--config.data.conflict_path={BAD / bad_file}",
                             "--config.students=implicit")
    assert_stopped_cleanly(proc, workdir, expected)


def model_dir(tmp_path, config_file: str) -> Path:
    """A Hugging Face model directory holding only the config (the check reads no weights)."""
    d = tmp_path / "model"
    d.mkdir()
    shutil.copyfile(BAD / config_file, d / "config.json")
    return d


@pytest.mark.parametrize("case", [
    "too_few_rows", "zero_test_pairs", "nan_lr", "mesh_rows_do_not_divide_batch", "mesh_beyond_devices",
    "missing_model_path", "tokenizer_beyond_vocab", "max_len_beyond_positions", "missing_conflict_file",
    "missing_default_conflict_set", "unwritable_workdir", "unknown_preset", "missing_config_file",
])
def test_bad_setting_stops_before_compute(case, data_dir, tmp_path):
    args, kwargs = [], {}
    if case == "too_few_rows":
        args, expected = ["--config.data.n_gt=1000"], f"{GT}: split 'gt': asked for 1000 pairs, 70 valid pairs"
    elif case == "zero_test_pairs":
        args, expected = ["--config.data.n_test=0"], "config.data.n_test: must be a positive integer, got 0"
    elif case == "nan_lr":
        args, expected = ["--config.train.lr=nan"], "config.train.lr: must be a positive finite number, got nan"
    elif case == "mesh_rows_do_not_divide_batch":
        args = ["--config.mesh.data=2", "--config.train.batch_size=9"]
        kwargs, expected = {"devices": 2}, "config.train.batch_size: must be a multiple of mesh data x fsdp = 2"
    elif case == "mesh_beyond_devices":
        args, expected = ["--config.mesh.fsdp=16"], "config.mesh: mesh data=1 x fsdp=16 x tensor=1 = 16 devices"
    elif case == "missing_model_path":
        args = ["--config.strong.init=pretrained", f"--config.strong.name={tmp_path}/no_such_model"]
        expected = "config.strong.name: no such model directory or file"
    elif case == "tokenizer_beyond_vocab":
        args = ["--config.strong.init=pretrained", f"--config.strong.name={model_dir(tmp_path, 'model_small_vocab.json')}"]
        expected = "but the model's vocabulary is 64"
    elif case == "max_len_beyond_positions":
        args = ["--config.strong.init=pretrained",
                f"--config.strong.name={model_dir(tmp_path, 'model_few_positions.json')}"]
        expected = "data.max_len=64 exceeds the model's 32 learned positions"
    elif case == "missing_conflict_file":
        args, expected = [f"--config.data.conflict_path={tmp_path}/helpful.jsonl"], \
            "config.data.conflict_path: file not found"
    elif case == "missing_default_conflict_set":
        (data_dir / "helpful_train.jsonl").unlink()
        (data_dir / "conflict.jsonl").unlink()  # a default name of the conflict split too
        args = ["--config.data.conflict_path=", "--config.students=no_conflict,implicit"]
        expected = "config.data.conflict_path: not set and"
    elif case == "unwritable_workdir":
        (tmp_path / "a_file").write_text("not a directory")
        kwargs, expected = {"workdir": tmp_path / "a_file" / "wd"}, "cannot write there"
    elif case == "unknown_preset":
        kwargs, expected = {"config": "configs/rm_helpful.py:fast"}, "unknown preset 'fast'"
    else:
        kwargs, expected = {"config": "tests/no_such_config.py"}, "--config=tests/no_such_config.py: file not found"
    proc, workdir = run_main(tmp_path, data_dir, *args, **kwargs)
    assert_stopped_cleanly(proc, workdir, expected)
