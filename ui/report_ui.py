"""Cached export builders for the Report page (keyed by dataset hash + config + thresholds)."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from icai_core import report as R


def file_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    stem = re.sub(r"\.(csv|tsv|jsonl?|parquet)$", "", stem, flags=re.I)
    return (stem or "principia")[:60]


@st.cache_data(show_spinner="Building the HTML report…", max_entries=16)
def html_report_bytes(
    key: tuple, include_compare: bool, *, _audit: Any, _c: Any, _r: Any, _s: dict, _cmp: Any = None,
    _card: dict | None = None,
) -> bytes:
    """The stakeholder HTML report; `key` must identify everything passed with a leading underscore
    (run, annotator, thresholds, comparison, data card)."""
    compare = _cmp if include_compare else None
    return R.html_report(_audit, _c, _r, _s, compare=compare, data_card=_card).encode("utf-8")


@st.cache_data(show_spinner="Building the votes CSV…", max_entries=16)
def votes_csv_bytes(key: tuple, include_text: bool, *, _audit: Any) -> bytes:
    return R.votes_csv(_audit.pairs, _audit.votes, include_text=include_text, valid=_audit.valid)
