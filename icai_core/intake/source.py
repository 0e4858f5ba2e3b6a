"""Getting a user's file into memory as bytes, and bytes into text: the first step of every reader.

`open_source` takes a path, bytes or a file-like object, enforces the size limit (before reading,
where the size is known), inflates `.gz` files as a stream that stops at the limit (a
decompression bomb costs at most `limit` bytes of memory), and says which file type the content is
(`resolve_file_type`: `fmt`, else the extension, else a sniff of the first bytes). `decode_text`
turns bytes into text with messages for the usual encoding mistakes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icai_core.intake.errors import SAVE_AS_UTF8, SAVE_AS_UTF8_WEB, DataError, too_large

__all__ = ["FILE_TYPES", "SUPPORTED_FILE_TYPES", "EXTENSIONS", "UPLOAD_EXTENSIONS", "RawFile", "default_max_bytes",
           "open_source", "resolve_file_type", "decode_text", "bom_length", "allow_csv_fields",
           "compressed_kind"]

# file type -> (description, extensions). Everything else about file types is derived from this.
FILE_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "csv": ("comma-separated values (.csv), UTF-8, RFC-4180 quoting; ';' separators are detected", (".csv",)),
    "tsv": ("tab-separated values (.tsv, .tab), UTF-8, no quoting: fields as written; CSV-style quoting is "
            "detected", (".tsv", ".tab")),
    "json": ("JSON (.json): a list of records, or an object of equally long columns", (".json",)),
    "jsonl": ("JSON Lines (.jsonl, .ndjson): one JSON object per line", (".jsonl", ".ndjson")),
    "parquet": ("Apache Parquet (.parquet, .pq)", (".parquet", ".pq")),
}
SUPPORTED_FILE_TYPES: dict[str, str] = {k: v[0] for k, v in FILE_TYPES.items()}
EXTENSIONS: dict[str, str] = {ext: k for k, v in FILE_TYPES.items() for ext in v[1]}
# Extensions whose content type is sniffed from the bytes (and said so in a warning).
SNIFFED_EXTENSIONS = ("", ".txt")
# What an upload widget may offer: every extension above, .txt (sniffed) and their .gz.
UPLOAD_EXTENSIONS: tuple[str, ...] = tuple(e.lstrip(".") for e in EXTENSIONS) + ("txt", "gz")

_BOM = b"\xef\xbb\xbf"


@dataclass
class RawFile:
    """A user's file in memory: `data` (inflated when the file was .gz), the display `name`, the
    lower-case extension of the content (`ext`, '' when unknown; `.gz` removed) and notes for the
    intake report."""

    data: bytes
    name: str
    ext: str
    compressed: bool = False
    warnings: list[str] = field(default_factory=list)
    limit: int | None = None  # the memory limit, also for what a compressed format decodes to


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


def _suffix(name: str | None) -> str:
    return Path(name).suffix.lower() if name else ""


def _read_bytes(source: Any, name: str | None, limit: int) -> tuple[bytes, str, str]:
    """(raw bytes, display name, lower-case extension or '')."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        disp = name or "uploaded data"
        if len(raw) > limit:
            raise too_large(disp, len(raw), limit)
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
            raise too_large(disp, size, limit)
        try:
            return path.read_bytes(), disp, _suffix(name) or _suffix(path.name)
        except OSError as exc:
            raise DataError(disp, None, None, f"the file cannot be read ({exc.strerror or exc})",
                            "Check that the file is readable by this user") from None
    if hasattr(source, "read"):
        fname = getattr(source, "name", None)
        base = Path(str(fname)).name if fname else None
        disp = name or base or "uploaded data"
        size = getattr(source, "size", None)
        if isinstance(size, int) and size > limit:
            raise too_large(disp, size, limit)
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except (OSError, ValueError):
                pass
        data = source.read(limit + 1)
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if len(data) > limit:
            raise too_large(disp, size if isinstance(size, int) else len(data), limit)
        return bytes(data), disp, _suffix(name) or _suffix(base)
    raise TypeError(f"load_pairs needs a path, bytes or a file-like object, not {type(source).__name__}")


_INFLATE_CHUNK = 1 << 20


def _inflate(raw: bytes, file: str, limit: int) -> bytes:
    """gzip content, decompressed 1 MiB at a time and stopped as soon as it exceeds `limit`, so a
    decompression bomb never costs more than about `limit` bytes of memory. Concatenated members
    and trailing zero padding are read as the gzip module reads them; the CRC of each member is
    checked by zlib."""
    out = io.BytesIO()
    total = 0
    data = raw
    try:
        while True:
            d = zlib.decompressobj(wbits=31)  # gzip container only
            buf = data
            while not d.eof:
                chunk = d.decompress(buf, _INFLATE_CHUNK)
                total += len(chunk)
                if total > limit:
                    raise too_large(file, total, limit, inflated=True)
                out.write(chunk)
                buf = d.unconsumed_tail
                if not chunk and not buf:
                    break
            if not d.eof:
                raise DataError(file, None, None, "the file cannot be decompressed as gzip (it ends before the "
                                "end of the compressed data: the file is truncated)",
                                "Re-compress the file, or upload it uncompressed")
            data = d.unused_data.lstrip(b"\0")
            if not data:
                break
    except zlib.error as exc:
        raise DataError(file, None, None, f"the file cannot be decompressed as gzip ({exc})",
                        "Re-compress the file, or upload it uncompressed") from None
    return out.getvalue()


# Magic numbers of compressed files and archives (the first bytes; none can start UTF-8 text, and
# Parquet starts with PAR1): what they are, and how to get the data out.
_COMPRESSED_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed data", "gunzip"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx or OpenDocument .ods workbook is one too)", "unzip"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "unxz"),
    (b"\x28\xb5\x2f\xfd", "Zstandard-compressed data", "unzstd"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "7z x"),
)


def compressed_kind(raw: bytes) -> tuple[str, str] | None:
    """(what, the command that unpacks it) when `raw` starts like a compressed file or archive."""
    for magic, what, tool in _COMPRESSED_MAGIC:
        if raw.startswith(magic):
            return what, tool
    if raw[:3] == b"BZh" and raw[3:4].isdigit() and raw[4:10] == b"1AY&SY":
        return "bzip2-compressed data", "bunzip2"
    if raw[257:262] == b"ustar":  # POSIX tar header magic
        return "a tar archive (a bundle of files)", "tar -xf"
    return None


def _refuse_compressed(raw: bytes, file: str, compressed: bool) -> None:
    """A compressed file inside the .gz file (compressed twice), or a compressed file under a name
    that does not say so, is refused with what it is: read as text it would otherwise be reported
    as "NUL bytes / UTF-16". A second gzip layer is not unpacked: gzip -d, zcat, pandas and pyarrow
    all take off exactly one layer, and a second one is nearly always an accident (compressed twice,
    or a download saved with its transfer encoding) that the user should know about."""
    kind = compressed_kind(raw)
    if kind is None:
        return
    what, tool = kind
    if compressed and tool == "tar -xf":
        raise DataError(file, None, None, f"the content of this gzip file is {what}, not one data file",
                        f"Unpack it (tar -xzf '{file}') and load the data file inside",
                        hint_web="Unpack it on your computer and upload the data file inside")
    if compressed:
        inner = file[: -len(".gz")] if file.lower().endswith(".gz") else "data"
        if tool == "gunzip":
            hint = (f"Decompress it twice (gunzip -c '{file}' | gunzip -c > '{inner}') and load the result, "
                    "or compress the data file only once")
        else:
            hint = (f"Decompress it (gunzip), unpack the result ({tool}) and load the data file inside, or "
                    "compress the data file only once, with gzip")
        raise DataError(file, None, None,
                        f"the file is compressed twice: the content of this gzip file is itself {what}, "
                        "not a data file", hint,
                        hint_web="Unpack both layers on your computer and upload the data file (or compress it "
                                 "only once, with gzip)")
    if tool == "gunzip":
        hint = "Decompress it (gunzip) and load the result, or give it a name that ends in .gz"
    elif tool == "unzip":
        hint = ("Unzip it and load the data file inside; for a spreadsheet, export the sheet as CSV "
                "(Excel: Save As > 'CSV UTF-8')")
    else:
        hint = f"Decompress it ({tool}) and load the data file"
    raise DataError(file, None, None, f"the file is {what}, not a data file", hint)


def open_source(source: Any, *, name: str | None = None, max_bytes: int | None = None) -> RawFile:
    """Read `source` (path, bytes, file-like) into a `RawFile`; DataError for missing, empty, too
    large or broken-gzip files."""
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    raw, file, ext = _read_bytes(source, name, limit)
    compressed = False
    if ext == ".gz":
        raw = _inflate(raw, file, limit)
        compressed = True
        ext = _suffix(file[: -len(".gz")]) if file.lower().endswith(".gz") else ""
    if len(raw) == 0:
        raise DataError(file, None, None, "the file is empty (0 bytes)",
                        "Choose a file that contains a header row and at least one pair")
    if compressed or ext in EXTENSIONS or ext in SNIFFED_EXTENSIONS:  # other types: resolve_file_type says
        _refuse_compressed(raw, file, compressed)
    return RawFile(data=raw, name=file, ext=ext, compressed=compressed, limit=limit)


def sniff_file_type(raw: bytes) -> str:
    if raw[:4] == b"PAR1":
        return "parquet"
    head = raw[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] == b"[":
        return "json"
    if head[:1] == b"{":
        lines = [ln for ln in raw[:1 << 20].splitlines() if ln.strip()]
        if len(lines) > 1:
            try:
                json.loads(lines[0])
                return "jsonl"
            except (ValueError, RecursionError):
                pass
        return "json"
    first = head.split(b"\n", 1)[0]
    return "tsv" if first.count(b"\t") > first.count(b",") else "csv"


_SNIFF_WORDS = {"csv": "CSV (comma-separated)", "tsv": "TSV (tab-separated)", "json": "JSON",
                "jsonl": "JSON Lines", "parquet": "Parquet"}


def resolve_file_type(rf: RawFile, fmt: str | None = None) -> str:
    """The file type of `rf`: `fmt` when it is a file type, else by extension, else sniffed (a `.txt`
    file is sniffed too, with a warning that says how it was read)."""
    if fmt in SUPPORTED_FILE_TYPES:
        return fmt
    if rf.ext in EXTENSIONS:
        return EXTENSIONS[rf.ext]
    if rf.ext in SNIFFED_EXTENSIONS:
        kind = sniff_file_type(rf.data)
        if rf.ext:
            rf.warnings.append(f"the {rf.ext} file was read as {_SNIFF_WORDS[kind]}, judging by its content")
        return kind
    hint = ("Save the data as CSV (UTF-8), TSV, JSON, JSON Lines or Parquet, or pass fmt='csv' (or another "
            "file type) if the content is in one of these formats")
    hint_web = ("Save the data as CSV (UTF-8), TSV, JSON, JSON Lines or Parquet and upload that file, or "
                "rename the file to the extension of its content (.csv, .tsv, .json, .jsonl, .parquet)")
    if rf.ext in (".xlsx", ".xls", ".ods"):
        hint = hint_web = "Export the sheet as CSV (Excel: Save As > 'CSV UTF-8') and load that file"
    raise DataError(rf.name, None, None, f"files of type '{rf.ext}' are not supported", hint, hint_web=hint_web)


def bom_length(raw: bytes | memoryview) -> int:
    """Bytes taken by the UTF-8 byte-order marks at the start (a file saved twice can have several)."""
    n = 0
    while bytes(raw[n:n + 3]) == _BOM:
        n += 3
    return n


def allow_csv_fields(n: int) -> None:
    """Let the csv module read fields up to `n` characters (its default limit is 131,072): a field can
    never be longer than the text that holds it, so the text's length is the right limit."""
    if csv.field_size_limit() < n:
        csv.field_size_limit(min(n, 2**62))


def decode_text(raw: bytes, file: str, file_type: str, warnings: list[str] | None = None) -> str:
    """UTF-8 text of `raw`; every leading UTF-8 byte-order mark is removed (more than one is noted in
    `warnings`, so a double BOM never renames the first column)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(file, None, None,
                        "the file is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8",
                        SAVE_AS_UTF8, hint_web=SAVE_AS_UTF8_WEB)
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(
            file, None, None,
            f"the file contains NUL bytes (the first at byte offset {nul:,}), so it is not UTF-8 text; "
            "it may be UTF-16 text without a byte-order mark, or a binary file such as a spreadsheet",
            SAVE_AS_UTF8, hint_web=SAVE_AS_UTF8_WEB,
        )
    skip = bom_length(raw)
    if skip > 3 and warnings is not None:
        warnings.append(f"the file starts with {skip // 3} UTF-8 byte-order marks (it was probably saved twice "
                        "with one); all of them were removed")
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        line = raw.count(b"\n", 0, offset) + 1
        row = None
        if file_type == "csv":
            prefix = raw[skip:offset].decode("utf-8", errors="replace")
            allow_csv_fields(len(prefix) + 1)
            records = [r for r in csv.reader(io.StringIO(prefix, newline="")) if r]
            row = len(records) - 1 if len(records) > 1 else None
        elif file_type == "tsv":  # no quoting: a record is a non-blank line
            records = [ln for ln in re.split(rb"\r\n|\r|\n", raw[skip:offset]) if ln]
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
            SAVE_AS_UTF8, hint_web=SAVE_AS_UTF8_WEB,
        ) from None
