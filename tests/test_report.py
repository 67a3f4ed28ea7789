"""report.py: metrics section, report.md and plots rebuilt from synthetic results.json files (single run, sweep)."""
import json
import math
import os
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from w2s_jax.eval import report

REPO = Path(__file__).resolve().parents[1]
N = 10
# Test examples 0-1: S_k&W_k, 2-3: S_uk&W_k, 4-7: S_k&W_uk (= R), 8-9: S_uk&W_uk.
WEAK = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
STRONG = [1, 1, 0, 0, 1, 1, 1, 1, 0, 0]
NO_CONFLICT = [1, 0, 1, 0, 1, 1, 1, 0, 1, 0]
IMPLICIT = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1]
EXPLICIT = [1, 1, 1, 0, 1, 1, 0, 1, 0, 0]


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def model(role, correct, model_id="gpt2-large"):
    correct = [bool(x) for x in correct]
    return {"role": role, "model_id": model_id, "fingerprint": "f" * 64, "checkpoint": f"models/{role}",
            "test_accuracy": sum(correct) / len(correct), "test_correct": correct, "test_logits": [0.5] * len(correct)}


def single_run():
    return {"experiment": "reward_model", "config": {"seed": 0}, "n_test": N, "test_labels": [1] * N,
            "models": [model("weak_ceiling", WEAK, "gpt2"), model("strong_ceiling", STRONG),
                       model("student_no_conflict", NO_CONFLICT), model("student_implicit", IMPLICIT),
                       model("student_explicit", EXPLICIT)]}


def sweep():
    rng = np.random.default_rng(3)
    random_pair = [model(role, rng.random(N) < 0.6) for role in
                   ("weak_ceiling", "strong_ceiling", "student_no_conflict", "student_implicit", "student_hc_gt",
                    "student_bootstrap_implicit")]
    return {"experiment": "simpo", "config": {}, "n_test": N, "test_labels": [0] * N, "models": [], "pairs": [
        {"name": "gpt2->gpt2-large", "weak": "gpt2", "strong": "gpt2-large", "weak_params": 124, "strong_params": 774,
         "models": single_run()["models"][:4] + [model("student_bootstrap", EXPLICIT)]},
        # The strong ceiling knows nothing the weak one does not: R is empty; and no no-conflict student.
        {"name": "gpt2-large->gpt2-xl", "weak": "gpt2-large", "strong": "gpt2-xl", "weak_params": 774,
         "strong_params": 1557, "models": [model("weak_ceiling", [1] * 6 + [0] * 4),
                                           model("strong_ceiling", [1] * 5 + [0] * 5),
                                           model("student_implicit", [0] + [1] * 9)]},
        {"name": "opt-125m->opt-1.3b", "weak": "opt-125m", "strong": "opt-1.3b", "weak_params": 125,
         "strong_params": 1300, "models": random_pair},
    ]}


def write(tmp_path, results):
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    """One sweep report shared by the tests that only read it: (workdir, metrics returned by build_report)."""
    workdir = write(tmp_path_factory.mktemp("sweep"), sweep())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return workdir, report.build_report(workdir)


def section(text, heading):
    """The lines of `text` from the heading line to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    body = start + len(heading) + 1
    end = min((m.start() for m in re.finditer(r"^#{1,%d} " % len(level), text[body:], re.M)), default=None)
    return text[start:] if end is None else text[start:body + end]


def test_single_run_numbers_match_hand_computation(tmp_path):
    metrics = report.build_report(write(tmp_path, single_run()))
    text = (tmp_path / "report.md").read_text()
    assert [p["name"] for p in metrics["pairs"]] == ["gpt2->gpt2-large"]
    assert "Capability gap Acc(S) - Acc(W) = 0.2000." in text
    for row in ("| weak_ceiling | gpt2 | 0.4000 | 0.0000 | 4 | 10 |",
                "| strong_ceiling | gpt2-large | 0.6000 | 1.0000 | 6 | 10 |",
                "| student_no_conflict | gpt2-large | 0.6000 | 1.0000 | 6 | 10 |",
                "| student_implicit | gpt2-large | 0.4000 | 0.0000 | 4 | 10 |",
                "| 4 | 6 | 6 | 4 | 2 | 2 | 2 | 4 |"):  # W_k W_uk S_k S_uk, then S_uk&W_uk S_uk&W_k S_k&W_k S_k&W_uk
        assert row in text, row
    implicit = section(text, "### implicit: student_implicit vs student_no_conflict")
    for row in ("| DS-A | 0.7500 | 3 | 4 |", "| DS-B (over N right in R) | 0.6667 | 2 | 3 |",
                "| DS-B (over \\|R\\|) | 0.5000 | 2 | 4 |", "| DS-C | 0.5000 | 3 | 6 |",
                "| S_uk&W_uk | 2 | 0 | 0.0000 | 0.0000 |", "| S_uk&W_k | 2 | 1 | 0.5000 | 0.3333 |",
                "| S_k&W_k | 2 | 0 | 0.0000 | 0.0000 |", "| S_k&W_uk | 4 | 2 | 0.5000 | 0.6667 |",
                "| W right, S right | 1 | 0 | 0 | 1 |", "| W right, S wrong | 0 | 1 | 0 | 1 |",
                "| W wrong, S right | 1 | 2 | 0 | 1 |", "| W wrong, S wrong | 1 | 0 | 1 | 0 |"):
        assert row in implicit, row
    explicit = section(text, "### explicit: student_explicit vs student_no_conflict")
    for row in ("| DS-A | 0.2500 | 1 | 4 |", "| DS-B (over N right in R) | 0.3333 | 1 | 3 |",
                "| DS-B (over \\|R\\|) | 0.2500 | 1 | 4 |", "| DS-C | 0.5000 | 1 | 2 |",
                "| S_uk&W_uk | 2 | 1 | 0.5000 | 0.5000 |", "| S_k&W_uk | 4 | 1 | 0.2500 | 0.5000 |"):
        assert row in explicit, row
    assert "| gpt2->gpt2-large | 0.2000 | implicit | 0.7500 | 0.6667 | 0.5000 | 0.5000 |" in text
    assert "## Definitions" in text and "|{x ∈ R : N right ∧ C wrong}| / |R|" in text

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["metrics"] == metrics
    assert on_disk["models"] == single_run()["models"] and on_disk["test_labels"] == [1] * N
    assert on_disk["metrics"]["pairs"][0]["settings"]["implicit"]["ds"]["ds_a"] == 0.75


def test_outputs_are_files_anyone_can_read_and_pngs_decode(sweep_report):
    tmp_path, _ = sweep_report
    for name in ("results.json", "report.md", "plots/accuracy.png", "plots/ds_vs_gap.png", "plots/regions.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    for name in ("accuracy", "ds_vs_gap", "regions"):
        image = imread(tmp_path / "plots" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_sweep_nan_is_null_with_notes(sweep_report):
    tmp_path, metrics = sweep_report
    first, degenerate, _ = metrics["pairs"]
    assert first["weak_params"] == 124 and first["capability_gap"] == pytest.approx(0.2)
    assert set(first["settings"]) == {"implicit", "bootstrap"}
    assert any("original weak_ceiling" in n for n in first["settings"]["bootstrap"]["notes"])
    assert first["settings"]["bootstrap"]["ds"]["ds_a"] == 0.25  # same vector as EXPLICIT above

    implicit = degenerate["settings"]["implicit"]
    assert implicit["baseline"] is None and implicit["table"] is None
    assert implicit["ds"] == {"ds_a": None, "ds_b_over_nc_right": None, "ds_b_over_region": None, "ds_c": 0.0}
    assert implicit["conflict_tax"]["S_k&W_uk"] == {"count": None, "rate": None, "share": None}
    assert any(n.startswith("DS-A is NaN") for n in implicit["notes"])
    assert any("region S_k&W_uk is empty" in n for n in degenerate["notes"])
    raw = (tmp_path / "results.json").read_text()
    strict = json.loads(raw, parse_constant=lambda name: pytest.fail(f"results.json holds {name}"))
    assert strict["metrics"]["nan_as"] == "null"

    text = (tmp_path / "report.md").read_text()
    block = section(text, "### implicit: student_implicit vs (no student_no_conflict)")
    assert "| DS-A | NaN | 0 | 0 |" in block and "- note: DS-A is NaN" in block
    assert "| gpt2-large->gpt2-xl | -0.1000 | implicit | NaN | NaN | NaN | 0.0000 |" in text


def reference(w, s, n, c):
    """An independent, direct reading of spec §4.3 (NaN for 0/0), for checking report.md."""
    w, s, c = (np.asarray(v, bool) for v in (w, s, c))
    region = s & ~w
    div = lambda a, b: a / b if b else math.nan  # noqa: E731
    out = {"DS-A": div((region & ~c).sum(), region.sum()), "DS-C": div((region & (c != s)).sum(), (c != s).sum())}
    if n is None:
        out["DS-B (over N right in R)"] = out["DS-B (over \\|R\\|)"] = math.nan
    else:
        n = np.asarray(n, bool)
        out["DS-B (over N right in R)"] = div((region & n & ~c).sum(), (region & n).sum())
        out["DS-B (over \\|R\\|)"] = div((region & n & ~c).sum(), region.sum())
    return out


def test_every_ds_in_report_md_matches_the_vectors(sweep_report):
    tmp_path, results = sweep_report[0], sweep()
    text = (tmp_path / "report.md").read_text()
    checked = 0
    for pair in results["pairs"]:
        vec = {m["role"]: m["test_correct"] for m in pair["models"]}
        pair_text = section(text, f"## Pair {pair['name']}")
        acc = {role: float(np.mean(v)) for role, v in vec.items()}
        for role, v in vec.items():
            gap = acc["strong_ceiling"] - acc["weak_ceiling"]
            row = re.search(rf"^\| {role} \| [^|]* \| ([^|]+) \| ([^|]+) \|", pair_text, re.M)
            assert float(row.group(1)) == pytest.approx(acc[role], abs=5e-5)
            if gap:
                assert float(row.group(2)) == pytest.approx((acc[role] - acc["weak_ceiling"]) / gap, abs=5e-5)
            else:
                assert row.group(2).strip() == "NaN"
        for role in vec:
            if not role.startswith("student_") or role == "student_no_conflict":
                continue
            baseline = "student_no_conflict" if "student_no_conflict" in vec else "(no student_no_conflict)"
            block = section(pair_text, f"### {role[len('student_'):]}: {role} vs {baseline}")
            for label, expected in reference(vec["weak_ceiling"], vec["strong_ceiling"],
                                             vec.get("student_no_conflict"), vec[role]).items():
                value = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|", block, re.M).group(1).strip()
                if math.isnan(expected):
                    assert value == "NaN", (pair["name"], role, label)
                else:
                    assert float(value) == pytest.approx(expected, abs=5e-5), (pair["name"], role, label)
                checked += 1
    assert checked == 4 * 6


def test_rerun_replaces_metrics(tmp_path):
    first = report.build_report(write(tmp_path, single_run()))
    second = report.build_report(tmp_path)
    assert first == second
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == first


def run_cli(workdir):
    return subprocess.run([sys.executable, "-m", "w2s_jax.report", f"--workdir={workdir}"], cwd=REPO,
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
])
def test_malformed_results_name_the_field(tmp_path, capsys, mutate, field):
    results = single_run()
    mutate(results)
    before = json.dumps(results)
    write(tmp_path, results)
    assert report.main([f"--workdir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.json" in err and field in err, err
    assert (tmp_path / "results.json").read_text() == before  # untouched


def test_invalid_json_is_reported(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{not json")
    assert report.main([f"--workdir={tmp_path}"]) == 1
    assert "not readable JSON" in capsys.readouterr().err
