"""report.html and predictions.jsonl from a hand-made results.json, opened in a real headless Chromium.

Test examples 0-1: S_k&W_k, 2-3: S_uk&W_k, 4-7: S_k&W_uk, 8-9: S_uk&W_uk (weak/strong ceilings' correctness).
The implicit student flips against the no-conflict one (N right, C wrong) on examples 2, 5 and 6 only.
"""
import html
import json
import re
import shutil
import subprocess
from urllib.parse import quote

import pytest

from w2s_jax.data.pairs import Pair
from w2s_jax.eval import report
from w2s_jax.eval.predictions import read_predictions, write_predictions

N = 10
WEAK = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
STRONG = [1, 1, 0, 0, 1, 1, 1, 1, 0, 0]
NO_CONFLICT = [1, 0, 1, 0, 1, 1, 1, 0, 1, 0]
IMPLICIT = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1]
FLIPS = {2: "S_uk&W_k", 5: "S_k&W_uk", 6: "S_k&W_uk"}
LABELS = [1, 0, 1, 1, 0, 1, 0, 0, 1, 0]  # side A is the chosen answer where 1
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def entry(role, correct, scale):
    # a logit for side A whose sign gives the model's hard choice: right iff sign agrees with the label
    logits = [scale * (k + 1) * (1 if (lab == 1) == bool(c) else -1) for k, (c, lab) in enumerate(zip(correct, LABELS))]
    return {"role": role, "model_id": "m", "fingerprint": "f" * 64, "checkpoint": f"models/{role}",
            "test_accuracy": sum(correct) / N, "test_correct": [bool(c) for c in correct], "test_logits": logits}


def results():
    models = [entry("weak_ceiling", WEAK, 0.1), entry("strong_ceiling", STRONG, 0.2),
              entry("student_no_conflict", NO_CONFLICT, 0.3), entry("student_implicit", IMPLICIT, 0.4)]
    return {"schema_version": 2, "experiment": "reward_model", "config": {"seeds": "0"}, "n_test": N, "seeds": [0],
            "test_labels": LABELS, "runs": [{"seed": 0, "test_labels": LABELS, "models": models}]}


def pairs():
    return [Pair(f"\n\nHuman: question {k} about zanzibar{k}?\n\nAssistant: safe answer {k}",
                 f"\n\nHuman: question {k} about zanzibar{k}?\n\nAssistant: harmful answer {k}", "harmless_test.jsonl",
                 k + 1) for k in range(N)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    res = results()
    (out / "results.json").write_text(json.dumps(res))
    write_predictions(out, res, pairs())
    report.build_report(out, resamples=200)
    return out


def test_predictions_lines_hold_texts_regions_and_margins(workdir):
    rows = read_predictions(workdir / "predictions.jsonl")
    assert [r["id"] for r in rows] == list(range(N))
    r5 = rows[5]
    assert (r5["source"], r5["line"], r5["region"]) == ("harmless_test.jsonl", 6, "S_k&W_uk")
    assert r5["prompt"] == "\n\nHuman: question 5 about zanzibar5?\n\nAssistant:"
    assert (r5["chosen"], r5["rejected"], r5["ground_truth"]) == (" safe answer 5", " harmful answer 5", "chosen")
    # margin for the ground truth, by hand: right -> +scale*(k+1), wrong -> -scale*(k+1)
    assert r5["margins"]["student_implicit"] == pytest.approx(-0.4 * 6)
    assert r5["margins"]["student_no_conflict"] == pytest.approx(0.3 * 6)
    assert rows[0]["label_a"] == 1 and rows[1]["label_a"] == 0
    assert [r["region"] for r in rows[:4]] == ["S_k&W_k", "S_k&W_k", "S_uk&W_k", "S_uk&W_k"]


def test_html_is_self_contained_and_lists_exactly_the_flips(workdir):
    page = (workdir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must fetch nothing"
    assert page.count("data:image/png;base64,") == 3
    ids = sorted(int(m) for m in re.findall(r'<tr data-region="[^"]*" data-setting="implicit"><td>[^<]*</td>'
                                            r'<td>implicit</td><td>0</td><td>(\d+)</td>', page))
    assert ids == sorted(FLIPS)
    assert page.index("Findings") < page.index("Flipped examples") < page.index("<h2>Summary</h2>")


def chromium(args, tmp):
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_opens_in_headless_chromium_findings_flip_visible_and_filter_works(workdir, tmp_path):
    url = (workdir / "report.html").as_uri()
    shot = tmp_path / "report.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1400,2400", url], tmp_path)
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    print(f"\nscreenshot of report.html: {shot}")
    dom = chromium(["--dump-dom", url], tmp_path).stdout
    assert "Findings" in dom and "deception contrast" in dom
    assert "safe answer 5" in dom and "harmful answer 5" in dom  # a flipped example with its texts
    rows = flip_tags(dom)
    assert sorted(r for r, _ in rows) == sorted(FLIPS.values()) and not any(h for _, h in rows)
    assert re.search(r'id="shown">3<', dom)  # the script ran: it rewrote the count
    # a fragment that sets the region filter: the script hides the S_uk&W_k row and counts 2 shown
    rows = flip_tags(chromium(["--dump-dom", url + "#region=" + quote("S_k&W_uk")], tmp_path).stdout)
    assert sorted(r for r, h in rows if h) == ["S_uk&W_k"] and len(rows) == 3
    text = chromium(["--dump-dom", url + "#q=zanzibar6"], tmp_path).stdout
    assert sum(h for _, h in flip_tags(text)) == 2 and re.search(r'id="shown">1<', text)


def flip_tags(dom):
    """(region, hidden) of each row of the flip table, whatever order the browser writes the attributes in."""
    tags = re.findall(r"<tr [^>]*data-setting=[^>]*>", dom)
    return [(html.unescape(re.search(r'data-region="([^"]*)"', t).group(1)), " hidden" in t) for t in tags]
