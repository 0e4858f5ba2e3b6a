"""THE CSV writer of the product: every CSV Principia writes (CLI outputs, app downloads, exports)
should come from `csv_bytes` / `write_csv`, so that two rules hold everywhere:

* Quoting: every text field is quoted (`csv.QUOTE_NONNUMERIC`), so a field holding a line break of
  any kind -- ``\\n``, ``\\r\\n`` or a lone ``\\r`` -- stays one field of one record. (With pandas'
  default minimal quoting and ``lineterminator="\\n"`` a lone ``\\r`` is written unquoted: the record
  splits in a spreadsheet and the text after the ``\\r`` starts a new line -- the CSV-injection bypass
  of issue 11.) Numbers stay unquoted, so spreadsheets still read them as numbers.
* Formulas (OWASP "CSV injection"): a text cell starting with ``=``, ``+``, ``-``, ``@``, tab, CR
  or LF -- in ANY column, metadata included, and in the column names -- gets a leading single quote
  ``'``. Numbers (including negative votes) are never altered. Real responses that start with a
  markdown bullet ``- `` appear with a leading ``'`` on purpose.

Files meant for exact re-import into Principia (not for spreadsheets) are not this module's job.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["FORMULA_START", "neutralise_cell", "neutralise_frame", "csv_bytes", "write_csv"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise_cell(value: Any) -> Any:
    """A text value a spreadsheet would run as a formula gets a leading single quote; anything that
    is not text (numbers, missing values) is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def neutralise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with every text cell of every column neutralised (column names too); numeric
    columns untouched. Categorical columns are turned into plain object columns first (their
    categories are text like any other)."""
    out = df.copy()
    for i in range(out.shape[1]):
        s = out.iloc[:, i]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype(object)
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            out.isetitem(i, s.map(neutralise_cell).astype(object))
    out.columns = [neutralise_cell(str(c)) for c in out.columns]
    return out


def csv_bytes(df: pd.DataFrame, *, index: bool = False) -> bytes:
    """UTF-8 CSV of `df`: text fields quoted, formulas neutralised in every column (module docstring)."""
    frame = neutralise_frame(df.reset_index() if index else df)
    text = frame.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    return text.encode("utf-8", "surrogatepass")


def write_csv(df: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> Path:
    """Write `csv_bytes(df)` to `path` (returned as a Path)."""
    p = Path(path)
    p.write_bytes(csv_bytes(df, index=index))
    return p
