"""Synthetic results.json files (a single run, a sweep, three seeds) and readers of report.md for the report tests."""
import json
import re
import warnings

import numpy as np
import pytest

from w2s_jax.eval import report

N = 10
RESAMPLES = 300  # enough for the tests; the numbers checked here do not depend on it
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


def schema2(results, seeds=(0,), variants=None):
    """The same run as schema 2: one `runs` entry per seed (`variants[k]` replaces seed k's models)."""
    runs = [{"seed": s, "test_labels": results["test_labels"],
             "models": (variants[k] if variants else results["models"])} for k, s in enumerate(seeds)]
    return {"schema_version": 2, "experiment": results["experiment"], "config": {"seeds": list(seeds)},
            "n_test": results["n_test"], "seeds": list(seeds), "test_labels": results["test_labels"], "runs": runs}


def build(workdir):
    return report.build_report(workdir, resamples=RESAMPLES)


def section(text, heading):
    """The lines of `text` from the heading line to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    body = start + len(heading) + 1
    end = min((m.start() for m in re.finditer(r"^#{1,%d} " % len(level), text[body:], re.M)), default=None)
    return text[start:] if end is None else text[start:body + end]


def tables(text):
    """Every markdown table of `text` as a list of its lines."""
    out, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            out.append(current)
            current = []
    return out


def three_seeds():
    """Seed 0 is single_run(); seeds 1 and 2 move some answers (hand-chosen)."""
    base = single_run()["models"]
    seed1 = [model(m["role"], m["test_correct"], m["model_id"]) for m in base]
    seed1[0] = model("weak_ceiling", [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], "gpt2")  # weak also right on 4
    seed1[3] = model("student_implicit", [1, 1, 1, 0, 1, 1, 0, 0, 1, 1])
    seed2 = [model(m["role"], m["test_correct"], m["model_id"]) for m in base]
    seed2[1] = model("strong_ceiling", [1, 1, 1, 0, 1, 1, 1, 1, 1, 0])
    return [base, seed1, seed2]
