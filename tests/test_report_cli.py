"""report.py's command line: it builds the report, and a missing or malformed results.json is one line naming the
field, exit status 2, nothing overwritten."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report_fixtures import schema2, single_run, write
from tests.report_fixtures import warnings_are_errors  # noqa: F401  (an autouse fixture)
from w2s_jax.eval import report

REPO = Path(__file__).resolve().parents[1]


def run_cli(workdir):
    return subprocess.run([sys.executable, "-m", "w2s_jax.report", f"--workdir={workdir}", "--resamples=200"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_builds_the_report(tmp_path):
    done = run_cli(write(tmp_path, single_run()))
    assert done.returncode == 0, done.stderr
    assert "report.md" in done.stdout
    assert (tmp_path / "report.md").is_file() and len(list((tmp_path / "plots").glob("*.png"))) == 3
    assert "metrics" in json.loads((tmp_path / "results.json").read_text())


def test_cli_missing_results_exits_nonzero_with_one_line(tmp_path):
    done = run_cli(tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "results.json" in lines[0] and "not found" in lines[0]
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["models"][1].pop("test_correct"), "'models[1].test_correct'"),
    (lambda r: r["models"][2]["test_correct"].__setitem__(3, "yes"), "'models[2].test_correct[3]'"),
    (lambda r: r["models"][3]["test_correct"].pop(), "'models[3].test_correct'"),
    (lambda r: r["models"][0].pop("role"), "'models[0].role'"),
    (lambda r: r.update(models=[]), "'models'"),
    (lambda r: r.update(n_test=11), "'n_test'"),
    (lambda r: r.update(pairs={"a": 1}), "'pairs'"),
    (lambda r: r["models"][1].__setitem__("test_logits", [0.1] * 3), "'models[1].test_logits'"),
    (lambda r: r["models"][1]["test_logits"].__setitem__(2, "x"), "'models[1].test_logits[2]'"),
    (lambda r: r.update(schema_version=3), "'schema_version'"),
    (lambda r: [m.__setitem__("test_correct", []) for m in r["models"]] and r.pop("n_test"),
     "'models[0].test_correct'"),
])
def test_malformed_results_name_the_field(tmp_path, capsys, mutate, field):
    results = single_run()
    mutate(results)
    before = json.dumps(results)
    write(tmp_path, results)
    assert report.main([f"--workdir={tmp_path}", "--resamples=50"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.json" in err and field in err, err
    assert (tmp_path / "results.json").read_text() == before  # untouched


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["runs"][1].pop("seed"), "'runs[1].seed'"),
    (lambda r: r["runs"][0]["models"][2]["test_correct"].__setitem__(0, 0.5), "'runs[0].models[2].test_correct[0]'"),
    (lambda r: r["runs"][1].__setitem__("test_labels", [1] * 3), "'runs[1].test_labels'"),
    (lambda r: r.update(runs=[]), "'runs'"),
])
def test_malformed_schema_2_names_the_field(tmp_path, capsys, mutate, field):
    results = json.loads(json.dumps(schema2(single_run(), seeds=(0, 1))))
    mutate(results)
    write(tmp_path, results)
    assert report.main([f"--workdir={tmp_path}", "--resamples=50"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.json" in err and field in err, err


def test_invalid_json_is_reported(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{not json")
    assert report.main([f"--workdir={tmp_path}"]) == 2
    assert "not readable JSON" in capsys.readouterr().err
