"""Measurable principles: the offline engine's judges.

Each principle compares one measurable feature of response A with the same feature of response B
and votes `1` (the principle selects A), `-1` (selects B) or `0` (not relevant: the difference is
below the principle's documented margin). The full table of principles, their features and margins
is in `docs/judges.md`.

Everything is vectorised over the whole pair table: each feature is computed once per *unique*
text (benchmark files repeat texts a lot). The regular expressions are written for pyarrow's RE2
engine (no look-arounds, no `\\w`/`\\b`/`\\s`, no `$`); `icai_core.textkernels` runs a pattern on
polars' engine instead where tests prove the two give the same counts (`_on_polars`: counts without
`^`, every contains, the extracts; pyarrow's count restarts `^` after each match, polars' does not),
and on pyarrow otherwise. Word tokens come from one compiled pass over the UTF-8 bytes of all unique
texts that also numbers them in order of first appearance (`icai_core.token_kernel`, numba; a regex
split, then a numpy pass and a dictionary encode, came before it), and token properties (length,
lexicon membership) are computed per vocabulary entry; set-overlap features (prompt words reused)
are row-wise products of sparse document x vocabulary matrices.

Memory: each shared intermediate (lowercased copy, line-prefixed copy, tokens, overlap matrices)
is freed after the last requested principle that needs it (`_NEEDS`, `_Measure.release`), and the
embedding judge runs last with none of them held. Every vote is identical to the previous,
regex-split implementation (a golden test loads it from git and compares ~6,000 real pairs).

Word lists live in `icai_core/lexicons/*.txt`; each file's header says where it comes from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from icai_core import heap, textkernels, token_kernel
from icai_core.jobs import CancelToken, Progress, check
from icai_core.judge import Judge

__all__ = [
    "EMBEDDING_KEYS",
    "FEATURES",
    "PRINCIPLES",
    "Principle",
    "compute_features",
    "compute_votes",
    "get_principle",
    "load_lexicon",
    "principles_frame",
]


# The measurable principles are Judges of kind "measurable" (icai_core.judge holds the one judge type).
Principle = Judge


@dataclass(frozen=True)
class _Rule:
    """How a measurable principle turns a feature into a vote.

    kind: "binary" (both or neither -> 0), "count" (|a-b| < threshold -> 0), "absolute"
    (|a-b| < threshold -> 0), "relative" (|a-b| / max(|a|,|b|) < threshold -> 0).
    sign: +1 when the principle selects the higher value, -1 when it selects the lower one.
    A NaN feature (e.g. a rate on an empty text) makes the pair not relevant.
    """

    feature: str
    kind: str
    threshold: float = 0.0
    sign: int = 1


# --------------------------------------------------------------------------------------------
# Lexicons and patterns
# --------------------------------------------------------------------------------------------

_WS = "[ \t\r\n]"
# Letters of the scripts seen in the data (ASCII, Latin-1 and extended Latin, Greek,
# Cyrillic, Hebrew/Arabic, Indic, kana, CJK, Hangul), as literal characters so RE2 can run it.
_LETTER = (
    "A-Za-z"
    + "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff"
    + "\u0900-\u0dff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af"
)
_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype
_NOT_WORD = "[^a-zA-Z0-9_']"  # phrase boundary for the (English) lexicons
_EMOJI_CLASS = "[" + "\U0001f300-\U0001faff" + "\u2600-\u27bf" + "\U0001f1e6-\U0001f1ff" + "]"
# Word tokens: runs of Unicode letters, marks, digits and apostrophes (apostrophes trimmed at the
# edges), split by pyarrow's RE2 in one pass over all texts.
_TOKEN_SEPARATOR = r"[^\p{L}\p{M}\p{N}']+"


@cache
def load_lexicon(name: str) -> tuple[str, ...]:
    """Entries of `icai_core/lexicons/<name>.txt`: lowercased, ASCII apostrophes, comments dropped."""
    path = resources.files("icai_core").joinpath("lexicons", f"{name}.txt")
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        out.append(" ".join(entry.lower().replace("\u2019", "'").split()))
    return tuple(dict.fromkeys(out))


def _escape(ch: str) -> str:
    if ch == " ":
        return _WS + "+"
    if ch.isalnum() or ch in "'_":
        return ch
    return "\\" + ch if ch in r".^$*+?()[]{}|\-#&~/" else ch


def _trie(phrases: Iterable[str]) -> str:
    """A prefix-factored alternation of `phrases`, longest match first."""
    root: dict = {}
    for p in phrases:
        node = root
        for ch in p:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict) -> str:
        alts = [_escape(ch) + build(child) for ch, child in sorted(node.items()) if ch != ""]
        if "" in node:
            alts.append("")
        if len(alts) == 1:
            return alts[0]
        return "(?:" + "|".join(alts) + ")"

    return build(root)


@cache
def _phrase_pattern(name: str) -> str:
    """RE2-compatible pattern matching any phrase of lexicon `name` as whole words.

    The boundaries are consumed (RE2 has no look-arounds), so two phrases separated by a single
    character can be counted once instead of twice; this only ever undercounts.
    """
    phrases = load_lexicon(name)
    tail_word = [p for p in phrases if p[-1].isalnum()]
    tail_punct = [p for p in phrases if not p[-1].isalnum()]
    parts = []
    if tail_word:
        parts.append(f"(?:^|{_NOT_WORD}){_trie(tail_word)}(?:{_NOT_WORD}|\\Z)")
    if tail_punct:
        parts.append(f"(?:^|{_NOT_WORD}){_trie(tail_punct)}")
    return "|".join(parts)


# The lexicons matched as phrases (`_phrase_pattern`), in the order of their bit in `_Measure._phrase_candidates`.
_PHRASE_LEXICONS = ("hedges", "certainty", "refusal", "apology", "ai_identity", "disclaimer", "offer_help",
                    "politeness", "examples", "summary")


@cache
def _phrase_pieces(name: str) -> tuple[tuple[str, ...], ...] | None:
    """Per phrase of lexicon `name`, the word tokens (`_tokenize`) its words become in any text where
    `_phrase_pattern(name)` matches it: its maximal runs of [a-z0-9'] with the apostrophes at their
    edges trimmed. None (no prefilter) when a phrase has a non-ASCII or capital letter (not covered).

    Why a text that matches a phrase has these tokens: inside the phrase each run is bounded by
    whitespace or punctuation, which also end a token, so the run is one whole token. The first and
    last runs are bounded by the pattern's boundary `[^a-zA-Z0-9_']`, which still lets a non-ASCII
    letter, mark or digit glue on (e.g. "\u00e9sorry"): such a token is non-ASCII and contains the run
    (`_Measure._phrase_candidates` accepts those too)."""
    out = []
    for phrase in load_lexicon(name):
        if not phrase.isascii() or phrase != phrase.lower():  # every other ASCII character ends a token
            return None
        pieces = tuple(p for p in (r.strip("'") for r in re.findall(r"[a-z0-9']+", phrase)) if p)
        if not pieces:
            return None
        out.append(pieces)
    return tuple(out)


# Markdown / layout patterns. Line-start patterns begin with "\n" and run on "\n" + text (RE2 is
# slow with multi-line "^"); paragraph breaks run on the stripped text.
_PARAGRAPH_BREAK = r"\n[ \t\r]*\n[ \t\r\n]*[^ \t\r\n]"
_LIST_ITEM = "\n[ \t]*(?:[-*+\u2022]|[0-9]{1,3}[.)])[ \t]+[^ \t\r\n]"
_NUMBERED_ITEM = r"\n[ \t]*[0-9]{1,3}[.)][ \t]+[^ \t\r\n]"
_STEP_MENTION = r"(?:^|[^a-z])step[ \t]*(?:[0-9]{1,2}|one|two|three)(?:[^a-z0-9]|\Z)"
_STEP_BY_STEP = r"step[ -]by[ -]step"
_SEQUENCE_WORD = (
    r"(?:^|[^a-z])(?:then|next|after that|afterwards|finally|lastly|once you|first,|second,|third,)(?:[^a-z]|\Z)"
)
_HEADER = r"\n[ \t]{0,3}#{1,6}[ \t]+[^ \t\r\n]"
_BOLD = r"\*\*[^*\n]+\*\*"
_TABLE_RULE = r"\n[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*\|"
_NONEMPTY_LINE = r"\n[ \t\r]*[^ \t\r\n]"
_NUMBER = r"[0-9]+(?:[.,][0-9]+)*"
_LINK_OR_CITATION = (
    r"https?://|www\.[a-zA-Z0-9-]+\.[a-zA-Z]|doi:[ ]?10\.|"
    r"(?:^|[^A-Za-z0-9_\])])\[[0-9]{1,3}\]|"
    r"\([A-Z][A-Za-z'-]+(?: et al\.?| and [A-Z][A-Za-z'-]+)?,? (?:1[89]|20)[0-9]{2}[a-z]?\)"
)
# Quoted passages. `_count_quotes` counts the matches of _QUOTE without running it (see there).
_QUOTE_PAIRS = (('"', '"'), ("\u201c", "\u201d"), ("\u00ab", "\u00bb"), ("\u300c", "\u300d"))
_QUOTE_MAX = 300  # code points inside
_QUOTE = '"[^"\\n]{1,300}"|\u201c[^\u201d\\n]{1,300}\u201d|\u00ab[^\u00bb\\n]{1,300}\u00bb|\u300c[^\u300d\\n]{1,300}\u300d'
_YOU_QUESTION = r"(?:^|[^a-z0-9_'])(?:you|your|yours|yourself|you're|you've|you'd|you'll)(?:[^a-z0-9_'.!?\n][^.!?\n]*)?\?"
_ENDS_WITH_QUESTION = "\\?[ \t\r\n\"')*\u201d]*\\Z"
# A sentence: starts at a letter (so a bare list marker "1." is not a sentence) and runs to a terminator followed by space/end or to a
# newline; a terminator glued to the next character ("3.5", "e.g", "node.js") does not end it.
_TERM = "[.!?\u3002\uff01\uff1f]"
_SENTENCE = f"[{_LETTER}](?:[^\\n.!?\u3002\uff01\uff1f]|{_TERM}+[^ \\t\\r\\n.!?\u3002\uff01\uff1f\"')\\]\u201d])*"
_FIRST_SENTENCE = r"^[ \t\r\n#*>-]*(?P<x>[^\n]*?)(?:[.!?:](?:[ \t\r\n]|\z)|\n|\z)"
_ROLE_LABEL = r"(?:^|\n)[ \t]*(?:human|assistant|user|system):"  # dialogue prompts (HH-RLHF)
# The last user turn is what follows the last "human:" (the whole prompt without one); it used to be
# extracted with r"(?s)^(?:.*human:)?(?P<x>.*)", which gives the same text, more slowly (_after_last).
_FIRST_PERSON = (
    "(?:^|[^A-Za-z0-9_'])(?:I|[Ii]'m|[Ii]'ve|[Ii]'d|[Ii]'ll|[Mm]e|[Mm]y|[Mm]ine|[Mm]yself|ME|MY)(?:[^A-Za-z0-9_']|\\Z)"
)

# Requested-format detection on the prompt's last user turn (lowercased).
_REQ_LIST = (
    r"(?:^|[.!?:\n][ \t]*)(?:please[ \t]+)?(?:list|enumerate)[ \t]|"
    r"(?:make|create|give me|provide|write|generate|compile|prepare)[ \t]+(?:me[ \t]+)?(?:a[ \t]+|an[ \t]+)?"
    r"(?:short[ \t]+|brief[ \t]+|quick[ \t]+)?(?:bulleted[ \t]+|numbered[ \t]+|bullet[ \t]+)?list(?:[^a-z]|\Z)|"
    r"bullet[ -]?points?|bulleted|in bullets|numbered list|as a list|in a list|in list form"
)
_REQ_TABLE = (
    r"(?:present|show|display|format|organi[sz]e|summari[sz]e|compare|arrange|answer|respond|output|tabulate)"
    r"[^.?!\n]{0,60}(?:in|as|into)[ \t]+(?:a[ \t]+)?(?:markdown[ \t]+)?table(?:[^a-z]|\Z)|"
    r"(?:in|as)[ \t]+(?:a[ \t]+)?(?:table|tabular)[ \t]+(?:format|form)|markdown table"
)
_REQ_JSON = (
    r"(?:respond|answer|reply|output|return|format|give)[^.?!\n]{0,40}(?:in|as)[ \t]+(?:a[ \t]+)?(?:valid[ \t]+)?json"
    r"(?:[^a-z]|\Z)|(?:only|just)[ \t]+(?:valid[ \t]+)?json(?:[^a-z]|\Z)"
)
_REQ_YESNO = (
    r"(?:answer|respond|reply)[ \t]+(?:only[ \t]+)?(?:with[ \t]+)?(?:a[ \t]+)?(?:simple[ \t]+)?"
    r"\"?yes\"?[ \t]+or[ \t]+\"?no(?:[^a-z]|\Z)|\(yes/no\)|just[ \t]+(?:say[ \t]+)?\"?yes\"?[ \t]+or[ \t]+\"?no(?:[^a-z]|\Z)"
)
_REQ_ONE_SENTENCE = (
    r"(?:in|as|with|using|write|give me|answer in)[ \t]+(?:a|one|1)[ \t]+(?:single[ \t]+|short[ \t]+|brief[ \t]+)?"
    r"sentence(?:[^a-z]|\Z)|one[ -]sentence"
)
_UPPER_WORDS = (
    r"(?:under|within|at most|no more than|not more than|fewer than|less than|maximum of|max|up to|"
    r"not exceeding|below)[ \t]+(?P<a>[0-9]{1,4})[ \t-]*words?(?:[^a-z]|\z)|"
    r"(?:in|around|about|approximately|roughly|exactly|using|with)[ \t]+(?P<b>[0-9]{1,4})[ \t-]*words?[ \t]+or[ \t]+(?:less|fewer)"
)
_APPROX_WORDS = (
    r"(?:in|around|about|approximately|roughly|exactly|using|with)[ \t]+(?P<a>[0-9]{1,4})[ \t-]*words?(?:[^a-z]|\z)|"
    r"(?:^|[^0-9])(?P<b>[0-9]{1,4})[ -]word(?:[^a-z]|\z)"
)
_JSON_LIKE = r"\{[^}]*\"[^\"\n]*\"[ \t]*:|```json"
_STARTS_YESNO = r"^[ \t\r\n*\"'>]*(?:yes|no)(?:[^a-z]|\Z)"


@cache
def _on_polars() -> textkernels.AllowList:
    """The patterns whose kernels run on polars (identical to pyarrow: see `icai_core.textkernels` for
    what is allowed and `tests/test_textkernels.py` for the proof on every pattern listed here). Every
    `contains` is here (polars also subsets texts without copying their bytes) but `_EMOJI_CLASS` and
    `_LINK_OR_CITATION`: identical too (tested), but 4-10% slower on polars, measured on 40k texts.
    The counts with "^" (the phrase tries, first person) stay on pyarrow, whose count differs there
    (and polars is no faster on them); `_STEP_MENTION` is counted by pyarrow on the few texts where
    polars finds a match."""
    return textkernels.AllowList.of(
        count=(_SENTENCE, _NUMBER, _BOLD, _PARAGRAPH_BREAK, _LIST_ITEM, _NUMBERED_ITEM, _HEADER, _TABLE_RULE,
               _NONEMPTY_LINE),
        contains=(_STEP_BY_STEP, _SEQUENCE_WORD, _YOU_QUESTION, _ENDS_WITH_QUESTION, _JSON_LIKE, _STARTS_YESNO,
                  _REQ_LIST, _REQ_TABLE, _REQ_JSON, _REQ_YESNO, _REQ_ONE_SENTENCE,
                  *(_phrase_pattern(name) for name in _PHRASE_LEXICONS)),
        extract=(_FIRST_SENTENCE, _UPPER_WORDS, _APPROX_WORDS),
        count_prefilter=(_STEP_MENTION,),
    )


# --------------------------------------------------------------------------------------------
# The principles
# --------------------------------------------------------------------------------------------

_S = "Select the response that "
# key: (what it selects, inverse, family, margin, rule)
_SPEC: list[tuple[str, str, str, str, str, _Rule]] = [
    ("longer", "is longer (more characters).", "is shorter (fewer characters).", "length",
     "character counts differ by less than 10% of the longer response",
     _Rule("n_chars", "relative", 0.10)),
    ("more_paragraphs", "is split into more paragraphs.", "is written in fewer paragraphs.", "formatting",
     "same number of paragraphs (blocks separated by a blank line)",
     _Rule("n_paragraphs", "count", 1)),
    ("more_list_items", "uses more bullet-point or numbered list items.",
     "uses fewer list items (more running prose).", "formatting",
     "same number of list lines", _Rule("n_list_items", "count", 1)),
    ("more_markdown_emphasis", "uses more markdown headers or bold text.",
     "uses fewer markdown headers and less bold text.", "formatting",
     "same number of header lines plus **bold** spans", _Rule("n_markdown_emphasis", "count", 1)),
    ("has_table", "contains a table.", "does not contain a table.", "formatting",
     "both or neither contain a markdown table", _Rule("has_table", "binary")),
    ("has_code_block", "contains a code block.", "does not contain a code block.", "formatting",
     "both or neither contain a fenced code block", _Rule("has_code_block", "binary")),
    ("step_by_step", "gives step-by-step instructions.", "does not lay out numbered steps.", "formatting",
     "both or neither have 2+ 'Step N' mentions, 'step-by-step', or 3+ numbered items with 'then'/'next'/'finally'",
     _Rule("is_step_by_step", "binary")),
    ("hedges_more", "hedges more (qualifies its claims with words such as 'might', 'possibly', 'it depends').",
     "hedges less (states its claims without qualifiers).", "stance",
     "hedging-phrase rates differ by less than 0.5 per 100 words (or a response is empty)",
     _Rule("hedge_rate", "absolute", 0.5)),
    ("more_confident", "sounds more confident (uses more certainty markers such as 'definitely', 'clearly').",
     "sounds less certain (uses fewer certainty markers).", "stance",
     "certainty-marker rates differ by less than 0.5 per 100 words (or a response is empty)",
     _Rule("certainty_rate", "absolute", 0.5)),
    ("refuses", "refuses or declines to do what was asked.", "does what was asked instead of refusing.",
     "safety", "both or neither contain a refusal phrase", _Rule("refuses", "binary")),
    ("apologises", "apologises.", "does not apologise.", "safety",
     "both or neither contain an apology", _Rule("apologises", "binary")),
    ("mentions_ai", "mentions that it is an AI or a computer program.", "does not mention being an AI.",
     "safety", "both or neither mention being an AI", _Rule("mentions_ai", "binary")),
    ("has_disclaimer", "adds a disclaimer, caveat or warning (e.g. 'consult a professional', 'note that').",
     "adds no disclaimers, caveats or warnings.", "safety",
     "both or neither contain a disclaimer phrase", _Rule("has_disclaimer", "binary")),
    ("asks_question", "asks the user a question.", "does not ask the user a question.", "engagement",
     "both or neither ask the user a question", _Rule("asks_question", "binary")),
    ("offers_further_help", "offers further help (e.g. 'let me know if ...').",
     "does not offer further help.", "engagement",
     "both or neither offer further help", _Rule("offers_help", "binary")),
    ("more_polite", "is more polite (more courtesy phrases such as 'please', 'thank you', 'happy to help').",
     "uses fewer courtesy phrases.", "engagement",
     "same number of courtesy phrases", _Rule("n_polite", "count", 1)),
    ("more_exclamations", "uses more exclamation marks.", "uses fewer exclamation marks.", "engagement",
     "same number of exclamation marks", _Rule("n_exclamations", "count", 1)),
    ("uses_emojis", "uses emojis.", "does not use emojis.", "engagement",
     "both or neither contain an emoji", _Rule("has_emoji", "binary")),
    ("more_numbers", "uses more numbers (figures, quantities, dates).", "uses fewer numbers.", "content",
     "same count of numbers (list markers such as '1.' excluded)", _Rule("n_numbers", "count", 1)),
    ("has_links_or_citations", "includes links or citations.", "includes no links or citations.", "content",
     "both or neither contain a URL, [n] reference or (Author, year) citation",
     _Rule("has_link_or_citation", "binary")),
    ("gives_examples", "gives examples (e.g. 'for example', 'for instance').",
     "gives no explicit examples.", "content",
     "both or neither contain an example marker", _Rule("gives_examples", "binary")),
    ("has_summary", "includes a summary or conclusion (e.g. 'In summary', 'Overall,').",
     "has no summary or conclusion section.", "content",
     "both or neither contain a summary marker", _Rule("has_summary", "binary")),
    ("more_technical_words", "uses more long, technical words.", "uses plainer, shorter words.", "style",
     "share of words with 10+ letters differs by less than 2 percentage points (or a response has no words)",
     _Rule("long_word_share", "absolute", 0.02)),
    ("more_quotes", "uses more quotations.", "uses fewer quotations.", "content",
     "same number of quoted passages", _Rule("n_quotes", "count", 1)),
    ("more_first_person", "talks about itself more (uses 'I', 'me', 'my' more often).",
     "uses the first person ('I', 'me', 'my') less.", "style",
     "same number of first-person pronouns", _Rule("n_first_person", "count", 1)),
    ("more_readable", "is easier to read (shorter sentences on average).",
     "uses longer, more complex sentences.", "style",
     "average sentence lengths (words) differ by less than 15% (or a response is empty)",
     _Rule("words_per_sentence", "relative", 0.15, sign=-1)),
    ("more_vocabulary_diversity", "uses a more varied vocabulary.", "uses a more repetitive vocabulary.", "style",
     "type/token ratios of the first 50 words differ by less than 0.05, or a response has fewer than 50 words",
     _Rule("ttr_50", "absolute", 0.05)),
    ("more_positive", "is more positive in tone.", "is more negative (or less positive) in tone.", "style",
     "net positive-minus-negative word rates differ by less than 1 per 100 words (or a response is empty)",
     _Rule("sentiment_rate", "absolute", 1.0)),
    ("more_prompt_overlap", "reuses more of the prompt's words.",
     "reuses fewer of the prompt's words (answers in its own words).", "prompt",
     "shares of the prompt's distinct content words used differ by less than 0.10 (or the prompt has none)",
     _Rule("prompt_overlap", "absolute", 0.10)),
    ("restates_question", "restates the question before answering (its first sentence repeats the prompt's words).",
     "gets straight to the point without restating the question.", "prompt",
     "first sentences contain the same number of prompt content words, give or take 1",
     _Rule("intro_prompt_words", "count", 2)),
    ("follows_requested_format",
     "follows the format the prompt asked for (a list, one sentence, a word limit, a table, JSON, yes/no).",
     "ignores the format the prompt asked for.", "prompt",
     "the prompt asks for no recognised format, or both or neither response comply",
     _Rule("follows_format", "binary")),
    ("semantically_closer", "begins closer in meaning to the prompt (MiniLM cosine similarity of the prompt "
     "and the response's first 64 word pieces).",
     "begins less close in meaning to the prompt (MiniLM cosine similarity of the prompt and the "
     "response's first 64 word pieces).", "prompt",
     "cosine similarities to the prompt differ by less than 0.05 (needs the embedding model)",
     _Rule("prompt_similarity", "absolute", 0.05)),
]

PRINCIPLES: list[Principle] = [
    Principle(key=k, text=_S + sel, inverse_text=_S + inv, family=fam, margin=margin)
    for k, sel, inv, fam, margin, _ in _SPEC
]
_RULES: dict[str, _Rule] = {k: rule for k, *_, rule in _SPEC}
_BY_KEY: dict[str, Principle] = {p.key: p for p in PRINCIPLES}
EMBEDDING_KEYS = frozenset({"semantically_closer"})

# Every feature compute_features() can return, with a one-line description.
FEATURES: dict[str, str] = {
    "n_chars": "number of characters",
    "n_words": "number of word tokens",
    "n_sentences": "number of sentences (terminator followed by space, or line break)",
    "n_paragraphs": "number of blocks separated by blank lines",
    "n_list_items": "lines starting with a bullet (-, *, +, \u2022) or a number ('1.', '2)')",
    "n_markdown_emphasis": "markdown header lines plus **bold** spans",
    "has_table": "contains a markdown table rule line (|---|)",
    "has_code_block": "contains a fenced code block (three backticks or three tildes)",
    "is_step_by_step": "2+ 'step N' mentions, 'step-by-step', or 3+ numbered items with sequencing words",
    "hedge_rate": "hedging phrases per 100 words (lexicons/hedges.txt)",
    "certainty_rate": "certainty markers per 100 words (lexicons/certainty.txt)",
    "refuses": "contains a refusal phrase (lexicons/refusal.txt)",
    "apologises": "contains an apology (lexicons/apology.txt)",
    "mentions_ai": "mentions being an AI (lexicons/ai_identity.txt)",
    "has_disclaimer": "contains a disclaimer or warning (lexicons/disclaimer.txt)",
    "asks_question": "a question containing 'you'/'your', or the response ends with '?'",
    "offers_help": "offers further help (lexicons/offer_help.txt)",
    "n_polite": "courtesy phrases (lexicons/politeness.txt)",
    "n_exclamations": "exclamation marks",
    "has_emoji": "contains a pictographic emoji or dingbat (U+1F300-1FAFF, U+2600-27BF, flags)",
    "n_numbers": "numbers, not counting numbered-list markers",
    "has_link_or_citation": "URL, www., doi:, [n] reference or (Author, year) citation",
    "gives_examples": "contains an example marker (lexicons/examples.txt)",
    "has_summary": "contains a summary marker (lexicons/summary.txt)",
    "long_word_share": "share of purely alphabetic ASCII words that have 10+ letters",
    "n_quotes": "quoted passages (\"...\", \u201c...\u201d, \u00ab...\u00bb, \u300c...\u300d)",
    "n_first_person": "first-person singular pronouns (capital I; I'm/i'm, I've, I'd, I'll; me, my, mine, myself)",
    "words_per_sentence": "words / sentences",
    "ttr_50": "distinct words among the first 50 words / 50 (NaN under 50 words)",
    "sentiment_rate": "(positive - negative lexicon words) per 100 words",
    "prompt_overlap": "share of the prompt's distinct content words that the response uses",
    "intro_prompt_words": "distinct prompt content words in the response's first sentence",
    "follows_format": "1/0 = complies/does not comply with a recognised format request; NaN = none",
    "prompt_similarity": "cosine similarity of prompt and response embeddings (needs an Embedder)",
}
_PAIR_FEATURES = frozenset({"prompt_overlap", "intro_prompt_words", "follows_format", "prompt_similarity"})

# What each shared intermediate (a `_Measure` memo) and each feature reads directly: memos, or other
# features. `_Measure.release` uses it to free an intermediate as soon as no remaining feature needs it
# (the copies of a 10 MB text add up), and the embedding judge, last, then runs with none held. A freed
# intermediate is recomputed if it is needed after all, so a wrong entry costs time, never a vote; a
# test traces every feature and checks this table.
_LOW = ("low",)
_NORM = ("norm",)
_NEEDS: dict[str, tuple[str, ...]] = {
    # memos
    "norm": (),
    "low": ("norm",),
    "lines": ("norm",),
    "prompt_low": (),
    "tokens": ("low",),
    "content": ("low", "tokens", "prompt_low"),
    # features
    "n_chars": (),
    "n_words": ("tokens",),
    "n_sentences": _NORM,
    "n_paragraphs": _NORM,
    "n_list_items": ("lines",),
    "n_markdown_emphasis": ("lines", "norm"),
    "has_table": ("lines",),
    "has_code_block": _NORM,
    "is_step_by_step": ("lines", "low"),
    "hedge_rate": ("low", "n_words"),
    "certainty_rate": ("low", "n_words"),
    "refuses": _LOW,
    "apologises": _LOW,
    "mentions_ai": _LOW,
    "has_disclaimer": _LOW,
    "asks_question": _LOW,
    "offers_help": _LOW,
    "n_polite": _LOW,
    "n_exclamations": _NORM,
    "has_emoji": _NORM,
    "n_numbers": ("norm", "lines"),
    "has_link_or_citation": _NORM,
    "gives_examples": _LOW,
    "has_summary": _LOW,
    "long_word_share": ("tokens",),
    "n_quotes": _NORM,
    "n_first_person": _NORM,
    "words_per_sentence": ("n_words", "n_sentences"),
    "ttr_50": ("tokens", "n_words"),
    "sentiment_rate": ("tokens", "n_words"),
    "prompt_overlap": ("content",),
    "intro_prompt_words": ("content",),
    "follows_format": ("prompt_low", "n_words", "n_sentences", "n_list_items", "has_table", "lines", "norm", "low"),
    "prompt_similarity": (),
}


def get_principle(key: str) -> Principle:
    """The measurable principle with this key (KeyError with the known keys otherwise)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown measurable principle {key!r}; known: {', '.join(_BY_KEY)}") from None


def principles_frame(principles: Sequence[Principle] | None = None) -> pd.DataFrame:
    """One row per principle (key, text, inverse_text, family, margin) for UI tables."""
    ps = PRINCIPLES if principles is None else list(principles)
    return pd.DataFrame(
        {
            "key": [p.key for p in ps],
            "text": [p.text for p in ps],
            "inverse_text": [p.inverse_text for p in ps],
            "family": [p.family for p in ps],
            "margin": [p.margin for p in ps],
        }
    )


# --------------------------------------------------------------------------------------------
# Feature computation
# --------------------------------------------------------------------------------------------


def _column(pairs: pd.DataFrame, name: str, required: bool = True) -> pd.Series:
    if name not in pairs.columns:
        if required:
            raise KeyError(f"the pair table has no column {name!r} (needs prompt, text_a, text_b)")
        return pd.Series("", index=pairs.index, dtype="str")
    col = pairs[name]
    if col.dtype != "str":
        col = col.where(col.notna(), "").astype("str")
    return col


# Word tokens: one compiled pass over the UTF-8 bytes (icai_core.token_kernel, which defines a token;
# tests check it against the RE2 split on _TOKEN_SEPARATOR); numba is imported on the first call.
_large_utf8 = token_kernel.large_utf8  # the Arrow layout the byte-level kernels read
TOKENISE_CHUNK = 50_000  # texts per word-token pass (~0.35 s on 2 Zen 5 cores): progress moves, Cancel is seen


def _tokenize(texts: pd.Series | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Word tokens of every text: (doc id per token, tokens as an Arrow string array), in text order.

    A token is a maximal run of word characters (Unicode letters, marks, digits, apostrophes) with
    the apostrophes at its edges trimmed; runs of apostrophes only are dropped: the same as splitting
    on the RE2 pattern `_TOKEN_SEPARATOR` and trimming "'" (the previous implementation, kept
    identical by a golden test). The judges themselves use `token_kernel.Vocabulary.encode`, which
    numbers the tokens without building their strings."""
    return token_kernel.tokenize(texts)


_utf8_buffer = token_kernel.utf8_buffer  # (n, UTF-8 bytes end to end, int64 offsets): views, no copy


def _byte_runs(buf: np.ndarray, seq: bytes, lead: np.ndarray | None = None) -> np.ndarray:
    """Start positions of the byte sequence `seq` in `buf` (`lead`: the positions of its first byte,
    when the caller already has them)."""
    pos = np.flatnonzero(buf == seq[0]) if lead is None else lead
    for k in range(1, len(seq)):
        pos = pos[pos + k < len(buf)]
        pos = pos[buf[pos + k] == seq[k]]
    return pos


def _literal_docs(texts: pd.Series | pa.Array, literal: str) -> np.ndarray:
    """For each occurrence of the literal `literal` in any of `texts` (overlapping ones included), the
    index of its text: a numpy scan of the UTF-8 bytes, several times faster than a pyarrow substring
    kernel on this machine. UTF-8 is self-synchronising, so a byte match is a character match."""
    n, buf, offsets = _utf8_buffer(texts)
    lit = literal.encode()
    pos = _byte_runs(buf, lit)
    doc = np.searchsorted(offsets, pos, side="right") - 1
    if len(lit) > 1:  # not across the end of a text
        doc = doc[pos + len(lit) <= offsets[doc + 1]]
    return doc


def _literal_count(texts: pd.Series, literals: Sequence[str]) -> np.ndarray:
    """Per text, occurrences of any of the single-character `literals` (as a regex class counts them)."""
    n = len(texts)
    out = np.zeros(n, dtype=np.float64)
    for lit in literals:
        assert len(lit) == 1
        out += np.bincount(_literal_docs(texts, lit), minlength=n)
    return out


def _literal_any(texts: pd.Series, literals: Sequence[str]) -> np.ndarray:
    """Per text, True where it contains one of the `literals`."""
    out = np.zeros(len(texts), dtype=bool)
    for lit in literals:
        out[_literal_docs(texts, lit)] = True
    return out


def _count_quotes(texts: pd.Series | pa.Array) -> np.ndarray:
    """Per text, the number of matches of `_QUOTE` (as `pc.count_substring_regex` counts them), without
    the regex: its four bounded repetitions {1,300} push RE2 off its DFA (~12x slower than this).

    Each alternative opens with its own character and excludes its closer and "\\n", so a match that
    starts at an opener is the span to the next closer of that type, valid iff no newline comes first
    and the span holds 1..300 code points. The regex scan takes matches leftmost-first and
    non-overlapping: the first valid candidate, then the first one that starts at or after its end,
    and so on (one path through the candidates of all texts, which never cross a text's end).
    Tested against the regex itself on real texts and on generated hostile strings."""
    n, buf, offsets = _utf8_buffer(texts)
    out = np.zeros(n, dtype=np.float64)
    if not len(buf):
        return out
    newlines = np.append(np.flatnonzero(buf == 0x0A), len(buf))  # a sentinel after the last text
    # Positions of the first bytes of the quote characters: '"' and, in one pass, every lead byte of
    # a multi-byte character (few in most texts), split by value.
    multi = np.flatnonzero(buf >= 0xC2)
    multi_first = buf[multi]
    leads = {ord('"'): np.flatnonzero(buf == ord('"'))}
    for q in {ch.encode()[0] for pair in _QUOTE_PAIRS for ch in pair if ord(ch) >= 0x80}:
        leads[q] = multi[multi_first == q]
    del multi, multi_first
    starts, ends = [], []
    for opener, closer in _QUOTE_PAIRS:
        ob, cb = opener.encode(), closer.encode()
        o = _byte_runs(buf, ob, leads[ob[0]])
        if not len(o):
            continue
        c = o if cb == ob else _byte_runs(buf, cb, leads[cb[0]])
        if not len(c):
            continue
        body = o + len(ob)  # first byte inside the quote
        k = np.searchsorted(c, body)
        ok = k < len(c)
        close = c[np.minimum(k, len(c) - 1)]
        span = close - body  # bytes inside
        ok &= span >= 1
        text_end = offsets[np.searchsorted(offsets, o, side="right")]
        ok &= close + len(cb) <= text_end
        ok &= newlines[np.searchsorted(newlines, body)] > close
        # Code points inside: <= bytes; > 1,200 bytes is more than 300 code points for sure.
        ok &= span <= 4 * _QUOTE_MAX
        unsure = np.flatnonzero(ok & (span > _QUOTE_MAX))
        for i in unsure.tolist():
            inner = buf[body[i] : close[i]]
            if span[i] - np.count_nonzero((inner & 0xC0) == 0x80) > _QUOTE_MAX:
                ok[i] = False
        starts.append(o[ok])
        ends.append(close[ok] + len(cb))
    if not starts:
        return out
    s = np.concatenate(starts)
    e = np.concatenate(ends)
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    nxt = np.searchsorted(s, e).tolist()
    picked = []
    i, m = 0, len(s)
    while i < m:
        picked.append(i)
        i = nxt[i]
    doc = np.searchsorted(offsets, s[picked], side="right") - 1
    out += np.bincount(doc, minlength=n)[:n]
    return out


def _isin(tokens: pa.Array, words: Iterable[str]) -> np.ndarray:
    return pc.is_in(tokens, value_set=pa.array(sorted(words), type=tokens.type)).to_numpy(zero_copy_only=False)


def _extract(texts: pd.Series, pattern: str, polars_texts=None) -> dict[str, pd.Series]:
    """Named groups of the first match of an RE2 `pattern` in each text ("" where none), as pyarrow's
    `extract_regex` gives them (on polars when the pattern is allow-listed: `textkernels.extract`)."""
    found = textkernels.extract(texts, pattern, _on_polars(), polars_texts=polars_texts)
    return {name: pd.Series(col.to_pandas(types_mapper=lambda _t: _STR_DTYPE), dtype="str")
            for name, col in found.items()}


def _after_last(texts: pd.Series, sep: str) -> pd.Series:
    """The part of each text after the last occurrence of the literal `sep` (the whole text without one)."""
    arr = pa.array(texts)
    if isinstance(arr, pa.ChunkedArray):  # a Series built by concatenation has several chunks
        arr = arr.combine_chunks()
    lists = pc.split_pattern(arr, sep, max_splits=1, reverse=True)
    last = pc.take(lists.values, pa.array(lists.offsets.to_numpy()[1:] - 1))
    return pd.Series(last.to_pandas(types_mapper=lambda _t: _STR_DTYPE), dtype="str")


def _rate(count: np.ndarray, words: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(words > 0, 100.0 * count / np.maximum(words, 1), np.nan)


class _Measure:
    """Features of one pair table, computed once per unique text on demand and cached."""

    def __init__(self, pairs: pd.DataFrame, embedder=None, progress: Progress | None = None, cancel=None):
        a = _column(pairs, "text_a")
        b = _column(pairs, "text_b")
        p = _column(pairs, "prompt", required=False)
        n = len(pairs)
        codes, uniq = pd.factorize(pd.concat([a, b], ignore_index=True))
        self.n = n
        self.ia = codes[:n]
        self.ib = codes[n:]
        self.raw = pd.Series(uniq.array, copy=False)  # Arrow-backed "str", no round trip via objects
        pcodes, puniq = pd.factorize(p)
        self.ip = pcodes
        self.praw = pd.Series(puniq.array, copy=False)
        self.embedder = embedder
        self.progress = progress
        self.cancel = cancel
        self._text: dict[str, np.ndarray] = {}
        self._pair: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._memo: dict[str, object] = {}
        self._line_counts: dict[str, np.ndarray] = {}
        self._phrase_cands: dict[str, np.ndarray] = {}  # per text, a bool per phrase lexicon (tiny)
        self._polars = textkernels.PolarsCache()  # polars copies of the text memos, freed with them

    # ---- shared intermediate results -----------------------------------------------------
    def _get(self, name: str, fn):
        if name not in self._memo:
            self._memo[name] = fn()
        return self._memo[name]

    def _required(self, node: str, out: set[str]) -> None:
        """Add to `out` the memos that computing `node` (a feature or a memo) would read, given what
        is already computed: a computed feature or memo needs nothing more."""
        if node in self._text or node in self._pair or node in out:
            return
        if node in self._memo:
            out.add(node)
            return
        if node in _NEEDS and node not in FEATURES:
            out.add(node)
        for dep in _NEEDS.get(node, ()):
            self._required(dep, out)

    def release(self, remaining: Iterable[str], return_memory: bool = False) -> None:
        """Free every intermediate that none of the `remaining` features needs, and the per-pair
        values already handed out (compute_votes turns them into votes once). The texts themselves
        (`raw`, `praw`) and the per-text feature values (8 bytes per text each) are kept.
        `return_memory`: also hand the freed Arrow buffers back to the system (before a large
        allocation of another kind, the embedding model; not between judges, where they are reused)."""
        remaining = list(remaining)
        keep: set[str] = set()
        for name in remaining:
            self._required(name, keep)
        for name in [k for k in self._memo if k not in keep]:
            del self._memo[name]
        for name in [k for k in self._pair if k not in remaining]:
            del self._pair[name]
        if return_memory:
            heap.trim()

    @property
    def norm(self) -> pd.Series:
        return self._get("norm", lambda: self.raw.str.replace("\u2019", "'", regex=False))

    @property
    def low(self) -> pd.Series:
        return self._get("low", lambda: self.norm.str.lower())

    @property
    def prompt_low(self) -> pd.Series:
        return self._get("prompt_low", lambda: self.praw.str.replace("\u2019", "'", regex=False).str.lower())

    @property
    def lines(self) -> pd.Series:
        """"\n" + text, so that line-start patterns can start with "\n"."""
        return self._get("lines", lambda: "\n" + self.norm)

    def _texts(self, on: str) -> tuple[pd.Series, object]:
        """The text memo `on` ("low", "norm", "lines", "prompt_low") and its polars copy (None when
        polars is not installed): the copy is made once per memo and freed with it."""
        s = getattr(self, on)
        return s, (self._polars.get(on, s) if textkernels.polars_available() else None)

    def count(self, pat: str, on: str = "low", where: np.ndarray | None = None) -> np.ndarray:
        """Per text (float64), matches of `pat` in the memo `on`, as pyarrow counts them; 0 where `where`
        is False (computed on the texts where it is True only)."""
        s, pl_s = self._texts(on)
        return textkernels.count(s, pat, _on_polars(), polars_texts=pl_s, where=where)

    def contains(self, pat: str, on: str = "low", where: np.ndarray | None = None) -> np.ndarray:
        """Per text (float64 1.0/0.0), does `pat` match in the memo `on`; 0 where `where` is False."""
        s, pl_s = self._texts(on)
        return textkernels.contains(s, pat, _on_polars(), polars_texts=pl_s, where=where).astype(np.float64)

    def count_lines(self, pat: str) -> np.ndarray:
        # Kept per pattern: numbered items are counted for both step_by_step and more_numbers.
        if pat not in self._line_counts:
            self._line_counts[pat] = self.count(pat, on="lines")
        return self._line_counts[pat]

    def paired_with(self, prompt_mask: np.ndarray) -> np.ndarray:
        """Per unique text: is it response A or B of a pair whose prompt is True in `prompt_mask`?"""
        out = np.zeros(len(self.raw), dtype=bool)
        sel = prompt_mask[self.ip]
        out[self.ia[sel]] = True
        out[self.ib[sel]] = True
        return out

    def phrases(self, name: str, count: bool = False) -> np.ndarray:
        """Per text, matches (`count`) or presence (1.0/0.0) of `_phrase_pattern(name)` in the lowercased
        text, as `count`/`contains` give them; the regex runs only on the texts that have the tokens
        a match needs (`_phrase_candidates`), when the tokens are at hand."""
        pat = _phrase_pattern(name)
        cand = self._phrase_candidates().get(name)
        if cand is not None and cand.mean() > 0.9:  # not worth a copy of the candidate texts
            cand = None
        return self.count(pat, where=cand) if count else self.contains(pat, where=cand)

    def _phrase_candidates(self) -> dict[str, np.ndarray]:
        """Per phrase lexicon, per text: False where no phrase of it can match. A necessary condition
        from the tokens (`_phrase_pieces`): a text that matches a phrase has, for each of its pieces,
        a token equal to the piece or a non-ASCII token containing it; two pieces per phrase are
        checked (its two least frequent ones). Computed once, for all lexicons, and only when the
        tokens are already computed (they are in a full run: a subset of judges that does not need
        them gets no prefilter, and the same values). Transient memory: a bool per text and piece."""
        if self._phrase_cands or "tokens" not in self._memo:
            return self._phrase_cands
        doc, ids, vocab = self._memo["tokens"]
        n = len(self.raw)
        names = [k for k in _PHRASE_LEXICONS if _phrase_pieces(k) is not None]
        if not names or not len(ids):
            return self._phrase_cands
        freq = np.bincount(ids, minlength=len(vocab))
        words = sorted({p for k in names for phrase in _phrase_pieces(k) for p in phrase})
        where = pc.index_in(pa.array(words, type=vocab.type), value_set=vocab)
        vid = dict(zip(words, pc.fill_null(where, -1).to_numpy(zero_copy_only=False).tolist(), strict=True))

        def rarity(piece: str) -> int:
            return int(freq[vid[piece]]) if vid[piece] >= 0 else 0

        # A second piece only when it is not common (a common word selects little, and marking its
        # texts costs a write per occurrence): at most 0.5% of the tokens.
        rare = max(1, len(ids) // 200)

        def pick(phrase: tuple[str, ...]) -> list[str]:
            by_rarity = sorted(set(phrase), key=rarity)
            return by_rarity[:2] if len(by_rarity) > 1 and rarity(by_rarity[1]) <= rare else by_rarity[:1]

        checked = {name: [pick(phrase) for phrase in _phrase_pieces(name)] for name in names}
        used = sorted({p for pairs in checked.values() for pair in pairs for p in pair})
        row = {p: i for i, p in enumerate(used)}
        present = np.zeros((len(used), n), dtype=bool)  # piece x text
        # Per vocabulary entry, the pieces it stands for: the piece it equals, and for a non-ASCII
        # entry the pieces it contains (a letter glued to the phrase's first or last word). Then one
        # compiled pass over the tokens marks them per text.
        exact = [p for p in used if vid[p] >= 0]
        entry = [np.array([vid[p] for p in exact], dtype=np.int64)]
        piece = [np.array([row[p] for p in exact], dtype=np.int64)]
        non_ascii = np.flatnonzero(~pc.string_is_ascii(vocab).to_numpy(zero_copy_only=False))
        if len(non_ascii):  # first those that contain any piece (one regex), then piece by piece
            any_piece = pc.match_substring_regex(vocab.take(pa.array(non_ascii)), "|".join(used))
            non_ascii = non_ascii[any_piece.to_numpy(zero_copy_only=False)]
        if len(non_ascii):
            non_ascii_vocab = vocab.take(pa.array(non_ascii))
            for p in used:
                inside = non_ascii[pc.match_substring(non_ascii_vocab, p).to_numpy(zero_copy_only=False)]
                entry.append(inside.astype(np.int64))
                piece.append(np.full(len(inside), row[p], dtype=np.int64))
        entries, pieces = np.concatenate(entry), np.concatenate(piece)
        order = np.argsort(entries, kind="stable")
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(entries, minlength=len(vocab)), out=indptr[1:])
        token_kernel.mark_rows(doc, ids, indptr, pieces[order], present)
        out = {}
        for name in names:
            cand = np.zeros(n, dtype=bool)
            for pair in checked[name]:
                both = present[row[pair[0]]]
                cand |= both if len(pair) == 1 else both & present[row[pair[1]]]
            out[name] = cand
        self._phrase_cands = out
        return out

    @property
    def tokens(self) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """(doc id per token, vocabulary id per token, vocabulary) of the lowercased unique response
        texts. Token properties (length, lexicon membership) are computed once per vocabulary entry
        and gathered per token, instead of once per token."""

        def each(done: int, n: int) -> None:  # between chunks: progress inside the judge, and Cancel
            check(self.cancel)
            if self.progress is not None:
                self.progress(done, n, f"Tokenised {done:,} of {n:,} texts")

        def make():  # compiled passes: the same ids as dictionary_encode of _tokenize's tokens
            n = len(self.raw)
            if self.progress is not None and n > TOKENISE_CHUNK:  # says what runs until the first chunk
                self.progress(0, n, f"Tokenising {n:,} texts")
            return token_kernel.encode(self.low, chunk=TOKENISE_CHUNK, each=each)

        return self._get("tokens", make)

    def token_count(self, vocab_mask: np.ndarray) -> np.ndarray:
        """Per text, the number of its tokens whose vocabulary entry is True in `vocab_mask`."""
        doc, ids, _ = self.tokens
        return token_kernel.masked_counts(doc, ids, vocab_mask, len(self.raw))[0].astype(np.float64)

    # ---- per-text features ------------------------------------------------------------------
    def text(self, name: str) -> np.ndarray:
        if name not in self._text:
            self._text[name] = np.asarray(getattr(self, "_f_" + name)(), dtype=np.float64)
        return self._text[name]

    def _f_n_chars(self):
        return self.raw.str.len().to_numpy(dtype=np.float64)

    def _f_n_words(self):
        doc, _, _ = self.tokens
        return np.bincount(doc, minlength=len(self.raw)).astype(np.float64)

    def _f_n_sentences(self):
        return self.count(_SENTENCE, on="norm")

    def _f_n_paragraphs(self):
        stripped = self.norm.str.strip()
        breaks = textkernels.count(stripped, _PARAGRAPH_BREAK, _on_polars())
        return breaks + (stripped.str.len().to_numpy() > 0)

    def _f_n_list_items(self):
        return self.count_lines(_LIST_ITEM)

    def _f_n_markdown_emphasis(self):
        return self.count_lines(_HEADER) + self.count(_BOLD, on="norm")

    def _f_has_table(self):
        return (self.count_lines(_TABLE_RULE) > 0).astype(np.float64)

    def _f_has_code_block(self):
        return _literal_any(self.norm, ("```", "~~~")).astype(np.float64)  # = contains("```|~~~")

    def _f_is_step_by_step(self):
        # "Step 1 ... Step 2", or "step-by-step", or a numbered list of 3+ items with sequencing
        # words ("then", "next", "finally"); a numbered list alone (e.g. of resources) is not steps.
        # The sequencing words are looked for only where they can matter (3+ numbered items).
        numbered = self.count_lines(_NUMBERED_ITEM)
        steps = self.count(_STEP_MENTION)
        announced = self.contains(_STEP_BY_STEP) > 0
        sequenced = self.contains(_SEQUENCE_WORD, where=numbered >= 3) > 0
        return ((steps >= 2) | announced | sequenced).astype(np.float64)

    def _f_hedge_rate(self):
        return _rate(self.phrases("hedges", count=True), self.text("n_words"))

    def _f_certainty_rate(self):
        return _rate(self.phrases("certainty", count=True), self.text("n_words"))

    def _f_refuses(self):
        return self.phrases("refusal")

    def _f_apologises(self):
        return self.phrases("apology")

    def _f_mentions_ai(self):
        return self.phrases("ai_identity")

    def _f_has_disclaimer(self):
        return self.phrases("disclaimer")

    def _f_asks_question(self):
        has_q = _literal_any(self.low, ("?",))
        return np.maximum(self.contains(_YOU_QUESTION, where=has_q), self.contains(_ENDS_WITH_QUESTION, where=has_q))

    def _f_offers_help(self):
        return self.phrases("offer_help")

    def _f_n_polite(self):
        return self.phrases("politeness", count=True)

    def _f_n_exclamations(self):
        return _literal_count(self.norm, ("!", "\uff01"))  # = count("[!\uff01]")

    def _f_has_emoji(self):
        return self.contains(_EMOJI_CLASS, on="norm")

    def _f_n_numbers(self):
        return self.count(_NUMBER, on="norm") - self.count_lines(_NUMBERED_ITEM)

    def _f_has_link_or_citation(self):
        return self.contains(_LINK_OR_CITATION, on="norm")

    def _f_gives_examples(self):
        return self.phrases("examples")

    def _f_has_summary(self):
        return self.phrases("summary")

    def _f_long_word_share(self):
        # Among purely alphabetic ASCII tokens, the share with 10+ letters.
        _, _, vocab = self.tokens
        alpha = pc.match_substring_regex(vocab, "^[a-z]+$").to_numpy(zero_copy_only=False)
        long = alpha & (pc.utf8_length(vocab).to_numpy(zero_copy_only=False) >= 10)
        n_alpha = self.token_count(alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n_alpha > 0, self.token_count(long) / np.maximum(n_alpha, 1), np.nan)

    def _f_n_quotes(self):
        return _count_quotes(self.norm)

    def _f_n_first_person(self):
        # A bare "I" only in capitals (so "i" in code or "i.e." is not counted); "i'm", "i've"... in any case.
        return self.count(_FIRST_PERSON, on="norm")

    def _f_words_per_sentence(self):
        words = self.text("n_words")
        sents = self.text("n_sentences")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((sents > 0) & (words > 0), words / np.maximum(sents, 1), np.nan)

    def _f_ttr_50(self):
        window = 50
        n = len(self.raw)
        # Only texts of 50+ words get a value: their first 50 token ids form a (texts x 50) matrix,
        # and the distinct ids of a row are counted after sorting it.
        doc, ids, _ = self.tokens
        words = self.text("n_words")
        out = np.full(n, np.nan)
        long = np.flatnonzero(words >= window)
        if len(long):
            starts = np.searchsorted(doc, long)  # tokens of one text are contiguous, in text order
            first = np.sort(ids[starts[:, None] + np.arange(window)], axis=1)
            n_types = 1 + (first[:, 1:] != first[:, :-1]).sum(axis=1)
            out[long] = n_types / window
        return out

    def _f_sentiment_rate(self):
        _, _, vocab = self.tokens
        pos = self.token_count(_isin(vocab, load_lexicon("positive")))
        neg = self.token_count(_isin(vocab, load_lexicon("negative")))
        return _rate(pos - neg, self.text("n_words"))

    # ---- per-pair features ------------------------------------------------------------------
    def pair(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._pair:
            if name in _PAIR_FEATURES:
                self._pair[name] = getattr(self, "_p_" + name)()
            else:
                values = self.text(name)
                self._pair[name] = (values[self.ia], values[self.ib])
        return self._pair[name]

    def _content_matrices(self):
        """Binary doc x vocabulary matrices of content words: responses, first sentences, prompts."""

        def make():
            first = _extract(self.low, _FIRST_SENTENCE)["x"].str.slice(0, 300)
            plow = self.prompt_low.str.replace(_ROLE_LABEL, " ", regex=True)
            n_t, n_p = len(self.raw), len(self.praw)
            doc_t, ids_t, vocab_t = self.tokens
            # One vocabulary for the three token sets: the response vocabulary first (its ids are
            # kept: its words are distinct), then the new words of the first sentences and prompts.
            joint, joint_t = token_kernel.Vocabulary.of_words(vocab_t)
            doc_f, ids_f = joint.encode(first)
            doc_p, ids_p = joint.encode(plow)
            vocab = joint.arrow()
            del joint
            content_v = ~_isin(vocab, load_lexicon("stopwords")) & (
                pc.utf8_length(vocab).to_numpy(zero_copy_only=False) >= 2
            )
            # Response words that no prompt uses cannot count in an overlap with a prompt: drop them
            # (smaller matrices; the prompt matrix, whose row sizes are the denominators, is whole).
            # Each matrix is one compiled pass over its tokens (rows deduplicated, not sorted).
            in_prompts = np.zeros(len(vocab), dtype=bool)
            in_prompts[ids_p] = True
            keep_v = content_v & in_prompts
            n_v = len(vocab) or 1
            same = len(joint_t) == 0 or (joint_t == np.arange(len(joint_t))).all()  # distinct words: 0, 1, 2...
            resp = token_kernel.binary_matrix(doc_t, ids_t if same else joint_t[ids_t], keep_v, n_t, n_v)
            first_m = token_kernel.binary_matrix(doc_f, ids_f, keep_v, n_t, n_v)
            prompts = token_kernel.binary_matrix(doc_p, ids_p, content_v, n_p, n_v)
            return resp, first_m, prompts

        return self._get("content", make)

    def _overlap(self, resp: sparse.csr_matrix, prompts: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Distinct prompt content words used by A and by B (computed per unique prompt/text combo)."""
        n_t = resp.shape[0]
        combo = np.concatenate([self.ip.astype(np.int64) * n_t + self.ia, self.ip.astype(np.int64) * n_t + self.ib])
        inv, uniq = pd.factorize(combo)
        pr, tx = uniq // n_t, uniq % n_t
        shared = np.asarray(prompts[pr].multiply(resp[tx]).sum(axis=1)).ravel().astype(np.float64)
        values = shared[inv]
        return values[: self.n], values[self.n :]

    def _p_prompt_overlap(self):
        resp, _, prompts = self._content_matrices()
        oa, ob = self._overlap(resp, prompts)
        n_prompt = np.diff(prompts.indptr).astype(np.float64)[self.ip]
        with np.errstate(divide="ignore", invalid="ignore"):
            fa = np.where(n_prompt > 0, oa / np.maximum(n_prompt, 1), np.nan)
            fb = np.where(n_prompt > 0, ob / np.maximum(n_prompt, 1), np.nan)
        return fa, fb

    def _p_intro_prompt_words(self):
        _, first, prompts = self._content_matrices()
        return self._overlap(first, prompts)

    def _p_follows_format(self):
        # The prompt's last user turn (HH-style dialogues keep the whole history in the prompt).
        last = _after_last(self.prompt_low, "human:")
        allow = _on_polars()
        pl_last = textkernels.to_polars(last) if textkernels.polars_available() else None
        want_list, want_table, want_json, want_yesno, want_one = (
            textkernels.contains(last, pat, allow, polars_texts=pl_last)
            for pat in (_REQ_LIST, _REQ_TABLE, _REQ_JSON, _REQ_YESNO, _REQ_ONE_SENTENCE)
        )
        up = _extract(last, _UPPER_WORDS, pl_last)
        upper = pd.to_numeric(up["a"] + up["b"], errors="coerce").to_numpy(dtype=np.float64)
        ap = _extract(last, _APPROX_WORDS, pl_last)
        approx = pd.to_numeric(ap["a"] + ap["b"], errors="coerce").to_numpy(dtype=np.float64)
        approx = np.where(np.isnan(upper), approx, np.nan)
        any_request = want_list | want_table | want_json | want_yesno | want_one | ~np.isnan(upper) | ~np.isnan(approx)

        words = self.text("n_words")
        sents = self.text("n_sentences")
        # The shape checks below matter only for responses to prompts that ask for that shape: they
        # are run on those texts alone (the others' values are never read).
        lines = self.count(_NONEMPTY_LINE, on="lines", where=self.paired_with(want_list))
        list_like = (self.text("n_list_items") >= 2) | (lines >= 3)
        table = self.text("has_table") > 0
        json_like = self.contains(_JSON_LIKE, on="norm", where=self.paired_with(want_json)) > 0
        yesno = self.contains(_STARTS_YESNO, where=self.paired_with(want_yesno)) > 0
        nonempty = words > 0

        def comply(i: np.ndarray, p: np.ndarray) -> np.ndarray:
            ok = nonempty[i].copy()
            ok &= ~want_list[p] | list_like[i]
            ok &= ~want_table[p] | table[i]
            ok &= ~want_json[p] | json_like[i]
            ok &= ~want_yesno[p] | yesno[i]
            ok &= ~want_one[p] | (sents[i] <= 1)
            up_p, ap_p = upper[p], approx[p]
            with np.errstate(invalid="ignore"):
                ok &= np.isnan(up_p) | (words[i] <= 1.1 * up_p + 2)
                ok &= np.isnan(ap_p) | (np.abs(words[i] - ap_p) <= 0.25 * ap_p + 5)
            return np.where(any_request[p], ok.astype(np.float64), np.nan)

        return comply(self.ia, self.ip), comply(self.ib, self.ip)

    def _p_prompt_similarity(self):
        if self.embedder is None:
            raise ValueError("the 'prompt_similarity' feature needs an Embedder")
        tr = self.raw.to_numpy(dtype=object)
        pr = self.praw.to_numpy(dtype=object)
        t_ok = self.raw.str.strip().str.len().to_numpy() > 0
        p_ok = self.praw.str.strip().str.len().to_numpy() > 0
        todo = list(dict.fromkeys([*pr[p_ok], *tr[t_ok]]))
        vecs = self.embedder.embed(todo, progress=self.progress, cancel=self.cancel) if todo else None
        row = {t: i for i, t in enumerate(todo)}
        dim = vecs.shape[1] if vecs is not None else 1
        tv = np.zeros((len(tr), dim), dtype=np.float32)
        pv = np.zeros((len(pr), dim), dtype=np.float32)
        if vecs is not None:
            tv[t_ok] = vecs[[row[t] for t in tr[t_ok]]]
            pv[p_ok] = vecs[[row[t] for t in pr[p_ok]]]
        # An empty response shares nothing with the prompt (similarity 0); an empty prompt -> NaN.
        sim_a = np.einsum("ij,ij->i", pv[self.ip], tv[self.ia]).astype(np.float64)
        sim_b = np.einsum("ij,ij->i", pv[self.ip], tv[self.ib]).astype(np.float64)
        no_prompt = ~p_ok[self.ip]
        sim_a[no_prompt] = np.nan
        sim_b[no_prompt] = np.nan
        return sim_a, sim_b


def _vote(fa: np.ndarray, fb: np.ndarray, rule: _Rule) -> np.ndarray:
    """int8 votes from two feature vectors; NaN on either side -> 0. Antisymmetric by construction."""
    with np.errstate(invalid="ignore", divide="ignore"):
        d = fa - fb
        if rule.kind == "binary":
            relevant = d != 0
        elif rule.kind in ("count", "absolute"):
            relevant = np.abs(d) >= rule.threshold
        elif rule.kind == "relative":
            denom = np.maximum(np.abs(fa), np.abs(fb))
            relevant = (denom > 0) & (np.abs(d) >= rule.threshold * denom)
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown rule kind {rule.kind!r}")
        relevant &= ~np.isnan(d)
        votes = np.where(relevant, np.sign(np.nan_to_num(d)), 0.0) * rule.sign
    return votes.astype(np.int8)


def _resolve(principles: Iterable[Principle | str] | None) -> list[Principle]:
    if principles is None:
        return list(PRINCIPLES)
    out = []
    for p in principles:
        key = p if isinstance(p, str) else p.key
        if key not in _RULES:
            raise ValueError(f"principle {key!r} is not a measurable principle (only these are: {', '.join(_RULES)})")
        out.append(_BY_KEY[key])
    return out


def compute_features(pairs: pd.DataFrame, *, embedder=None, names: Sequence[str] | None = None,
                     cancel: CancelToken | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features of responses A and B: two DataFrames indexed like `pairs`, one column per feature
    in `names` (default: every feature in `FEATURES`; `prompt_similarity` only when an `embedder`
    is given). Rates and ratios are NaN where undefined (e.g. an empty response). Ask only for the
    features you use: on 100k pairs all of them take as long as the judges. `cancel` is checked
    before each feature."""
    if names is None:
        names = [f for f in FEATURES if embedder is not None or f != "prompt_similarity"]
    else:
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise KeyError(f"unknown feature(s) {unknown}; see judges.FEATURES")
        names = list(names)
    if len(pairs) == 0:
        empty = {name: np.zeros(0) for name in names}
        return pd.DataFrame(empty, index=pairs.index), pd.DataFrame(empty, index=pairs.index)
    m = _Measure(pairs, embedder=embedder, cancel=cancel)
    cols_a, cols_b = {}, {}
    for i, name in enumerate(names):
        check(cancel)
        m.release(names[i:])
        cols_a[name], cols_b[name] = m.pair(name)
    return (
        pd.DataFrame(cols_a, index=pairs.index),
        pd.DataFrame(cols_b, index=pairs.index),
    )


# Seconds per 1,000 distinct pairs of each judge, in `PRINCIPLES` order, measured at 100,000 distinct
# pairs on the idle 2-core Zen 4 (seventh session): the weights of `compute_votes`' progress, so the
# bar moves near-linearly in time. Counting judges did not: `hedges_more` is the first to need the word
# tokens and takes ~24% of the stage, so the bar stopped at 7 of 31 while the time left ran down
# (-35 to -41% in the app at 100k pairs). A judge's cost includes the intermediates it is the first to
# need, so the figures hold for the default order (for a subset they are an approximation); one-time
# costs in a fresh process (numba's cached machine code ~1 s, polars) are not in them. Only the
# ratios matter.
JUDGE_SECONDS_PER_1000_PAIRS: dict[str, float] = {
    "longer": 0.0179,
    "more_paragraphs": 0.01312,
    "more_list_items": 0.00148,
    "more_markdown_emphasis": 0.00101,
    "has_table": 0.00031,
    "has_code_block": 0.00347,
    "step_by_step": 0.00609,
    "hedges_more": 0.04344,
    "more_confident": 0.00529,
    "refuses": 0.00134,
    "apologises": 0.00017,
    "mentions_ai": 0.00057,
    "has_disclaimer": 0.001,
    "asks_question": 0.0044,
    "offers_further_help": 0.00136,
    "more_polite": 0.00087,
    "more_exclamations": 0.00151,
    "uses_emojis": 0.00348,
    "more_numbers": 0.00225,
    "has_links_or_citations": 0.00377,
    "gives_examples": 0.00126,
    "has_summary": 0.00148,
    "more_technical_words": 0.00176,
    "more_quotes": 0.00571,
    "more_first_person": 0.00532,
    "more_readable": 0.00916,
    "more_vocabulary_diversity": 0.00776,
    "more_positive": 0.00094,
    "more_prompt_overlap": 0.02842,
    "restates_question": 0.00123,
    "follows_requested_format": 0.00527,
    # cold cache, 3 texts per distinct pair: ~130-225 texts/s with bf16 on 2 Zen 4 cores (ONNX fp32
    # about half); the embedder's own progress moves the bar inside this share (cached texts are skipped,
    # so with a warm cache the bar jumps over it)
    "semantically_closer": 20.0,
}
_OTHER_JUDGE_SECONDS = 0.003  # a principle added later without a measured cost


def _judge_cost(key: str) -> float:
    return JUDGE_SECONDS_PER_1000_PAIRS.get(key, _OTHER_JUDGE_SECONDS)


def compute_votes(
    pairs: pd.DataFrame,
    principles: Iterable[Principle | str] | None = None,
    *,
    embedder=None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Votes of the measurable principles on every pair.

    Returns an int8 DataFrame indexed like `pairs`, one column per principle key (in the order of
    `principles`, default `PRINCIPLES`): 1 = the principle selects A, -1 = selects B, 0 = not
    relevant. Embedding principles are skipped (no column) when `embedder` is None. `progress` is
    called after each principle (and inside the embedding judge, per batch of texts) with
    ``(done, total)`` in units of measured cost (`JUDGE_SECONDS_PER_1000_PAIRS`), so done/total moves
    near-linearly in time; the message counts judges ("Measured 'x' (3 of 31)"). `cancel` is checked
    before each one (raises `jobs.Cancelled`).
    """
    todo = [p for p in _resolve(principles) if embedder is not None or p.key not in EMBEDDING_KEYS]
    total = len(todo)
    check(cancel)
    if len(pairs) == 0:
        return pd.DataFrame({p.key: np.zeros(0, dtype=np.int8) for p in todo}, index=pairs.index)
    m = _Measure(pairs, embedder=embedder, cancel=cancel)
    columns: dict[str, np.ndarray] = {}
    # The embedding judges run last, whatever the requested order, so that the model runs with no
    # intermediate of the other judges held (each is freed after its last use); columns keep the order.
    order = [p for p in todo if p.key not in EMBEDDING_KEYS] + [p for p in todo if p.key in EMBEDDING_KEYS]
    features = [_RULES[p.key].feature for p in order]
    cum = np.cumsum([0.0] + [_judge_cost(p.key) for p in order])
    units = 1_000_000

    def at(x: float) -> int:  # cost so far -> progress units (monotone, `units` exactly at the end)
        return int(round(units * x / cum[-1])) if cum[-1] > 0 else units

    trim = heap.Trimmer()
    for i, p in enumerate(order):
        check(cancel)
        m.release(features[i:], return_memory=p.key in EMBEDDING_KEYS)
        trim()
        if progress is not None:  # what a judge reports inside itself (the embedder, the word tokens)
            def inner(d, t, msg, i=i, key=p.key):
                share = d / t if t else 1.0
                progress(min(at(cum[i] + share * (cum[i + 1] - cum[i])), units - 1), units, f"{key}: {msg}")
            m.progress = inner
        fa, fb = m.pair(_RULES[p.key].feature)
        columns[p.key] = _vote(fa, fb, _RULES[p.key])
        if progress is not None:
            progress(at(cum[i + 1]), units, f"Measured '{p.key}' ({i + 1} of {total})")
    del m  # the texts' intermediates, then what their pools keep, go back before the next stage
    heap.trim()
    check(cancel)
    if not columns:
        return pd.DataFrame(index=pairs.index, dtype=np.int8)
    return pd.DataFrame({p.key: columns[p.key] for p in todo}, index=pairs.index)
