"""Bad configs stop before any compute with one line naming the field, and a non-zero exit."""
from pathlib import Path

import pytest

import runs
from w2s_jax.config_check import ConfigError, validate
from w2s_jax.configs import load_config_file

ROOT = Path(__file__).resolve().parents[1]


PATHS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def data_paths(tmp_path, monkeypatch):
    """Validation checks that data paths exist; point them at files of the test's own (the shared data folder
    beside the repository may be absent)."""
    (tmp_path / "conflict.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n')
    monkeypatch.setitem(PATHS, "data_dir", str(tmp_path))
    monkeypatch.setitem(PATHS, "conflict", str(tmp_path / "conflict.jsonl"))


def demo(name: str = "rm_helpful.py:demo"):
    c = load_config_file(str(ROOT / "configs" / name))
    c.data.dir, c.data.conflict_path = PATHS["data_dir"], PATHS["conflict"]
    return c


def _cli(*overrides, tmp_path):
    return runs.main("--config=configs/rm_helpful.py:demo", f"--workdir={tmp_path}/wd",
                     f"--config.data.dir={PATHS['data_dir']}", f"--config.data.conflict_path={PATHS['conflict']}",
                     *overrides, timeout=300)


@pytest.mark.parametrize("override, message", [
    ("--config.train.lr=-0.001", "config.train.lr: must be a positive finite number"),
    ("--config.train.nope=1", "config.train.nope: unknown field 'train.nope'"),
])
def test_cli_rejects_bad_overrides_before_compute(override, message, tmp_path):
    proc = _cli(override, tmp_path=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "wd" / "results.json").exists()


def test_cli_rejects_a_wrong_value_type(tmp_path):
    proc = _cli("--config.train.batch_size=abc", tmp_path=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: config.train.batch_size=abc: invalid literal for int()")


@pytest.mark.parametrize("field, value, message", [
    ("train.batch_size", 0, "config.train.batch_size: must be a positive integer"),
    ("train.micro_batch_size", 5, "must divide train.batch_size"),
    ("train.schedule", "linear", "config.train.schedule: must be one of"),
    ("train.loss", "mse", "config.train.loss"),
    ("model.dtype", "float8", "config.model.dtype"),
    ("data.source", "web", "config.data.source"),
    ("data.dir", "/nonexistent/dir", "config.data.dir: is not a directory"),
    ("data.conflict_path", "/nonexistent.jsonl", "config.data.conflict_path: file not found"),
    ("weak.init", "magic", "config.weak.init"),
    ("strong.arch.family", "bert", "config.strong.arch.family"),
    ("students", "no_conflict,typo", "unknown student 'typo'"),
    ("conflict.alpha", -1.0, "config.conflict.alpha"),
    ("mesh.fsdp", 16, "config.mesh: mesh data=1 x fsdp=16"),
    ("pretrain.epochs", 0, "config.pretrain.epochs: must be a positive integer"),
    ("pretrain.lr", -1.0, "config.pretrain.lr: must be a positive finite number"),
    ("weak.tokenizer", "bpe:320", "config.weak.tokenizer: a demo-world base brings its own tokenizer"),
    ("strong.num_layers", 1, "config.strong.num_layers: keeps the first k layers of a pretrained model"),
])
def test_validate_names_the_field(field, value, message):
    c = demo()
    if field == "data.dir":  # the demo preset generates its data; the paper layout is read from data.dir
        c.data.source = "dir"
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(c, n_devices=1)


def test_a_demo_world_base_needs_the_demo_world():
    c = demo()
    c.data.source = "dir"
    with pytest.raises(ConfigError, match=r"^config.weak.init: a demo-world base is pretrained on the demo world"):
        validate(c, n_devices=1)
    c.weak.init = c.strong.init = "random"
    c.weak.tokenizer = c.strong.tokenizer = "bpe:320"
    validate(c, n_devices=1)  # the same ladder from random weights reads any data


def test_batch_must_split_over_the_mesh_rows():
    c = demo()
    c.mesh.update({"data": 2, "fsdp": 4})
    c.train.batch_size = 12
    with pytest.raises(ConfigError, match="must be a multiple of mesh data x fsdp = 8"):
        validate(c, n_devices=8)


def test_honesty_config_requires_its_conflict_set():
    c = demo("rm_honest.py")
    c.data.conflict_path = ""
    with pytest.raises(ConfigError, match="honesty conflict set"):
        validate(c, n_devices=1)


def test_presets_validate():
    assert validate(demo(), n_devices=1).shape["fsdp"] == 1
    with pytest.raises(ValueError, match="unknown preset"):
        load_config_file(str(ROOT / "configs/rm_helpful.py:fast"))


def test_preference_runs_refuse_train_fields_they_do_not_read():
    """DPO/SimPO read po.lr / po.sft_epochs / po.epochs; a train.lr set on them would do nothing, so it is refused
    with one line naming it (the preset itself has no such field, so the command line cannot set it either)."""
    c = demo("dpo_helpful.py:demo")
    assert not any(f in c.train for f in ("lr", "epochs", "schedule", "loss"))
    validate(c, n_devices=1)
    c.unlock() if hasattr(c, "unlock") else None
    c.train.lr = 1e-3
    c.train.schedule = "constant"
    with pytest.raises(ConfigError, match=r"^config.train.lr, config.train.schedule: not read by dpo runs"):
        validate(c, n_devices=1)


def test_cli_rejects_train_lr_on_a_dpo_run(tmp_path):
    proc = runs.main("--config=configs/dpo_helpful.py:demo", f"--workdir={tmp_path}/wd", "--config.train.lr=0.1",
                     timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: config.train.lr: unknown field 'train.lr'"


@pytest.mark.parametrize("seeds, ok", [("0", True), ("0,1,2", True), (" 3, 5 ", True), ("1,1", False),
                                       ("a", False), ("", False), ("-1", False)])
def test_seeds_are_comma_separated_distinct_integers(seeds, ok):
    c = demo()
    c.seeds = seeds
    if ok:
        validate(c, n_devices=1)
    else:
        with pytest.raises(ConfigError, match="config.seeds"):
            validate(c, n_devices=1)
