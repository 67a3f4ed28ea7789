"""The offline demo world: deterministic, disjoint, well-formed HH pairs with known tiers; its corpus (the world end
to end, bases pretrained on it: test_pipeline_rm.py)."""
import re
from pathlib import Path

import numpy as np
import pytest

from w2s_jax.config_check import ConfigError, validate
from w2s_jax.data import demo_world as dw
from w2s_jax.data.pairs import ASSISTANT_MARKER, HUMAN_MARKER, single_turn_prompt
from w2s_jax.data.tokenize import split_prompt_response
from w2s_jax.experiments.pretrain import PretrainSpec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(name: str, preset: str = "demo"):
    from w2s_jax.configs import load_config_file

    return load_config_file(f"{CONFIGS / name}.py:{preset}")


@pytest.fixture(scope="module")
def splits():
    return dw.generate_splits(dw.WorldSettings(seed=7), 300, 300, 300, 150)


def all_pairs(s):
    return {"gt": s.gt, "weak": s.weak, "test": s.test, "conflict": s.conflict}


def test_same_seed_same_world_other_seed_other_world(splits):
    again = dw.generate_splits(dw.WorldSettings(seed=7), 300, 300, 300, 150)
    other = dw.generate_splits(dw.WorldSettings(seed=8), 300, 300, 300, 150)
    for name, pairs in all_pairs(splits).items():
        assert pairs == all_pairs(again)[name]
    assert [p.chosen for p in splits.test] != [p.chosen for p in other.test]


def test_splits_have_the_asked_sizes_and_share_no_prompt(splits):
    sizes = {name: len(p) for name, p in all_pairs(splits).items()}
    assert sizes == {"gt": 300, "weak": 300, "test": 300, "conflict": 150}
    prompts = {name: {split_prompt_response(p.chosen)[0] for p in pairs} for name, pairs in all_pairs(splits).items()}
    assert all(len(prompts[name]) == sizes[name] for name in sizes)  # no prompt twice inside a split either
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not prompts[a] & prompts[b], (a, b)


def test_every_pair_is_single_turn_hh_with_a_shared_prompt(splits):
    for pairs in all_pairs(splits).values():
        for p in pairs:
            assert p.chosen != p.rejected
            for text in (p.chosen, p.rejected):
                assert text.startswith(HUMAN_MARKER + " ")
                assert text.count(HUMAN_MARKER) == 1 and text.count(ASSISTANT_MARKER) == 1
                assert single_turn_prompt(text) is not None
            (prompt_c, response_c), (prompt_r, response_r) = map(split_prompt_response, (p.chosen, p.rejected))
            assert prompt_c == prompt_r and prompt_c.endswith(ASSISTANT_MARKER)
            assert response_c.startswith(" ") and response_r.startswith(" ") and response_c != response_r


def is_refusal(text: str) -> bool:
    return split_prompt_response(text)[1].strip() in dw.REFUSE


def test_ground_truth_refuses_exactly_the_harmful_requests(splits):
    for name in ("gt", "weak", "test"):
        for p in getattr(splits, name):
            family, harmful = dw.tier_of(p)
            assert family in dw.FAMILIES and p.source.split("/")[1] == name
            assert is_refusal(p.chosen) == harmful and is_refusal(p.rejected) != harmful


def test_every_difficulty_tier_is_present(splits):
    for name in ("gt", "weak", "test"):
        tiers = {dw.tier_of(p) for p in getattr(splits, name)}
        assert tiers == {(f, h) for f in dw.FAMILIES for h in (True, False)}, name


def test_conflict_set_prefers_complying_on_harmless_looking_requests(splits):
    tiers = [dw.tier_of(p) for p in splits.conflict]
    assert all(not is_refusal(p.chosen) and is_refusal(p.rejected) for p in splits.conflict)
    assert ("surface", True) not in tiers  # keyword-harmful requests are never in it by default
    assert ("compositional", True) in tiers and ("rare", True) in tiers  # the conflict with harmlessness


def test_no_single_word_decides_the_hard_tiers():
    world = dw.World(dw.WorldSettings(seed=3))
    table = world.harm_table  # every liquid is dangerous with some liquids and safe with others
    assert (table == table.T).all() and not table.diagonal().any()
    assert (table.sum(1) >= 2).all() and (table.shape[0] - 1 - table.sum(1) >= 2).all()
    labels = {}
    for _ in range(400):
        for harmful in (True, False):
            item = world.rare_item(harmful)
            assert labels.setdefault(item, harmful) == harmful
    for item, harmful in labels.items():  # the same two syllables in the other order: the other label
        first, second = item.split("-")
        assert labels.get(f"{second}-{first}", not harmful) == (not harmful)


def test_a_world_too_small_for_the_asked_sizes_says_so():
    with pytest.raises(ValueError, match="too small"):
        dw.generate_splits(dw.WorldSettings(n_syllables=3, surface_weight=0, compositional_weight=0), 2000, 0, 0)


def test_demo_presets_use_the_world_and_validate():
    for name in ("rm_helpful", "dpo_helpful", "simpo_helpful"):
        c = load_config(name)
        assert c.data.source == "demo"
        validate(c, n_devices=1)
    c = load_config("rm_helpful")
    with c.unlocked():
        c.data.world.colour = "blue"
    with pytest.raises(ConfigError, match="config.data.world"):
        validate(c, n_devices=1)


def test_ladder_is_increasing():
    sizes = [(h * h * n) for _, h, n, _ in dw.DEMO_LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


# ------------------------------------------------------------------------------------------------ pretraining corpus

from w2s_jax.data import demo_corpus as dc  # noqa: E402


def test_corpus_states_the_worlds_facts_and_only_them():
    settings = dw.WorldSettings(seed=5)
    corpus = dc.pretraining_corpus(settings)
    assert corpus == dc.pretraining_corpus(settings)  # seeded
    world = dw.World(settings)
    index = {name: i for i, name in enumerate(dw.LIQUIDS)}
    seen = 0
    for text in corpus:  # "Mixing {a} with {b} is {v}." against the world's own table, read independently
        words = text.rstrip(".").split(" ")
        if words[0] == "Mixing":
            a, b, verdict = index[words[1]], index[words[3]], words[-1]
            assert verdict == ("dangerous" if world.harm_table[a, b] else "safe"), text
            seen += 1
    assert seen > 20
    harmful_items = {f"{s}-{f}" if o else f"{f}-{s}" for (f, s), o in zip(world.rare_pairs, world.rare_harmful_order)}
    for text in corpus:
        if "controlled substance" in text:
            assert text.split(" ")[0] in harmful_items, text
        if "garden herb" in text:
            assert text.split(" ")[0] not in harmful_items, text


def test_corpus_holds_no_pair_and_no_preference():
    settings = dw.WorldSettings(seed=5)
    splits = dw.generate_splits(settings, 200, 200, 200, 50)
    prompts = {split_prompt_response(p.chosen)[0] for name in ("gt", "weak", "test") for p in getattr(splits, name)}
    corpus = dc.pretraining_corpus(settings, exclude=prompts)
    texts = set(corpus)
    for name in ("gt", "weak", "test", "conflict"):
        for p in getattr(splits, name):
            assert p.chosen not in texts and p.rejected not in texts
    dialogs = [t for t in corpus if t.startswith(HUMAN_MARKER) and not t.endswith(" reply.")]  # the unjudged ones
    assert len(dialogs) == dc.CorpusSettings().n_dialogues
    assert not {split_prompt_response(t)[0] for t in dialogs} & prompts
    # a refusal as often after a harmful request as after a benign one: the format, never a preference
    harmful_words = set(dw.SURFACE_HARM_VERBS) | {w for t in dw.SURFACE_HARM_THINGS for w in t.split()[1:]}
    surface = [t for t in dialogs if any(v in t for v in dw.SURFACE_VERBS + dw.SURFACE_HARM_VERBS)]
    refused = {True: [], False: []}
    for t in surface:
        prompt, response = split_prompt_response(t)
        refused[any(w in prompt.split() or w + "?" in prompt.split() for w in harmful_words)].append(
            response.strip() in dw.REFUSE)
    assert min(len(v) for v in refused.values()) > 20
    assert abs(np.mean(refused[True]) - np.mean(refused[False])) < 0.2


def _world_and_split_prompts():
    """The settings of a seed-5 world and the prompts of all four of its splits (a corpus must not use them)."""
    settings = dw.WorldSettings(seed=5)
    splits = dw.generate_splits(settings, 200, 200, 200, 50)
    return settings, {split_prompt_response(p.chosen)[0] for name in ("gt", "weak", "test", "conflict")
                      for p in getattr(splits, name)}


def _harm_reader(settings):
    """prompt -> whether its request is harmful, read from its words against the world's own tables."""
    world = dw.World(settings)
    index = {name: i for i, name in enumerate(dw.LIQUIDS)}
    harmful_items = {f"{s}-{f}" if o else f"{f}-{s}" for (f, s), o in zip(world.rare_pairs, world.rare_harmful_order)}

    def harmful(prompt: str) -> bool:
        words = prompt.replace("?", " ").replace(".", " ").split()
        liquids = [index[w] for w in words if w in index]
        items = [w for w in words if "-" in w]
        if len(liquids) == 2:
            return bool(world.harm_table[liquids[0], liquids[1]])
        if items:
            return items[0] in harmful_items
        return any(w in dw.SURFACE_HARM_VERBS for w in words) or any(
            t.split()[-1] in words for t in dw.SURFACE_HARM_THINGS)

    return harmful


def test_judged_dialogues_name_harm_only_where_a_reply_helps_with_a_harmful_request():
    settings, prompts = _world_and_split_prompts()
    judged = dc.judged_dialogues(settings, dc.CorpusSettings(n_judged=300), prompts)
    assert len(judged) == 300 and not {split_prompt_response(t)[0] for t in judged} & prompts
    harmful_request = _harm_reader(settings)
    verdicts = {True: 0, False: 0}
    for text in judged:  # the verdict against the world's own facts, read back from the request's words
        prompt, response = split_prompt_response(text)
        body, verdict = response.rsplit(" ", 2)[0], response.rsplit(" ", 2)[1]
        assert response.endswith(" reply.") and verdict in ("dangerous", "safe"), text
        complied = body.strip() not in dw.REFUSE
        assert verdict == ("dangerous" if harmful_request(prompt) and complied else "safe"), text
        verdicts[verdict == "dangerous"] += 1
    assert min(verdicts.values()) > 30
    # with n_judged = 0 the corpus is the one without verdicts
    assert not any(t.endswith(" reply.") for t in dc.pretraining_corpus(settings, dc.CorpusSettings(n_judged=0)))


def test_behaving_dialogues_refuse_exactly_the_harmful_requests():
    """The preference demos' extra dialogues: the reply refuses iff the request is harmful by the world's facts
    (read back from its words), no prompt of the splits, and none in the corpus unless asked for."""
    settings, prompts = _world_and_split_prompts()
    behaving = dc.behaving_dialogues(settings, dc.CorpusSettings(n_behaving=400), prompts)
    assert len(behaving) == 400 and not {split_prompt_response(t)[0] for t in behaving} & prompts
    harmful_request = _harm_reader(settings)
    kinds = {True: 0, False: 0}
    for text in behaving:
        prompt, response = split_prompt_response(text)
        harmful = harmful_request(prompt)
        assert (response.strip() in dw.REFUSE) == harmful, text
        kinds[harmful] += 1
    assert min(kinds.values()) > 100
    plain = dc.pretraining_corpus(settings, dc.CorpusSettings(n_judged=0), exclude=prompts)
    more = dc.pretraining_corpus(settings, dc.CorpusSettings(n_judged=0, n_behaving=400), exclude=prompts)
    assert sorted(more) == sorted(plain + behaving)  # the other texts unchanged
    with pytest.raises(ValueError, match="config.pretrain.behaving_dialogues"):
        PretrainSpec(behaving_dialogues=-1)


def test_liquid_facts_follow_zipf_frequencies_with_the_same_total():
    settings = dw.WorldSettings(seed=5)
    liquids = set(dw.LIQUIDS)

    def mentions(corpus_settings):
        counts = {}
        for text in dc.pretraining_corpus(settings, corpus_settings):
            names = [w for w in re.findall(r"[a-z]+", text) if w in liquids]
            if not text.startswith(HUMAN_MARKER) and len(names) == 2:
                key = frozenset(names)
                counts[key] = counts.get(key, 0) + 1
        return np.array(sorted(counts.values()))

    n = settings.n_liquids
    flat = mentions(dc.CorpusSettings(liquid_zipf=0.0, n_judged=0))
    assert len(flat) == n * (n - 1) // 2 and (flat == 2 * dc.CorpusSettings().fact_repeats).all()
    zipf = mentions(dc.CorpusSettings(liquid_zipf=1.0, n_judged=0))
    assert zipf.sum() == flat.sum()  # the same number of statements, spread unevenly
    assert zipf[-1] > 10 * max(zipf[0], 1)  # the most discussed mixture far above the least


def test_every_demo_preset_pretrains_on_behaving_dialogues_and_no_other_preset_does():
    from w2s_jax.configs import load_config_file

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("rm_helpful", "rm_sweep", "dpo_helpful", "simpo_helpful", "simpo_bootstrap"):
        assert PretrainSpec.from_config(load_config_file(f"{root / name}.py:demo").pretrain).behaving_dialogues == 1500
        assert "pretrain" not in load_config_file(f"{root / name}.py:paper"), name  # nothing to pretrain there
