"""Data intake: read pairwise preference files into the canonical pair table.

`load_pairs` reads CSV, TSV, JSON (a list of records or an object of columns), JSON Lines and
Parquet -- from a path, from bytes or from a file-like object with a `name` -- and recognises these
layouts without a manual mapping (`SUPPORTED_FORMATS`):

* ``principia``  -- ICAI / Principia CSV: ``text_a, text_b, preferred_text`` (+ ``prompt``), labels
  ``text_a`` / ``text_b`` / ``tie`` (``a``, ``b``, ``A``, ``B`` accepted); the shared real data.
* ``canonical``  -- the canonical table itself: ``prompt, text_a, text_b, preferred`` (a / b / tie).
* ``alpacaeval`` -- AlpacaEval ``annotations.json``: ``instruction, output_1, output_2, preference``.
* ``arena``      -- Chatbot Arena battles: ``conversation_a, conversation_b, winner``.
* ``arena_kaggle`` -- Kaggle "LMSYS Chatbot Arena" style: ``prompt, response_a, response_b,
  winner_model_a, winner_model_b, winner_tie``.
* ``hh_rlhf``    -- Anthropic HH-RLHF and other ``chosen`` / ``rejected`` data.

An annotated pairs JSON file (ICAI / Feedback Forensics format, as `icai run` exports it) is read
as the canonical table: its comparisons with the default annotator's preferences.

Anything else is read through an explicit `ColumnMapping`.

Rules: nothing is silently dropped or altered. Text is never stripped, ids stay strings, "NA" and
"null" stay text. Every source column that is not turned into a canonical column is kept as
metadata; the source's label column is kept verbatim (as ``raw_preference`` when the source has no
such column) unless it is identical to ``preferred``. Rows removed by ``ties="exclude"`` are counted
in ``report.excluded``. Bad input raises `DataError`, whose text names the file, the row (1-based
data row, header not counted; for JSON Lines the line number), the column, what is wrong and what
to do.

CSV/TSV reading: files whose double quotes all look RFC-4180-clean are read by pyarrow's
multi-threaded reader with every column as text (about 0.05 s for the 4.4 MB shared files, ~1 s
for 100 MB); anything pyarrow rejects, and any file with unusual quoting, is read by Python's csv
module in strict mode, which either reads it or names the exact row (ragged rows, unclosed or
stray quotes). Both paths give identical tables.

Orientation of chosen/rejected data (HH-RLHF): always putting the chosen reply in position A would
create a position artefact, so A/B are assigned by a keyed hash of the row: SHA-256 of
``HH_ORIENTATION_KEY + "\\x00" + chosen + "\\x00" + rejected`` (the source strings as stored;
for conversation lists, the JSON text of their turns); the
chosen reply is A when the first byte of the digest is even. The result does not depend on row
order and is the same on every run; the added ``swapped`` column is True where A is the rejected
reply (the reply the source lists second).
"""

from __future__ import annotations

import ast
import csv
import gc
import gzip
import hashlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "SUPPORTED_FORMATS",
    "SUPPORTED_FILE_TYPES",
    "CANONICAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "HH_ORIENTATION_KEY",
    "hh_chosen_is_a",
    "ColumnMapping",
    "DataError",
    "IntakeReport",
    "LoadResult",
    "load_pairs",
    "detect_format",
    "matching_formats",
    "suggest_mapping",
    "suggest_value_map",
    "dataset_summary",
    "default_max_bytes",
    "bundled_datasets",
    "load_demo",
]

CANONICAL_COLUMNS = ("id", "prompt", "text_a", "text_b", "preferred")
OPTIONAL_COLUMNS = ("annotator", "model_a", "model_b", "language", "pair_id", "category")

SUPPORTED_FORMATS: dict[str, str] = {
    "principia": "ICAI / Principia CSV: text_a, text_b, preferred_text (text_a / text_b / tie), optional prompt",
    "canonical": "Principia's canonical pair table: prompt, text_a, text_b, preferred (a / b / tie)",
    "alpacaeval": "AlpacaEval annotations.json: instruction, output_1, output_2, preference (1, 2, 1.5 = tie)",
    "arena": "Chatbot Arena battles: model_a, model_b, conversation_a, conversation_b, winner",
    "arena_kaggle": "Kaggle LMSYS Arena: prompt, response_a, response_b, winner_model_a/_b/_tie",
    "hh_rlhf": "Anthropic HH-RLHF and other chosen / rejected data (A/B order by a keyed hash)",
    "mapping": "any other columns, read through an explicit ColumnMapping",
}

SUPPORTED_FILE_TYPES: dict[str, str] = {
    "csv": "comma-separated values (.csv), UTF-8, RFC-4180 quoting; ';' separators are detected",
    "tsv": "tab-separated values (.tsv, .tab), UTF-8",
    "json": "JSON (.json): a list of records, or an object of equally long columns",
    "jsonl": "JSON Lines (.jsonl, .ndjson): one JSON object per line",
    "parquet": "Apache Parquet (.parquet, .pq)",
}

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# Columns each known format needs; a file matches a format when it has all of them.
FORMAT_SIGNATURES: dict[str, tuple[str, ...]] = {
    "principia": ("text_a", "text_b", "preferred_text"),
    "canonical": ("prompt", "text_a", "text_b", "preferred"),
    "alpacaeval": ("instruction", "output_1", "output_2", "preference"),
    "arena": ("conversation_a", "conversation_b", "winner"),
    "arena_kaggle": ("prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"),
    "hh_rlhf": ("chosen", "rejected"),
}

HH_ORIENTATION_KEY = "principia-hh-orientation-v1"

_PRINCIPIA_LABELS = {
    "text_a": "a", "text_b": "b", "tie": "tie",
    "a": "a", "b": "b", "A": "a", "B": "b", "Tie": "tie", "TIE": "tie",
}
_CANONICAL_LABELS = dict(_PRINCIPIA_LABELS)
_DEFAULT_MAPPING_LABELS = {**_PRINCIPIA_LABELS, "model_a": "a", "model_b": "b", "draw": "tie"}
_ARENA_LABELS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"}

_SAVE_AS_UTF8 = (
    "Re-save the file with UTF-8 encoding (Excel: Save As > 'CSV UTF-8'; pandas: "
    "to_csv(path, encoding='utf-8')) and load it again"
)
_CSV_QUOTING_HINT = (
    "Fields that contain commas, double quotes or line breaks must be wrapped in double quotes, "
    "with each inner double quote doubled (\"\")"
)


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


class DataError(Exception):
    """A problem with the user's data: says where (file, row, column), what, and what to do.

    `row` is the 1-based data row as the user counts it (the header is not a row; for JSON Lines it
    is the line number) or None; `column` is a column name or None.
    """

    def __init__(self, file: str, row: int | None = None, column: str | None = None,
                 message: str = "", hint: str = "") -> None:
        super().__init__(file, row, column, message, hint)
        self.file = file
        self.row = row
        self.column = column
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        where = [self.file or "the data"]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = f"{', '.join(where)}: {self.message}"
        if not text.endswith((".", "!", "?")):
            text += "."
        if self.hint:
            text += " " + self.hint
            if not self.hint.endswith((".", "!", "?")):
                text += "."
        return text


@dataclass
class ColumnMapping:
    """Which source column holds what. `prompt` may be None (no prompt: prompts are "").

    `values` maps the source's preference labels to "a" / "b" / "tie", e.g.
    ``{"1": "a", "2": "b", "0": "tie"}``; keys are compared as text, so the number 1 and the text
    "1" (and "1.0") are the same label. Without `values`, the labels a/b/tie, A/B, text_a/text_b,
    model_a/model_b are understood.
    """

    prompt: str | None = None
    text_a: str | None = None
    text_b: str | None = None
    preferred: str | None = None
    id: str | None = None
    annotator: str | None = None
    model_a: str | None = None
    model_b: str | None = None
    language: str | None = None
    pair_id: str | None = None
    category: str | None = None
    values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [n for n in ("text_a", "text_b", "preferred") if not getattr(self, n)]
        if missing:
            raise ValueError("a ColumnMapping needs the columns for " + ", ".join(missing))
        if self.values is None:
            self.values = {}

    def columns(self) -> dict[str, str]:
        """Canonical name -> source column, for the fields that are set."""
        names = ("prompt", "text_a", "text_b", "preferred", "id") + OPTIONAL_COLUMNS
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass
class IntakeReport:
    """What happened while loading one file."""

    file_name: str
    format: str
    file_type: str
    rows_read: int
    rows_kept: int
    excluded: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    metadata_columns: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        desc = SUPPORTED_FORMATS.get(self.format, self.format).split(":")[0]
        lines = [
            f"{self.file_name}: {desc} ({self.file_type.upper()} file); "
            f"{self.rows_read:,} rows read, {self.rows_kept:,} kept."
        ]
        for reason, n in self.excluded.items():
            lines.append(f"Excluded {n:,} rows: {reason}.")
        if self.metadata_columns:
            lines.append("Metadata columns kept: " + ", ".join(self.metadata_columns) + ".")
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"- {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class LoadResult:
    pairs: pd.DataFrame
    format: str
    report: IntakeReport

    @property
    def name(self) -> str:
        """The file name used in messages."""
        return self.report.file_name


# --------------------------------------------------------------------------------------------
# Reading bytes
# --------------------------------------------------------------------------------------------


def default_max_bytes() -> int:
    """Largest file `load_pairs` reads by default: 1/8 of the available memory (pandas needs several
    times the file size), at least 64 MiB; 2 GiB when the available memory is unknown. The
    environment variable PRINCIPIA_MAX_BYTES overrides it."""
    env = os.environ.get("PRINCIPIA_MAX_BYTES")
    if env:
        try:
            return int(env)
        except ValueError:
            pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return max(64 * 2**20, int(line.split()[1]) * 1024 // 8)
    except OSError:
        pass
    return 2 * 2**30


def _human_size(n: int) -> str:
    if n < 10_000:
        return f"{n:,} bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _too_large(file: str, size: int, limit: int) -> DataError:
    return DataError(
        file, None, None,
        f"the file is {_human_size(size)} ({size:,} bytes), more than the {_human_size(limit)} "
        f"({limit:,} bytes) that can safely be loaded into memory here",
        "Load a smaller sample of the file, or raise the limit with load_pairs(..., max_bytes=...) "
        "or the PRINCIPIA_MAX_BYTES environment variable if the machine has enough memory",
    )


def _read_source(source: Any, name: str | None, limit: int) -> tuple[bytes, str, str]:
    """Return (raw bytes, display name, lower-case extension or '')."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        disp = name or "uploaded data"
        if len(raw) > limit:
            raise _too_large(disp, len(raw), limit)
        return raw, disp, _suffix(name)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        disp = name or path.name
        if not path.exists():
            raise DataError(disp, None, None, "the file does not exist", f"Check the path {str(path)!r}")
        if path.is_dir():
            raise DataError(disp, None, None, "this is a folder, not a file", "Choose one data file inside it")
        size = path.stat().st_size
        if size > limit:
            raise _too_large(disp, size, limit)
        return path.read_bytes(), disp, _suffix(name) or _suffix(path.name)
    if hasattr(source, "read"):
        fname = getattr(source, "name", None)
        base = Path(str(fname)).name if fname else None
        disp = name or base or "uploaded data"
        size = getattr(source, "size", None)
        if isinstance(size, int) and size > limit:
            raise _too_large(disp, size, limit)
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except (OSError, ValueError):
                pass
        data = source.read(limit + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > limit:
            raise _too_large(disp, size if isinstance(size, int) else len(data), limit)
        return bytes(data), disp, _suffix(name) or _suffix(base)
    raise TypeError(f"load_pairs needs a path, bytes or a file-like object, not {type(source).__name__}")


def _suffix(name: str | None) -> str:
    if not name:
        return ""
    return Path(name).suffix.lower()


def _sniff_file_type(raw: bytes) -> str:
    if raw[:4] == b"PAR1":
        return "parquet"
    head = raw[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] == b"[":
        return "json"
    if head[:1] == b"{":
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        if len(lines) > 1:
            try:
                json.loads(lines[0])
                return "jsonl"
            except ValueError:
                pass
        return "json"
    first = head.split(b"\n", 1)[0]
    return "tsv" if first.count(b"\t") > first.count(b",") else "csv"


def _decode(raw: bytes, file: str, file_type: str) -> str:
    """UTF-8 text of `raw` (a UTF-8 byte-order mark is accepted and removed)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            file, None, None,
            "the file is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8",
            _SAVE_AS_UTF8,
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(
            file, None, None,
            f"the file contains NUL bytes (the first at byte offset {nul:,}), so it is not UTF-8 text; "
            "it may be UTF-16 text without a byte-order mark, or a binary file such as a spreadsheet",
            _SAVE_AS_UTF8,
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = raw.count(b"\n", 0, offset) + 1
        row = None
        if file_type in ("csv", "tsv"):
            prefix = raw[:offset].decode("utf-8-sig", errors="replace")
            delim = "\t" if file_type == "tsv" else ","
            records = [r for r in csv.reader(io.StringIO(prefix, newline=""), delimiter=delim) if r]
            row = len(records) - 1 if len(records) > 1 else None
        elif file_type == "jsonl":
            row = line
        guess = ""
        try:
            raw.decode("cp1252")
            guess = "; it looks like Latin-1 / Windows-1252 text"
        except UnicodeDecodeError:
            pass
        raise DataError(
            file, row, None,
            f"the file is not UTF-8 text: the byte 0x{raw[offset]:02x} at byte offset {offset:,} "
            f"(line {line}) cannot be decoded{guess}",
            _SAVE_AS_UTF8,
        ) from None


# --------------------------------------------------------------------------------------------
# Parsing into a table of source columns
# --------------------------------------------------------------------------------------------


@dataclass
class _Table:
    df: pd.DataFrame
    rownums: np.ndarray | None = None  # user-facing row number per position (None: position + 1)
    records: list | None = None  # raw JSON records, for precise messages
    warnings: list[str] = field(default_factory=list)

    def row(self, pos: int) -> int:
        return int(self.rownums[pos]) if self.rownums is not None else pos + 1


def _no_rows(file: str, what: str = "the file has column names but no data rows") -> DataError:
    return DataError(file, None, None, what,
                     "Add at least one row with a prompt, two responses and a preference")


def _record_lines(text: str, delimiter: str, upto: int) -> list[tuple[int, int]]:
    """(first line, last line) of the first `upto` + 1 non-blank records (error path only)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    spans: list[tuple[int, int]] = []
    start = 1
    try:
        for rec in reader:
            if rec:
                spans.append((start, reader.line_num))
                if len(spans) > upto:
                    break
            start = reader.line_num + 1
    except csv.Error:
        spans.append((start, reader.line_num))
    return spans


def _lines_text(span: tuple[int, int]) -> str:
    return f"line {span[0]}" if span[0] == span[1] else f"lines {span[0]}-{span[1]}"


def _parse_delimited(raw: bytes, text: str, file: str, file_type: str) -> _Table:
    delimiter = "\t" if file_type == "tsv" else ","
    warnings: list[str] = []
    if not text or text.isspace():
        raise DataError(file, None, None, "the file contains only blank space, no header and no rows",
                        "Choose a file that contains a header row and at least one pair")
    if file_type == "csv":
        end = text.find("\n")
        first = text if end < 0 else text[:end]
        try:
            header0 = next(csv.reader(io.StringIO(first, newline="")))
        except (csv.Error, StopIteration):
            header0 = [first]
        if len(header0) == 1:
            for alt, label in ((";", "';'"), ("\t", "tabs")):
                if len(next(csv.reader(io.StringIO(first, newline=""), delimiter=alt))) >= 3:
                    delimiter = alt
                    warnings.append(f"the file separates columns with {label}, not commas; read it that way")
                    break
    header_warnings: list[str] = []
    fast = _arrow_delimited(raw, text, file, delimiter, header_warnings)
    if fast is not None:
        fast.warnings = warnings + header_warnings
        return fast
    # Slow path: Python's csv module, strict, which finds the exact row of any problem.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[list[str]] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of new str objects: the cyclic GC only slows this down
    try:
        return _delimited_table(text, file, delimiter, reader, records, warnings)
    finally:
        if gc_was_enabled:
            gc.enable()


def _arrow_delimited(raw: bytes, text: str, file: str, delimiter: str, warnings: list[str]) -> _Table | None:
    """Fast path: pyarrow's multi-threaded CSV reader, every column as text, nothing read as null.

    Returns None whenever pyarrow objects to anything (ragged rows, unclosed quotes, huge fields...);
    the caller then re-reads the text with the csv module, which names the exact row."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    try:
        header = next(csv.reader(io.StringIO(text[: 1 << 20], newline=""), delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration):
        return None
    names = _clean_header(header, file, warnings)  # raises on duplicate names
    view = memoryview(raw)[3:] if raw.startswith(b"\xef\xbb\xbf") else memoryview(raw)
    if not _quotes_look_rfc4180(view, delimiter):
        return None
    body = pa.py_buffer(view)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False,
                quoted_strings_can_be_null=False, null_values=[], true_values=[], false_values=[],
            ),
        )
    except (pa.ArrowException, ValueError, OSError):
        return None
    if table.column_names != header:
        return None
    if table.num_rows == 0:
        raise _no_rows(file)
    df = table.rename_columns(names).to_pandas()
    if any(not isinstance(df[c].dtype, pd.StringDtype) for c in df.columns):
        return None
    return _Table(df=df)


def _quotes_look_rfc4180(view: memoryview, delimiter: str) -> bool:
    """Cheap vectorised check that every double quote can be an RFC-4180 quote: their number is even
    and none sits between two ordinary characters (as in the stray quote of `"x"y`). pyarrow would
    read such text leniently (`xy`, or a quote left open at the end of the file), so files that fail
    this check go to the strict csv-module path, which either reads them or names the row."""
    arr = np.frombuffer(view, dtype=np.uint8)
    q = np.flatnonzero(arr == 0x22)
    if q.size == 0:
        return True
    if q.size % 2:
        return False
    boundary = np.array([0x22, 0x0A, 0x0D, ord(delimiter)], dtype=np.uint8)
    inner_prev = ~np.isin(arr[np.maximum(q - 1, 0)], boundary) & (q > 0)
    inner_next = ~np.isin(arr[np.minimum(q + 1, arr.size - 1)], boundary) & (q < arr.size - 1)
    return not bool((inner_prev & inner_next).any())


def _delimited_table(text: str, file: str, delimiter: str, reader, records: list[list[str]],
                     warnings: list[str]) -> _Table:
    try:
        records.extend(reader)
    except csv.Error as exc:
        nonblank = [r for r in records if r]
        data_row = len(nonblank)  # the failing record, counted after the header
        spans = _record_lines(text, delimiter, len(nonblank))
        span = spans[len(nonblank)] if len(spans) > len(nonblank) else (reader.line_num, reader.line_num)
        msg = str(exc)
        if "unexpected end of data" in msg:
            what = (f"a quoted field that starts in this row (line {span[0]}) is never closed: "
                    "the file ends inside the quotes")
            hint = "Add the missing closing double quote. " + _CSV_QUOTING_HINT
        elif "expected after" in msg:
            what = (f"a closing double quote in this row ({_lines_text(span)}) is followed by other "
                    "text instead of a separator")
            hint = _CSV_QUOTING_HINT
        else:
            what = f"this row ({_lines_text(span)}) cannot be parsed as CSV ({msg})"
            hint = _CSV_QUOTING_HINT
        raise DataError(file, data_row if data_row > 0 else None, None, what, hint) from None
    records = [r for r in records if r]
    if not records:
        raise DataError(file, None, None, "the file contains only blank lines, no header and no rows",
                        "Choose a file that contains a header row and at least one pair")
    header = records[0]
    data = records[1:]
    header = _clean_header(header, file, warnings)
    ncol = len(header)
    if not data:
        raise _no_rows(file)
    lens = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    bad = np.flatnonzero(lens != ncol)
    if bad.size:
        pos = int(bad[0])
        spans = _record_lines(text, delimiter, pos + 1)
        span = spans[pos + 1] if len(spans) > pos + 1 else None
        where = f" ({_lines_text(span)})" if span else ""
        n = int(lens[pos])
        kind = "an unquoted separator or a stray quote" if n > ncol else "a missing field or a stray quote"
        raise DataError(
            file, pos + 1, None,
            f"this row{where} has {n} fields but the header has {ncol} columns ({kind}?)",
            _CSV_QUOTING_HINT,
        )
    columns = list(zip(*data, strict=True))
    df = pd.DataFrame({h: pd.Series(col, dtype="str") for h, col in zip(header, columns, strict=True)})
    return _Table(df=df, warnings=warnings)


def _clean_header(header: list[str], file: str, warnings: list[str]) -> list[str]:
    out = list(header)
    renamed = []
    for i, h in enumerate(out):
        if h == "":
            out[i] = f"column_{i + 1}"
            renamed.append(out[i])
    if renamed:
        warnings.append("columns without a name were called " + ", ".join(renamed))
    seen: dict[str, int] = {}
    for i, h in enumerate(out):
        if h in seen:
            raise DataError(
                file, None, h,
                f"two columns have this name (columns {seen[h] + 1} and {i + 1})",
                "Rename one of them so that every column name is unique",
            )
        seen[h] = i
    return out


def _parse_json(text: str, file: str) -> _Table:
    if not text or text.isspace():
        raise DataError(file, None, None, "the file contains only blank space, no JSON data",
                        "Choose a file that holds a list of records")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            try:
                table = _parse_jsonl(text, file)
            except DataError:
                table = None
            if table is not None:
                table.warnings.append("the .json file holds one JSON object per line; read it as JSON Lines")
                return table
        raise DataError(
            file, None, None,
            f"the file is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            "Fix the JSON at that position (a missing comma, bracket or quote is typical) or export the data again",
        ) from None
    if isinstance(obj, dict) and "comparisons" in obj and "annotators" in obj:
        return _annotated_pairs_table(obj, file)
    if isinstance(obj, dict):
        if len(obj) == 1 and isinstance(next(iter(obj.values())), list) and all(
            isinstance(r, dict) for r in next(iter(obj.values()))
        ) and next(iter(obj.values())):
            obj = next(iter(obj.values()))
        else:
            return _json_columns(obj, file)
    if not isinstance(obj, list):
        kind = _json_kind(obj)
        raise DataError(file, None, None, f"the JSON file holds {kind}, not a list of records",
                        "Save the pairs as a JSON list of objects, one object per pair")
    if not obj:
        raise _no_rows(file, "the file holds an empty list: there are no records")
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise DataError(file, i + 1, None, f"this record is {_json_kind(rec)}, not a JSON object",
                            "Make every element of the list an object such as {\"prompt\": ..., \"text_a\": ...}")
    df = pd.DataFrame(obj, dtype=object)
    return _Table(df=df, records=obj)


def _annotated_pairs_table(obj: dict, file: str) -> _Table:
    """An annotated pairs file (ICAI / Feedback Forensics, as `icai run` exports): its pairs and the
    default annotator's labels become the canonical table; principle annotations are not data."""
    from icai_core.interop import from_annotated_pairs

    try:
        pairs, votes, _ = from_annotated_pairs(obj)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(file, None, None, f"the annotated pairs file is malformed: {exc}",
                        "Export it again, or save the pairs as a list of records") from None
    if pairs.empty:
        raise _no_rows(file, "the annotated pairs file has no comparisons")
    table = _Table(df=pairs.astype(object))
    table.warnings.append(
        f"read as an annotated pairs file (ICAI / Feedback Forensics format); its {votes.shape[1]} principle "
        "annotations are not imported, the default annotator's preferences are the labels"
    )
    return table


def _json_columns(obj: dict, file: str) -> _Table:
    if not obj:
        raise _no_rows(file, "the file holds an empty JSON object: there are no records")
    lengths = {}
    for key, val in obj.items():
        if isinstance(val, list):
            lengths[key] = len(val)
        elif isinstance(val, dict):
            lengths[key] = len(val)
        else:
            raise DataError(
                file, None, key,
                f"the JSON object is read as columns, but this column holds {_json_kind(val)} instead of a list",
                "Save the pairs as a list of records, or as an object whose values are equally long lists",
            )
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise DataError(file, None, None, f"the columns of the JSON object have different lengths ({sizes})",
                        "Give every column one value per pair")
    if not next(iter(lengths.values())):
        raise _no_rows(file, "the columns of the JSON object are empty: there are no records")
    if all(isinstance(v, list) for v in obj.values()):
        df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in obj.items()})
    else:
        df = pd.DataFrame(obj, dtype=object).reset_index(drop=True)
    return _Table(df=df)


def _json_kind(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    if isinstance(v, bool):
        return f"the value {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return "a text string"
    if isinstance(v, dict):
        return "a JSON object"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "a list"
    return f"a {type(v).__name__}"


def _parse_jsonl(text: str, file: str) -> _Table:
    records: list[dict] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                file, lineno, None,
                f"line {lineno} is not valid JSON: {exc.msg} at column {exc.colno}",
                "Each line must hold one complete JSON object; fix or remove this line",
            ) from None
        if not isinstance(rec, dict):
            raise DataError(file, lineno, None, f"line {lineno} holds {_json_kind(rec)}, not a JSON object",
                            "Each line must hold one JSON object such as {\"prompt\": ..., \"text_a\": ...}")
        records.append(rec)
        lines.append(lineno)
    if not records:
        raise _no_rows(file, "the file contains no JSON lines: there are no records")
    df = pd.DataFrame(records, dtype=object)
    return _Table(df=df, rownums=np.asarray(lines), records=records)


def _parse_parquet(raw: bytes, file: str) -> _Table:
    import pyarrow.parquet as pq

    try:
        df = pq.read_table(io.BytesIO(raw)).to_pandas()
    except Exception as exc:  # pyarrow raises several error types for broken files
        raise DataError(
            file, None, None, f"the file cannot be read as Parquet ({exc})",
            "Re-export the Parquet file, or save the data as CSV or JSON instead",
        ) from None
    if len(df) == 0:
        raise _no_rows(file, "the Parquet file has columns but no rows")
    df = df.reset_index(drop=True)
    df.columns = [str(c) for c in df.columns]
    return _Table(df=df)


# --------------------------------------------------------------------------------------------
# Format detection and mapping suggestions
# --------------------------------------------------------------------------------------------


def matching_formats(columns) -> list[str]:
    """All known formats whose required columns are present."""
    cols = set(map(str, columns))
    found = [name for name, sig in FORMAT_SIGNATURES.items() if set(sig) <= cols]
    # Our own canonical table may still carry the principia label column: that is not ambiguous.
    if "canonical" in found and "principia" in found:
        found.remove("principia")
    return found


def detect_format(df_columns, file: str = "the data") -> str:
    """Name of the known format the columns match, or "unknown".

    Raises DataError when the columns match more than one format (pass `fmt=` to choose)."""
    found = matching_formats(df_columns)
    if len(found) > 1:
        parts = "; ".join(f"{f}: {', '.join(FORMAT_SIGNATURES[f])}" for f in found)
        choices = " or ".join(f"fmt='{f}'" for f in found)
        raise DataError(
            file, None, None,
            f"the columns match more than one known format ({parts})",
            f"Choose one with {choices}, or give an explicit column mapping",
        )
    return found[0] if found else "unknown"


_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "instruction", "question", "query", "input", "context", "conversation", "history",
               "user_prompt", "prompt_text"),
    "text_a": ("text_a", "response_a", "output_1", "output_a", "answer_a", "completion_a", "response_1",
               "response1", "answer1", "answer_1", "output1", "a", "model_a_response", "chosen"),
    "text_b": ("text_b", "response_b", "output_2", "output_b", "answer_b", "completion_b", "response_2",
               "response2", "answer2", "answer_2", "output2", "b", "model_b_response", "rejected"),
    "preferred": ("preferred", "preferred_text", "preference", "winner", "label", "choice", "verdict",
                  "preferred_response", "better", "human_preference", "score"),
    "id": ("id", "uid", "row_id", "example_id", "sample_id"),
    "annotator": ("annotator", "judge", "rater", "worker", "worker_id", "annotator_id", "labeler", "evaluator"),
    "model_a": ("model_a", "generator_1", "model_1", "generator_a"),
    "model_b": ("model_b", "generator_2", "model_2", "generator_b"),
    "language": ("language", "lang"),
    "pair_id": ("pair_id", "question_id"),
    "category": ("category", "dataset", "topic", "domain", "task"),
}


def _norm_name(c: str) -> str:
    return str(c).strip().lower().replace(" ", "_").replace("-", "_")


def suggest_mapping(columns) -> ColumnMapping | None:
    """A best-guess ColumnMapping from column names (for a column-mapping UI), or None when no
    columns for both responses and the preference can be found. Never applied automatically."""
    cols = [str(c) for c in columns]
    by_norm: dict[str, str] = {}
    for c in cols:
        by_norm.setdefault(_norm_name(c), c)
    used: set[str] = set()
    picked: dict[str, str | None] = {}
    for target in ("text_a", "text_b", "preferred", "prompt", "id", "annotator", "model_a", "model_b",
                   "language", "pair_id", "category"):
        picked[target] = None
        for syn in _SYNONYMS[target]:
            c = by_norm.get(syn)
            if c is not None and c not in used:
                picked[target] = c
                used.add(c)
                break
    if not (picked["text_a"] and picked["text_b"] and picked["preferred"]):
        return None
    return ColumnMapping(
        prompt=picked["prompt"], text_a=picked["text_a"], text_b=picked["text_b"],
        preferred=picked["preferred"], id=picked["id"], annotator=picked["annotator"],
        model_a=picked["model_a"], model_b=picked["model_b"], language=picked["language"],
        pair_id=picked["pair_id"], category=picked["category"],
    )


def suggest_value_map(values) -> dict[str, str]:
    """Guess how distinct preference labels map to a / b / tie (a suggestion for a UI to show and let
    the user confirm; never applied automatically). Unknown labels are left out."""
    keys = {_label_key(v) for v in values}
    keys.discard(None)
    known = {_label_key(k): v for k, v in _DEFAULT_MAPPING_LABELS.items()}
    out = {k: known[k] for k in keys if k in known}
    rest = keys - set(out)
    if rest and rest <= {"1", "2", "0", "1.5", "3"}:
        out.update({k: v for k, v in {"1": "a", "2": "b"}.items() if k in rest})
        for k in ("0", "1.5", "3"):
            if k in rest:
                out[k] = "tie"
    elif rest and rest <= {"-1", "0", "1"}:
        out.update({k: v for k, v in {"-1": "a", "1": "b", "0": "tie"}.items() if k in rest})
    return out


# --------------------------------------------------------------------------------------------
# Building the canonical table
# --------------------------------------------------------------------------------------------


def _label_key(v: Any) -> str | None:
    """Normalised text of a label: numbers compare by value, text ignores case and outer spaces."""
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    if isinstance(v, str):
        t = v.strip()
        try:
            f = float(t)
        except ValueError:
            return t.casefold()
        if math.isfinite(f):
            return _label_key(f)
        return t.casefold()
    return None


@dataclass
class _Built:
    prompt: pd.Series
    text_a: pd.Series
    text_b: pd.Series
    preferred: pd.Series
    consumed: set[str]
    label_col: str | None = None
    extras: dict[str, pd.Series] = field(default_factory=dict)  # canonical optional / added columns
    mapping: dict[str, str] = field(default_factory=dict)
    prompt_absent: bool = False  # the source has no prompt at all (already warned about)


class _Ctx:
    def __init__(self, file: str, table: _Table, warnings: list[str]) -> None:
        self.file = file
        self.table = table
        self.df = table.df
        self.warnings = warnings
        self.n = len(table.df)

    def error(self, pos: int | None, column: str | None, message: str, hint: str) -> DataError:
        return DataError(self.file, None if pos is None else self.table.row(pos), column, message, hint)

    def empty(self) -> pd.Series:
        return pd.Series([""] * self.n, dtype="str")

    def text(self, col: str, what: str = "text") -> pd.Series:
        """The column as str; any cell that is not text raises DataError."""
        s = self.df[col]
        if isinstance(s.dtype, pd.StringDtype):
            if not s.isna().any():
                return s.reset_index(drop=True)
        values = s.array
        ok = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
        if not ok.all():
            pos = int(np.flatnonzero(~ok)[0])
            v = values[pos]
            rec = self.table.records[pos] if self.table.records is not None else None
            if rec is not None and col not in rec:
                raise self.error(pos, col, f"this record has no '{col}' field",
                                 f"Give every record a '{col}' field holding the {what}")
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise self.error(pos, col, f"expected {what} but the cell is empty (null)",
                                 "Put the text in a string; use an empty string \"\" if the model produced nothing")
            raise self.error(pos, col, f"expected {what} but found {_json_kind(v)}",
                             "Put the text in a string (in JSON: in double quotes); use an empty string \"\" "
                             "if the model produced nothing")
        return pd.Series(list(values), dtype="str")

    def labels(self, col: str, vocab: dict[str, str], allowed: str) -> pd.Series:
        s = self.df[col].reset_index(drop=True)
        out = s.map(vocab) if isinstance(s.dtype, pd.StringDtype) else pd.Series([None] * self.n, dtype=object)
        miss = np.flatnonzero(out.isna().to_numpy())
        if miss.size:
            norm = {}
            for k, v in vocab.items():
                norm.setdefault(_label_key(k), v)
            out = out.astype(object)
            values = s.array
            for pos in miss:
                v = values[pos]
                key = _label_key(v) if isinstance(v, (str, int, float, bool, np.integer, np.floating)) else None
                lab = norm.get(key) if key is not None else None
                if lab is None:
                    shown = repr(v) if isinstance(v, str) else _json_kind(v)
                    raise self.error(
                        int(pos), col, f"the preference value {shown} is not recognised",
                        f"Use one of: {allowed}; or translate the value with the value map of a ColumnMapping",
                    )
                out.iat[pos] = lab
        return pd.Series(out.to_numpy(dtype=object), dtype="str")


def _meta_text(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.StringDtype) and not s.isna().any():
        return s.reset_index(drop=True)

    def conv(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, str):
            return v
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return pd.Series([conv(v) for v in s.array], dtype="str")


def _build_text_format(ctx: _Ctx, label_col: str, vocab: dict[str, str], allowed: str) -> _Built:
    consumed = {"text_a", "text_b", label_col}
    if "prompt" in ctx.df.columns:
        prompt = ctx.text("prompt")
        consumed.add("prompt")
    else:
        prompt = ctx.empty()
        ctx.warnings.append(
            "the file has no 'prompt' column, so every prompt is empty (ICAI's original CSVs keep the "
            "instruction inside the response texts)"
        )
    return _Built(
        prompt=prompt, text_a=ctx.text("text_a"), text_b=ctx.text("text_b"),
        preferred=ctx.labels(label_col, vocab, allowed), consumed=consumed, label_col=label_col,
        prompt_absent="prompt" not in ctx.df.columns,
    )


def _build_principia(ctx: _Ctx) -> _Built:
    return _build_text_format(ctx, "preferred_text", _PRINCIPIA_LABELS,
                              "text_a, text_b, tie (a, b, A and B are also accepted)")


def _build_canonical(ctx: _Ctx) -> _Built:
    return _build_text_format(ctx, "preferred", _CANONICAL_LABELS,
                              "a, b, tie (A, B, text_a and text_b are also accepted)")


def _build_alpacaeval(ctx: _Ctx) -> _Built:
    df = ctx.df
    prompt = ctx.text("instruction", "the instruction text")
    ta = ctx.text("output_1", "the response text")
    tb = ctx.text("output_2", "the response text")
    raw = df["preference"].reset_index(drop=True)
    values = raw.array
    null = np.fromiter(
        (v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")
         for v in values), dtype=bool, count=len(values))
    num = pd.to_numeric(pd.Series([None if n else v for v, n in zip(values, null, strict=True)],
                                  dtype=object), errors="coerce").to_numpy(dtype=float)
    bad_text = np.flatnonzero(np.isnan(num) & ~null)
    if bad_text.size:
        pos = int(bad_text[0])
        v = values[pos]
        shown = repr(v) if isinstance(v, str) else _json_kind(v)
        raise ctx.error(pos, "preference", f"the preference value {shown} is not a number",
                        "AlpacaEval preferences are numbers: 1 = output_1 better, 2 = output_2 better, "
                        "1.5 = tie (values in between are weighted preferences)")
    zero = num == 0
    out_of_range = ~null & ~zero & ((num < 1) | (num > 2))
    if out_of_range.any():
        pos = int(np.flatnonzero(out_of_range)[0])
        raise ctx.error(pos, "preference",
                        f"the preference value {values[pos]!r} is outside AlpacaEval's range 1 to 2",
                        "Use 1 (output_1 better), 2 (output_2 better), 1.5 (tie) or a weighted value in between")
    pref = np.where(null | zero | (num == 1.5), "tie", np.where(num < 1.5, "a", "b"))
    n_zero, n_null = int(zero.sum()), int(null.sum())
    if n_zero or n_null:
        parts = []
        if n_zero:
            parts.append(f"{n_zero} with preference 0")
        if n_null:
            parts.append(f"{n_null} without a preference")
        ctx.warnings.append(
            f"{' and '.join(parts)} treated as ties (AlpacaEval uses 0 for a draw and leaves the "
            "preference empty when the judge's answer could not be parsed); raw values are in raw_preference"
        )
    consumed = {"instruction", "output_1", "output_2", "preference"}
    extras: dict[str, pd.Series] = {}
    mapping = {"prompt": "instruction", "text_a": "output_1", "text_b": "output_2", "preferred": "preference"}
    for src, dst in (("generator_1", "model_a"), ("generator_2", "model_b")):
        if src in df.columns and dst not in df.columns:
            extras[dst] = _meta_text(df[src])
            consumed.add(src)
            mapping[dst] = src
    if "dataset" in df.columns and "category" not in df.columns:
        extras["category"] = _meta_text(df["dataset"])  # a copy: 'dataset' stays as metadata
        mapping["category"] = "dataset"
    return _Built(prompt=prompt, text_a=ta, text_b=tb, preferred=pd.Series(pref, dtype="str"),
                  consumed=consumed, label_col="preference", extras=extras, mapping=mapping)


_USER_ROLES = {"user", "human", "prompter"}
_ASSISTANT_ROLES = {"assistant", "gpt", "model", "bot", "chatbot"}


def _role_label(role: str) -> str:
    if role in _USER_ROLES:
        return "User"
    if role in _ASSISTANT_ROLES:
        return "Assistant"
    return role[:1].upper() + role[1:]


def _as_turns(value: Any) -> list[tuple[str, str]] | None:
    """A conversation as [(role, content)], from a list of {role, content} dicts or its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        return None
    turns = []
    for t in value:
        if not isinstance(t, dict):
            return None
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        if role is None:
            return None
        if isinstance(content, np.ndarray):
            content = content.tolist()
        if isinstance(content, list):  # OpenAI-style content parts
            content = "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        if content is None:
            content = ""
        if not isinstance(content, str):
            return None
        turns.append((str(role).strip().lower(), content))
    return turns


def _render(turns: list[tuple[str, str]], single_role: set[str]) -> str:
    if not turns:
        return ""
    if len(turns) == 1 and turns[0][0] in single_role:
        return turns[0][1]
    return "\n\n".join(f"{_role_label(r)}: {c}" for r, c in turns)


def _split_conversations(ta: list, tb: list) -> tuple[str, str, str, bool] | None:
    """(prompt, text_a, text_b, earlier_turns_differ) or None when a side has no final reply."""
    if not ta or not tb or ta[-1][0] not in _ASSISTANT_ROLES or tb[-1][0] not in _ASSISTANT_ROLES:
        return None
    ha, hb = ta[:-1], tb[:-1]
    if ha == hb:
        return _render(ha, _USER_ROLES), ta[-1][1], tb[-1][1], False
    k = 0
    while k < min(len(ha), len(hb)) and ha[k] == hb[k]:
        k += 1
    return (_render(ta[:k], _USER_ROLES), _render(ta[k:], _ASSISTANT_ROLES),
            _render(tb[k:], _ASSISTANT_ROLES), True)


def _split_all(ctx: _Ctx, turns_a: list, turns_b: list, col_a: str,
               col_b: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    prompts, texts_a, texts_b = [], [], []
    differ = 0
    for pos, (a, b) in enumerate(zip(turns_a, turns_b, strict=True)):
        split = _split_conversations(a, b)
        if split is None:
            col = col_a if not a or a[-1][0] not in _ASSISTANT_ROLES else col_b
            raise ctx.error(pos, col, "the conversation does not end with an assistant reply",
                            "Each side must end with the assistant reply that was judged")
        p, x, y, d = split
        differ += d
        prompts.append(p)
        texts_a.append(x)
        texts_b.append(y)
    if differ:
        ctx.warnings.append(
            f"{differ} multi-turn conversations have different earlier replies on the two sides; for these "
            "the prompt is the shared opening and each response text holds that side's whole rest of the "
            "conversation, labelled 'Assistant:' / 'User:'"
        )
    return (pd.Series(prompts, dtype="str"), pd.Series(texts_a, dtype="str"), pd.Series(texts_b, dtype="str"))


def _build_arena(ctx: _Ctx) -> _Built:
    df = ctx.df
    turns: dict[str, list] = {}
    for col in ("conversation_a", "conversation_b"):
        out = []
        for pos, v in enumerate(df[col].array):
            t = _as_turns(v)
            if t is None:
                raise ctx.error(pos, col, f"expected a conversation (a list of {{role, content}} turns) "
                                f"but found {_json_kind(v) if not isinstance(v, str) else 'other text'}",
                                "Give the conversation as a JSON list such as "
                                "[{\"role\": \"user\", \"content\": ...}, {\"role\": \"assistant\", \"content\": ...}]")
            out.append(t)
        turns[col] = out
    prompt, ta, tb = _split_all(ctx, turns["conversation_a"], turns["conversation_b"], "conversation_a",
                                 "conversation_b")
    pref = ctx.labels("winner", _ARENA_LABELS, "model_a, model_b, tie, tie (bothbad)")
    extras: dict[str, pd.Series] = {}
    mapping = {"prompt": "conversation_a", "text_a": "conversation_a", "text_b": "conversation_b",
               "preferred": "winner"}
    if "judge" in df.columns and "annotator" not in df.columns:
        extras["annotator"] = _meta_text(df["judge"])  # a copy: 'judge' stays as metadata
        mapping["annotator"] = "judge"
    return _Built(prompt=prompt, text_a=ta, text_b=tb, preferred=pref,
                  consumed={"conversation_a", "conversation_b", "winner"}, label_col="winner",
                  extras=extras, mapping=mapping)


def _turn_list(ctx: _Ctx, pos: int, col: str, v: Any, nulls: list[int]) -> list[str]:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, str):
        t = v.lstrip()
        if t.startswith("["):
            try:
                parsed = json.loads(v)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(x is None or isinstance(x, str) for x in parsed):
                v = parsed
        if isinstance(v, str):
            return [v]
    if isinstance(v, list) and all(x is None or isinstance(x, str) for x in v):
        nulls[0] += sum(x is None for x in v)
        return ["" if x is None else x for x in v]
    raise ctx.error(pos, col, f"expected text or a JSON list of texts but found {_json_kind(v)}",
                    "Give the turns as text or as a JSON list of strings")


def _build_arena_kaggle(ctx: _Ctx) -> _Built:
    df = ctx.df
    nulls = [0]
    conv_a, conv_b = [], []
    cols = {c: df[c].array for c in ("prompt", "response_a", "response_b")}
    for pos in range(ctx.n):
        p = _turn_list(ctx, pos, "prompt", cols["prompt"][pos], nulls)
        ra = _turn_list(ctx, pos, "response_a", cols["response_a"][pos], nulls)
        rb = _turn_list(ctx, pos, "response_b", cols["response_b"][pos], nulls)
        conv_a.append(_interleave(p, ra))
        conv_b.append(_interleave(p, rb))
    if nulls[0]:
        ctx.warnings.append(f"{nulls[0]} turns are null in the source (no text); they are read as empty text")
    prompt, ta, tb = _split_all(ctx, conv_a, conv_b, "response_a", "response_b")
    flag_cols = ("winner_model_a", "winner_model_b", "winner_tie")
    flags = []
    for c in flag_cols:
        f = pd.to_numeric(df[c].reset_index(drop=True), errors="coerce").to_numpy(dtype=float)
        flags.append(f)
    flags_arr = np.vstack(flags).T
    valid = np.isin(flags_arr, (0.0, 1.0)).all(axis=1) & (np.nansum(flags_arr, axis=1) == 1)
    if not valid.all():
        pos = int(np.flatnonzero(~valid)[0])
        shown = ", ".join(f"{c}={df[c].array[pos]!r}" for c in flag_cols)
        raise ctx.error(pos, None, f"exactly one of winner_model_a, winner_model_b, winner_tie must be 1, "
                        f"but this row has {shown}",
                        "Set the column of the winner to 1 and the two others to 0")
    pref = np.select([flags_arr[:, 0] == 1, flags_arr[:, 1] == 1], ["a", "b"], "tie")
    return _Built(prompt=prompt, text_a=ta, text_b=tb, preferred=pd.Series(pref, dtype="str"),
                  consumed={"prompt", "response_a", "response_b"}, label_col=None,
                  mapping={"prompt": "prompt", "text_a": "response_a", "text_b": "response_b",
                           "preferred": "winner_model_a/winner_model_b/winner_tie"})


def _interleave(prompts: list[str], replies: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i in range(max(len(prompts), len(replies))):
        if i < len(prompts):
            out.append(("user", prompts[i]))
        if i < len(replies):
            out.append(("assistant", replies[i]))
    return out


_HH_MARK = "\n\nAssistant:"


def _common_prefix_len(x: str, y: str) -> int:
    lo, hi = 0, min(len(x), len(y))
    while lo < hi:  # largest L with x[:L] == y[:L], by binary search on C-level slice comparisons
        mid = (lo + hi + 1) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _hh_split(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    common = chosen[: _common_prefix_len(chosen, rejected)]
    cut = common.rfind(_HH_MARK)
    if cut < 0:
        return None
    prompt = chosen[:cut]
    if prompt.startswith("\n\n"):
        prompt = prompt[2:]

    def reply(s: str) -> str:
        r = s[cut + len(_HH_MARK):]
        return r[1:] if r.startswith(" ") else r

    return prompt, reply(chosen), reply(rejected)


def hh_chosen_is_a(chosen: str, rejected: str) -> bool:
    """The documented keyed coin flip that places the chosen reply in position A or B."""
    digest = hashlib.sha256(
        f"{HH_ORIENTATION_KEY}\x00{chosen}\x00{rejected}".encode("utf-8", "surrogatepass")
    ).digest()
    return digest[0] % 2 == 0


def _build_hh(ctx: _Ctx) -> _Built:
    df = ctx.df
    raw_c = df["chosen"].array
    raw_r = df["rejected"].array
    # DPO style: a 'prompt' column and chosen/rejected holding only the replies.
    dpo = "prompt" in df.columns and not any(isinstance(v, str) and _HH_MARK in v for v in raw_c)
    prompt_col = ctx.text("prompt") if dpo else None
    prompts, chosen, rejected, keys_c, keys_r = [], [], [], [], []
    for pos in range(ctx.n):
        c, r = raw_c[pos], raw_r[pos]
        tc = _as_turns(c) if not isinstance(c, str) or c.lstrip().startswith("[") else None
        tr = _as_turns(r) if not isinstance(r, str) or r.lstrip().startswith("[") else None
        for col, v, t in (("chosen", c, tc), ("rejected", r, tr)):
            if t is None and not isinstance(v, str):
                raise ctx.error(pos, col, f"expected a dialogue text or a conversation but found {_json_kind(v)}",
                                "Give the dialogue as text ('\\n\\nHuman: ...\\n\\nAssistant: ...') or as a "
                                "list of {role, content} turns")
        if tc is not None and tr is not None:
            split = _split_conversations(tc, tr)
            if split is None:
                col = "chosen" if tc[-1][0] not in _ASSISTANT_ROLES else "rejected"
                raise ctx.error(pos, col, "the conversation does not end with an assistant reply",
                                "Each side must end with the assistant reply that was judged")
            p, x, y, _ = split
            if dpo and p == "":
                p = prompt_col.iat[pos]
            kc = json.dumps(tc, ensure_ascii=False)
            kr = json.dumps(tr, ensure_ascii=False)
        elif dpo:
            p, x, y = prompt_col.iat[pos], c, r
            kc, kr = c, r
        else:
            hs = _hh_split(c, r) if isinstance(c, str) and isinstance(r, str) else None
            if hs is None:
                raise ctx.error(
                    pos, "chosen",
                    "the chosen and rejected dialogues do not share a history that ends with '\\n\\nAssistant:'",
                    "Give HH-RLHF dialogues ('\\n\\nHuman: ...\\n\\nAssistant: ...'), or add a 'prompt' column "
                    "and put only the two replies in 'chosen' and 'rejected'",
                )
            p, x, y = hs
            kc, kr = c, r
        prompts.append(p)
        chosen.append(x)
        rejected.append(y)
        keys_c.append(kc)
        keys_r.append(kr)
    chosen_a = np.array([hh_chosen_is_a(c, r) for c, r in zip(keys_c, keys_r, strict=True)], dtype=bool)
    ch = np.asarray(chosen, dtype=object)
    rj = np.asarray(rejected, dtype=object)
    extras = {}
    if "swapped" not in df.columns:
        extras["swapped"] = pd.Series(~chosen_a)
    return _Built(
        prompt=pd.Series(prompts, dtype="str"),
        text_a=pd.Series(np.where(chosen_a, ch, rj), dtype="str"),
        text_b=pd.Series(np.where(chosen_a, rj, ch), dtype="str"),
        preferred=pd.Series(np.where(chosen_a, "a", "b"), dtype="str"),
        consumed={"chosen", "rejected"} | ({"prompt"} if dpo else set()), label_col=None, extras=extras,
        mapping={"prompt": "prompt" if dpo else "chosen/rejected (shared dialogue)",
                 "text_a": "chosen or rejected (keyed hash)", "text_b": "rejected or chosen (keyed hash)",
                 "preferred": "the side that holds 'chosen'"},
    )


def _build_mapping(ctx: _Ctx, mapping: ColumnMapping) -> _Built:
    cols = list(ctx.df.columns)
    for target, src in mapping.columns().items():
        if src not in ctx.df.columns:
            raise DataError(
                ctx.file, None, src,
                f"the column mapping uses this column for {target}, but the file has no such column",
                "Choose one of the file's columns: " + ", ".join(cols),
            )
    vocab = dict(_DEFAULT_MAPPING_LABELS)
    for k, v in (mapping.values or {}).items():
        target = _PRINCIPIA_LABELS.get(str(v).strip(), None) if isinstance(v, str) else None
        if target is None:
            raise DataError(ctx.file, None, mapping.preferred,
                            f"the value map sends {k!r} to {v!r}, which is not a preference",
                            "Map every label to 'a', 'b' or 'tie'")
        vocab[str(k)] = target
    allowed = ", ".join(sorted(map(str, mapping.values))) if mapping.values else "a, b, tie (or A, B, text_a, text_b)"
    if mapping.prompt is None:
        prompt = ctx.empty()
        ctx.warnings.append("no prompt column is mapped, so every prompt is empty")
    else:
        prompt = ctx.text(mapping.prompt)
    built = _Built(
        prompt=prompt, text_a=ctx.text(mapping.text_a), text_b=ctx.text(mapping.text_b),
        preferred=ctx.labels(mapping.preferred, vocab, allowed),
        consumed={c for c in (mapping.prompt, mapping.text_a, mapping.text_b, mapping.preferred) if c},
        label_col=mapping.preferred, mapping=mapping.columns(), prompt_absent=mapping.prompt is None,
    )
    for name in OPTIONAL_COLUMNS:
        src = getattr(mapping, name)
        if src is not None:
            built.extras[name] = _meta_text(ctx.df[src])
            built.consumed.add(src)
    return built


_BUILDERS: dict[str, Callable[[_Ctx], _Built]] = {
    "principia": _build_principia,
    "canonical": _build_canonical,
    "alpacaeval": _build_alpacaeval,
    "arena": _build_arena,
    "arena_kaggle": _build_arena_kaggle,
    "hh_rlhf": _build_hh,
}


def _missing_columns_error(file: str, columns: list[str]) -> DataError:
    cols = set(columns)
    best, best_score = None, 0.0
    for name, sig in FORMAT_SIGNATURES.items():
        scored = set(sig) | ({"prompt"} if name == "principia" else set())  # principia files usually have one
        score = len(scored & cols) / len(scored)
        if score > best_score:
            best, best_score = name, score
    found = ", ".join(columns) if columns else "(none)"
    if best is None or best_score < 0.5:
        best = "principia"
    missing = [c for c in FORMAT_SIGNATURES[best] if c not in cols]
    what = (f"required columns are missing: {', '.join(missing)} "
            f"(for the {best} format; found columns: {found})")
    hint = ("Rename the columns (the Principia format is prompt, text_a, text_b, preferred_text), "
            "or say which column holds what with a ColumnMapping")
    suggestion = suggest_mapping(columns)
    if suggestion is not None:
        parts = ", ".join(f"{k}='{v}'" for k, v in suggestion.columns().items()
                          if k in ("prompt", "text_a", "text_b", "preferred") or k != v)
        hint += f"; a possible mapping is {parts}"
    return DataError(file, None, None, what, hint)


def _assemble(ctx: _Ctx, built: _Built, mapping: ColumnMapping | None) -> tuple[pd.DataFrame, list[str]]:
    df = ctx.df
    n = ctx.n
    prompt, ta, tb, pref = built.prompt, built.text_a, built.text_b, built.preferred
    pv, av, bv = (prompt == "").to_numpy(), (ta == "").to_numpy(), (tb == "").to_numpy()
    all_empty = pv & av & bv
    if all_empty.any():
        pos = int(np.flatnonzero(all_empty)[0])
        raise ctx.error(pos, None, "the prompt and both responses are empty",
                        "Remove this row or fill in its texts: a pair needs a prompt or at least one response")
    both = av & bv
    single_a, single_b = int((av & ~bv).sum()), int((bv & ~av).sum())
    if single_a or single_b:
        ctx.warnings.append(
            f"{single_a + single_b} rows have one empty response (text_a: {single_a}, text_b: {single_b}); "
            "they are kept: an empty output is what the model produced"
        )
    if both.any():
        ctx.warnings.append(f"{int(both.sum())} rows have two empty responses (only a prompt); they are kept")
    if pv.any() and not built.prompt_absent:
        ctx.warnings.append(f"{int(pv.sum())} rows have an empty prompt")

    # ids
    id_col = (mapping.id if mapping is not None else None) or ("id" if "id" in df.columns else None)
    if id_col is not None:
        ids = _meta_text(df[id_col])
        empty = np.flatnonzero((ids == "").to_numpy())
        if empty.size:
            raise ctx.error(int(empty[0]), id_col, "the id is empty",
                            "Give every row an id, or drop the id column to have ids generated (row-1, row-2, ...)")
        dup = ids.duplicated(keep="first").to_numpy()
        if dup.any():
            p2 = int(np.flatnonzero(dup)[0])
            value = ids.iat[p2]
            p1 = int(np.flatnonzero((ids == value).to_numpy())[0])
            raise ctx.error(p2, id_col,
                            f"the id {value!r} appears more than once (rows {ctx.table.row(p1)} and {ctx.table.row(p2)})",
                            "Ids must be unique: remove the duplicated row or give it its own id, or drop the "
                            "id column to have ids generated")
    else:
        ids = pd.Series([f"row-{ctx.table.row(i)}" for i in range(n)], dtype="str")

    out: dict[str, pd.Series] = {"id": ids, "prompt": prompt, "text_a": ta, "text_b": tb, "preferred": pref}
    consumed = set(built.consumed)
    if id_col is not None:
        consumed.add(id_col)
    label_col = built.label_col
    raw_label = None
    if label_col is not None and label_col in df.columns:
        lab = df[label_col].reset_index(drop=True)
        same = isinstance(lab.dtype, pd.StringDtype) and not lab.isna().any() and bool(
            (lab.to_numpy(dtype=object) == pref.to_numpy(dtype=object)).all())
        if not same:
            if "raw_preference" not in df.columns:
                raw_label = lab
            else:
                consumed.discard(label_col)  # keep the label column under its own name
    for name in OPTIONAL_COLUMNS:
        if name in built.extras:
            out[name] = built.extras[name]
        elif name in df.columns and name not in consumed:
            out[name] = _meta_text(df[name])
            consumed.add(name)
    meta: list[str] = []
    renamed: list[str] = []
    for c in df.columns:
        if c in consumed:
            continue
        target = c
        if target in out:
            target = f"source_{c}"
            while target in out or target in df.columns:
                target = "source_" + target
            renamed.append(f"'{c}' -> '{target}'")
        out[target] = df[c].reset_index(drop=True)
        meta.append(target)
    if raw_label is not None:
        out["raw_preference"] = raw_label
        meta.append("raw_preference")
    for name, s in built.extras.items():
        if name not in out:
            out[name] = s.reset_index(drop=True)
            meta.append(name)
    if renamed:
        ctx.warnings.append("source columns whose names are taken by canonical columns were renamed: "
                            + ", ".join(renamed))
    pairs = pd.DataFrame(out)
    for c in meta:
        if pairs[c].dtype == object:
            pairs[c] = pairs[c].infer_objects()
    return pairs, meta


def load_pairs(source: Any, *, fmt: str | None = None, mapping: ColumnMapping | None = None,
               ties: str = "keep", name: str | None = None, max_bytes: int | None = None) -> LoadResult:
    """Read a preference file into the canonical pair table (see the module docstring).

    `source`: a path, bytes, or a file-like object (its `name` gives the file type). `fmt`: a file
    type from SUPPORTED_FILE_TYPES (for bytes without a name, or an unusual extension) or a format
    from SUPPORTED_FORMATS (to skip detection, e.g. when the columns match two formats). `mapping`:
    a ColumnMapping for any other layout. `ties`: "keep" or "exclude" (excluded rows are counted in
    report.excluded). `name`: the file name used in messages. `max_bytes`: the largest file read
    (default: `default_max_bytes()`).
    """
    if ties not in ("keep", "exclude"):
        raise ValueError("ties must be 'keep' or 'exclude'")
    if fmt is not None and fmt not in SUPPORTED_FILE_TYPES and fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unknown fmt {fmt!r}; use one of {sorted(SUPPORTED_FILE_TYPES) + sorted(SUPPORTED_FORMATS)}")
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    raw, file, ext = _read_source(source, name, limit)
    if ext == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(file, None, None, f"the file cannot be decompressed as gzip ({exc})",
                            "Re-compress the file, or upload it uncompressed") from None
        if len(raw) > limit:
            raise _too_large(file, len(raw), limit)
        ext = _suffix(file[: -len(".gz")]) if file.lower().endswith(".gz") else ""
    if len(raw) == 0:
        raise DataError(file, None, None, "the file is empty (0 bytes)",
                        "Choose a file that contains a header row and at least one pair")

    if fmt in SUPPORTED_FILE_TYPES:
        file_type = fmt
    elif ext in _EXTENSIONS:
        file_type = _EXTENSIONS[ext]
    elif ext == "":
        file_type = _sniff_file_type(raw)
    else:
        hint = ("Save the data as CSV (UTF-8), TSV, JSON, JSON Lines or Parquet, or pass fmt='csv' (or another "
                "file type) if the content is in one of these formats")
        if ext in (".xlsx", ".xls", ".ods"):
            hint = "Export the sheet as CSV (Excel: Save As > 'CSV UTF-8') and load that file"
        raise DataError(file, None, None, f"files of type '{ext}' are not supported", hint)

    if file_type == "parquet":
        table = _parse_parquet(raw, file)
    else:
        text = _decode(raw, file, file_type)
        if file_type in ("csv", "tsv"):
            table = _parse_delimited(raw, text, file, file_type)
        elif file_type == "json":
            table = _parse_json(text, file)
        else:
            table = _parse_jsonl(text, file)

    warnings: list[str] = list(table.warnings)
    ctx = _Ctx(file, table, warnings)
    columns = [str(c) for c in table.df.columns]
    if mapping is not None:
        schema = "mapping"
        built = _build_mapping(ctx, mapping)
    else:
        if fmt in FORMAT_SIGNATURES:
            schema = fmt
            missing = [c for c in FORMAT_SIGNATURES[fmt] if c not in columns]
            if missing:
                raise DataError(file, None, None,
                                f"required columns are missing: {', '.join(missing)} "
                                f"(for the {fmt} format; found columns: {', '.join(columns)})",
                                "Choose the right format, or say which column holds what with a ColumnMapping")
        elif fmt == "mapping":
            raise ValueError("fmt='mapping' needs a mapping=ColumnMapping(...)")
        else:
            schema = detect_format(columns, file)
            if schema == "unknown":
                raise _missing_columns_error(file, columns)
        built = _BUILDERS[schema](ctx)

    pairs, meta = _assemble(ctx, built, mapping)
    rows_read = len(pairs)
    excluded: dict[str, int] = {}
    if ties == "exclude":
        is_tie = (pairs["preferred"] == "tie").to_numpy()
        n_ties = int(is_tie.sum())
        if n_ties == rows_read:
            label = built.label_col or "preferred"
            raise DataError(file, None, label,
                            f"all {rows_read:,} rows are ties, and ties='exclude' removes them all",
                            "Keep ties (ties='keep') or choose data with at least one non-tie preference")
        if n_ties:
            pairs = pairs.loc[~is_tie].reset_index(drop=True)
            excluded["tie (ties='exclude')"] = n_ties
    report = IntakeReport(
        file_name=file, format=schema, file_type=file_type, rows_read=rows_read, rows_kept=len(pairs),
        excluded=excluded, warnings=warnings, columns=columns, metadata_columns=meta,
        mapping=dict(built.mapping) if built.mapping else _default_mapping(schema, columns),
    )
    return LoadResult(pairs=pairs, format=schema, report=report)


def _default_mapping(schema: str, columns: list[str]) -> dict[str, str]:
    if schema == "principia":
        m = {"text_a": "text_a", "text_b": "text_b", "preferred": "preferred_text"}
    elif schema == "canonical":
        m = {"text_a": "text_a", "text_b": "text_b", "preferred": "preferred"}
    else:
        return {}
    if "prompt" in columns:
        m = {"prompt": "prompt", **m}
    if "id" in columns:
        m["id"] = "id"
    return m


# --------------------------------------------------------------------------------------------
# Summaries and demo data
# --------------------------------------------------------------------------------------------


def dataset_summary(pairs: pd.DataFrame) -> dict:
    """Plain-dict overview of a canonical pair table: size, preference balance, annotators, length
    distributions (characters) and empty texts."""
    n = len(pairs)
    counts = {k: int((pairs["preferred"] == k).sum()) for k in ("a", "b", "tie")}
    shares = {k: (v / n if n else 0.0) for k, v in counts.items()}
    lengths = {}
    for col in ("prompt", "text_a", "text_b"):
        s = pairs[col].str.len().astype(float)
        if n:
            q = s.quantile([0.1, 0.25, 0.5, 0.75, 0.9])
            lengths[col] = {
                "min": int(s.min()), "q10": float(q[0.1]), "q25": float(q[0.25]), "median": float(q[0.5]),
                "q75": float(q[0.75]), "q90": float(q[0.9]), "max": int(s.max()), "mean": float(s.mean()),
            }
        else:
            lengths[col] = {}
    empty_a = (pairs["text_a"] == "").to_numpy()
    empty_b = (pairs["text_b"] == "").to_numpy()
    out = {
        "rows": n,
        "preference_counts": counts,
        "preference_shares": shares,
        "annotators": ({str(k): int(v) for k, v in pairs["annotator"].value_counts().items()}
                       if "annotator" in pairs.columns else {}),
        "lengths_chars": lengths,
        "empty_texts": {
            "prompt": int((pairs["prompt"] == "").sum()),
            "text_a": int(empty_a.sum()),
            "text_b": int(empty_b.sum()),
            "both_responses": int((empty_a & empty_b).sum()),
            "responses_total": int(empty_a.sum() + empty_b.sum()),
        },
    }
    if "pair_id" in pairs.columns:
        out["distinct_pairs"] = int(pairs["pair_id"].nunique())
    return out


ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
# Real pair samples bundled in assets/ (provenance and sampling: assets/README.md).
DEMO_DATASETS: dict[str, str] = {
    "alpacaeval1_gpt4_judge_sample": "AlpacaEval 1.0: GPT-4 judge vs text-davinci-003 (600 rows, CC BY-NC 4.0)",
    "alpacaeval_human_vs_gpt4_sample": "AlpacaFarm pairs judged by a human majority and 8 GPT-4 runs "
                                       "(150 pairs, 1,350 rows, CC BY-NC 4.0)",
    "arena_llama3_70b_human_sample": "Chatbot Arena users: Llama-3-70B vs others (300 rows, Apache-2.0)",
}
DEFAULT_DEMO = "alpacaeval1_gpt4_judge_sample"
DEMO_NAME = DEFAULT_DEMO


def bundled_datasets() -> dict[str, Path]:
    """Demo samples bundled in `assets/` (real rows; provenance in assets/README.md), by name."""
    out = {}
    for name in DEMO_DATASETS:
        path = ASSETS_DIR / f"{name}.csv"
        if path.is_file():
            out[name] = path
    return out


def load_demo(name: str | None = None, *, ties: str = "keep") -> LoadResult:
    """Load a bundled demo sample (default: the AlpacaEval 1.0 GPT-4 judge sample)."""
    data = bundled_datasets()
    key = name or DEFAULT_DEMO
    if key.endswith(".csv"):
        key = key[:-4]
    if key not in data:
        raise KeyError(f"no bundled dataset {key!r}; available: {', '.join(data) or '(none)'}")
    return load_pairs(data[key], ties=ties)
