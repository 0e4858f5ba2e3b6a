"""Parsing and recovery of model answers, with an honest status for every answer.

Why this module exists: small local models (0.5B on llama.cpp) copy example answers, keep numbering
past the end of the batch and are cut off at `max_tokens` (finish_reason "length"). The old parsers
read such an answer as "no JSON" and turned every vote into "not relevant", silently. Here every
answer gets one of three statuses, and the pipeline counts them per stage:

* ``valid``     -- a complete answer in the requested shape;
* ``recovered`` -- usable parts read from an incomplete or sloppy answer (truncated JSON whose
  complete entries / list items are read, plain text "1: A" lines when the endpoint ignored JSON
  mode, repeated list items dropped);
* ``invalid``   -- nothing usable; the caller must not treat it as a real answer (a vote of 0 with an
  invalid status is *missing*, not "not relevant").

Public API (pure functions, never raise on any input):

* ``Parsed(value, status, detail)``
* ``parse_list(text, n_max, key="principles", finish_reason=None) -> Parsed``  (list[str])
* ``parse_proposals(text, n_max, finish_reason=None) -> Parsed``  (list[str], "Select the response that ...")
* ``parse_votes(text, n, finish_reason=None) -> tuple[list[int], list[str]]``  (1 = A, -1 = B, 0 = none)
* ``parse_annotation(text, swap=False, finish_reason=None) -> Parsed``  ("a" / "b" / None)
* ``parse_oracle(text, finish_reason=None) -> Parsed``  ((flagged: bool, reason: str) or None)
* ``parse_principle(text, finish_reason=None) -> Parsed``  (one "Select the response that ..." or None)
* ``StageCounts`` (valid / recovered / invalid, ``add(status, answer=None)``, ``invalid_rate``, ``to_dict()``)
* ``check_stage(name, counts, warn=0.2, stop=0.5) -> str | None``: raises ``StageFailed`` above ``stop``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from icai_core.llm import parse_json_answer

VALID, RECOVERED, INVALID = "valid", "recovered", "invalid"
STATUSES = (VALID, RECOVERED, INVALID)
PREFIX = "Select the response that"

_NOT_RELEVANT = frozenset({"NONE", "NULL", "N/A", "NA", "NEITHER", "NOT RELEVANT", "TIE", "BOTH", "EQUAL"})
# A complete JSON string literal (escapes allowed); used to read items of a cut-off answer.
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_VOTE_ENTRY = re.compile(rf'"\s*(\d+)\s*"\s*:\s*({_JSON_STRING}|null)')
_VOTE_LINE = re.compile(
    r"^\s*(?:principle\s*)?[\"']?(\d+)[\"']?\s*[:.)=\-]\s*[\"']?(?:response\s+)?"
    r"(A|B|None|Neither|N/A|Not relevant|Tie)[\"']?[ \t]*[,.;]?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"^[\s.\u2026<>]*$|^<.*>$")


@dataclass(frozen=True)
class Parsed:
    """One parsed answer: `value` (None when invalid), `status` (valid / recovered / invalid) and a
    short human `detail` saying what was recovered or why it is invalid."""

    value: Any
    status: str
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.status != INVALID


def _cut(text: Any, n: int = 200) -> str:
    s = "" if text is None else str(text)
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


def _truncated(finish_reason: str | None) -> bool:
    return finish_reason == "length"


# ---------------------------------------------------------------------------- lists (proposals)


def _norm_key(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def _complete_strings_after(text: str, key: str) -> list[str] | None:
    """Complete JSON strings of the list that follows `"key": [` in a (possibly cut-off) answer."""
    m = re.search(rf'"{re.escape(key)}"\s*:\s*\[', text)
    if m is None:
        m = re.search(r"^\s*\[", text)  # a bare list
        if m is None:
            return None
    rest = text[m.end():]
    out, pos = [], 0
    item = re.compile(rf"\s*({_JSON_STRING})\s*(,|\])?")
    while True:
        g = item.match(rest, pos)
        if g is None:
            break
        try:
            out.append(json.loads(g.group(1)))
        except ValueError:
            break
        pos = g.end()
        if g.group(2) != ",":  # end of the list, or the answer stops right after this item
            break
    return out


def _plain_lines(text: str) -> list[str]:
    """Bulleted / numbered lines, or lines that start with the principle prefix (text-mode answers)."""
    lines = [m.group(1) for m in _BULLET.finditer(text)]
    if not lines:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip().lower().startswith(PREFIX.lower())]
    return [ln.strip().strip('"').strip() for ln in lines]


def _clean_items(items: list[Any], n_max: int) -> tuple[list[str], int, int]:
    """Whitespace-normalised non-empty strings, duplicates and placeholders dropped, at most n_max.
    Returns (items, duplicates dropped, beyond n_max dropped)."""
    out, seen, dups = [], set(), 0
    for it in items:
        if not isinstance(it, str):
            continue
        t = " ".join(it.split())
        body = t[len(PREFIX):] if t.lower().startswith(PREFIX.lower()) else t
        if not t or _PLACEHOLDER.match(body):
            continue
        k = _norm_key(t.removeprefix(PREFIX))
        if k in seen:
            dups += 1
            continue
        seen.add(k)
        out.append(t)
    extra = max(0, len(out) - max(0, n_max))
    return out[: max(0, n_max)], dups, extra


def parse_list(text: str | None, n_max: int, key: str = "principles", finish_reason: str | None = None) -> Parsed:
    """A list of strings from `{"<key>": [...]}` (or a bare list), recovered from cut-off JSON and
    from plain bulleted text; duplicates (case / punctuation-insensitive) dropped. Value: list[str]."""
    try:
        if not isinstance(text, str) or not text.strip():
            return Parsed(None, INVALID, "empty answer")
        data = parse_json_answer(text)
        items = None
        how = ""
        if isinstance(data, dict):
            got = data.get(key)
            if got is None and len(data) == 1:  # a model that renamed the key
                got = next(iter(data.values()))
            items = got if isinstance(got, list) else [got] if isinstance(got, str) else None
        elif isinstance(data, list):
            items = data
        complete = items is not None
        if items is None:
            items = _complete_strings_after(text, key)
            how = "complete items read from a cut-off JSON answer"
        if not items:
            items = _plain_lines(text)
            how = "items read from a plain-text answer"
        clean, dups, _extra = _clean_items(items or [], n_max)
        if not clean:
            return Parsed(None, INVALID, f"no usable item in the answer: {_cut(text)!r}")
        notes = []
        if how:
            notes.append(how)
        if dups:
            notes.append(f"{dups} repeated item(s) dropped")
        if _truncated(finish_reason) and complete:
            notes.append("answer cut off after the JSON ended")
        status = VALID if complete and not dups and not _truncated(finish_reason) else RECOVERED
        return Parsed(clean, status, "; ".join(notes))
    except Exception as exc:  # pragma: no cover - defensive by contract
        return Parsed(None, INVALID, f"unparseable answer ({type(exc).__name__})")


def phrase_principle(text: str) -> str | None:
    """'Select the response that ...' form of a principle (None if nothing remains after the prefix)."""
    t = " ".join(str(text).split()).strip().strip('"').rstrip()
    low = t.lower()
    for lead in ("select the response that", "choose the response that", "prefer the response that",
                 "the response that", "a response that", "response that"):
        if low.startswith(lead):
            t = t[len(lead):].strip(" :,-")
            break
    if not t or _PLACEHOLDER.match(t):
        return None
    return f"{PREFIX} {t[0].lower()}{t[1:]}"


def parse_proposals(text: str | None, n_max: int, finish_reason: str | None = None) -> Parsed:
    """Proposed principles, each phrased "Select the response that ...", recovered from cut-off or
    repetitive answers (see parse_list). Value: list[str] of at most n_max distinct principles."""
    got = parse_list(text, 10**6, "principles", finish_reason)
    if not got.usable:
        return got
    phrased = [p for p in (phrase_principle(t) for t in got.value) if p]
    clean, dups, _ = _clean_items(phrased, n_max)
    if not clean:
        return Parsed(None, INVALID, f"no usable principle in the answer: {_cut(text)!r}")
    status, detail = got.status, got.detail
    if dups:
        status = RECOVERED
        detail = "; ".join(d for d in (detail, f"{dups} repeated principle(s) dropped") if d)
    return Parsed(clean, status, detail)


def parse_principle(text: str | None, finish_reason: str | None = None) -> Parsed:
    """One merged principle from `{"principle": "..."}`; value phrased "Select the response that ..."."""
    data = parse_json_answer(text or "")
    value = data.get("principle") if isinstance(data, dict) else None
    if isinstance(value, str) and phrase_principle(value):
        return Parsed(phrase_principle(value), VALID, "")
    m = re.search(rf'"principle"\s*:\s*({_JSON_STRING})', text or "")
    if m:
        p = phrase_principle(json.loads(m.group(1)))
        if p:
            return Parsed(p, RECOVERED, "read from an incomplete JSON answer")
    return Parsed(None, INVALID, f"no principle in the answer: {_cut(text)!r}")


# ---------------------------------------------------------------------------- votes


def _vote_value(v: Any) -> int | None:
    """1 (A), -1 (B), 0 (not relevant) or None (garbled)."""
    if v is None:
        return 0  # JSON null: explicitly "no preference"
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        return None
    s = str(v).strip().strip('"').strip().upper().rstrip(".")
    s = s.removeprefix("RESPONSE ").strip()
    if s == "A":
        return 1
    if s == "B":
        return -1
    if s in _NOT_RELEVANT:
        return 0
    return None


def parse_votes(text: str | None, n: int, finish_reason: str | None = None) -> tuple[list[int], list[str]]:
    """Votes for a batch of n principles -> ([1 | -1 | 0] * n, [status] * n).

    Complete JSON: each entry "1".."n" that reads as A / B / None is valid; missing or garbled
    entries are invalid. Cut-off JSON (or JSON that does not parse): every complete `"N": "..."`
    entry is recovered, the rest invalid. Plain text ("1: A" lines): recovered. Entries beyond n
    are ignored. The vote value of an invalid entry is 0 and means nothing: use the status.
    """
    n = max(0, int(n))
    votes = [0] * n
    status = [INVALID] * n
    try:
        if not isinstance(text, str) or not text.strip():
            return votes, status
        data = parse_json_answer(text)
        table = data.get("votes") if isinstance(data, dict) else None
        if table is None and isinstance(data, dict) and all(str(k).strip().isdigit() for k in data):
            table = data  # the "votes" wrapper left out
        if isinstance(table, list):
            table = {str(i + 1): v for i, v in enumerate(table)}
        if isinstance(table, dict) and table:
            table = {str(k).strip(): v for k, v in table.items()}
            for j in range(1, n + 1):
                if str(j) in table:
                    v = _vote_value(table[str(j)])
                    if v is not None:
                        # a cut-off answer whose JSON still parsed is recovered, not valid
                        votes[j - 1], status[j - 1] = v, RECOVERED if _truncated(finish_reason) else VALID
            return votes, status
        # cut-off JSON: complete entries only
        found: dict[int, int] = {}
        for m in _VOTE_ENTRY.finditer(text):
            j = int(m.group(1))
            if 1 <= j <= n and j not in found:
                raw = None if m.group(2) == "null" else json.loads(m.group(2))
                v = _vote_value(raw)
                if v is not None:
                    found[j] = v
        if not found:
            for m in _VOTE_LINE.finditer(text):
                j = int(m.group(1))
                if 1 <= j <= n and j not in found:
                    v = _vote_value(m.group(2))
                    if v is not None:
                        found[j] = v
        for j, v in found.items():
            votes[j - 1], status[j - 1] = v, RECOVERED
        return votes, status
    except Exception:  # pragma: no cover - defensive by contract
        return [0] * n, [INVALID] * n


# ---------------------------------------------------------------------------- annotation / oracle


def parse_annotation(text: str | None, swap: bool = False, finish_reason: str | None = None) -> Parsed:
    """Which response the model preferred: value "a" / "b" (mapped back when the pair was shown
    swapped), or None. `{"preferred": "A"}` is valid; a cut-off `{"preferred": "A"` or a bare
    "A" / "Response B" answer is recovered."""
    try:
        if not isinstance(text, str) or not text.strip():
            return Parsed(None, INVALID, "empty answer")
        data = parse_json_answer(text)
        raw, status, detail = None, VALID, ""
        if isinstance(data, dict):
            raw = data.get("preferred", data.get("choice", data.get("answer")))
        if raw is None:
            m = re.search(rf'"preferred"\s*:\s*({_JSON_STRING})', text)
            if m:
                raw, status, detail = json.loads(m.group(1)), RECOVERED, "read from an incomplete JSON answer"
            else:
                bare = re.fullmatch(r"\s*(?:response\s+)?[\"'(]?([AB])[\"')]?[.!]?\s*", text, re.IGNORECASE)
                if bare:
                    raw, status, detail = bare.group(1), RECOVERED, "plain-text answer"
        v = _vote_value(raw) if raw is not None else None
        if v not in (1, -1):
            return Parsed(None, INVALID, f"no A/B choice in the answer: {_cut(text)!r}")
        if status == VALID and _truncated(finish_reason):
            status, detail = RECOVERED, "answer cut off after the JSON ended"
        choice = "a" if v == 1 else "b"
        if swap:
            choice = "b" if choice == "a" else "a"
        return Parsed(choice, status, detail)
    except Exception:  # pragma: no cover - defensive by contract
        return Parsed(None, INVALID, "unparseable answer")


def parse_oracle(text: str | None, finish_reason: str | None = None) -> Parsed:
    """An IterAlign oracle verdict: value (flagged: bool, reason: str) or None.

    `{"flagged": true, "reason": "..."}` is valid; an answer cut off inside "reason" keeps its
    complete `"flagged"` field (recovered, reason marked as cut off); no readable "flagged" is
    invalid -- never "not flagged"."""
    try:
        if not isinstance(text, str) or not text.strip():
            return Parsed(None, INVALID, "empty answer")
        data = parse_json_answer(text)
        if isinstance(data, dict) and isinstance(data.get("flagged"), bool):
            status = RECOVERED if _truncated(finish_reason) else VALID
            return Parsed((data["flagged"], str(data.get("reason", ""))[:500]), status, "")
        m = re.search(r'"flagged"\s*:\s*(true|false)\b', text, re.IGNORECASE)
        if m:
            flagged = m.group(1).lower() == "true"
            r = re.search(r'"reason"\s*:\s*"((?:[^"\\]|\\.)*)', text)
            reason = (r.group(1) if r else "").strip()
            return Parsed((flagged, (reason + " [cut off]").strip()[:500]), RECOVERED,
                          "verdict read from an incomplete JSON answer")
        return Parsed(None, INVALID, f"no flagged true/false in the answer: {_cut(text)!r}")
    except Exception:  # pragma: no cover - defensive by contract
        return Parsed(None, INVALID, "unparseable answer")


# ---------------------------------------------------------------------------- per-stage accounting


class StageFailed(RuntimeError):
    """A stage whose answers are mostly invalid: the run stops instead of reporting an empty result.
    `stage` names it, `counts` holds its StageCounts."""

    def __init__(self, message: str, stage: str = "", counts: StageCounts | None = None):
        super().__init__(message)
        self.stage = stage
        self.counts = counts


@dataclass
class StageCounts:
    """Answers of one stage by status. `example` keeps the first invalid answer (for messages)."""

    valid: int = 0
    recovered: int = 0
    invalid: int = 0
    example: str | None = None

    def add(self, status: str, answer: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown answer status {status!r}; expected one of {STATUSES}")
        setattr(self, status, getattr(self, status) + 1)
        if status == INVALID and self.example is None and answer is not None:
            self.example = _cut(answer, 200)

    def add_many(self, statuses, answer: str | None = None) -> None:
        for s in statuses:
            self.add(s, answer)

    @property
    def total(self) -> int:
        return self.valid + self.recovered + self.invalid

    @property
    def invalid_rate(self) -> float:
        return self.invalid / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "recovered": self.recovered, "invalid": self.invalid,
                "total": self.total, "invalid_rate": round(self.invalid_rate, 4)}


_ADVICE = ("Try a larger model, an endpoint with JSON schema support (OpenAI, vLLM, llama.cpp, Ollama), "
           "or a smaller batch (fewer principles per vote request).")


def check_stage(name: str, counts: StageCounts, warn: float = 0.2, stop: float = 0.5) -> str | None:
    """None when the stage is healthy; a warning sentence when more than `warn` of its answers were
    invalid; raises StageFailed (with what the model returned and what to try) above `stop`."""
    if counts.total == 0:
        return None
    rate = counts.invalid_rate
    head = (f"Stage '{name}': {counts.invalid} of {counts.total} model answers ({rate:.0%}) were invalid"
            f" ({counts.valid} valid, {counts.recovered} recovered)")
    example = f" Example of what the model returned: {counts.example!r}." if counts.example else ""
    if rate > stop:
        raise StageFailed(f"{head}, more than {stop:.0%}: the run stopped.{example} {_ADVICE}", name, counts)
    if rate > warn:
        return f"{head}; results of this stage rest on fewer answers than requested.{example} {_ADVICE}"
    return None


__all__ = [
    "INVALID",
    "PREFIX",
    "RECOVERED",
    "STATUSES",
    "VALID",
    "Parsed",
    "StageCounts",
    "StageFailed",
    "check_stage",
    "parse_annotation",
    "parse_list",
    "parse_oracle",
    "parse_principle",
    "parse_proposals",
    "parse_votes",
    "phrase_principle",
]
