"""The one JSON parser for user content (whole files, JSON Lines, JSON text inside table cells).

`json.loads` fails on hostile input in ways that are not `JSONDecodeError`: nesting deeper than
the interpreter's recursion limit raises RecursionError (and nesting just under it parses, then
breaks whatever recurses over the value later: str(), pickle, pyarrow), an integer of more than 4,300 digits
raises ValueError (CVE-2020-10735 guard), and a lone surrogate escape such as ``"\\ud800"`` parses
into a string that cannot be encoded as UTF-8 (it fails later, anywhere). `loads` turns each into a
`DataError` naming the file, row and column (located by a structural scan that only runs on the
error path) and leaves `JSONDecodeError` to the caller, which knows what the file was meant to hold.
Values nested more than `MAX_DEPTH` levels deep are refused the same way, whether or not the
interpreter could parse them (real preference data nests a few levels: conversations, content parts).

Three things `json.loads` accepts silently are refused too, each with the row, column and position:
* `NaN`, `Infinity`, `-Infinity`: not JSON (RFC 8259 has no such values; Python's `json.dumps`
  writes them). Loading them as-is would put a float NaN where the user has a missing value (an id
  of NaN then reads as "empty", a score as a number that compares false with everything).
* a number too large for a float (`1e999999`): valid JSON syntax, but `json.loads` turns it into
  infinity, so the value loaded is not the value written. Strict parsers refuse it too (Rust's
  serde_json: "number out of range"); the hint says to write such a value as text.
* a key repeated in one object: RFC 8259 says names SHOULD be unique and that readers then behave
  unpredictably (Python keeps the last value, others the first or fail), so neither value is chosen
  for the user.
Cost: three parser hooks, measured together at +25% of `json.loads` time on 200,000 small records
(1.66 -> 2.08 s) and +22% on the 6.9 MB vicuna records (33 -> 41 ms); a whole `load_pairs` of those
files changed within the noise of a shared machine.
"""

from __future__ import annotations

import json
import re
from typing import Any

from icai_core.intake.errors import DataError

__all__ = ["loads", "MAX_DEPTH", "first_bad_string"]

MAX_DEPTH = 100  # lists / objects inside each other; deeper is refused
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|-?Infinity|NaN')
_LONG_INT = re.compile(r"-?\d{4301,}")
_CONSTANTS = ("NaN", "Infinity", "-Infinity")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_FIX = "Export the data again with a JSON library; if a value really holds this content, save it as text"


def _line_col(text: str, offset: int, base_line: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return base_line + line, col


def _key(token: str) -> str:
    try:
        return json.loads(token)
    except (ValueError, RecursionError):
        return token[1:-1]


def _scan(text: str, stop=None, *, repeated_key: bool = False
          ) -> tuple[int, list[str], list[int], list[str | None]] | None:
    """Walk the structural tokens of `text` until `stop(token, depth)` is true (or, `repeated_key`,
    until a key repeats inside one object: the offset is then that key's); returns (offset,
    container kinds, element index per level, last key per level) at that point."""
    kinds: list[str] = []
    index: list[int] = []
    keys: list[str | None] = []
    seen: list[set[str]] = []
    pending: tuple[int, str] | None = None
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if stop is not None and stop(tok, len(kinds)):
            return m.start(), kinds, index, keys
        c = tok[0]
        if c == '"':
            pending = (m.start(), tok)
            continue
        if c in "[{":
            kinds.append(c)
            index.append(0)
            keys.append(None)
            seen.append(set())
        elif c in "]}":
            if kinds:
                kinds.pop()
                index.pop()
                keys.pop()
                seen.pop()
        elif c == "," and kinds:
            index[-1] += 1
        elif c == ":" and kinds and pending is not None:
            key = _key(pending[1])
            keys[-1] = key
            if repeated_key and key in seen[-1]:
                return pending[0], kinds, index, keys
            seen[-1].add(key)
        pending = None
    return None


def _where(kinds: list[str], index: list[int], keys: list[str | None],
           records: bool) -> tuple[int | None, str | None]:
    """(row, column) of a position: a top-level list is a list of records (row = element, column =
    key inside it); a top-level object is a record (JSON Lines) or an object of columns."""
    if not kinds:
        return None, None
    if kinds[0] == "[":
        row = index[0] + 1
        col = keys[1] if len(kinds) > 1 and kinds[1] == "{" else None
        return row, col
    col = keys[0]
    if records:
        return None, col
    row = index[1] + 1 if len(kinds) > 1 and kinds[1] == "[" else None
    return row, col


def first_bad_string(obj: Any) -> list | None:
    """Path (keys / indices) to the first string (value or key) that is not encodable as UTF-8."""
    stack: list[tuple[Any, list]] = [(obj, [])]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(v, dict):
            for k, x in reversed(list(v.items())):
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return path + [k]
                stack.append((x, path + [k]))
        elif isinstance(v, list):
            stack.extend((x, path + [i]) for i, x in reversed(list(enumerate(v))))
    return None


_CONTAINERS = frozenset((list, dict))  # json.loads builds exactly these types


def _deeper_than(obj: list | dict, limit: int) -> bool:
    """Whether a container sits more than `limit` levels deep. Level by level, without recursion;
    a container whose values are all scalars (a typical record) costs one C-level type scan."""
    level, depth = [obj], 1
    while level:
        if depth > limit:
            return True
        nxt: list = []
        for v in level:
            vals = v.values() if type(v) is dict else v
            if not _CONTAINERS.isdisjoint(map(type, vals)):
                nxt.extend(x for x in vals if type(x) in _CONTAINERS)
        level, depth = nxt, depth + 1
    return False


def _too_deep(text: str, file: str, row: int | None, column: str | None, base_line: int,
              records: bool) -> DataError:
    what = "the JSON is nested too deeply to be read (lists or objects inside each other"
    found = _scan(text, lambda tok, depth: tok in ("[", "{") and depth >= MAX_DEPTH)
    if found is None:
        return DataError(file, row, column, what + ")", _FIX)
    offset, kinds, index, keys = found
    line, col = _line_col(text, offset, base_line)
    wr, wc = _where(kinds, index, keys, records)
    return DataError(file, row if row is not None else wr, column if column is not None else wc,
                     f"{what}, more than {MAX_DEPTH} levels deep at line {line}, column {col})", _FIX)


class _Refused(Exception):
    """Raised by a parser hook (never escapes `loads`): `kind` is 'constant', 'overflow' or 'key'."""

    def __init__(self, kind: str, value: str) -> None:
        super().__init__(kind, value)
        self.kind = kind
        self.value = value


def _constant(name: str) -> Any:
    raise _Refused("constant", name)


def _float(literal: str) -> float:
    value = float(literal)
    if value - value != 0.0:  # inf (NaN never comes from a literal: that is `_constant`)
        raise _Refused("overflow", literal)
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Refused("key", k)
            seen.add(k)
    return obj


def _is_overflow(tok: str) -> bool:
    if tok[0] not in "-0123456789" or not any(ch in tok for ch in ".eE"):
        return False
    value = float(tok)
    return value - value != 0.0


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _locate(text: str, found, row: int | None, column: str | None, base_line: int,
            records: bool) -> tuple[str, int | None, str | None]:
    """(" (at line L, column C)" or "", row, column) of a `_scan` result; a given row / column wins."""
    if found is None:
        return "", row, column
    offset, kinds, index, keys = found
    line, col = _line_col(text, offset, base_line)
    wr, wc = _where(kinds, index, keys, records)
    return (f" (at line {line}, column {col})", row if row is not None else wr,
            column if column is not None else wc)


# what a hook refused -> (message, hint); {value} is the refused text, {at} its position
_REFUSALS = {
    "key": ("the key {value!r} appears twice in one JSON object{at}; JSON readers disagree on which of the two "
            "values counts, so neither is taken",
            "Keep one of the two (remove or rename the other), so that every key in an object is unique"),
    "constant": ("{value}{at} is not a JSON value: JSON has no NaN or Infinity (Python's json.dumps writes them "
                 "for a missing or infinite number)",
                 "Write null for a missing value, or write the value as text in double quotes (Python: "
                 "json.dumps(..., allow_nan=False) finds them)"),
    "overflow": ("the number {value}{at} is too large to be read as a number (it would become infinity)",
                 "Correct the number, or write it as text in double quotes"),
}


def _refusal(bad: _Refused, text: str, file: str, row: int | None, column: str | None, base_line: int,
             records: bool) -> DataError:
    """The DataError for what a hook refused, located by a scan of `text` (error path only)."""
    if bad.kind == "key":
        found = _scan(text, repeated_key=True)
    elif bad.kind == "constant":
        found = _scan(text, lambda tok, depth: tok in _CONSTANTS)
    else:
        found = _scan(text, lambda tok, depth: _is_overflow(tok))
    at, r, c = _locate(text, found, row, column, base_line, records)
    message, hint = _REFUSALS[bad.kind]
    return DataError(file, r, c, message.format(value=_short(bad.value), at=at), hint,
                     hint_web=hint.split(" (Python:")[0])


def loads(text: str, file: str, *, row: int | None = None, column: str | None = None,
          base_line: int = 1, records: bool = False) -> Any:
    """`json.loads(text)`, with every non-syntax failure (and NaN / Infinity, a number too large
    for a float, a repeated key: see the module docstring) as a DataError.

    `row` / `column`: where `text` sits when it is one cell or one line (JSON Lines: `row` is the line
    number and `records=True`); otherwise they are located inside `text`. `base_line`: the line of
    the file on which `text` starts (for messages)."""
    try:
        obj = json.loads(text, parse_constant=_constant, parse_float=_float, object_pairs_hook=_object)
    except json.JSONDecodeError:
        raise
    except _Refused as bad:
        raise _refusal(bad, text, file, row, column, base_line, records) from None
    except RecursionError:
        raise _too_deep(text, file, row, column, base_line, records) from None
    except ValueError:  # int_max_str_digits, the only other ValueError json.loads raises
        found = _scan(text, lambda tok, depth: _LONG_INT.fullmatch(tok) is not None)
        at, r, c = _locate(text, found, row, column, base_line, records)
        digits = "more than 4,300"
        if found is not None:
            digits = f"{len(_TOKEN.match(text, found[0]).group().lstrip('-')):,}"
        raise DataError(file, r, c, f"a number has {digits} digits{at}: more than the 4,300 digits Python "
                        "reads as a number", "Write such a value as text, in double quotes") from None
    if isinstance(obj, (list, dict)) and _deeper_than(obj, MAX_DEPTH):
        raise _too_deep(text, file, row, column, base_line, records)
    if _SURROGATE_ESCAPE.search(text):
        path = first_bad_string(obj)
        if path is not None:
            r, c = row, column
            if row is None and path and isinstance(obj, list):
                r = path[0] + 1 if isinstance(path[0], int) else None
                c = column if column is not None else (path[1] if len(path) > 1 and isinstance(path[1], str) else None)
            elif path and isinstance(obj, dict) and column is None:
                c = path[0] if isinstance(path[0], str) else None
                if not records and len(path) > 1 and isinstance(path[1], int) and row is None:
                    r = path[1] + 1
            raise DataError(file, r, c,
                            "the text holds a lone surrogate escape (such as \\ud800): half of a UTF-16 "
                            "character pair, which is not a character and cannot be stored as UTF-8",
                            "Remove the escape or complete the pair (e.g. \\ud83d\\ude00 for one emoji)")
    return obj
