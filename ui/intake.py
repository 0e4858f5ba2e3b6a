"""Upload handling of the Data page, without Streamlit (so tests can call it with real bytes).

`handle_upload(name, data)` turns uploaded bytes into the canonical pair table through
`icai_core.data.load_pairs`. A `DataError` becomes an `UploadOutcome` with the error's own message
(which names the file, row and column) -- never a traceback -- plus, for structural problems (columns
that could not be recognised), the raw column names and a suggested `ColumnMapping`, so the page can
offer a column-mapping form.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import pandas as pd

UPLOAD_TYPES = ["csv", "tsv", "txt", "json", "jsonl", "ndjson", "parquet", "pq"]


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


def mapping_fields() -> list[str]:
    from icai_core.data import ColumnMapping

    return [f.name for f in dataclasses.fields(ColumnMapping)]


def _ext(name: str) -> str:
    return PurePath(name).suffix.lower().lstrip(".")


def raw_columns(name: str, data: bytes) -> list[str]:
    """Column names of an uploaded table, read cheaply; [] when they cannot be read."""
    ext = _ext(name)
    buf = io.BytesIO(data)
    try:
        if ext in ("parquet", "pq"):
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(buf).names]
        if ext in ("jsonl", "ndjson"):
            for line in data.decode("utf-8-sig", errors="replace").splitlines():
                if line.strip():
                    obj = json.loads(line)
                    return [str(k) for k in obj] if isinstance(obj, dict) else []
            return []
        if ext == "json":
            obj = json.loads(data.decode("utf-8-sig", errors="replace"))
            if isinstance(obj, dict):
                for v in obj.values():
                    if isinstance(v, list):
                        obj = v
                        break
            if isinstance(obj, list) and obj and isinstance(obj[0], dict):
                return [str(k) for k in obj[0]]
            return []
        sep = "\t" if ext == "tsv" else None
        df = pd.read_csv(buf, sep=sep, engine="python", nrows=5, dtype=str, keep_default_na=False)
        return [str(c) for c in df.columns]
    except Exception:
        return []


def raw_values(name: str, data: bytes, column: str, limit: int = 30) -> list[str]:
    """Distinct values (as text, most frequent first) of one column of an uploaded table."""
    ext = _ext(name)
    buf = io.BytesIO(data)
    try:
        if ext in ("parquet", "pq"):
            s = pd.read_parquet(buf, columns=[column])[column]
        elif ext in ("jsonl", "ndjson"):
            s = pd.read_json(buf, lines=True, dtype=False)[column]
        elif ext == "json":
            s = pd.DataFrame(json.loads(data.decode("utf-8-sig")))[column]
        else:
            sep = "\t" if ext == "tsv" else None
            s = pd.read_csv(
                buf, sep=sep, engine="python", usecols=[column], dtype=str, keep_default_na=False
            )[column]
    except Exception:
        return []
    return [str(v) for v in s.astype(str).value_counts().index[:limit]]


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
        out = UploadOutcome(name=name, error=str(exc))
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
