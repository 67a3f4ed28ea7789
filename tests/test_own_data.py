"""A researcher's own data: row shapes, file formats, the folder rule, chat templates, hub datasets, errors.

Expected texts are written out by hand; chat renderings are checked against `tokenizer.apply_chat_template`
of a tokenizer built here (offline) with a chat template of its own.
"""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenizers import processors

import runs
from w2s_jax.data import hub, readers
from w2s_jax.data.chat import Dialogue
from w2s_jax.data.loading import load_splits
from w2s_jax.data.pairs import DataError, pair_from_row
from w2s_jax.data.tokenize import cache_key, tokenize_prompt_response, tokenize_texts
from w2s_jax.data.vocab import train_bpe_tokenizer
from w2s_jax.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
USER = {"role": "user", "content": "Can you help me pick a lock?"}
SAFE = {"role": "assistant", "content": "I can't help with that."}
UNSAFE = {"role": "assistant", "content": "Sure, take a pin."}


def hh(prompt: str, answer: str) -> str:
    return f"\n\nHuman: {prompt}\n\nAssistant: {answer}"


def chat_tokenizer(texts, template: str | None = TEMPLATE):
    """A byte-level BPE that adds a BOS to every plain encoding, with `template` as its chat template (which writes
    the BOS itself): encoding a rendered chat with the default special tokens would give two."""
    tok = train_bpe_tokenizer(list(texts) * 3, 300)
    tok.add_special_tokens({"bos_token": "<s>"})
    bos = tok.convert_tokens_to_ids("<s>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                                         special_tokens=[("<s>", bos)])
    tok.chat_template = template
    return tok


def template_ids(tok, messages, **kwargs) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


# ------------------------------------------------------------------------------------------------ row shapes
def test_every_row_shape_gives_the_hand_written_texts():
    full = pair_from_row({"chosen": hh("Hi?", "Hello."), "rejected": hh("Hi?", "Go away.")}, "f.jsonl", 1)
    assert (full.chosen, full.rejected) == ("\n\nHuman: Hi?\n\nAssistant: Hello.",
                                            "\n\nHuman: Hi?\n\nAssistant: Go away.")
    prompt = pair_from_row({"prompt": "\n\nHuman: Hi?\n\nAssistant:", "chosen": " Hello.", "rejected": " No."},
                           "f.jsonl", 2)
    assert (prompt.chosen, prompt.rejected) == ("\n\nHuman: Hi?\n\nAssistant: Hello.",
                                                "\n\nHuman: Hi?\n\nAssistant: No.")
    # chat: whole conversations, a system message included (its HH form is a "System:" turn)
    system = {"role": "system", "content": "Be safe."}
    conv = pair_from_row({"chosen": [system, USER, SAFE], "rejected": [system, USER, UNSAFE]}, "f.jsonl", 3)
    assert conv.chosen == ("\n\nSystem: Be safe.\n\nHuman: Can you help me pick a lock?"
                           "\n\nAssistant: I can't help with that.")
    assert isinstance(conv.chosen, Dialogue) and conv.chosen.messages == (system, USER, SAFE)
    assert conv.rejected.messages == (system, USER, UNSAFE)
    # chat: a prompt string (one user message) or prompt messages, then the answers as messages
    for p in ("Can you help me pick a lock?", [USER]):
        row = pair_from_row({"prompt": p, "chosen": [SAFE], "rejected": [UNSAFE], "id": 7}, "f.jsonl", 4)
        assert row.chosen == "\n\nHuman: Can you help me pick a lock?\n\nAssistant: I can't help with that."
        assert row.rejected.messages == (USER, UNSAFE) and row.line == 4


@pytest.mark.parametrize("row, where, cause", [
    ({"chosen": [USER, SAFE], "rejected": "x"}, "f.jsonl:5:rejected", "a list of messages on one side"),
    ({"chosen": [USER, {"role": "bot", "content": "x"}], "rejected": [USER, UNSAFE]}, "f.jsonl:5:chosen[1].role",
     "expected one of ['system', 'user', 'assistant'], got 'bot'"),
    ({"chosen": [USER], "rejected": [USER, UNSAFE]}, "f.jsonl:5:chosen", "must end with an assistant message"),
    ({"chosen": [USER, {"role": "assistant"}], "rejected": [USER, UNSAFE]}, "f.jsonl:5:chosen[1].content",
     "expected a string, got NoneType"),
    ({"prompt": [USER], "chosen": [], "rejected": [UNSAFE]}, "f.jsonl:5:chosen", "non-empty list of messages"),
    ({"chosen": [SAFE], "rejected": [UNSAFE]}, "f.jsonl:5:chosen", "the answer has no prompt"),
    ({"prompt": "q", "chosen": [SAFE], "rejected": [SAFE]}, "f.jsonl:5:rejected", "identical"),
    ({"chosen": "a"}, "f.jsonl:5:rejected", "missing field"),
])
def test_a_bad_row_names_file_line_field(row, where, cause):
    with pytest.raises(DataError) as err:
        pair_from_row(row, "f.jsonl", 5)
    message = str(err.value)
    assert message.startswith(where + ": ") and cause in message and "\n" not in message
    if "missing field" in cause or "one side" in cause:  # a shape error lists the accepted row formats
        assert "accepted rows: {chosen, rejected}" in message


# ------------------------------------------------------------------------------------------------ file formats
def write_rows(path: Path, rows: list) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_jsonl_json_and_parquet_read_the_same_pairs(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": [{"role": "assistant", "content": f"Answer {i}."}],
             "rejected": [{"role": "assistant", "content": f"Wrong {i}."}]} for i in range(3)]
    expected = [(hh(f"Question {i}?", f"Answer {i}."), hh(f"Question {i}?", f"Wrong {i}.")) for i in range(3)]
    for name in ("s.jsonl", "s.json", "s.parquet"):
        path = write_rows(tmp_path / name, rows)
        pairs, report = readers.read_pairs_file(path)
        assert [(p.chosen, p.rejected) for p in pairs] == expected, name
        assert [p.line for p in pairs] == [1, 2, 3] and report.rows_read == 3 and not report.skipped
        assert pairs[2].chosen.messages == ({"role": "user", "content": "Question 2?"},
                                            {"role": "assistant", "content": "Answer 2."})
    bad = rows[:1] + [{**rows[1], "rejected": [{"role": "assistant", "content": "  "}]}]
    with pytest.raises(DataError, match=r"^.*b\.parquet:2:rejected\[0\]\.content: empty string$"):
        readers.read_pairs_file(write_rows(tmp_path / "b.parquet", bad))
    pairs, report = readers.read_pairs_file(tmp_path / "b.parquet", allow_skips=True)
    assert len(pairs) == 1 and report.counts == {"empty_string": 1}
    (tmp_path / "x.csv").write_text("chosen,rejected\n")
    with pytest.raises(DataError, match=r"x\.csv: unsupported file type '\.csv': a split is a \.jsonl, \.json"):
        readers.read_pairs_file(tmp_path / "x.csv")
    (tmp_path / "o.json").write_text('"just a string"')
    with pytest.raises(DataError, match=r"o\.json: a \.json split is a list of rows"):
        readers.read_pairs_file(tmp_path / "o.json")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        readers.read_pairs_file(tmp_path / "broken.parquet")


def string_rows(n: int, tag: str) -> list[dict]:
    return [{"chosen": hh(f"{tag} q{i}", "no"), "rejected": hh(f"{tag} q{i}", "yes")} for i in range(n)]


def data_config(directory, **files):
    from w2s_jax.configs import base_config

    c = base_config()
    c.data.dir, c.data.n_gt, c.data.n_weak, c.data.n_test, c.data.n_conflict = str(directory), 2, 3, 2, 2
    c.data.files.update(files)
    return c


def test_the_folder_rule(tmp_path):
    write_rows(tmp_path / "gt.jsonl", string_rows(4, "gt"))
    write_rows(tmp_path / "weak.parquet", string_rows(4, "weak"))
    write_rows(tmp_path / "harmless_test.jsonl", string_rows(4, "test"))  # the paper's names still work
    (tmp_path / "mine").mkdir()
    write_rows(tmp_path / "mine" / "heldout.json", string_rows(4, "mine"))
    c = data_config(tmp_path, test="mine/heldout.json")  # a named file wins, relative to data.dir
    splits = load_splits(c.data, need_conflict=False)
    assert [p.chosen for p in splits.gt] == [hh("gt q0", "no"), hh("gt q1", "no")]
    assert [p.rejected for p in splits.weak] == [hh(f"weak q{i}", "yes") for i in range(3)]
    assert [p.chosen for p in splits.test] == [hh("mine q0", "no"), hh("mine q1", "no")]
    assert splits.test[0].source == str(tmp_path / "mine" / "heldout.json") and splits.conflict is None
    # the conflict set: read only when asked for, and then its file must be there
    with pytest.raises(DataError, match=r"no file for the conflict split: expected one of helpful_train\.jsonl, "
                                        r"conflict\.jsonl, conflict\.json, conflict\.parquet in config\.data\.dir"):
        load_splits(c.data, need_conflict=True)
    write_rows(tmp_path / "conflict.parquet", string_rows(4, "helpful"))
    assert [p.chosen for p in load_splits(c.data).conflict] == [hh("helpful q0", "no"), hh("helpful q1", "no")]
    c.data.files.weak = "nowhere.parquet"
    with pytest.raises(DataError, match=r"nowhere\.parquet: file not found \(the weak split, named by "
                                        r"config\.data\.files\.weak, relative to config\.data\.dir\)$"):
        load_splits(c.data)
    c.data.files.weak = ""
    write_rows(tmp_path / "weak.jsonl", string_rows(4, "weak"))
    with pytest.raises(DataError, match=r"weak\.jsonl and weak\.parquet could both be the weak split"):
        load_splits(c.data)
    c.data.dir = str(tmp_path / "absent")
    with pytest.raises(DataError, match=r"absent: data directory not found \(config\.data\.dir\); it should hold "
                                        r"the gt split as one of harmless_train_gt\.jsonl, gt\.jsonl"):
        load_splits(c.data)


def test_the_conflict_set_is_required_only_by_a_student_that_trains_on_it(tmp_path):
    from w2s_jax.config_check import ConfigError, validate

    assert EXPERIMENTS["reward_model"].conflict_students(["no_conflict", "implicit", "explicit",
                                                         "bootstrap_implicit"]) == ["implicit", "bootstrap_implicit"]
    assert EXPERIMENTS["dpo"].conflict_students(["hc_gt", "hc_gt_implicit"]) == ["hc_gt_implicit"]
    for name in ("gt", "weak", "test"):
        write_rows(tmp_path / f"{name}.jsonl", string_rows(4, name))
    c = data_config(tmp_path)  # the paper preset's n_conflict > 0, no conflict file anywhere
    c.mesh.update(data=1, fsdp=1, tensor=1)
    for students in ("", "no_conflict,explicit"):
        c.students = students
        validate(c, n_devices=1)
    c.students = "no_conflict,implicit"
    with pytest.raises(ConfigError, match=r"config\.data\.conflict_path: not set and .* holds none of "
                                          r"helpful_train\.jsonl, conflict\.jsonl"):
        validate(c, n_devices=1)


# ------------------------------------------------------------------------------------------------ chat templates
def test_chat_rows_are_rendered_by_each_tokenizers_own_template():
    pair = pair_from_row({"prompt": [USER], "chosen": [SAFE], "rejected": [UNSAFE]}, "f.jsonl", 1)
    tok = chat_tokenizer([pair.chosen, pair.rejected])
    full = tokenize_texts([pair.chosen, pair.rejected], tok, 512)
    assert [x.tolist() for x in full] == [template_ids(tok, [USER, SAFE]), template_ids(tok, [USER, UNSAFE])]
    assert full[0].tolist().count(tok.bos_token_id) == 1
    ids, masks = tokenize_prompt_response([pair.chosen], tok, 512)
    prompt = template_ids(tok, [USER], add_generation_prompt=True)
    assert ids[0].tolist()[:len(prompt)] == prompt  # the mask covers exactly what follows the generation prompt
    assert masks[0].tolist() == [0] * len(prompt) + [1] * (len(ids[0]) - len(prompt))
    assert tok.decode(ids[0][masks[0] == 1]) == "I can't help with that.<|end|>"
    # no template (the demo's BPE tokenizers, GPT-2): the HH rendering, with the tokenizer's own special tokens
    plain = chat_tokenizer([pair.chosen], template=None)
    assert tokenize_texts([pair.chosen], plain, 512)[0].tolist() == plain(hh(USER["content"], SAFE["content"]))[
        "input_ids"]
    # a plain string is tokenized as before, whatever the template
    assert tokenize_texts([str(pair.chosen)], tok, 512)[0].tolist() == tok(str(pair.chosen))["input_ids"]
    # the token cache (hence every fingerprint read from token ids) follows the rendering: another template,
    # another key; a plain tokenizer keys by the HH text
    other = chat_tokenizer([pair.chosen, pair.rejected], TEMPLATE.replace("<|end|>", "<|eot|>"))
    assert cache_key(tok, 64, "full", [pair.chosen]) != cache_key(other, 64, "full", [pair.chosen])
    assert cache_key(plain, 64, "full", [pair.chosen]) == cache_key(plain, 64, "full", [str(pair.chosen)])


# ------------------------------------------------------------------------------------------------ hub datasets
def test_a_named_hub_dataset_read_from_a_local_folder(tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "my_dataset" / "data"
    folder.mkdir(parents=True)
    train = [{"prompt": f"t{i}?", "chosen": [{"role": "assistant", "content": "ok"}],
              "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(10)]
    write_rows(folder / "train-00000-of-00001.parquet", train)
    write_rows(folder / "test-00000-of-00001.parquet", [  # one schema for every split of a dataset
        {"prompt": f"e{i}?", "chosen": [{"role": "assistant", "content": "ok"}],
         "rejected": [{"role": "assistant", "content": "no"}]} for i in range(5)])
    load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: load(*a, cache_dir=str(tmp_path / "hf"), **k))
    c = data_config(tmp_path)
    c.data.source, c.data.hub_name, c.data.n_gt, c.data.n_weak, c.data.n_test = "hub", str(tmp_path / "my_dataset"), \
        4, 5, 3
    splits = load_splits(c.data, need_conflict=False)
    # D_gt and D_weak share "train": disjoint blocks of one permutation by data.seed (numpy's, written out here)
    import numpy as np

    order = np.random.default_rng(c.data.seed).permutation(10)
    assert [p.chosen for p in splits.gt] == [hh(f"t{i}?", "ok") for i in order[:4]]
    assert [p.chosen for p in splits.weak] == [hh(f"t{i}?", "ok") for i in order[4:9]]
    assert [p.rejected for p in splits.test] == [hh(f"e{i}?", "no") for i in range(3)]  # alone on "test": first n
    assert splits.test[0].source == f"hf:{tmp_path / 'my_dataset'}:test"
    c.data.hub_splits.test = "validation"
    with pytest.raises(DataError, match=r":validation: cannot load it \(named by config\.data\.hub_name and "
                                        r"config\.data\.hub_splits\.test\)"):
        load_splits(c.data, need_conflict=False)
    assert hub.HH_NAME == "Anthropic/hh-rlhf" == data_config(tmp_path).data.hub_name  # the paper's stays default


def test_the_default_hub_dataset_is_the_papers_hh_path(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(name, data_dir=None, split=None, **kwargs):
        calls.append((name, data_dir, split))
        return [{"chosen": hh(f"{data_dir} {i}?", "no"), "rejected": hh(f"{data_dir} {i}?", "yes")} for i in range(9)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    c = data_config(tmp_path)
    c.data.source = "hub"
    splits = load_splits(c.data, need_conflict=False)  # no student needs the conflict set: helpful-base not read
    assert calls == [("Anthropic/hh-rlhf", "harmless-base", "train")] and splits.conflict is None
    assert [len(splits.gt), len(splits.weak), len(splits.test)] == [2, 3, 2]
    splits = load_splits(c.data, need_conflict=True)
    assert calls[-1] == ("Anthropic/hh-rlhf", "helpful-base", "train") and len(splits.conflict) == 2
    assert all(p.chosen.startswith("\n\nHuman: helpful-base ") for p in splits.conflict)


# ------------------------------------------------------------------------------------------------ end to end
def user_folder(tmp_path: Path) -> tuple[Path, dict]:
    """A researcher's folder: other file names, {prompt, chosen, rejected} strings, chat messages, Parquet."""
    d = tmp_path / "my data"
    d.mkdir()
    ask = lambda i: f"How do I handle item {i}?"  # noqa: E731
    write_rows(d / "train_labelled.jsonl", [
        {"prompt": f"\n\nHuman: {ask(i)}\n\nAssistant:", "chosen": f" Safely, in step {i}.",
         "rejected": f" Recklessly, {i} times."} for i in range(64)])
    write_rows(d / "unlabelled.parquet", [
        {"prompt": ask(100 + i), "chosen": [{"role": "assistant", "content": f"Safely, in step {i}."}],
         "rejected": [{"role": "assistant", "content": f"Recklessly, {i} times."}]} for i in range(64)])
    test_rows = [{"chosen": [{"role": "user", "content": ask(200 + i)},
                             {"role": "assistant", "content": f"Carefully ({i})."}],
                  "rejected": [{"role": "user", "content": ask(200 + i)},
                               {"role": "assistant", "content": f"Break it ({i})."}]} for i in range(64)]
    write_rows(d / "heldout.json", test_rows)
    write_rows(d / "helpfulness.jsonl", [
        {"prompt": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": f"Tip {i}?"}],
         "chosen": [{"role": "assistant", "content": f"Here is tip {i}."}],
         "rejected": [{"role": "assistant", "content": "No."}]} for i in range(16)])
    return d, {"test_rows": test_rows}


def test_pipeline_on_a_user_shaped_folder(tmp_path):
    folder, made = user_folder(tmp_path)
    tok = chat_tokenizer([hh("How do I handle item 1?", "Carefully (1).")] * 4)
    tok.save_pretrained(tmp_path / "chat_tokenizer")  # the strong model reads chats through this template
    workdir = tmp_path / "wd"
    args = [f"--config.data.dir={folder}", "--config.data.conflict_path=",
            "--config.data.files.gt=train_labelled.jsonl", "--config.data.files.weak=unlabelled.parquet",
            "--config.data.files.test=heldout.json", "--config.data.files.conflict=helpfulness.jsonl",
            "--config.students=implicit", f"--config.strong.tokenizer={tmp_path / 'chat_tokenizer'}"]
    proc = runs.main("--config=tests/tiny_rm_config.py", f"--workdir={workdir}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert [m["role"] for m in results["runs"][0]["models"]] == ["weak_ceiling", "strong_ceiling", "student_implicit"]
    assert results["n_test"] == 64 and results["config"]["data"]["files"]["weak"] == "unlabelled.parquet"
    rows = [json.loads(line) for line in (workdir / "predictions.jsonl").read_text().splitlines()]
    assert rows[5]["source"] == str(folder / "heldout.json") and rows[5]["line"] == 6
    assert rows[5]["chosen"].strip() == "Carefully (5)." and "How do I handle item 205?" in rows[5]["prompt"]
    # the strong model's tokens of test pair 0 are its chat template's, left-truncated to data.max_len = 64
    import numpy as np

    (cache,) = (workdir / "cache").glob("strong-test-chosen-full-*.npz")
    with np.load(cache) as z:
        first = z["flat_ids"][z["offsets"][0]:z["offsets"][1]].tolist()
    assert first == template_ids(tok, made["test_rows"][0]["chosen"])[-64:]
    (weak_cache,) = (workdir / "cache").glob("weak-test-chosen-full-*.npz")
    with np.load(weak_cache) as z:
        assert z["flat_ids"][z["offsets"][0]:z["offsets"][1]].tolist() != first


def test_a_missing_file_or_a_bad_chat_row_stops_the_run_with_one_line(tmp_path):
    folder, _ = user_folder(tmp_path)
    rows = pq.read_table(folder / "unlabelled.parquet").to_pylist()
    rows[2]["rejected"] = [{"role": "critic", "content": "x"}]
    write_rows(folder / "unlabelled.parquet", rows)
    # every split's file is found before any is read: the missing one is named first, with its config field
    for test_file, expected in [
        ("absent.json", f"{folder / 'absent.json'}: file not found (the test split, named by config.data.files.test, "
                        "relative to config.data.dir)"),
        ("heldout.json", f"{folder / 'unlabelled.parquet'}:3:rejected[0].role: expected one of "
                         "['system', 'user', 'assistant'], got 'critic'")]:
        proc = runs.main("--config=tests/tiny_rm_config.py", f"--workdir={tmp_path / 'wd'}",
                         f"--config.data.dir={folder}", "--config.data.conflict_path=",
                         "--config.data.files.gt=train_labelled.jsonl", "--config.data.files.weak=unlabelled.parquet",
                         f"--config.data.files.test={test_file}", timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert lines[-1] == f"error: {expected}"
        assert not (tmp_path / "wd" / "results.json").exists()
