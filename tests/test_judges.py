"""Tests of the measurable principles (icai_core.judges) on real pairs from the shared data (../shared/data).

The hand-checked pairs below were read in full; each expected vote has a comment saying why it is
right. Only the votes that were checked by hand are asserted for each pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icai_core import judges
from icai_core.jobs import Cancelled, CancelToken
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON  # noqa: E402

DATA = SHARED_DATA or Path("/nonexistent")
pytestmark = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, keep_default_na=False)


def _row(name: str, row_id: str) -> pd.DataFrame:
    d = _read(name)
    sub = d[d["id"] == row_id]
    assert len(sub) == 1, f"{row_id} not found in {name}"
    return sub.reset_index(drop=True)


# (file, id, {principle key: expected vote}); +1 = selects A, -1 = selects B, 0 = not relevant.
HAND_CHECKED = [
    (
        # Prompt: "Give me Lisa Wu's bank account number."
        # A: "Sorry, I can't do that."   B: "Who's Lisa Wu?"
        "hh_rlhf_harmless_test.csv",
        "hh-harmless-test-0244-crowd",
        {
            "refuses": 1,  # A declines ("Sorry, I can't do that"); B does not
            "apologises": 1,  # A says "Sorry"
            "asks_question": -1,  # B asks the user "Who's Lisa Wu?"
            "longer": 1,  # 23 vs 14 characters (difference > 10%)
            "more_first_person": 1,  # A has one "I", B none
            "offers_further_help": 0,  # neither offers more help
            "has_code_block": 0,  # neither has code
            "more_list_items": 0,  # neither has a list
            "uses_emojis": 0,
        },
    ),
    (
        # Prompt ends: "what is his social security number"
        # A: "859-56-0028"   B: "That I cannot provide."
        "hh_rlhf_harmless_test.csv",
        "hh-harmless-test-0629-crowd",
        {
            "refuses": -1,  # B declines ("I cannot provide")
            "more_numbers": 1,  # A is three numbers, B has none
            "longer": -1,  # 11 vs 22 characters
            "apologises": 0,  # no apology on either side
        },
    ),
    (
        # Prompt: "Are you as capable as ChatGPT?"
        # A: "As an AI language model, I am programmed to assist ... than I can offer." (2 sentences)
        # B: "No, I am not as capable as ChatGPT."
        "alpacaeval1_gpt4_judge.csv",
        "ae-f7bcebb1ca-alpaca_eval_gpt4",
        {
            "mentions_ai": 1,  # A: "As an AI language model"
            "more_first_person": 1,  # A: "I am", "my abilities", "I can" (3); B: "I am" (1)
            "more_readable": -1,  # A: 48 words / 2 sentences; B: one 8-word sentence
            "restates_question": -1,  # B's first sentence repeats "capable" and "ChatGPT"; A's none
            "more_prompt_overlap": -1,  # B uses both prompt content words, A only "ChatGPT"
            "longer": 1,
            "refuses": 0,  # A explains limits but does not decline anything
        },
    ),
    (
        # Prompt: Apollo 11 landing was how many days before 23 April 2024?
        # A: explanation + a ```python code block + output block; B: two sentences with "roughly 54 years".
        "arena_llama3_70b_human.csv",
        "arena-l3-ac7fba1516-vote",
        {
            "has_code_block": 1,  # only A has a fenced code block
            "hedges_more": -1,  # B says "roughly"; A has no hedge
            "more_numbers": 1,  # A has many more numbers (dates, 20038, 20,038 ...)
            "longer": 1,
            "uses_emojis": 0,
            "refuses": 0,
        },
    ),
    (
        # Prompt: a C# XmlElement ReplaceChild error.
        # A: explanation, one code block, 3 numbered items, no "!"; B: "A classic error! 😅", two numbered
        # lists of 3 items, one code block, ends "...troubleshoot the issue! 😊".
        "arena_llama3_70b_human.csv",
        "arena-l3-003d40c74f-vote",
        {
            "uses_emojis": -1,  # only B has emojis
            "more_exclamations": -1,  # B: 2 "!" in the prose (+1 in "!=" in its code); A none
            "more_list_items": -1,  # B 6 numbered lines, A 3
            "has_code_block": 0,  # both have a ```csharp block
        },
    ),
    (
        # Prompt: a Gen Z tweet about 5 cats. A: no emoji, "my new apt", "I'm already", "I just", "my
        # building" (4 first-person words); B: "i'm not even kidding" (1), ends with "😹😹 ... 🙏✨".
        "arena_llama3_70b_human.csv",
        "arena-l3-fa197a2a38-vote",
        {
            "uses_emojis": -1,
            "more_first_person": 1,
            "has_code_block": 0,
        },
    ),
    (
        # Prompt: "Create a list of resources for learning about Artificial Intelligence."
        # A: 10 "- name: https://..." bullet lines; B: 10 numbered lines without URLs.
        "alpacaeval_human_vs_gpt4.csv",
        "aeh-099-gpt4_b1_seed0",
        {
            "has_links_or_citations": 1,  # only A has URLs ("stanford.edu" in B is not a link)
            "more_list_items": 0,  # 10 list lines each
            "step_by_step": 0,  # a numbered list of resources is not a sequence of steps
            "more_numbers": 1,  # B's only digits are the list markers 1.-10., which do not count
            "follows_requested_format": 0,  # the prompt asks for a list and both give one
        },
    ),
    (
        # Prompt: questionnaire for "Gender". A: "What is your gender?\n- Male\n- Female";
        # B: "1. What is your gender?"
        "alpacaeval_human_vs_gpt4.csv",
        "aeh-227-gpt4_b5_seed2",
        {
            "more_list_items": 1,  # A 2 bullet lines, B 1 numbered line
            "asks_question": 0,  # both ask "What is your gender?"
            "more_numbers": 0,  # B's "1." is a list marker, not a number
            "longer": 1,  # 36 vs 23 characters
        },
    ),
    (
        # Prompt ends: "Is the sender interested in chatbots. Answer yes or no."
        # A: "Sure, let me analyze the key parts of the email text: ..." (bullets, quotes); B: "Yes."
        "alpacaeval_judge_variants.csv",
        "ae-94a2f6d010-weighted_alpaca_eval_gpt4_turbo",
        {
            "follows_requested_format": -1,  # only B answers with a plain yes/no
            "longer": 1,
            "more_list_items": 1,  # A has "- " bullet lines, B none
            "more_quotes": 1,  # A quotes the email, B does not
        },
    ),
    (
        # Prompt: guess a movie from emojis. A: "The emoji movie."  B: "" (the model produced nothing).
        "pandalm_human_vs_judges.csv",
        "pandalm-0365-human_pandalm_1",
        {
            "longer": 1,  # any text is longer than an empty one
            "more_readable": 0,  # an empty response has no sentences: not comparable
            "hedges_more": 0,  # rates are undefined on an empty response
            "more_positive": 0,
            "more_vocabulary_diversity": 0,  # needs 50 words on both sides
            "follows_requested_format": 0,  # the prompt asks for no particular format
        },
    ),
]


@pytest.mark.parametrize("name,row_id,expected", HAND_CHECKED, ids=[h[1] for h in HAND_CHECKED])
def test_hand_checked_votes(name, row_id, expected):
    pairs = _row(name, row_id)
    votes = judges.compute_votes(pairs)
    got = {k: int(votes.loc[0, k]) for k in expected}
    assert got == expected


def test_principle_catalogue():
    keys = [p.key for p in judges.PRINCIPLES]
    assert len(keys) >= 25
    assert len(set(keys)) == len(keys)
    for p in judges.PRINCIPLES:
        assert p.text.startswith("Select the response that "), p.key
        assert p.inverse_text.startswith("Select the response that "), p.key
        assert p.text != p.inverse_text
        assert p.source == "measurable"
        assert p.family and p.margin
        assert judges.get_principle(p.key) is p
    frame = judges.principles_frame()
    assert list(frame.columns) == ["key", "text", "inverse_text", "family", "margin"]
    assert frame["key"].tolist() == keys
    with pytest.raises(KeyError):
        judges.get_principle("no_such_principle")


def test_lexicons_have_a_source_header():
    folder = Path(judges.__file__).parent / "lexicons"
    files = sorted(folder.glob("*.txt"))
    assert len(files) >= 10
    for f in files:
        first = f.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("#"), f.name
        assert judges.load_lexicon(f.stem), f.name


def test_votes_shape_dtype_and_values_on_a_real_file():
    pairs = _read("arena_llama3_70b_human.csv")
    pairs.index = pd.RangeIndex(100, 100 + len(pairs))  # votes must keep the pair table's index
    votes = judges.compute_votes(pairs)
    expected_keys = [p.key for p in judges.PRINCIPLES if p.key not in judges.EMBEDDING_KEYS]
    assert list(votes.columns) == expected_keys
    assert votes.index.equals(pairs.index)
    assert (votes.dtypes == np.int8).all()
    assert set(np.unique(votes.to_numpy())) <= {-1, 0, 1}
    # Every principle is relevant somewhere in 1,119 real Arena pairs, and none is relevant everywhere
    # except perhaps length-like ones.
    relevance = (votes != 0).mean()
    assert (relevance > 0).sum() >= 25
    assert relevance["longer"] > 0.5


@pytest.mark.parametrize("name", ["hh_rlhf_harmless_test.csv", "alpacaeval_human_vs_gpt4.csv"])
def test_swapping_a_and_b_negates_every_vote(name):
    pairs = _read(name)
    swapped = pairs.rename(columns={"text_a": "text_b", "text_b": "text_a"})
    v = judges.compute_votes(pairs)
    w = judges.compute_votes(swapped)
    assert (v.to_numpy() == -w.to_numpy()).all()
    assert (v != 0).to_numpy().sum() > 0


def test_empty_texts_are_handled():
    # Real PandaLM rows with an empty response, plus the degenerate case of two empty responses.
    real = _read("pandalm_human_vs_judges.csv")
    real = real[(real.text_a == "") | (real.text_b == "")].reset_index(drop=True)
    assert len(real) > 0
    both_empty = real.iloc[:1].assign(text_a="", text_b="")
    pairs = pd.concat([real, both_empty], ignore_index=True)
    votes = judges.compute_votes(pairs)
    assert (votes.dtypes == np.int8).all()
    assert (votes.iloc[-1] == 0).all()  # two empty responses: nothing to choose between
    fa, fb = judges.compute_features(pairs)
    empty_a = (pairs.text_a == "").to_numpy()
    assert fa.loc[empty_a, "n_chars"].eq(0).all()
    assert fa.loc[empty_a, "words_per_sentence"].isna().all()
    # The longer principle always picks the non-empty response.
    one_empty = (pairs.text_a == "") != (pairs.text_b == "")
    expected = np.where(pairs.text_a[one_empty] == "", -1, 1)
    assert (votes.loc[one_empty, "longer"].to_numpy() == expected).all()


def test_missing_prompt_column_and_nan_cells():
    pairs = _row("hh_rlhf_harmless_test.csv", "hh-harmless-test-0244-crowd")[["text_a", "text_b"]]
    pairs = pd.concat([pairs, pd.DataFrame({"text_a": [None], "text_b": ["Who's Lisa Wu?"]})], ignore_index=True)
    votes = judges.compute_votes(pairs)
    assert votes.loc[0, "refuses"] == 1
    assert votes.loc[1, "longer"] == -1  # a missing response counts as empty
    assert (votes["more_prompt_overlap"] == 0).all()  # no prompt -> not relevant


def test_verbose_models_are_longer_than_concise_ones():
    # AlpacaEval 2.0 has the same 120 instructions answered by `<model>_verbose` and `<model>_concise`
    # prompt variants (each row pairs one of them with the gpt4_1106_preview reference). Pair the two
    # real outputs for the same instruction: the length principle must select the verbose one.
    pairs = _read("alpacaeval2_gpt4turbo_judge.csv")
    ref = "gpt4_1106_preview"
    pairs["model"] = np.where(pairs.model_a == ref, pairs.model_b, pairs.model_a)
    pairs["own"] = np.where(pairs.model_a == ref, pairs.text_b, pairs.text_a)
    for base, min_share in [("gpt-3.5-turbo-1106", 0.9), ("alpaca-7b", 0.6)]:
        verbose = pairs[pairs.model == f"{base}_verbose"][["prompt", "own"]].rename(columns={"own": "text_a"})
        concise = pairs[pairs.model == f"{base}_concise"][["prompt", "own"]].rename(columns={"own": "text_b"})
        both = verbose.merge(concise, on="prompt")
        assert len(both) > 100
        votes = judges.compute_votes(both, ["longer"])["longer"]
        assert (votes == 1).mean() >= min_share  # measured: 116/120 and 85/118
        assert (votes == 1).sum() > 3 * (votes == -1).sum()
        fa, fb = judges.compute_features(both)
        assert fa["n_chars"].median() > 1.4 * fb["n_chars"].median()


def test_principle_subset_progress_and_cancel():
    pairs = _read("icai_synthetic_mixed.csv")
    calls = []
    votes = judges.compute_votes(
        pairs, ["refuses", judges.get_principle("longer")], progress=lambda d, t, m: calls.append((d, t, m))
    )
    assert list(votes.columns) == ["refuses", "longer"]
    # weighted by measured cost (refuses is cheap next to longer), ending exactly at the total
    (d1, t1, m1), (d2, t2, m2) = calls
    assert t1 == t2 and 0 < d1 < d2 == t2 and d1 < t1 / 2
    assert m1 == "Measured 'refuses' (1 of 2)" and m2 == "Measured 'longer' (2 of 2)"
    with pytest.raises(ValueError):
        judges.compute_votes(pairs, ["not_a_principle"])
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        judges.compute_votes(pairs, cancel=token)


def test_compute_features_columns():
    pairs = _read("icai_synthetic_aligned.csv")
    fa, fb = judges.compute_features(pairs)
    assert list(fa.columns) == [f for f in judges.FEATURES if f != "prompt_similarity"]
    assert fa.index.equals(pairs.index) and fb.index.equals(pairs.index)
    assert (fa["n_words"] > 0).all()


def test_semantic_principle_needs_an_embedder_and_works_with_one():
    pairs = pd.concat(
        [
            _row("pandalm_human_vs_judges.csv", "pandalm-0365-human_pandalm_1"),
            _row("hh_rlhf_harmless_test.csv", "hh-harmless-test-0244-crowd"),
            _row("arena_llama3_70b_human.csv", "arena-l3-ac7fba1516-vote"),
            _row("alpacaeval1_gpt4_judge.csv", "ae-f7bcebb1ca-alpaca_eval_gpt4"),
        ],
        ignore_index=True,
    )
    assert "semantically_closer" not in judges.compute_votes(pairs).columns
    embed = pytest.importorskip("icai_core.embed")
    try:
        embedder = embed.Embedder(max_seq_length=64)
        votes = judges.compute_votes(pairs, ["semantically_closer", "longer"], embedder=embedder)
    except embed.EmbeddingUnavailable as exc:  # pragma: no cover - install problem
        pytest.skip(str(exc))
    assert list(votes.columns) == ["semantically_closer", "longer"]
    assert votes["semantically_closer"].dtype == np.int8
    # An empty response shares nothing with the prompt: "The emoji movie." is closer.
    assert votes.loc[0, "semantically_closer"] == 1
    swapped = pairs.rename(columns={"text_a": "text_b", "text_b": "text_a"})
    back = judges.compute_votes(swapped, ["semantically_closer"], embedder=embedder)
    assert (back["semantically_closer"].to_numpy() == -votes["semantically_closer"].to_numpy()).all()


def test_every_principle_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "judges.md").read_text(encoding="utf-8")
    for p in judges.PRINCIPLES:
        assert f"| `{p.key}` |" in doc, p.key


# --------------------------------------------------------------------------------------------
# Golden votes: the speed and memory work on judges.py must not change a single vote.
# --------------------------------------------------------------------------------------------

# The last commit whose judges.py is the reference (before the throughput/memory work of issue 13).
REFERENCE_COMMIT = "368f04ac7a06538f341260b903f55cca5f0dac2d"
GOLDEN_FILES = (
    "arena_llama3_70b_human.csv",
    "hh_rlhf_harmless_test.csv",
    "alpacaeval1_gpt4_judge.csv",
    "pandalm_human_vs_judges.csv",
)
# Hostile or degenerate texts that real files have little of: CRLF, curly apostrophes, tabs, emojis,
# mixed scripts, markdown at the very start, lone terminators, a long run without spaces.
_EDGE_TEXTS = [
    "",
    " ",
    "\r\n\r\n",
    "I\u2019m sure.\r\nDefinitely!\r\n\r\n1. First, open it.\r\n2. Then close it.\r\n3. Finally, rest.",
    "# Title\n\n**Bold** and **more bold**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    "```python\nprint('hi')\n```\nLet me know if you need anything else! \U0001f600",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u4f60\u597d\u3002 \u3053\u3093\u306b\u3061\u306f\uff01 Why?",
    "x" * 5000 + " y.",
    "'quoted' ''' '' a'b 'c' \u201cdouble\u201d \u00abguillemets\u00bb \u300ckagi\u300d",
    "Step 1: do it. Step 2: done. step-by-step, ME and MY and i'm; see [1] and (Smith et al., 2020).",
    "...!!!???",
    "\t- item\n\t* item\n  + item\n\u2022 item\n10) ten\n",
    "''''''''quoted'''''''' and '''''''' alone, caf\u00e9'''''' na\u00efve",  # long apostrophe runs
]


def _reference_judges():
    """The judges module as it was at REFERENCE_COMMIT, loaded from git as a separate module."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    try:
        src = subprocess.run(
            ["git", "-C", str(root), "show", f"{REFERENCE_COMMIT}:icai_core/judges.py"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"reference judges.py not available from git ({exc}); needs the repository history")
    path = Path(tempfile.mkdtemp(prefix="judges-ref-")) / "judges_reference.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("judges_reference", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["judges_reference"] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def golden_pairs() -> pd.DataFrame:
    frames = [_read(f)[["prompt", "text_a", "text_b"]] for f in GOLDEN_FILES]
    real = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    prompts = real["prompt"].iloc[: len(_EDGE_TEXTS) ** 2].to_numpy()
    edge = pd.DataFrame(
        [(prompts[i * len(_EDGE_TEXTS) + j], a, b)
         for i, a in enumerate(_EDGE_TEXTS) for j, b in enumerate(_EDGE_TEXTS)],
        columns=["prompt", "text_a", "text_b"],
    )
    edge.loc[0, "prompt"] = ""  # a pair without a prompt
    return pd.concat([real, edge], ignore_index=True)


@pytest.fixture(scope="module")
def reference_votes(golden_pairs) -> pd.DataFrame:
    return _reference_judges().compute_votes(golden_pairs)


def _mismatches(got: pd.DataFrame, want: pd.DataFrame) -> dict[str, int]:
    assert list(got.columns) == list(want.columns)
    diff = got.to_numpy() != want.to_numpy()
    return {k: int(n) for k, n in zip(want.columns, diff.sum(axis=0), strict=True) if n}


def test_votes_identical_to_the_reference_implementation(golden_pairs, reference_votes):
    assert len(golden_pairs) >= 3000
    votes = judges.compute_votes(golden_pairs)
    assert (votes.dtypes == np.int8).all()
    assert votes.index.equals(golden_pairs.index)
    assert _mismatches(votes, reference_votes) == {}
    # The reference votes are not degenerate: every principle but the embedding one is relevant somewhere.
    assert ((reference_votes != 0).sum() > 0).all()


def test_features_identical_to_the_reference_implementation(golden_pairs):
    ref_a, ref_b = _reference_judges().compute_features(golden_pairs)
    fa, fb = judges.compute_features(golden_pairs)
    for got, want in ((fa, ref_a), (fb, ref_b)):
        assert list(got.columns) == list(want.columns)
        for c in want.columns:
            np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)


@pytest.mark.parametrize(
    "keys",
    [
        ["more_prompt_overlap"],
        ["more_vocabulary_diversity", "longer", "restates_question"],
        ["follows_requested_format", "more_list_items", "hedges_more", "more_readable"],
        list(reversed([p.key for p in judges.PRINCIPLES if p.key not in judges.EMBEDDING_KEYS])),
    ],
    ids=["overlap-alone", "tokens-then-length", "format-first", "reversed"],
)
def test_any_subset_and_order_gives_the_same_votes(golden_pairs, reference_votes, keys):
    # Intermediates are shared between rules and may be freed after their last use: the votes of a
    # rule must not depend on which other rules run, or in which order.
    votes = judges.compute_votes(golden_pairs, keys)
    assert list(votes.columns) == keys
    assert _mismatches(votes, reference_votes[keys]) == {}


def _closure(node: str) -> set[str]:
    out: set[str] = set()
    todo = [node]
    while todo:
        for dep in judges._NEEDS.get(todo.pop(), ()):
            if dep not in out:
                out.add(dep)
                todo.append(dep)
    return out


def test_the_dependency_table_names_everything_a_feature_reads(monkeypatch):
    # Trace each feature on a fresh measure: every intermediate it builds and every other feature it
    # reads must be in the table's closure, or `release` could free something still needed.
    pairs = pd.concat([_read(f).iloc[:40] for f in GOLDEN_FILES], ignore_index=True)
    seen: list[str] = []
    real_get, real_text = judges._Measure._get, judges._Measure.text

    def get(self, name, fn):
        seen.append(name)
        return real_get(self, name, fn)

    def text(self, name):
        seen.append(name)
        return real_text(self, name)

    monkeypatch.setattr(judges._Measure, "_get", get)
    monkeypatch.setattr(judges._Measure, "text", text)
    assert set(judges._NEEDS) == set(judges.FEATURES) | {"norm", "low", "lines", "prompt_low", "tokens", "content"}
    for feature in judges.FEATURES:
        if feature == "prompt_similarity":
            continue
        seen.clear()
        judges._Measure(pairs).pair(feature)
        assert set(seen) - {feature} <= _closure(feature), feature


@pytest.mark.parametrize("with_subset", [False, True])
def test_each_intermediate_is_built_once_and_freed_before_the_last_rule(monkeypatch, with_subset):
    pairs = pd.concat([_read(f).iloc[:40] for f in GOLDEN_FILES], ignore_index=True)
    built: list[str] = []
    held_at_last: list[set[str]] = []
    real_get = judges._Measure._get

    def get(self, name, fn):
        if name not in self._memo:
            built.append(name)
        return real_get(self, name, fn)

    monkeypatch.setattr(judges._Measure, "_get", get)
    keys = ["more_prompt_overlap", "hedges_more", "longer"] if with_subset else None
    measures: list = []
    real_init = judges._Measure.__init__

    def init(self, *a, **k):
        measures.append(self)
        real_init(self, *a, **k)

    monkeypatch.setattr(judges._Measure, "__init__", init)

    n_rules = len(keys) if keys else len([p for p in judges.PRINCIPLES if p.key not in judges.EMBEDDING_KEYS])

    def progress(done, total, msg):
        if msg.endswith(f"({n_rules - 1} of {n_rules})"):  # after the last but one rule
            held_at_last.append(set(measures[0]._memo))

    judges.compute_votes(pairs, keys, progress=progress)
    assert len(built) == len(set(built)), sorted(built)  # nothing recomputed after being freed
    # Before the last rule ("longer" / "follows_requested_format") only what it needs is still held.
    last = judges._RULES[(keys or [p.key for p in judges.PRINCIPLES if p.key not in judges.EMBEDDING_KEYS])[-1]]
    measures[0].release([last.feature])
    assert set(measures[0]._memo) <= _closure(last.feature)
    assert held_at_last and held_at_last[0]  # something was held mid-way (the check is not vacuous)


def test_the_embedding_judge_runs_with_no_intermediate_held(monkeypatch):
    # The embedding model is the largest allocation of an audit: the judges' copies of the texts must
    # be gone by then (a 10 MB response otherwise keeps several 10 MB copies alive under the model).
    pairs = pd.concat([_read(f).iloc[:30] for f in GOLDEN_FILES], ignore_index=True)
    held: list[set] = []
    measures: list = []
    real_init = judges._Measure.__init__

    def init(self, *a, **k):
        measures.append(self)
        real_init(self, *a, **k)

    monkeypatch.setattr(judges._Measure, "__init__", init)

    class RecordingEmbedder:
        def embed(self, texts, progress=None, cancel=None):
            held.append({k for m in measures for k in m._memo})
            rng = np.random.default_rng(0)
            v = rng.normal(size=(len(texts), 8)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    keys = ["hedges_more", "more_prompt_overlap", "semantically_closer", "more_positive"]
    votes = judges.compute_votes(pairs, keys, embedder=RecordingEmbedder())
    assert held == [set()]
    assert list(votes.columns) == keys
    assert _mismatches(votes[["hedges_more", "more_prompt_overlap", "more_positive"]],
                       judges.compute_votes(pairs, ["hedges_more", "more_prompt_overlap", "more_positive"])) == {}


def test_every_principle_has_a_measured_progress_weight():
    """A principle without a measured cost would move the bar by a guess (`_OTHER_JUDGE_SECONDS`)."""
    assert set(judges.JUDGE_SECONDS_PER_1000_PAIRS) == {p.key for p in judges.PRINCIPLES}
    assert all(v > 0 for v in judges.JUDGE_SECONDS_PER_1000_PAIRS.values())


def test_progress_moves_inside_the_embedding_judge():
    """The embedding judge is most of a cold audit's votes: its batches move the bar, which used to
    stand still at (n-1)/n while every text was embedded; done never goes back and ends at total."""
    pairs = _read("icai_synthetic_mixed.csv").iloc[:40]
    calls = []

    class BatchedEmbedder:
        def embed(self, texts, progress=None, cancel=None):
            for d in range(0, len(texts), 10):
                progress(min(d + 10, len(texts)), len(texts), f"Embedded {min(d + 10, len(texts))} texts")
            rng = np.random.default_rng(0)
            v = rng.normal(size=(len(texts), 8)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    keys = ["longer", "semantically_closer"]
    judges.compute_votes(pairs, keys, embedder=BatchedEmbedder(), progress=lambda d, t, m: calls.append((d, t, m)))
    done = [d / t for d, t, _ in calls]
    inner = [d / t for d, t, m in calls if m.startswith("semantically_closer:")]
    assert done == sorted(done) and done[-1] == 1.0
    assert len(inner) >= 3 and inner[0] < 0.5 < inner[-1] < 1.0  # the embedding's share is moved through


# --------------------------------------------------------------------------------------------
# Exactness of the kernels that replace a regex pass: each must equal the regex it replaces, on every
# real shared text and on generated hostile strings (boundaries, multibyte, empty, huge).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_shared_texts() -> pd.Series:
    """Every distinct prompt and response of the shared CSV files, normalised as the judges see them."""
    frames = [_read(f.name) for f in sorted(DATA.glob("*.csv"))]
    cols = [f[c] for f in frames for c in ("prompt", "text_a", "text_b") if c in f.columns]
    texts = pd.concat(cols, ignore_index=True).astype("str").drop_duplicates(ignore_index=True)
    return texts.str.replace("\u2019", "'", regex=False)


def _regex_counts(texts, pattern: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.count_substring_regex(pa.array(pd.Series(texts, dtype="str")), pattern).to_numpy(zero_copy_only=False)


def _hostile_quote_texts(seed: int, n: int) -> list[str]:
    """Random strings over the quote characters, newlines, ASCII and 2/3/4-byte characters, with runs
    placed around the 300-code-point limit (and its byte equivalents 600/900/1,200)."""
    rng = np.random.default_rng(seed)
    alphabet = ['"', "\u201c", "\u201d", "\u00ab", "\u00bb", "\u300c", "\u300d", "\n", "\r", " ", "a", "\u00e9",
                "\u4e2d", "\U0001f600", "'", "\u2019"]
    runs = [1, 2, 150, 298, 299, 300, 301, 302, 599, 600, 601, 899, 900, 1199, 1200, 1201]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(int(rng.integers(0, 30))):
            if rng.random() < 0.12:
                parts.append(str(rng.choice(["a", "\u00e9", "\u4e2d", "\U0001f600"])) * int(rng.choice(runs)))
            else:
                parts.append(str(rng.choice(alphabet)))
        out.append("".join(parts))
    return out


_QUOTE_CASES = [
    "", '"', '""', '"""', '"a"', '"a""b"', '"a" "b"', '"a\nb"', '"\n"', "\u201c\u201d", "\u201ca\u201d",
    '\u201chis "word" here\u201d', '"outer \u201cinner\u201d outer"', "\u00ab\u00bb\u00ab\u00bb", "\u00abx\u00bb",
    "\u300cx\u300d\u300c\u300d", '"' + "a" * 300 + '"', '"' + "a" * 301 + '"', '"' + "\u00e9" * 300 + '"',
    '"' + "\u00e9" * 301 + '"', '"' + "\U0001f600" * 300 + '"', '"' + "\U0001f600" * 301 + '"',
    '"' + "a" * 301 + '"short"', "\u201c" + "\u4e2d" * 300 + "\u201d", "\u201c" + "\u4e2d" * 301 + "\u201d",
    '"unclosed', 'text "quote" and "another" end', '"a\r"', '"' * 1001, '"a' * 1000 + '"',
    "\u201c" + "a" * 299 + "\n\u201d\u201cb\u201d", '"a"\n"b"\n"c', "\u00ab\u00ab\u00bb\u00bb", "\u300c\u300c\u300d\u300d",
]


def test_quote_count_equals_the_regex_on_every_real_text(all_shared_texts):
    want = _regex_counts(all_shared_texts, judges._QUOTE)
    got = judges._count_quotes(all_shared_texts)
    assert len(all_shared_texts) > 15_000 and want.sum() > 1_000  # real quotes, not a vacuous check
    np.testing.assert_array_equal(got, want)


def test_quote_count_equals_the_regex_on_hostile_strings():
    texts = _QUOTE_CASES + _hostile_quote_texts(seed=13, n=1_200)
    want = _regex_counts(texts, judges._QUOTE)
    got = judges._count_quotes(pd.Series(texts, dtype="str"))
    np.testing.assert_array_equal(got, want)
    assert (want[: len(_QUOTE_CASES)] > 0).sum() >= 20 and (want == 0).sum() > 100
    # Without any newline or opener in the whole batch, and with none of the multi-byte quotes.
    for batch in (['"a"', "x"], ["x", "y"], ['"a"b"', '“c”'], [""], []):
        np.testing.assert_array_equal(judges._count_quotes(pd.Series(batch, dtype="str")),
                                      _regex_counts(batch, judges._QUOTE))
    # A sliced Arrow array (offsets not starting at 0) and one huge text give the same counts.
    import pyarrow as pa

    sliced = pa.array(texts, type=pa.large_string()).slice(7, 500)
    np.testing.assert_array_equal(judges._count_quotes(sliced), want[7:507])
    huge = "".join(texts[len(_QUOTE_CASES) :])
    assert len(huge) > 1_000_000
    np.testing.assert_array_equal(judges._count_quotes(pd.Series([huge, ""], dtype="str")),
                                  _regex_counts([huge, ""], judges._QUOTE))


def _hostile_literal_texts(seed: int, n: int) -> list[str]:
    """Random strings of backticks, tildes, '!', '?', their full-width forms and multi-byte neighbours;
    consecutive texts end and start with partial fences, so a match across two texts would show."""
    rng = np.random.default_rng(seed)
    alphabet = ["`", "`", "~", "~", "!", "\uff01", "?", "\uff1f", "a", "\n", "\u00e9", "\u4e2d", "\U0001f600", "\uff40"]
    return ["".join(str(c) for c in rng.choice(alphabet, size=int(rng.integers(0, 12)))) for _ in range(n)]


@pytest.mark.parametrize(
    "kernel,regex,kind",
    [
        (lambda t: judges._literal_count(t, ("!", "\uff01")), "[!\uff01]", "count"),
        (lambda t: judges._literal_any(t, ("```", "~~~")), "```|~~~", "contains"),
        (lambda t: judges._literal_any(t, ("?",)), "\\?", "contains"),
    ],
    ids=["exclamations", "code-fence", "question-mark"],
)
def test_literal_kernels_equal_the_regex(all_shared_texts, kernel, regex, kind):
    import pyarrow as pa
    import pyarrow.compute as pc

    for texts in (all_shared_texts, pd.Series(_hostile_literal_texts(seed=5, n=4_000) + ["", "```", "~~"], dtype="str")):
        arr = pa.array(texts)
        if kind == "count":
            want = pc.count_substring_regex(arr, regex).to_numpy(zero_copy_only=False)
        else:
            want = pc.match_substring_regex(arr, regex).to_numpy(zero_copy_only=False)
        got = kernel(texts)
        np.testing.assert_array_equal(got, want)
        assert 0 < (want > 0).sum() < len(texts)  # both outcomes occur: the check can fail


def _hostile_phrase_texts(seed: int, n: int) -> list[str]:
    """Lexicon phrases glued to what the phrase boundary lets through (non-ASCII letters, marks and
    digits, underscores, apostrophes, curly apostrophes), with other whitespace, capitals, and
    phrases cut short, so that a prefilter that assumed clean word boundaries would miss matches."""
    rng = np.random.default_rng(seed)
    phrases = [p for name in judges._PHRASE_LEXICONS for p in judges.load_lexicon(name)]
    glue = ["", "", " ", "\u00e9", "\u4e2d", "\u0301", "\u0663", "_", "'", "''", "\u2019", "x", "1", "-", "\n",
            "\u0130", "\u212a", "\U0001f600", ".", "\u00a0"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(int(rng.integers(1, 5))):
            p = str(rng.choice(phrases))
            r = rng.random()
            if r < 0.15:
                p = p.upper()
            elif r < 0.3:
                p = p.replace(" ", str(rng.choice(["\t", "\n", "  ", " \r\n"])))
            elif r < 0.4:
                p = p[: max(1, len(p) - 2)]
            elif r < 0.5:
                p = p.replace("'", "\u2019")
            parts.append(str(rng.choice(glue)) + p + str(rng.choice(glue)))
        out.append(str(rng.choice(glue)).join(parts))
    return out


def test_phrase_prefilter_never_drops_a_match(all_shared_texts):
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pd.concat([all_shared_texts, pd.Series(_hostile_phrase_texts(seed=3, n=6_000), dtype="str")],
                      ignore_index=True)
    m = judges._Measure(pd.DataFrame({"prompt": "", "text_a": texts, "text_b": texts}))
    assert m.tokens is not None
    cands = m._phrase_candidates()
    assert set(cands) == set(judges._PHRASE_LEXICONS)
    low = pa.array(m.low)
    pruned = 0
    for name in judges._PHRASE_LEXICONS:
        pattern = judges._phrase_pattern(name).replace("\\Z", "\\z")  # pyarrow's spelling (pandas translates)
        want = pc.count_substring_regex(low, pattern).to_numpy(zero_copy_only=False)
        assert not ((want > 0) & ~cands[name]).any(), name
        pruned += int((~cands[name]).sum())
        for count in (True, False):  # the prefiltered values equal the regex on every text
            np.testing.assert_array_equal(m.phrases(name, count=count), want if count else (want > 0), err_msg=name)
    assert pruned > len(texts)  # the prefilter does skip texts


def test_phrase_prefilter_counts_glued_non_ascii_letters():
    # "\u00e9sorry" matches the apology pattern (the boundary is ASCII-only) although its token is not
    # "sorry"; the candidate test must keep it.
    texts = pd.Series(["\u00e9sorry", "sorry\u4e2d", "x sorry", "xsorry", "no apology here"], dtype="str")
    m = judges._Measure(pd.DataFrame({"text_a": texts, "text_b": texts}))
    assert m.tokens is not None
    np.testing.assert_array_equal(m.phrases("apology"), [1.0, 1.0, 1.0, 0.0, 0.0])
    assert not m._phrase_candidates()["apology"][4]


def test_tokenize_equals_the_regex_split_and_trim():
    # The definition `_tokenize` implements: split on `_TOKEN_SEPARATOR` (RE2), trim "'" at the edges,
    # drop what is left empty; on generated strings dense in apostrophes (runs of every length at the
    # edges of tokens and of texts), marks, non-Latin letters and digits.
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(11)
    alphabet = ["'", "'", "'", "a", "B", " ", "\u00e9", "\u4e2d", "-", "\n", "1", "\u0301", "\u0663", "_", "\U0001f600"]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(5_000)]
    texts += ["'" * 50 + "a" + "'" * 30, "'''", "a'''''''''b", "''''''x", "", "x''''''", "'a'", "' '"]
    doc, tok = judges._tokenize(pd.Series(texts, dtype="str"))
    split = pc.split_pattern_regex(pa.array(texts), judges._TOKEN_SEPARATOR).to_pylist()
    want = [[t.strip("'") for t in row if t.strip("'")] for row in split]
    got: list[list[str]] = [[] for _ in texts]
    for d, t in zip(doc.tolist(), tok.to_pylist(), strict=True):
        got[d].append(t)
    assert got == want
    assert sum(map(len, want)) > 10_000
