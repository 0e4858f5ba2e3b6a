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
        if cols and getattr(exc, "row", None) is None:
            out.needs_mapping = True
            out.columns = cols
            try:
                out.suggested = D.suggest_mapping(cols)
            except Exception:
                out.suggested = None
        return out
    except (UnicodeDecodeError, ValueError) as exc:  # defensive: the loader should raise DataError
        return UploadOutcome(name=name, error=f"{name}: could not read the file ({exc}).")
    return UploadOutcome(name=name, result=result)


def mapping_from_choices(choices: dict[str, str]) -> Any:
    """A ColumnMapping from the form's selections ('' = not mapped)."""
    from icai_core.data import ColumnMapping

    return ColumnMapping(**{k: v for k, v in choices.items() if v})


def suggested_value(suggested: Any, fld: str) -> str | None:
    if suggested is None:
        return None
    if isinstance(suggested, dict):
        return suggested.get(fld)
    return getattr(suggested, fld, None)
