"""The one choke point for user-supplied text in Streamlit markdown (issue 11, item 3).

Dataset names, annotators, models, categories, languages, column names and principle texts come from
files the user did not write. In `st.markdown`, `st.caption`, `st.subheader`, labels and toasts,
Streamlit renders Markdown plus its own directives (`:red[...]`, `:material/icon:`, emoji shortcodes)
and some HTML; an annotator named `![x](http://host/p.png)` would make the browser fetch that URL.

`md(text)` makes any value inert there: every ASCII punctuation character that Markdown or a
Streamlit directive could use is backslash-escaped (CommonMark renders `\\x` as the literal `x`),
`<`, `>` and `&` become entities, and line breaks become spaces (so no block syntax -- headings,
lists, tables -- can start). The text the user sees is unchanged. Pair texts themselves are shown
with `st.text` (no Markdown at all), see `ui.widgets.text_box`.
"""

from __future__ import annotations

from typing import Any

# CommonMark's escapable ASCII punctuation (every one may be backslash-escaped), minus the three HTML
# characters handled as entities below.
_PUNCT = "\\!\"#$%'()*+,-./:;=?@[]^_`{|}~"
_TABLE = {ord(c): "\\" + c for c in _PUNCT}
_TABLE.update({ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;", ord("\r"): " ", ord("\n"): " ",
               ord("\t"): " "})


def md(value: Any) -> str:
    """`value` as inert Markdown text (see the module docstring)."""
    return ("" if value is None else str(value)).translate(_TABLE)


def code(value: Any) -> str:
    """`value` as inline code (`...`): backticks and line breaks cannot close or break it."""
    s = ("" if value is None else str(value)).replace("`", "'").replace("\r", " ").replace("\n", " ")
    return f"`{s}`"


def plain(value: Any, limit: int = 200) -> str:
    """A short single-line plain string for widget options / labels that Streamlit does not render as
    Markdown (selectbox options): line breaks removed, truncated with an ellipsis."""
    s = " ".join(("" if value is None else str(value)).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"
