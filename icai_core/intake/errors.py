"""`DataError`, the one exception of intake, and the shared message texts.

A DataError names where (file, row, column), what is wrong and what to do. Its hint is written for
the reader of the CLI / Python API (it may say `fmt='csv'` or `ColumnMapping`); where that advice
means nothing to a web user, the raiser also gives `hint_web` (and, rarely, `message_web`), which
the app shows through `DataError.web_text()`. One mechanism: the raiser knows both audiences, the
UI never rewrites messages.
"""

from __future__ import annotations

__all__ = ["DataError", "human_size", "too_large", "no_rows", "SAVE_AS_UTF8", "CSV_QUOTING_HINT"]

SAVE_AS_UTF8 = (
    "Re-save the file with UTF-8 encoding (Excel: Save As > 'CSV UTF-8'; pandas: "
    "to_csv(path, encoding='utf-8')) and load it again"
)
SAVE_AS_UTF8_WEB = "Re-save the file with UTF-8 encoding (Excel: Save As > 'CSV UTF-8') and upload it again"
CSV_QUOTING_HINT = (
    "Fields that contain commas, double quotes or line breaks must be wrapped in double quotes, "
    "with each inner double quote doubled (\"\")"
)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


class DataError(Exception):
    """A problem with the user's data: says where (file, row, column), what, and what to do.

    `row` is the 1-based data row as the user counts it (the header is not a row; for JSON Lines it
    is the line number) or None; `column` is a column name or None. `hint_web` / `message_web`
    replace `hint` / `message` in `web_text()` when the API-oriented text would not help a web user.
    """

    def __init__(self, file: str, row: int | None = None, column: str | None = None,
                 message: str = "", hint: str = "", *, hint_web: str | None = None,
                 message_web: str | None = None) -> None:
        super().__init__(file, row, column, message, hint)
        self.file = file
        self.row = row
        self.column = column
        self.message = message
        self.hint = hint
        self.hint_web = hint_web
        self.message_web = message_web

    def _text(self, message: str, hint: str) -> str:
        where = [self.file or "the data"]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = _sentence(f"{', '.join(where)}: {message}")
        if hint:
            text += " " + _sentence(hint)
        # A message quotes the user's data (names, values); it must print and render anywhere, so a
        # lone surrogate in that data is shown as its escape instead of breaking the display.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    def __str__(self) -> str:
        return self._text(self.message, self.hint)

    def web_text(self) -> str:
        """The message for the app's user (no Python-API advice)."""
        return self._text(self.message_web or self.message,
                          self.hint if self.hint_web is None else self.hint_web)


def human_size(n: int) -> str:
    if n < 10_000:
        return f"{n:,} bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"  # pragma: no cover


def too_large(file: str, size: int, limit: int, *, inflated: bool = False) -> DataError:
    """The file (or, `inflated`, its decompressed content) exceeds the memory limit."""
    if inflated:
        what = (f"the file's compressed content decompresses to more than the {human_size(limit)} "
                f"({limit:,} bytes) that can safely be loaded into memory here (decompression was stopped "
                "at that size)")
    else:
        what = (f"the file is {human_size(size)} ({size:,} bytes), more than the {human_size(limit)} "
                f"({limit:,} bytes) that can safely be loaded into memory here")
    return DataError(
        file, None, None, what,
        "Load a smaller sample of the file, or raise the limit with load_pairs(..., max_bytes=...) "
        "or the PRINCIPIA_MAX_BYTES environment variable if the machine has enough memory",
        hint_web="Upload a smaller sample of the file, or ask whoever runs this server to raise "
                 "PRINCIPIA_MAX_BYTES if the machine has enough memory",
    )


def no_rows(file: str, what: str = "the file has column names but no data rows") -> DataError:
    return DataError(file, None, None, what, "Add at least one row with a prompt, two responses and a preference")
