"""`load_pairs`: a user's file -> the canonical pair table (low-level reader, format unit, assembly)."""

from __future__ import annotations

from typing import Any

from icai_core.intake.build import Ctx, assemble
from icai_core.intake.errors import DataError
from icai_core.intake.mapping import build_mapping
from icai_core.intake.model import ColumnMapping, IntakeReport, LoadResult
from icai_core.intake.registry import (
    FORMAT_SIGNATURES,
    FORMATS_BY_NAME,
    SUPPORTED_FORMATS,
    detect_format,
    missing_columns_error,
)
from icai_core.intake.source import SUPPORTED_FILE_TYPES
from icai_core.intake.tables import read_table


def load_pairs(source: Any, *, fmt: str | None = None, mapping: ColumnMapping | None = None,
               ties: str = "keep", name: str | None = None, max_bytes: int | None = None) -> LoadResult:
    """Read a preference file into the canonical pair table (see `icai_core.data`).

    `source`: a path, bytes, or a file-like object (its `name` gives the file type). `fmt`: a file
    type from SUPPORTED_FILE_TYPES (for bytes without a name, or an unusual extension) or a format
    from SUPPORTED_FORMATS (to skip detection, e.g. when the columns match two formats). `mapping`:
    a ColumnMapping for any other layout. `ties`: "keep" or "exclude" (excluded rows are counted in
    report.excluded). `name`: the file name used in messages. `max_bytes`: the largest file read
    (default: `default_max_bytes()`; a .gz file's content counts, and inflation stops at the limit).
    """
    if ties not in ("keep", "exclude"):
        raise ValueError("ties must be 'keep' or 'exclude'")
    if fmt is not None and fmt not in SUPPORTED_FILE_TYPES and fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unknown fmt {fmt!r}; use one of {sorted(SUPPORTED_FILE_TYPES) + sorted(SUPPORTED_FORMATS)}")
    if fmt == "mapping" and mapping is None:
        raise ValueError("fmt='mapping' needs a mapping=ColumnMapping(...)")
    table = read_table(source, name=name, fmt=fmt, max_bytes=max_bytes)
    file = table.file
    warnings: list[str] = list(table.warnings)
    ctx = Ctx(file, table, warnings)
    columns = table.columns
    if mapping is not None:
        schema = "mapping"
        built = build_mapping(ctx, mapping)
    else:
        if fmt in FORMAT_SIGNATURES:
            schema = fmt
            missing = [c for c in FORMAT_SIGNATURES[fmt] if c not in columns]
            if missing:
                raise DataError(file, None, None,
                                f"required columns are missing: {', '.join(missing)} "
                                f"(for the {fmt} format; found columns: {', '.join(columns)})",
                                "Choose the right format, or say which column holds what with a ColumnMapping")
        else:
            schema = detect_format(columns, file)
            if schema == "unknown":
                raise missing_columns_error(file, columns)
        built = FORMATS_BY_NAME[schema].build(ctx)

    pairs, meta = assemble(ctx, built, mapping)
    rows_read = len(pairs)
    excluded: dict[str, int] = {}
    if ties == "exclude":
        is_tie = (pairs["preferred"] == "tie").to_numpy()
        n_ties = int(is_tie.sum())
        if n_ties == rows_read:
            label = built.label_col or "preferred"
            raise DataError(file, None, label,
                            f"all {rows_read:,} rows are ties, and ties='exclude' removes them all",
                            "Keep ties (ties='keep') or choose data with at least one non-tie preference",
                            message_web=f"all {rows_read:,} rows are ties, and dropping tied pairs removes them all",
                            hint_web="Choose 'Keep ties', or upload data with at least one non-tie preference")
        if n_ties:
            pairs = pairs.loc[~is_tie].reset_index(drop=True)
            excluded["tie (ties='exclude')"] = n_ties
    unit = FORMATS_BY_NAME.get(schema)
    default = unit.default_mapping(columns) if unit is not None and unit.default_mapping else {}
    report = IntakeReport(
        file_name=file, format=schema, file_type=table.file_type, rows_read=rows_read, rows_kept=len(pairs),
        excluded=excluded, warnings=warnings, columns=columns, metadata_columns=meta,
        mapping=dict(built.mapping) if built.mapping else default,
    )
    return LoadResult(pairs=pairs, format=schema, report=report)
