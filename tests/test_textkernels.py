"""The polars regex kernels (icai_core.textkernels) give exactly pyarrow's results on every allow-listed pattern.

The reference is what the judges used before: pandas' `.str.count` / `.str.contains` (pyarrow RE2) and
`pyarrow.compute.extract_regex`. Each allow-listed pattern is run by both engines on every distinct
shared text (as typed, lowercased and line-prefixed, as the judges see them) and on thousands of
generated hostile strings: random matches of the pattern itself (drawn from its parse tree) glued to
multibyte letters, separators, curly apostrophes, CR/LF, repeated back to back, at the very end, in
long texts. The guard is tested too: a `(?:^|X)` count is refused, and the equality check used here
does fail on such a pattern.
"""

from __future__ import annotations

import gc
import re
import re._constants as sre
import re._parser as sre_parse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from icai_core import judges, textkernels
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON

DATA = SHARED_DATA or Path("/nonexistent")
needs_data = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)
pytestmark = pytest.mark.skipif(not textkernels.polars_available(), reason="polars is not installed")

ALLOW = judges._on_polars()
ROUTED = (
    [("count", p) for p in sorted(ALLOW.count)]
    + [("contains", p) for p in sorted(ALLOW.contains)]
    + [("extract", p) for p in sorted(ALLOW.extract)]
    + [("count_prefilter", p) for p in sorted(ALLOW.count_prefilter)]
)
# Identical too, but left on pyarrow (no faster on polars); proven here so that routing them is a free choice.
PROVEN_NOT_ROUTED = [("contains", judges._EMOJI_CLASS), ("contains", judges._LINK_OR_CITATION),
                     ("contains", judges._FIRST_PERSON), ("contains", judges._STEP_MENTION)]
PROVEN = ROUTED + PROVEN_NOT_ROUTED
_NAMES = {v: k for k, v in vars(judges).items() if k[:1] == "_" and k[1:].replace("_", "").isupper() and isinstance(v, str)}
_NAMES.update({judges._phrase_pattern(k): f"phrase_{k}" for k in judges._PHRASE_LEXICONS})


def _name(kind_pattern) -> str:
    kind, pattern = kind_pattern
    return f"{kind}-{_NAMES.get(pattern, pattern[:20])}"


# ----------------------------------------------------------------------------------------------
# The two engines, as the judges call them
# ----------------------------------------------------------------------------------------------


def _reference(kind: str, texts: pd.Series, pattern: str):
    """pyarrow through pandas, as judges.py did before polars (counts and booleans as numpy, groups as lists)."""
    if kind in ("count", "count_prefilter"):
        return texts.str.count(pattern).to_numpy(dtype=np.float64)
    if kind == "contains":
        return texts.str.contains(pattern).to_numpy(dtype=bool)
    found = pc.extract_regex(pa.array(texts), pattern.replace("\\Z", "\\z"))
    return {found.type.field(i).name: pc.fill_null(pc.struct_field(found, [i]), "").to_pylist()
            for i in range(found.type.num_fields)}


def _routed(kind: str, texts: pd.Series, pattern: str, allow: textkernels.AllowList = ALLOW):
    if kind in ("count", "count_prefilter"):
        return textkernels.count(texts, pattern, allow)
    if kind == "contains":
        return textkernels.contains(texts, pattern, allow)
    return {k: v.to_pylist() for k, v in textkernels.extract(texts, pattern, allow).items()}


def _polars_alone(kind: str, texts: pd.Series, pattern: str):
    """The polars kernel itself (for count_prefilter: polars' contains, the part that runs on polars)."""
    s = textkernels.to_polars(texts)
    pat = textkernels.re2_spelling(pattern)
    if kind == "count":
        return s.str.count_matches(pat).to_numpy().astype(np.float64)
    if kind in ("contains", "count_prefilter"):
        return s.str.contains(pat).to_numpy()
    groups = s.str.extract_groups(pat)
    return {f: groups.struct.field(f).fill_null("").to_list() for f in groups.struct.fields}


def _assert_same(kind: str, texts: pd.Series, pattern: str) -> object:
    want = _reference(kind, texts, pattern)
    got = _routed(kind, texts, pattern)
    alone = _polars_alone(kind, texts, pattern)
    if kind == "extract":
        assert got == want
        assert alone == want
        return want
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(alone, want > 0 if kind == "count_prefilter" else want)
    return want


# ----------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_variants() -> dict[str, pd.Series]:
    """Every distinct prompt and response of the shared CSV files, in the forms the judges run
    patterns on: typed (curly apostrophes normalised), lowercased, "\\n"-prefixed, stripped."""
    if SHARED_DATA is None:
        pytest.skip(SHARED_DATA_MISSING_REASON)
    frames = [pd.read_csv(f, keep_default_na=False) for f in sorted(DATA.glob("*.csv"))]
    cols = [f[c] for f in frames for c in ("prompt", "text_a", "text_b") if c in f.columns]
    texts = pd.concat(cols, ignore_index=True).astype("str").drop_duplicates(ignore_index=True)
    norm = texts.str.replace("\u2019", "'", regex=False)
    low = norm.str.lower()
    return {"norm": norm, "low": low, "lines": "\n" + norm, "stripped": norm.str.strip(),
            "last_turn": judges._after_last(low, "human:")}


_GLUE = ["", "", " ", "  ", "\n", "\r\n", "\n\n", "\t", "\u2019", "'", "\u00e9", "\u4e2d", "\u0416", "\U0001f600",
         "\u0301", "\u00a0", "\u2028", "\x0b", "\u0130", "\u212a", "\u00df", "\u3002", ".", "!", "?", ":", ",", "-",
         "*", "#", "|", "_", "1", "42", "3.5", "x", "A", "I", "\u0663", '"', "\u201d", ")", "]", "\\"]
_POOL = sorted({c for g in _GLUE for c in g} | {chr(c) for c in range(0x20, 0x7F)} | set("\n\r\t"))


_MEMBERS: dict[int, tuple[object, list[str]]] = {}


def _class_members(items, pool: list[str]) -> list[str]:
    """The characters of `pool` (plus both ends of each range) that the parsed class `items` matches."""
    negate = any(op is sre.NEGATE for op, _ in items)
    extra = set()
    for op, av in items:
        if op is sre.RANGE:
            extra |= {chr(av[0]), chr(av[1]), chr((av[0] + av[1]) // 2)}
        elif op is sre.LITERAL:
            extra.add(chr(av))

    def inside(ch: str) -> bool:
        c = ord(ch)
        hit = any((op is sre.LITERAL and av == c) or (op is sre.RANGE and av[0] <= c <= av[1]) for op, av in items)
        return hit != negate

    return [ch for ch in sorted(set(pool) | extra) if inside(ch) and not 0xD800 <= ord(ch) <= 0xDFFF]


def _random_match(items, rng: np.random.Generator) -> str:
    """A random string the parsed pattern `items` matches (repetitions kept short)."""
    out = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(chr(av))
        elif op is sre.NOT_LITERAL:
            out.append(chr(av + 1))
        elif op is sre.IN:
            held = _MEMBERS.get(id(av))
            if held is None or held[0] is not av:
                held = _MEMBERS[id(av)] = (av, _class_members(av, _POOL))
            members = held[1]
            out.append(members[int(rng.integers(len(members)))])
        elif op is sre.BRANCH:
            alts = av[1]
            out.append(_random_match(alts[int(rng.integers(len(alts)))], rng))
        elif op is sre.SUBPATTERN:
            out.append(_random_match(av[3], rng))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            lo, hi, sub = av
            hi = min(hi, lo + 3) if hi != sre.MAXREPEAT else lo + 3
            if rng.random() < 0.05 and av[1] != sre.MAXREPEAT and av[1] < 400:
                hi = lo = av[1]  # the bound itself ({0,60}, {1,3}...)
            out.extend(_random_match(sub, rng) for _ in range(int(rng.integers(lo, hi + 1))))
        # AT (^, \Z) adds nothing
    return "".join(out)


def hostile_texts(pattern: str, n: int, seed: int) -> list[str]:
    """`n` strings dense in matches of `pattern` and near-matches, glued to what the engines might
    treat differently; some of them long, some matches back to back, some at the very end."""
    rng = np.random.default_rng(seed)
    parsed = list(sre_parse.parse(textkernels._python_spelling(pattern)))
    words = re.findall(r"[A-Za-z]{2,}", pattern)

    def piece() -> str:
        r = rng.random()
        if r < 0.45:
            m = _random_match(parsed, rng)
            if rng.random() < 0.3 and len(m) > 1:  # a near-miss: cut or case-flipped
                m = m[: int(rng.integers(1, len(m)))] if rng.random() < 0.5 else m.swapcase()
            return m
        if r < 0.6 and words:
            return str(rng.choice(words))
        return str(rng.choice(_GLUE))

    out = ["", " ", "\n", "\r\n"]
    while len(out) < n:
        k = int(rng.integers(0, 14))
        parts = [piece() for _ in range(k)]
        if rng.random() < 0.2:  # the same match repeated back to back, or with one separator
            m = _random_match(parsed, rng)
            parts.append(str(rng.choice(["", " ", "\n", ",", "\u00e9"])).join([m] * int(rng.integers(2, 5))))
        out.append("".join(parts))
    long = "".join(out[-300:])
    out += [long, long + _random_match(parsed, rng), _random_match(parsed, rng) * 500]
    return out


# ----------------------------------------------------------------------------------------------
# Equality on every routed pattern
# ----------------------------------------------------------------------------------------------


def test_the_allow_list_is_what_the_judges_route():
    assert ROUTED, "nothing is routed to polars"
    # Counts with "^" stay on pyarrow (their pyarrow count differs); their contains may be routed.
    for p in ALLOW.count:
        assert textkernels.polars_hazards(p, "count") == []
    assert judges._FIRST_PERSON not in ALLOW.count
    assert not any(judges._phrase_pattern(k) in ALLOW.count for k in judges._PHRASE_LEXICONS)


_RARE_IN_SHARED = {judges._REQ_TABLE}  # no shared prompt asks for a table in these words


@needs_data
@pytest.mark.parametrize("kind_pattern", PROVEN, ids=_name)
def test_polars_equals_pyarrow_on_every_shared_text(shared_variants, kind_pattern):
    kind, pattern = kind_pattern
    hits = 0
    for texts in shared_variants.values():
        want = _assert_same(kind, texts, pattern)
        hits += sum(v != "" for v in want[next(iter(want))]) if kind == "extract" else int((want > 0).sum())
    if pattern in _RARE_IN_SHARED:  # checked on the hostile strings only; keep this list honest
        assert hits == 0
    else:
        assert hits > 0, "the pattern never matches a shared text: the check would be vacuous"


@pytest.mark.parametrize("kind_pattern", PROVEN, ids=_name)
def test_polars_equals_pyarrow_on_hostile_strings(kind_pattern):
    kind, pattern = kind_pattern
    texts = pd.Series(hostile_texts(pattern, 1_500, seed=len(pattern)), dtype="str")
    want = _assert_same(kind, texts, pattern)
    for variant in (texts.str.lower(), "\n" + texts):
        _assert_same(kind, variant, pattern)
    if kind == "extract":
        assert any(v for col in want.values() for v in col)
    else:
        assert 0 < (want > 0).sum() < len(texts)  # both outcomes: the check can fail
        if kind == "count":
            assert (want >= 2).sum() > 10


# ----------------------------------------------------------------------------------------------
# The guard
# ----------------------------------------------------------------------------------------------


def _polars_count_agrees(pattern: str, texts: pd.Series) -> bool:
    want = texts.str.count(pattern).to_numpy(dtype=np.float64)
    got = textkernels.to_polars(texts).str.count_matches(textkernels.re2_spelling(pattern)).to_numpy()
    return bool(np.array_equal(got, want))


def test_a_caret_count_is_refused_and_would_differ():
    # pyarrow re-anchors "^" after each match: "I I" has 2 first-person pronouns for pyarrow, 1 for
    # polars (and Python re), so such a pattern must never be allow-listed as a count...
    assert pd.Series(["I I"], dtype="str").str.count(judges._FIRST_PERSON).tolist() == [2]
    assert textkernels.to_polars(pd.Series(["I I"])).str.count_matches(
        textkernels.re2_spelling(judges._FIRST_PERSON)).to_list() == [1]
    for p in (judges._FIRST_PERSON, judges._STEP_MENTION, judges._phrase_pattern("hedges")):
        with pytest.raises(ValueError, match=r"'\^' in a count"):
            textkernels.AllowList.of(count=[p])
        textkernels.AllowList.of(contains=[p])  # searching once, "^" is the same in both engines
    # ... and the equality check of this module does catch it: on the hostile strings the routed
    # tests use, the polars count of each of these patterns differs from pyarrow's.
    for p in (judges._FIRST_PERSON, judges._STEP_MENTION, judges._phrase_pattern("politeness")):
        texts = pd.Series(hostile_texts(p, 2_500, seed=len(p)), dtype="str")
        assert not _polars_count_agrees(p, texts.str.lower() if p != judges._FIRST_PERSON else texts)


@pytest.mark.parametrize(
    "pattern,kind,reason",
    [
        (r"\s+", "contains", r"\\s"),
        (r"\w+", "count", r"\\s/\\w"),
        (r"[\d.]", "count", r"\\s/\\w"),
        (r"\bcat", "contains", r"\\b"),
        ("a.b", "contains", "'.'"),
        ("end$", "contains", "'\\$'"),
        ("(?i)yes", "contains", "inline flags"),
        ("(?i:yes)", "contains", "inline flags"),
        ("x*", "count", "empty string"),
        ("(?:a|)", "count", "empty string"),
        ("a(?=b)", "contains", "look-around"),
        ("[a&&b]", "contains", "set operation"),
        ("[a--b]", "contains", "set operation"),
        ("[[a]b]", "contains", "set operation"),
        ("\\u00e9", "contains", "escape"),
        ("\\Aa", "count", "'\\^' in a count"),
        ("(unclosed", "contains", "not a valid pattern"),
    ],
)
def test_the_guard_names_each_known_difference(pattern, kind, reason):
    hazards = textkernels.polars_hazards(pattern, kind)
    assert any(re.search(reason, h) for h in hazards), hazards
    with pytest.raises(ValueError, match="cannot run on polars"):
        textkernels.AllowList.of(**{kind: [pattern]})


def test_the_guard_accepts_plain_patterns():
    for p, kind in [("[0-9]+(?:[.,][0-9]+)*", "count"), (r"\n[ \t]*[-*+]", "count"), ("^yes", "contains"),
                    (r"(?P<x>[^\n]*?)(?:\.|\z)", "extract"), (r"[A-Za-z'-]+", "count"), (r"a\Z", "count")]:
        assert textkernels.polars_hazards(p, kind) == [], p
    with pytest.raises(ValueError, match="unknown kernel kind"):
        textkernels.polars_hazards("a", "replace")


# ----------------------------------------------------------------------------------------------
# The kernels' plumbing
# ----------------------------------------------------------------------------------------------


def test_where_masks_empty_inputs_chunks_and_missing_polars(monkeypatch):
    texts = pd.concat([pd.Series(["a1 b22 3.5", "", "no digits", "7"], dtype="str"),
                       pd.Series(["\u00e9 8,000", "x"], dtype="str")], ignore_index=True)  # two Arrow chunks
    allow = textkernels.AllowList.of(count=["[0-9]+(?:[.,][0-9]+)*"], contains=["[0-9]"])
    pat = "[0-9]+(?:[.,][0-9]+)*"
    np.testing.assert_array_equal(textkernels.count(texts, pat, allow), [3, 0, 0, 1, 1, 0])
    where = np.array([True, True, False, False, True, True])
    np.testing.assert_array_equal(textkernels.count(texts, pat, allow, where=where), [3, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(textkernels.contains(texts, "[0-9]", allow, where=where),
                                  [True, False, False, False, True, False])
    assert textkernels.count(texts, pat, allow, where=np.zeros(6, dtype=bool)).sum() == 0
    empty = pd.Series([], dtype="str")
    assert len(textkernels.count(empty, pat, allow)) == 0 and len(textkernels.contains(empty, "[0-9]", allow)) == 0
    monkeypatch.setattr(textkernels, "polars_available", lambda: False)  # without polars: pyarrow, same values
    np.testing.assert_array_equal(textkernels.count(texts, pat, allow, where=where), [3, 0, 0, 0, 1, 0])


def test_extract_fills_groups_that_took_no_part():
    texts = pd.Series(["under 50 words", "in 30 words or less", "nothing", ""], dtype="str")
    allow = textkernels.AllowList.of(extract=[judges._UPPER_WORDS])
    got = {k: v.to_pylist() for k, v in textkernels.extract(texts, judges._UPPER_WORDS, allow).items()}
    assert got == {"a": ["50", "", "", ""], "b": ["", "30", "", ""]}
    assert got == {k: v.to_pylist() for k, v in textkernels.extract(texts, judges._UPPER_WORDS).items()}


def test_the_polars_copy_is_freed_with_its_memo():
    cache = textkernels.PolarsCache()
    s = pd.Series(["x" * 100] * 1000, dtype="str")
    first = cache.get("low", s)
    assert cache.get("low", s) is first and "low" in cache and len(cache) == 1
    other = pd.Series(["y"], dtype="str")  # a new memo of the same name replaces the copy
    assert cache.get("low", other).to_list() == ["y"]
    del s, first
    gc.collect()
    assert len(cache) == 1
    del other
    gc.collect()
    assert len(cache) == 0 and "low" not in cache
    # In the judges: releasing a memo drops its polars copy.
    m = judges._Measure(pd.DataFrame({"text_a": ["I said 3 things."], "text_b": ["no"]}))
    assert m.text("n_numbers").tolist() == [1.0, 0.0]
    assert "norm" in m._polars and "lines" in m._polars
    m.release([])
    gc.collect()
    assert len(m._polars) == 0


@needs_data
def test_judges_without_polars_give_the_same_votes_and_features(monkeypatch):
    # Without polars installed every kernel runs on pyarrow (the reference engine): same votes and features.
    frames = [pd.read_csv(DATA / f, keep_default_na=False).iloc[:400][["prompt", "text_a", "text_b"]]
              for f in ("arena_llama3_70b_human.csv", "hh_rlhf_harmless_test.csv", "alpacaeval1_gpt4_judge.csv")]
    pairs = pd.concat(frames, ignore_index=True)
    with_polars = judges.compute_votes(pairs)
    fa, fb = judges.compute_features(pairs)
    monkeypatch.setattr(textkernels, "polars_available", lambda: False)
    m = judges._Measure(pairs)
    m.text("n_sentences")
    assert len(m._polars) == 0  # really without polars
    pd.testing.assert_frame_equal(judges.compute_votes(pairs), with_polars)
    ga, gb = judges.compute_features(pairs)
    pd.testing.assert_frame_equal(ga, fa)
    pd.testing.assert_frame_equal(gb, fb)
    assert (with_polars != 0).to_numpy().sum() > 1_000


def test_end_anchor_spelled_as_pandas_hands_it_to_pyarrow():
    # pandas rewrites an unescaped `\Z` to RE2's `\z` (an escaped backslash before "Z" stays literal);
    # polars gets the same string, and `\z` means end of text in Rust's regex too.
    assert textkernels.re2_spelling(r"a(?:x|\Z)") == r"a(?:x|\z)"
    assert textkernels.re2_spelling(r"a\\Z") == r"a\\Z"
    assert textkernels.re2_spelling(r"a\\\Z") == r"a\\\z"
    texts = pd.Series(["ab", "a", "a\n", "xa", ""], dtype="str")
    want = texts.str.count(r"a(?:b|\Z)").to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(want, [1, 1, 0, 1, 0])
    np.testing.assert_array_equal(textkernels.count(texts, r"a(?:b|\Z)", textkernels.AllowList.of(count=[r"a(?:b|\Z)"])),
                                  want)
