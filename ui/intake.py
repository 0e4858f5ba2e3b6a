"""Upload handling of the Data page, without Streamlit (so tests can call it with real bytes).

`handle_upload(name, data)` turns uploaded bytes into the canonical pair table through
`icai_core.data.load_pairs`. A `DataError` becomes an `UploadOutcome` with the error's web text
(`DataError.web_text()`: it names the file, row and column, and gives advice a web user can follow,
never `fmt=` or `ColumnMapping`) -- never a traceback -- plus, for structural problems (columns
that could not be recognised), the raw column names and a suggested `ColumnMapping`, so the page can
offer a column-mapping form.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from icai_core.intake import source as _intake_source

# Every type the uploader offers is one load_pairs reads (.txt is read by its content and says so;
# .gz is inflated as a stream): the list comes from the intake, never a copy of it.
UPLOAD_TYPES = list(_intake_source.UPLOAD_EXTENSIONS)


@dataclass
class UploadOutcome:
    name: str
    result: Any = None  # data.LoadResult on success
    error: str | None = None  # the DataError message, shown with st.error
    needs_mapping: bool = False
    columns: list[str] = field(default_factory=list)  # raw columns, for the mapping form
    suggested: Any = None  # data.ColumnMapping suggested for `columns`

    @property
    def ok(self) -> bool:
        return self.result is not None


# The mapping form's labels, in the words of someone looking at their own spreadsheet.
FIELD_LABELS = {
    "prompt": "Prompt / instruction",
    "text_a": "First response (A)",
    "text_b": "Second response (B)",
    "preferred": "Which one was preferred",
    "id": "Row id",
    "annotator": "Annotator / judge",
    "model_a": "Model that wrote A",
    "model_b": "Model that wrote B",
    "language": "Language",
    "pair_id": "Pair id (same pair, several annotators)",
    "category": "Category / topic",
}


def mapping_fields() -> list[str]:
    from icai_core.data import ColumnMapping

    return [f.name for f in dataclasses.fields(ColumnMapping)]


@functools.lru_cache(maxsize=1)
def _table(name: str, data: bytes):
    """The upload's source table, read by the same low-level reader as load_pairs (cached for the
    reruns of one mapping form)."""
    from icai_core.intake.tables import read_table

    return read_table(data, name=name)


def raw_columns(name: str, data: bytes) -> list[str]:
    """Column names of an uploaded table; [] when the file cannot be read as a table."""
    from icai_core.data import DataError

    try:
        return _table(name, bytes(data)).columns
    except DataError:
        return []


def raw_values(name: str, data: bytes, column: str, limit: int = 30) -> list[str]:
    """Distinct values (as text, most frequent first) of one column of an uploaded table."""
    from icai_core.data import DataError

    try:
        df = _table(name, bytes(data)).df
    except DataError:
        return []
    if column not in df.columns:
        return []
    return [str(v) for v in df[column].astype(str).value_counts().index[:limit]]


def format_value_map(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def parse_value_map(text: str) -> dict[str, str]:
    """'1=a, 2=b, 0=tie' -> {'1': 'a', '2': 'b', '0': 'tie'}; raises ValueError on a bad item."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"label map item {item!r} must look like VALUE=a, VALUE=b or VALUE=tie")
        k, v = (x.strip() for x in item.rsplit("=", 1))
        if v.lower() not in ("a", "b", "tie"):
            raise ValueError(f"label map item {item!r}: the target must be a, b or tie")
        out[k] = v.lower()
    return out


def handle_upload(name: str, data: bytes, *, ties: str = "keep", mapping: Any = None) -> UploadOutcome:
    """Load uploaded bytes; never raises for bad data (the message goes in `.error`)."""
    from icai_core import data as D

    if not data:
        return UploadOutcome(
            name=name, error=f"{name}: the file is empty — upload a file with a header row and pairs."
        )
    try:
        result = D.load_pairs(data, mapping=mapping, ties=ties, name=name)
    except D.DataError as exc:
        out = UploadOutcome(name=name, error=exc.web_text())
        cols = raw_columns(name, data)
        # Structural problems (columns not recognised) and any failure of a user's own mapping get the
        # mapping form, prefilled with the user's mapping or a suggestion from the column names.
        if cols and (getattr(exc, "row", None) is None or mapping is not None):
            out.needs_mapping = True
            out.columns = cols
            if mapping is not None:
                out.suggested = mapping
            else:
                try:
                    out.suggested = D.suggest_mapping(cols)
                except Exception:
                    out.suggested = None
        return out
    except Exception as exc:  # defensive: the loader raises DataError; anything else is still a message
        return UploadOutcome(name=name, error=f"{name}: could not read the file ({type(exc).__name__}: {exc}).")
    return UploadOutcome(name=name, result=result)


def mapping_from_choices(choices: dict[str, str], values: str = "") -> Any:
    """A ColumnMapping from the form's selections ('' = not mapped) and label map text."""
    from icai_core.data import ColumnMapping

    return ColumnMapping(**{k: v for k, v in choices.items() if v}, values=parse_value_map(values))


def suggested_value_map_text(name: str, data: bytes, column: str | None) -> str:
    if not column:
        return ""
    from icai_core.data import suggest_value_map

    try:
        return format_value_map(suggest_value_map(raw_values(name, data, column)))
    except Exception:
        return ""


def suggested_value(suggested: Any, fld: str) -> str | None:
    if suggested is None:
        return None
    if isinstance(suggested, dict):
        return suggested.get(fld)
    return getattr(suggested, fld, None)


def prefill(outcome: UploadOutcome) -> dict[str, str]:
    """The mapping form's pre-selection: field -> column, for every confident guess.

    The loader's suggestion first (it knows the formats' synonyms), then any column named exactly like
    a field (case-insensitive, `preferred_text` for `preferred`). Only columns the file has are
    returned; a field without a confident guess is left out (the form shows it empty)."""
    cols = list(outcome.columns or [])
    lower = {c.lower(): c for c in cols}
    out: dict[str, str] = {}
    for fld in mapping_fields():
        if fld == "values":
            continue
        guess = suggested_value(outcome.suggested, fld)
        if guess in cols:
            out[fld] = guess
            continue
        for name in (fld, "preferred_text" if fld == "preferred" else None):
            if name and name.lower() in lower:
                out[fld] = lower[name.lower()]
                break
    return out
