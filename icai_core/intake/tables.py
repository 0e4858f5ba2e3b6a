"""The low-level readers: a user's file -> a table of its source columns (`Table`), nothing renamed.

One entry point, `read_table(source, name=..., fmt=..., max_bytes=...)`, used by every reader of a
user file: `load_pairs`, the app's column-mapping preview (`ui/intake.py`) and red-team prompt sets
(`icai_core/redteam.py`). Format units (`icai_core/intake/formats/`) never touch bytes.

CSV/TSV: files whose double quotes all look RFC-4180-clean are read by pyarrow's multi-threaded
reader with every column as text (about 0.05 s for the 4.4 MB shared files, ~1 s for 100 MB);
anything pyarrow rejects, and any file with unusual quoting, is read by Python's csv module in
strict mode, which either reads it or names the exact row (ragged rows, unclosed or stray quotes).
Both paths give identical tables, and both read fields of any size up to the size of the file
(the csv module's own 128 KB field limit is raised to the text's length, so a long cell is never
misreported as a quoting problem).
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icai_core.intake import safejson
from icai_core.intake.errors import CSV_QUOTING_HINT, DataError, no_rows, too_large
from icai_core.intake.source import (
    RawFile,
    allow_csv_fields,
    bom_length,
    decode_text,
    open_source,
    resolve_file_type,
)

__all__ = ["Table", "read_table", "parse_raw", "json_kind"]


@dataclass
class Table:
    """Source columns of one file, and how to name its rows in messages."""

    df: pd.DataFrame
    rownums: np.ndarray | None = None  # user-facing row number per position (None: position + 1)
    records: list | None = None  # raw JSON records, for precise messages
    warnings: list[str] = field(default_factory=list)
    file: str = ""
    file_type: str = ""

    def row(self, pos: int) -> int:
        return int(self.rownums[pos]) if self.rownums is not None else pos + 1

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.df.columns]


def read_table(source: Any, *, name: str | None = None, fmt: str | None = None,
               max_bytes: int | None = None) -> Table:
    """Read a user's file (path, bytes or file-like; `.gz` inflated as a stream) into a `Table`.

    `fmt` may be a file type ('csv', 'tsv', 'json', 'jsonl', 'parquet'); anything else is ignored
    here. Raises DataError for every problem with the file."""
    return parse_raw(open_source(source, name=name, max_bytes=max_bytes), fmt)


def parse_raw(rf: RawFile, fmt: str | None = None) -> Table:
    file_type = resolve_file_type(rf, fmt)
    file = rf.name
    warnings = list(rf.warnings)
    if file_type == "parquet":
        table = _parse_parquet(rf.data, file, rf.limit)
    else:
        text = decode_text(rf.data, file, file_type, warnings)
        if file_type in ("csv", "tsv"):
            table = _parse_delimited(rf.data, text, file, file_type)
        elif file_type == "json":
            table = _parse_json(text, file)
        else:
            table = _parse_jsonl(text, file)
    table.warnings = warnings + table.warnings
    table.file = file
    table.file_type = file_type
    return table


# --------------------------------------------------------------------------- CSV / TSV


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


def _parse_delimited(raw: bytes, text: str, file: str, file_type: str) -> Table:
    delimiter = "\t" if file_type == "tsv" else ","
    warnings: list[str] = []
    if not text or text.isspace():
        raise DataError(file, None, None, "the file contains only blank space, no header and no rows",
                        "Choose a file that contains a header row and at least one pair")
    allow_csv_fields(len(text) + 1)
    if file_type == "tsv":
        return _parse_tsv(raw, text, file)
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
    return _parse_quoted(raw, text, file, delimiter, warnings)


def _parse_quoted(raw: bytes, text: str, file: str, delimiter: str, warnings: list[str]) -> Table:
    """Fields separated by `delimiter`, with RFC-4180 (CSV) quoting: pyarrow, else the csv module."""
    header_warnings: list[str] = []
    fast = _arrow_delimited(raw, text, file, delimiter, header_warnings)
    if fast is not None:
        fast.warnings = warnings + header_warnings
        return fast
    # Slow path: Python's csv module, strict, which finds the exact row of any problem.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[list[str]] = []
    with _no_gc():
        return _delimited_table(text, file, delimiter, reader, records, warnings)


class _no_gc:
    """Millions of new str objects: the cyclic GC only slows their creation down."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


def _arrow_delimited(raw: bytes, text: str, file: str, delimiter: str, warnings: list[str], *,
                     quoted: bool = True) -> Table | None:
    """Fast path: pyarrow's multi-threaded CSV reader, every column as text, nothing read as null.

    `quoted=False`: no quoting at all (a field is the text between two tabs, a row one line: TSV).
    Returns None whenever pyarrow objects to anything (ragged rows, unclosed quotes...); the caller
    then re-reads the text with the csv module, which names the exact row. A row longer than one
    read block is retried once with a block holding the whole file."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    if quoted:
        try:
            header = next(csv.reader(io.StringIO(text[: 1 << 20], newline=""), delimiter=delimiter, strict=True))
        except (csv.Error, StopIteration):
            return None
    else:
        header = _EOL.split(text.lstrip("\r\n"), 1)[0].split(delimiter)
    names = _clean_header(header, file, warnings)  # raises on duplicate names
    view = memoryview(raw)[bom_length(raw):]
    if quoted and not _quotes_look_rfc4180(view, delimiter):
        return None
    body = pa.py_buffer(view)
    block = 1 << 24
    for _attempt in range(2):
        try:
            table = pacsv.read_csv(
                pa.BufferReader(body),
                read_options=pacsv.ReadOptions(block_size=block),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted,
                                                 quote_char='"' if quoted else False),
                convert_options=pacsv.ConvertOptions(
                    column_types={h: pa.string() for h in header}, strings_can_be_null=False,
                    quoted_strings_can_be_null=False, null_values=[], true_values=[], false_values=[],
                ),
            )
            break
        except (pa.ArrowException, ValueError, OSError) as exc:
            if "straddl" in str(exc) and block < len(view) + 1:
                block = min(len(view) + 1, 2**31 - 1)
                continue
            return None
    else:  # pragma: no cover
        return None
    if table.column_names != header:
        return None
    if table.num_rows == 0:
        raise no_rows(file)
    df = table.rename_columns(names).to_pandas()
    if any(not isinstance(df[c].dtype, pd.StringDtype) for c in df.columns):
        return None
    return Table(df=df)


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
                     warnings: list[str]) -> Table:
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
            hint = "Add the missing closing double quote. " + CSV_QUOTING_HINT
        elif "expected after" in msg:
            what = (f"a closing double quote in this row ({_lines_text(span)}) is followed by other "
                    "text instead of a separator")
            hint = CSV_QUOTING_HINT
        elif "field larger than field limit" in msg:  # only if the limit could not be raised
            what = f"a field in this row ({_lines_text(span)}) is longer than this reader's field limit ({msg})"
            hint = "Shorten that field, or split the file"
        else:
            what = f"this row ({_lines_text(span)}) cannot be parsed as CSV ({msg})"
            hint = CSV_QUOTING_HINT
        raise DataError(file, data_row if data_row > 0 else None, None, what, hint) from None
    records = [r for r in records if r]

    def span(pos: int) -> tuple[int, int] | None:
        spans = _record_lines(text, delimiter, pos + 1)
        return spans[pos + 1] if len(spans) > pos + 1 else None

    return _records_table(records, file, warnings, span, ragged_kind=("an unquoted separator or a stray quote",
                                                                        "a missing field or a stray quote"),
                          hint=CSV_QUOTING_HINT)


def _records_table(records: list[list[str]], file: str, warnings: list[str], span, *,
                   ragged_kind: tuple[str, str], hint: str) -> Table:
    """Non-blank records (the header first) -> Table; a row with the wrong number of fields is named
    with its lines (`span(data position)`) and `ragged_kind` (what too many / too few fields suggest)."""
    if not records:
        raise DataError(file, None, None, "the file contains only blank lines, no header and no rows",
                        "Choose a file that contains a header row and at least one pair")
    header = records[0]
    data = records[1:]
    header = _clean_header(header, file, warnings)
    ncol = len(header)
    if not data:
        raise no_rows(file)
    lens = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    bad = np.flatnonzero(lens != ncol)
    if bad.size:
        pos = int(bad[0])
        where_span = span(pos)
        where = f" ({_lines_text(where_span)})" if where_span else ""
        n = int(lens[pos])
        kind = ragged_kind[0] if n > ncol else ragged_kind[1]
        raise DataError(
            file, pos + 1, None,
            f"this row{where} has {n} field{'' if n == 1 else 's'} but the header has {ncol} column"
            f"{'' if ncol == 1 else 's'} ({kind}?)",
            hint,
        )
    columns = list(zip(*data, strict=True))
    df = pd.DataFrame({h: pd.Series(col, dtype="str") for h, col in zip(header, columns, strict=True)})
    return Table(df=df, warnings=warnings)


_EOL = re.compile(r"\r\n|\r|\n")  # the line ends pyarrow and the csv module both accept
TSV_HINT = ("A TSV field cannot hold a tab or a line break (TSV has no quoting): replace them in that field, "
            "or save the data as CSV, which can quote them")


def _tsv_records(text: str) -> tuple[list[list[str]], list[int]]:
    """Verbatim TSV: non-blank lines split at every tab, and each one's line number."""
    records: list[list[str]] = []
    lines: list[int] = []
    if "\r" in text:  # CRLF and lone CR end a line, as for pyarrow and the csv module
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for n, line in enumerate(text.split("\n"), start=1):
        if line:
            records.append(line.split("\t"))
            lines.append(n)
    return records, lines


def _tsv_verbatim(raw: bytes, text: str, file: str) -> Table:
    """IANA text/tab-separated-values: a row is a line, a field the text between tabs, kept exactly
    (a double quote is an ordinary character). pyarrow when the rows are regular, else Python,
    which names the first irregular row."""
    warnings: list[str] = []
    fast = _arrow_delimited(raw, text, file, "\t", warnings, quoted=False)
    if fast is not None:
        fast.warnings = warnings
        return fast
    with _no_gc():
        records, lines = _tsv_records(text)
        return _records_table(records, file, [], lambda pos: (lines[pos + 1], lines[pos + 1]),
                              ragged_kind=("a tab inside a field", "a missing field or a line break inside a field"),
                              hint=TSV_HINT)


def _starts_a_field_with_quote(raw: bytes) -> bool:
    """Whether a double quote opens a field (at the start of the text, a line or after a tab): only
    there does CSV-style quoting read a quote differently from verbatim TSV."""
    view = memoryview(raw)[bom_length(raw):]
    arr = np.frombuffer(view, dtype=np.uint8)
    q = np.flatnonzero(arr == 0x22)
    if q.size == 0:
        return False
    if q[0] == 0:
        return True
    return bool(np.isin(arr[q[q > 0] - 1], np.array([0x09, 0x0A, 0x0D], dtype=np.uint8)).any())


# R's write.table(sep = "\t"): every string in double quotes, a quote inside one written \" (its
# default qmethod = "escape"; "double" writes ""), backslashes left as they are, missing values as a
# bare NA, and with its default row.names = TRUE a header with no name for the row-name column.
_R_QUOTED = {True: re.compile(r'"((?:\\"|[^"])*)"'), False: re.compile(r'"((?:""|[^"])*)"')}
_R_BARE = re.compile(r'[^\t\r\n"]*')


def _r_records(text: str, escape: bool) -> tuple[list[list[str | None]], list[tuple[int, int]]] | None:
    """The records of a TSV file as R's write.table writes it (None where a field is a bare NA), and
    the (first, last) line of each; None when the text is not in that form (a quote where a field
    must end, or a quote left open)."""
    quoted_re, unq = _R_QUOTED[escape], ('\\"' if escape else '""')
    records: list[list[str | None]] = []
    spans: list[tuple[int, int]] = []
    rec: list[str | None] = []
    pos, n, line, first_line = 0, len(text), 1, 1
    while True:
        if text.startswith('"', pos):
            m = quoted_re.match(text, pos)
            if m is None:
                return None
            body = m.group(1)
            line += body.count("\n") + body.count("\r") - body.count("\r\n")
            rec.append(body.replace(unq, '"'))
        else:
            m = _R_BARE.match(text, pos)
            rec.append(None if m.group() == "NA" else m.group())
        pos = m.end()
        if pos >= n or text[pos] in "\r\n":
            if rec != [""]:  # a blank line is no record
                records.append(rec)
                spans.append((first_line, line))
            rec = []
            if pos >= n:
                return records, spans
            pos += 2 if text.startswith("\r\n", pos) else 1
            line += 1
            first_line = line
            if pos >= n:
                return records, spans
        elif text[pos] == "\t":
            pos += 1
        else:
            return None


def _parse_r_table(text: str, file: str) -> Table | None:
    """A TSV file written by R's write.table (see `_R_QUOTED`), read as R's read.table reads it, with
    what was done said in the warnings; None when the file is not in that form."""
    if not text.startswith('"'):
        return None  # write.table quotes the column names too
    # A quote inside a field is \" (qmethod = "escape") or "" ("double"); \" in the text may also be a
    # backslash before a doubled quote, so "escape" is tried first and "double" when it does not parse.
    parsed = None
    for escape in (True, False) if '\\"' in text else (False,):
        parsed = _r_records(text, escape)
        if parsed is not None and len(parsed[0]) >= 2:
            break
    if parsed is None or len(parsed[0]) < 2:
        return None
    records, spans = parsed
    header, data = records[0], records[1:]
    if any(h is None for h in header):
        return None
    what = ["column names and text in double quotes",
            'a quote inside a field written as \\" (read as ")' if escape else 'a quote inside a field written as "" (read as ")']
    row_names = bool(data) and all(len(r) == len(header) + 1 for r in data)
    if row_names:
        name = next(c for c in ("row_names", "row_names_1", "row_names_2") if c not in header)
        header = [name, *header]
        what.append(f"a first column of row names without a column name (called '{name}' here)")
    n_na = sum(v is None for r in data for v in r)
    if n_na:
        what.append(f"{n_na:,} missing value{'s' if n_na != 1 else ''} written as a bare NA (read as missing)")
    table = _records_table([header, *data], file, [], lambda pos: spans[pos + 1] if pos + 1 < len(spans) else None,
                           ragged_kind=("a tab inside an unquoted field", "a missing field"),
                           hint=TSV_HINT)
    table.warnings.append("the file is laid out as R's write.table writes TSV (" + "; ".join(what) + "), so it was "
                          "read the way R's read.table reads it; if that is wrong, save it with "
                          "write.table(..., quote = FALSE, row.names = FALSE) or as CSV with write.csv")
    return table


def _parse_tsv(raw: bytes, text: str, file: str) -> Table:
    """A TSV file is read verbatim (IANA: no quoting), so a field such as `"quoted"` or `12" map`
    loads exactly as written. The one exception is a file evidently written with CSV quoting, as
    pandas' to_csv(sep='\t'), R's write.table and Excel's 'Text (Tab delimited)' write it: it reads
    with CSV quoting (strictly) and either the verbatim reading fails (a quoted field holds a tab or
    a line break), or the quoting escapes a quote (`""` inside a quoted field), or the column names
    are quoted. That reading is then used and the report says so; when quotes are kept although a
    CSV reading would have removed them, the report says that too."""
    if not _starts_a_field_with_quote(raw):
        return _tsv_verbatim(raw, text, file)  # no quote opens a field: both readings are the same
    verbatim: Table | None = None
    failure: DataError | None = None
    try:
        verbatim = _tsv_verbatim(raw, text, file)
    except DataError as exc:
        failure = exc
    try:
        quoted = _parse_quoted(raw, text, file, "\t", [])
    except DataError:
        quoted = None
    if quoted is None:  # not CSV quoting: R's write.table quoting, else verbatim (or its failure)
        r_table = _parse_r_table(text, file) if verbatim is None or verbatim.columns[0].startswith('"') else None
        if r_table is not None:
            return r_table
        if verbatim is None:
            raise failure
        return verbatim
    note = ("the file quotes fields the way CSV does (as pandas' to_csv(sep='\\t') and Excel write TSV): "
            "{why}, so it was read with CSV quoting (quotes around a field removed, \"\" read as \"); if the "
            "quotes are part of the text, save the file without quoting (pandas: quoting=csv.QUOTE_NONE)")
    if verbatim is None:
        quoted.warnings.append(note.format(why=f"quoted fields hold line breaks or tabs (without quoting, row "
                                               f"{failure.row} would have the wrong number of fields)"))
        return quoted
    v, q = verbatim.df, quoted.df
    if v.shape == q.shape:
        if any(c.startswith('"') for c in verbatim.columns) and verbatim.columns != quoted.columns:
            quoted.warnings.append(note.format(why="its column names are in double quotes"))
            return quoted
        for vc, qc in zip(v.columns, q.columns, strict=True):
            opens = v[vc].str.startswith('"').to_numpy(dtype=bool)
            if opens.any() and q[qc][opens].str.contains('"', regex=False).any():
                row = int(np.flatnonzero(opens & q[qc].str.contains('"', regex=False).to_numpy(dtype=bool))[0])
                quoted.warnings.append(note.format(
                    why=f"row {verbatim.row(row)}, column '{vc}' holds a quoted field with a doubled quote (\"\")"))
                return quoted
    kept = sum(int(v[c].str.startswith('"').sum()) for c in v.columns)
    verbatim.warnings.append(
        f"{kept:,} field{'s start' if kept != 1 else ' starts'} with a double quote, kept exactly as written since "
        "TSV has no quoting (if the quotes are CSV quoting, save the file as .csv)")
    return verbatim


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


# --------------------------------------------------------------------------- JSON


def _parse_json(text: str, file: str) -> Table:
    if not text or text.isspace():
        raise DataError(file, None, None, "the file contains only blank space, no JSON data",
                        "Choose a file that holds a list of records")
    try:
        obj = safejson.loads(text, file)
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
        kind = json_kind(obj)
        raise DataError(file, None, None, f"the JSON file holds {kind}, not a list of records",
                        "Save the pairs as a JSON list of objects, one object per pair")
    if not obj:
        raise no_rows(file, "the file holds an empty list: there are no records")
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise DataError(file, i + 1, None, f"this record is {json_kind(rec)}, not a JSON object",
                            "Make every element of the list an object such as {\"prompt\": ..., \"text_a\": ...}")
    df = pd.DataFrame(obj, dtype=object)
    return Table(df=df, records=obj)


def _annotated_pairs_table(obj: dict, file: str) -> Table:
    """An annotated pairs file (ICAI / Feedback Forensics, as `icai run` exports): its pairs and the
    default annotator's labels become the canonical table; principle annotations are not data."""
    from icai_core.interop import from_annotated_pairs

    try:
        pairs, votes, _ = from_annotated_pairs(obj)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(file, None, None, f"the annotated pairs file is malformed: {exc}",
                        "Export it again, or save the pairs as a list of records") from None
    if pairs.empty:
        raise no_rows(file, "the annotated pairs file has no comparisons")
    table = Table(df=pairs.astype(object))
    table.warnings.append(
        f"read as an annotated pairs file (ICAI / Feedback Forensics format); its {votes.shape[1]} principle "
        "annotations are not imported, the default annotator's preferences are the labels"
    )
    return table


def _json_columns(obj: dict, file: str) -> Table:
    if not obj:
        raise no_rows(file, "the file holds an empty JSON object: there are no records")
    lengths = {}
    for key, val in obj.items():
        if isinstance(val, (list, dict)):
            lengths[key] = len(val)
        else:
            raise DataError(
                file, None, key,
                f"the JSON object is read as columns, but this column holds {json_kind(val)} instead of a list",
                "Save the pairs as a list of records, or as an object whose values are equally long lists",
            )
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise DataError(file, None, None, f"the columns of the JSON object have different lengths ({sizes})",
                        "Give every column one value per pair")
    if not next(iter(lengths.values())):
        raise no_rows(file, "the columns of the JSON object are empty: there are no records")
    if all(isinstance(v, list) for v in obj.values()):
        df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in obj.items()})
    else:
        df = pd.DataFrame(obj, dtype=object).reset_index(drop=True)
    return Table(df=df)


def json_kind(v: Any) -> str:
    """What a JSON value is, in words, for messages."""
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


def _parse_jsonl(text: str, file: str) -> Table:
    """One JSON object per line. Lines end at LF (an optional CR before it is removed) only:
    `str.splitlines` would also split at U+2028, NEL or FS, which JSON strings may hold raw."""
    records: list[dict] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        try:
            rec = safejson.loads(line, file, row=lineno, records=True, base_line=lineno)
        except json.JSONDecodeError as exc:
            raise DataError(
                file, lineno, None,
                f"line {lineno} is not valid JSON: {exc.msg} at column {exc.colno}",
                "Each line must hold one complete JSON object; fix or remove this line",
            ) from None
        if not isinstance(rec, dict):
            raise DataError(file, lineno, None, f"line {lineno} holds {json_kind(rec)}, not a JSON object",
                            "Each line must hold one JSON object such as {\"prompt\": ..., \"text_a\": ...}")
        records.append(rec)
        lines.append(lineno)
    if not records:
        raise no_rows(file, "the file contains no JSON lines: there are no records")
    df = pd.DataFrame(records, dtype=object)
    return Table(df=df, rownums=np.asarray(lines), records=records)


# --------------------------------------------------------------------------- Parquet


_PARQUET_BATCH_ROWS = 256


def _parse_parquet(raw: bytes, file: str, limit: int | None = None) -> Table:
    """Parquet, decoded 256 rows at a time: a file of a few kB can hold gigabytes of repeated,
    dictionary-encoded text (a decompression bomb like a .gz one), so decoding stops once the
    decoded data exceeds `limit` (memory then peaks near the limit plus one batch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(raw))
        batches, total = [], 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            total += batch.nbytes
            if limit is not None and total > limit:
                raise too_large(file, total, limit, inflated=True)
            batches.append(batch)
        df = pa.Table.from_batches(batches, schema=pf.schema_arrow).to_pandas()
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several error types for broken files
        raise DataError(
            file, None, None, f"the file cannot be read as Parquet ({exc})",
            "Re-export the Parquet file, or save the data as CSV or JSON instead",
        ) from None
    if len(df) == 0:
        raise no_rows(file, "the Parquet file has columns but no rows")
    df = df.reset_index(drop=True)
    df.columns = [str(c) for c in df.columns]
    return Table(df=df)
