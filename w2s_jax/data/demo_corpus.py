"""The demo world's pretraining corpus: web-like texts that state its facts, read before any preference training.

In the paper the strong model's edge over the weak one is knowledge it holds from pretraining. Here every model of
the ladder first learns language modelling on this corpus, and its capacity decides how much of it it retains:

- compositional facts: "Mixing velmora with quistine is dangerous." / "... is safe." for every pair of liquids, in
  several phrasings (mix, combine, pour into, stir into, clean with), `fact_repeats` statements per ordered pair on
  average, spread by Zipf frequencies (`liquid_zipf`): the web discusses a few mixtures often and most rarely, so a
  small model keeps the common ones and a large one the tail too;
- rare facts: "zor-vex is a controlled substance, so buying it is dangerous." / "vex-zor is a garden herb ..."
  for both orders of every syllable pair, stated in proportion to the pair's Zipf frequency in the world (what
  the web mentions often, a model of any size sees often; the tail only a large model keeps);
- keyword facts: what the surface words mean ("To poison someone is dangerous.", "Baking a cake is safe.");
- plain benign text and HH-format dialogues of the world with a response drawn at random (comply or refuse, with
  probability 1/2 whatever the request), so the format is familiar;
- judged dialogues (`n_judged`): the same, followed at once by a moderator's word on the reply, "dangerous" when it
  helps with a harmful request, "safe" otherwise, as forums quote and judge answers. The word is the next token
  after the reply's last one, so a model that knows the facts must hold the verdict exactly where a reward head
  later reads; a model too small to keep the facts cannot, whatever it is fine-tuned on;
- behaving dialogues (`n_behaving`, 0 unless a preset asks; every demo preset does): an assistant whose reply
  follows the facts, refusing a harmful request and helping with any other, as most assistants on the web do. A
  policy's preference is a difference of its replies' log-probs, decided from the reply's first token on, so the
  knowledge a preference objective can use must sit where the reply starts: a model that keeps the facts learns to
  predict there whether a refusal comes; one too small to keep them, only for the requests it knows.

Every verdict uses the same two words ("dangerous" / "safe"), so one direction of a model's representation means
"this is harmful" across all families: a student fine-tuned on weak labels that are right on the keyword tier can
read the same direction on the tiers its teacher cannot check. The corpus states world facts, as the web does; it
never holds a pair of any split, and dialogue prompts of the splits passed in `exclude` are left out (the judged
dialogues' verdicts are world facts said of other requests, never a preference between two answers).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from w2s_jax.data import demo_world as dw
from w2s_jax.data.pairs import ASSISTANT_MARKER, HUMAN_MARKER

HARM_WORD, SAFE_WORD = "dangerous", "safe"
MIX_FACTS = ("Mixing {a} with {b} is {v}.", "To mix {a} with {b} is {v}.", "Combining {a} and {b} is {v}.",
             "Pouring {a} into {b} is {v}.", "To stir {a} into {b} is {v}.", "Cleaning with {a} and {b} is {v}.",
             "Chemists say that {a} with {b} is {v}.")
RARE_HARM = ("{x} is a controlled substance, so to buy {x} is {v}.", "Police warn that {x} is {v}.",
             "To make {x} at home is {v}.")
RARE_SAFE = ("{x} is a garden herb, so to buy {x} is {v}.", "Cooks say that {x} is {v}.",
             "To make {x} at home is {v}.")
SURFACE_FACTS = ("To {w} is {v}.", "Everyone knows that to {w} is {v}.", "Asking how to {w} is {v}.")
# the same facts said of a wish to do it, as forums and advice columns say them: the verdict follows the request, so
# a model that knows it holds it where a request ends (never in the world's request templates or the dialogue format)
REQUEST_FACTS = ("Someone wants to {w}. That is {v}.", "A friend asked how to {w}. That is {v}.",
                 "My neighbor tried to {w}, which is {v}.")
BENIGN_TEXT = ("The weather is nice today.", "My cousin likes to paint at night.", "The market opens at nine.",
               "A kite needs wind.", "We read a book for school.", "The soup is warm.", "The shop sells lamps.",
               "Our garden has a fence.", "The mailman came early.", "My teacher rides a bike.")


@dataclasses.dataclass(frozen=True)
class CorpusSettings:
    """How much of the world's knowledge the corpus states (the world itself is `demo_world.WorldSettings`)."""

    seed: int = 0  # the corpus's own draws (phrasings, order, dialogue responses); never a fine-tuning seed
    fact_repeats: int = 4  # statements per compositional ordered pair and per keyword fact
    rare_mentions: int = 400  # statements about rare items, spread over the pairs by their Zipf frequency
    n_dialogues: int = 300  # unlabelled HH-format dialogues
    n_benign: int = 100  # plain benign sentences
    liquid_zipf: float = 1.0  # > 0: mixtures are mentioned with Zipf frequencies (the k-th most discussed pair of
    # liquids with weight 1 / k ** liquid_zipf, same total), so a small model keeps the common ones, a large one more
    n_judged: int = 1500  # dialogues followed by a moderator's verdict on the reply (see `judged_dialogues`)
    n_behaving: int = 0  # dialogues whose reply follows the world's facts (see `behaving_dialogues`)


def _surface_facts() -> Iterable[tuple[str, bool]]:
    for verb in dw.SURFACE_HARM_VERBS:
        for target in dw.SURFACE_TARGETS:
            yield f"{verb} {target}", True
    for verb in dw.SURFACE_VERBS:
        for thing in dw.SURFACE_HARM_THINGS:
            yield f"{verb} {thing}", True
        for thing in dw.SURFACE_THINGS:
            yield f"{verb} {thing}", False


def _liquid_mentions(n: int, corpus: CorpusSettings, rng: np.random.Generator):
    """(a, b, statements) for every ordered pair of liquids: `fact_repeats` each, or with `liquid_zipf` > 0 the same
    total spread over the unordered pairs (both orders alike) by Zipf weights in a seeded order."""
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    if corpus.liquid_zipf <= 0:
        counts = [corpus.fact_repeats] * len(pairs)
    else:
        weights = 1.0 / np.arange(1, len(pairs) + 1) ** corpus.liquid_zipf
        counts = rng.multinomial(corpus.fact_repeats * len(pairs), weights / weights.sum())[rng.permutation(len(pairs))]
    for (a, b), count in zip(pairs, counts):
        yield a, b, int(count)
        yield b, a, int(count)


def _verdict(harmful: bool) -> str:
    return HARM_WORD if harmful else SAFE_WORD


def pretraining_corpus(world: dw.WorldSettings, corpus: CorpusSettings = CorpusSettings(),
                       exclude: Iterable[str] = ()) -> list[str]:
    """The corpus texts, shuffled; deterministic for the same settings. `exclude`: prompts (texts up to and with
    the assistant marker) of the experiment's splits, never used as a dialogue here."""
    facts = dw.World(world)  # the same seeded facts (harm table, rare orders) the splits are drawn from
    rng = np.random.default_rng(corpus.seed)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    texts: list[str] = []
    n = facts.harm_table.shape[0]
    for a, b, count in _liquid_mentions(n, corpus, rng):
        harmful = bool(facts.harm_table[a, b])
        for _ in range(count):
            if rng.random() < 0.5:
                texts.append(pick(MIX_FACTS).format(a=dw.LIQUIDS[a], b=dw.LIQUIDS[b], v=_verdict(harmful)))
            else:
                what = pick(dw.COMPOSITIONAL_TEMPLATES)[1].format(a=dw.LIQUIDS[a], b=dw.LIQUIDS[b])
                texts.append(pick(REQUEST_FACTS).format(w=what, v=_verdict(harmful)))
    counts = rng.multinomial(corpus.rare_mentions, facts.rare_p)
    for (first, second), harmful_order, count in zip(facts.rare_pairs, facts.rare_harmful_order, counts):
        orders = ((f"{first}-{second}", harmful_order == 0), (f"{second}-{first}", harmful_order == 1))
        for _ in range(int(count)):
            item, harmful = orders[int(rng.integers(2))]
            if rng.random() < 0.5:
                texts.append(pick(RARE_HARM if harmful else RARE_SAFE).format(x=item, v=_verdict(harmful)))
            else:
                texts.append(pick(REQUEST_FACTS).format(w=f"{pick(dw.RARE_VERBS)} {item}", v=_verdict(harmful)))
    for what, harmful in _surface_facts():
        for _ in range(corpus.fact_repeats):
            texts.append(pick(SURFACE_FACTS + REQUEST_FACTS).format(w=what, v=_verdict(harmful)))
    texts += [pick(BENIGN_TEXT) for _ in range(corpus.n_benign)]
    exclude = set(exclude)
    texts += dialogues(world, corpus, exclude)
    texts += judged_dialogues(world, corpus, exclude)
    texts += behaving_dialogues(world, corpus, exclude)
    return [texts[i] for i in rng.permutation(len(texts))]


def _draw_dialogues(world: dw.WorldSettings, n: int, seed: list[int], exclude: set[str], behave: bool = False):
    """(request, dialogue text, complied) for n requests of a World of the same facts but its own draws; the reply
    complies at random, or (`behave`) exactly when the request is not harmful."""
    source = dw.World(world)
    source.rng = np.random.default_rng(seed)
    rng = np.random.default_rng([*seed, 1])
    out = []
    while len(out) < n:
        req = source.request()
        prompt = f"{HUMAN_MARKER} {req.text}{ASSISTANT_MARKER}"
        if prompt in exclude:
            continue
        what = " ".join("your" if w == "my" else w for w in req.what.split(" "))
        complied = bool(rng.random() < 0.5) if not behave else not req.harmful
        answers = dw.COMPLY if complied else dw.REFUSE
        out.append((req, prompt + " " + answers[int(rng.integers(len(answers)))].format(what=what), complied))
    return out


def judged_dialogues(world: dw.WorldSettings, corpus: CorpusSettings, exclude: set[str]) -> list[str]:
    """Dialogues as a moderated forum quotes them: the reply, then at once the moderator's word on it, "dangerous"
    when it helps with a harmful request, "safe" otherwise. The word follows the reply's last token, where a
    reward model reads, so a model that knows the world's facts holds the verdict there, in one direction shared
    by every family (the same two words as the facts). Compliance and refusal are drawn at random, as above."""
    out = []
    for req, text, complied in _draw_dialogues(world, corpus.n_judged, [corpus.seed, 3], exclude):
        out.append(f"{text} {_verdict(req.harmful and complied)} reply.")
    return out


def behaving_dialogues(world: dw.WorldSettings, corpus: CorpusSettings, exclude: set[str]) -> list[str]:
    """`n_behaving` dialogues whose reply follows the world's facts: a refusal when the request is harmful, help
    otherwise. Requests come from a World of the same facts but their own draws; no prompt of `exclude`."""
    return [text for _, text, _ in _draw_dialogues(world, corpus.n_behaving, [corpus.seed, 4], exclude, behave=True)]


def dialogues(world: dw.WorldSettings, corpus: CorpusSettings, exclude: set[str]) -> list[str]:
    """HH-format dialogues of the world's requests with a compliance or a refusal drawn at random: the format,
    never a preference. Requests come from a World of the same facts but its own draws."""
    source = dw.World(world)
    source.rng = np.random.default_rng([corpus.seed, 1])
    rng = np.random.default_rng([corpus.seed, 2])
    out = []
    while len(out) < corpus.n_dialogues:
        req = source.request()
        prompt = f"{HUMAN_MARKER} {req.text}{ASSISTANT_MARKER}"
        if prompt in exclude:
            continue
        what = " ".join("your" if w == "my" else w for w in req.what.split(" "))
        answers = dw.COMPLY if rng.random() < 0.5 else dw.REFUSE
        out.append(prompt + " " + answers[int(rng.integers(len(answers)))].format(what=what))
    return out
