"""Intake: every reader of a user file, in one package.

* `source`    -- bytes in memory (size limit, streamed .gz inflation, file type, decoding, BOMs)
* `safejson`  -- the one JSON parser for user content (depth, digits, surrogates -> DataError)
* `tables`    -- `read_table`: file -> table of source columns (CSV/TSV, JSON, JSON Lines, Parquet)
* `formats/`  -- one unit per layout (name, description, signature, builder), listed in `registry`
* `mapping`   -- explicit `ColumnMapping`s and mapping suggestions
* `build`     -- shared builder pieces and the assembly of the canonical table
* `load`      -- `load_pairs`

`icai_core.data` is the public facade; docs/intake.md explains how to add a format.
"""

from icai_core.intake.errors import DataError
from icai_core.intake.load import load_pairs
from icai_core.intake.model import (
           CANONICAL_COLUMNS,
           OPTIONAL_COLUMNS,
           ColumnMapping,
           IntakeReport,
           LoadResult,
)
from icai_core.intake.registry import FORMATS, SUPPORTED_FORMATS, detect_format, matching_formats
from icai_core.intake.source import SUPPORTED_FILE_TYPES, UPLOAD_EXTENSIONS, default_max_bytes
from icai_core.intake.tables import Table, read_table

__all__ = ["DataError", "load_pairs", "CANONICAL_COLUMNS", "OPTIONAL_COLUMNS", "ColumnMapping", "IntakeReport",
           "LoadResult", "FORMATS", "SUPPORTED_FORMATS", "detect_format", "matching_formats",
           "SUPPORTED_FILE_TYPES", "UPLOAD_EXTENSIONS", "default_max_bytes", "Table", "read_table"]
