"""Exports of an audit: standalone HTML report, Markdown summary, constitution JSON, CSV tables.

No Streamlit here; every function returns `str` or `bytes` ready for a download button or a file.

Safety rules (see docs/app.md):

* HTML: every piece of data (principle texts, dataset names, group names, response texts) goes
  through `html.escape`; plotly figures are embedded through plotly's own JSON serialisation, with
  plotly.js inlined once so the report opens offline.
* CSV: cells that a spreadsheet would execute as a formula -- text starting with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return -- are prefixed with a single quote ``'`` (OWASP "CSV injection").
  Numeric columns are written as numbers and never altered. Real responses often start with a
  markdown bullet ``- `` or a ``+``: they appear with a leading ``'`` in the CSV, on purpose.
* No export ever contains an API key or any engine setting other than the mode and model name.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from icai_core import __version__
from icai_core import figures as F

__all__ = [
    "neutralise_cell",
    "neutralise_frame",
    "safe_csv",
    "votes_csv",
    "write_csv",
    "stats_csv",
    "constitution_json",
    "markdown_summary",
    "html_report",
    "MIME",
]

METADATA_COLUMNS = ["pair_id", "annotator", "model_a", "model_b", "language", "category"]

MIME = {
    "html": "text/html",
    "md": "text/markdown",
    "json": "application/json",
    "csv": "text/csv",
}


# --------------------------------------------------------------------------- CSV
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value):
    """The one CSV-injection rule of the project: a text cell a spreadsheet would run as a formula
    (starting with = + - @ tab or CR) gets a leading single quote. Numbers are untouched."""
    from icai_core.safecsv import neutralise_cell as _cell

    return _cell(value)


def neutralise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with every text cell neutralised (column names too); numbers untouched."""
    from icai_core.safecsv import neutralise_frame as _frame

    return _frame(df)


def safe_csv(df: pd.DataFrame) -> bytes:
    """UTF-8 CSV (RFC-4180 quoting) with formula-looking cells neutralised."""
    from icai_core.safecsv import csv_bytes

    return csv_bytes(df)


def votes_table(pairs: pd.DataFrame, votes: pd.DataFrame, *, include_text: bool = False,
                valid: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per pair: id, metadata, the annotator's choice, and one column per principle vote.

    Votes are 1 (picks A), -1 (picks B), 0 (not relevant); with a validity mask an invalid LLM answer
    is written as the text "invalid" (never as 0, which would read as "not relevant")."""
    cols = ["id"] + [c for c in METADATA_COLUMNS if c in pairs.columns] + ["preferred"]
    if include_text:
        cols += [c for c in ("prompt", "text_a", "text_b") if c in pairs.columns]
    left = pairs.loc[votes.index, cols].reset_index(drop=True)
    right = votes.reset_index(drop=True)
    if valid is not None and not bool(valid.to_numpy().all()):
        ok = valid.loc[votes.index, list(votes.columns)].reset_index(drop=True).to_numpy()
        right = right.astype(object).where(ok, "invalid")
    return pd.concat([left, right.add_prefix("vote_")], axis=1)


def votes_csv(pairs: pd.DataFrame, votes: pd.DataFrame, *, include_text: bool = False,
              valid: pd.DataFrame | None = None) -> bytes:
    """Votes CSV: 1 = the principle picks A, -1 = picks B, 0 = not relevant, "invalid" = unreadable answer."""
    return safe_csv(votes_table(pairs, votes, include_text=include_text, valid=valid))


def write_csv(df: pd.DataFrame, path) -> None:
    """Write `df` to `path` with the project's one safe CSV writer."""
    from pathlib import Path

    Path(path).write_bytes(safe_csv(df))


def stats_csv(stats: pd.DataFrame) -> bytes:
    return safe_csv(stats)


# --------------------------------------------------------------------------- constitution
def constitution_entries(constitution: Any) -> list[dict]:
    """Entries of a Constitution as plain dicts (key, text, strength, ... whatever the entry holds)."""
    if constitution is None:
        return []
    if hasattr(constitution, "to_dict"):
        d = constitution.to_dict()
        if isinstance(d, Mapping) and isinstance(d.get("entries"), list):
            return [dict(e) for e in d["entries"]]
    entries = getattr(constitution, "entries", None)
    if entries is None:
        return []
    out = []
    for e in entries:
        if isinstance(e, Mapping):
            out.append(dict(e))
        elif hasattr(e, "__dataclass_fields__"):
            out.append({k: getattr(e, k) for k in e.__dataclass_fields__})
        else:
            out.append({"text": str(e)})
    return out


def constitution_text(constitution: Any) -> str:
    if constitution is None:
        return ""
    if hasattr(constitution, "text"):
        t = constitution.text
        return t() if callable(t) else str(t)
    return "\n".join(f"{i}. {e.get('text', '')}" for i, e in enumerate(constitution_entries(constitution), 1))


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if hasattr(v, "__dataclass_fields__"):
        return {k: _jsonable(getattr(v, k)) for k in v.__dataclass_fields__}
    return str(v)


def _records(df: pd.DataFrame | None) -> list[dict]:
    if df is None:
        return []
    return [_jsonable(r) for r in df.to_dict(orient="records")]


def constitution_document(
    audit: Any,
    constitution: Any = None,
    reconstruction: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> dict:
    """The machine-readable record of one audit's constitution (what the JSON export holds)."""
    constitution = constitution if constitution is not None else audit.constitution
    reconstruction = reconstruction if reconstruction is not None else audit.reconstruction
    config = getattr(audit, "config", None)
    return {
        "generator": f"Principia {__version__}",
        "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "dataset": {
            "name": getattr(audit, "dataset_name", ""),
            "hash": getattr(audit, "dataset_hash", ""),
            "pairs": int(len(audit.pairs)),
        },
        "config": _jsonable(config) if config is not None else {},
        "selection": _jsonable(dict(settings or {})),
        "constitution": {
            "text": constitution_text(constitution),
            "entries": _jsonable(constitution_entries(constitution)),
        },
        "reconstruction": _records(getattr(reconstruction, "table", None)),
    }


def constitution_json(
    audit: Any,
    constitution: Any = None,
    reconstruction: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> bytes:
    doc = constitution_document(audit, constitution, reconstruction, settings)
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- Markdown
def _md_escape(text: Any) -> str:
    """Escape text for a Markdown table cell / line (no HTML, no table breaks)."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = html.escape(s, quote=False)
    for ch in ("\\", "|", "*", "_", "`", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return s


def _fmt_pct(x: Any) -> str:
    try:
        return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.1%}"
    except (TypeError, ValueError):
        return "n/a"


def _fmt_signed(x: Any) -> str:
    try:
        return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):+.3f}"
    except (TypeError, ValueError):
        return "n/a"


def top_principles(stats: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    s = stats.copy()
    return s.reindex(s["strength"].abs().sort_values(ascending=False).index).head(n)


def markdown_summary(
    audit: Any,
    constitution: Any = None,
    reconstruction: Any = None,
    settings: Mapping[str, Any] | None = None,
    *,
    top: int = 10,
) -> str:
    constitution = constitution if constitution is not None else audit.constitution
    reconstruction = reconstruction if reconstruction is not None else audit.reconstruction
    pairs = audit.pairs
    counts = pairs["preferred"].value_counts()
    lines = [
        f"# Principia audit: {_md_escape(audit.dataset_name)}",
        "",
        f"*{len(pairs):,} pairs* (A preferred {int(counts.get('a', 0)):,} · B preferred "
        f"{int(counts.get('b', 0)):,} · ties {int(counts.get('tie', 0)):,}); dataset hash "
        f"`{audit.dataset_hash}`; generated by Principia {__version__}.",
        "",
        "## What this annotator rewards",
        "",
        f"Top {top} principles by |strength| over all labelled pairs "
        "(strength = relevance × (2·accuracy − 1); 95% CIs; ✔ = significant after Benjamini-Hochberg).",
        "",
        "| principle | strength [95% CI] | relevance | accuracy | sig. |",
        "|---|---|---|---|---|",
    ]
    for _, r in top_principles(audit.stats, top).iterrows():
        lines.append(
            f"| {_md_escape(r['text'])} | {_fmt_signed(r['strength'])} "
            f"[{_fmt_signed(r['strength_ci_low'])}, {_fmt_signed(r['strength_ci_high'])}] | "
            f"{_fmt_pct(r['relevance'])} | {_fmt_pct(r['accuracy'])} | {'✔' if r.get('significant') else ''} |"
        )
    lines += ["", "## Constitution", ""]
    if settings:
        lines.append(
            "Selected on the training split with "
            + ", ".join(f"{_md_escape(k)} = {_md_escape(v)}" for k, v in settings.items())
            + "."
        )
        lines.append("")
    text = constitution_text(constitution)
    lines += (
        [_md_escape(ln) for ln in text.splitlines()]
        if text.strip()
        else ["*(no principle passed the thresholds)*"]
    )
    lines += [
        "",
        "## Reconstruction of held-out choices",
        "",
        "| method | agreement | 95% CI | n |",
        "|---|---|---|---|",
    ]
    table = getattr(reconstruction, "table", None)
    if table is not None:
        for _, r in table.iterrows():
            lines.append(
                f"| {_md_escape(F.METHOD_LABELS.get(str(r['method']), r['method']))} | {_fmt_pct(r['agreement'])} | "
                f"{_fmt_pct(r['ci_low'])} – {_fmt_pct(r['ci_high'])} | {int(r.get('n_test', 0) or 0):,} |"
            )
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2rem auto;
padding:0 1rem;color:#1d2733;line-height:1.45}
h1{font-size:1.8rem;margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
.muted{color:#5b6b7c} table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.6rem 0}
th,td{border-bottom:1px solid #e4e8ee;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f9} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
ol.constitution li{margin:.35rem 0} .pos{color:#2f6db5} .neg{color:#c0392b}
pre.pair{white-space:pre-wrap;background:#f7f8fa;border:1px solid #e4e8ee;padding:.6rem;max-height:18rem;overflow:auto}
.kpi{display:inline-block;margin-right:2rem} .kpi b{font-size:1.4rem;display:block}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def html_table(df: pd.DataFrame, *, formats: Mapping[str, str] | None = None, max_rows: int = 200) -> str:
    """An escaped HTML table; `formats` maps column -> format spec ("pct", "signed", "int", "float")."""
    formats = dict(formats or {})
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.head(max_rows).iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            f = formats.get(c)
            if f == "pct":
                cells.append(f"<td class='num'>{_e(_fmt_pct(v))}</td>")
            elif f == "signed":
                cells.append(f"<td class='num'>{_e(_fmt_signed(v))}</td>")
            elif f == "int":
                cells.append(f"<td class='num'>{_e('' if pd.isna(v) else f'{int(v):,}')}</td>")
            elif f == "float":
                cells.append(f"<td class='num'>{_e('' if pd.isna(v) else f'{float(v):.3g}')}</td>")
            else:
                cells.append(f"<td>{_e(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f"<p class='muted'>{len(df) - max_rows:,} more rows in the CSV export.</p>"
        if len(df) > max_rows
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def html_report(
    audit: Any,
    constitution: Any = None,
    reconstruction: Any = None,
    settings: Mapping[str, Any] | None = None,
    *,
    compare: Any = None,
    examples: int = 3,
    extra_figures: Iterable[tuple[str, Any]] = (),
) -> str:
    """A standalone, offline-readable HTML report (plotly.js inline, all data escaped)."""
    constitution = constitution if constitution is not None else audit.constitution
    reconstruction = reconstruction if reconstruction is not None else audit.reconstruction
    pairs = audit.pairs
    counts = pairs["preferred"].value_counts()
    entries = constitution_entries(constitution)
    selected_keys = [e.get("key") for e in entries if e.get("key")]

    figs: list[tuple[str, Any]] = [
        ("Principle strength", F.strength_bar(audit.stats, selected=selected_keys)),
        ("Reconstruction", F.reconstruction_bar(getattr(reconstruction, "table", None))),
        ("Response lengths", F.length_distribution(pairs)),
    ]
    if compare is not None and getattr(compare, "strength_matrix", None) is not None:
        figs.append(
            (
                "Principle strength by group",
                F.strength_heatmap(
                    compare.strength_matrix,
                    getattr(compare, "strength_ci_low", None),
                    getattr(compare, "strength_ci_high", None),
                ),
            )
        )
    figs.extend(extra_figures)
    fig_html = []
    for i, (_title, fig) in enumerate(figs):
        fig_html.append(F.figure_html(fig, include_plotlyjs=(i == 0), div_id=f"fig{i}"))

    text = constitution_text(constitution)
    if text.strip():
        const_html = "<pre class='pair'>" + _e(text) + "</pre>"
    else:
        const_html = "<p><em>No principle passed the thresholds.</em></p>"

    stats_cols = [
        c
        for c in (
            "text",
            "strength",
            "strength_ci_low",
            "strength_ci_high",
            "relevance",
            "accuracy",
            "n_relevant",
            "q_value",
            "significant",
        )
        if c in audit.stats.columns
    ]
    stats_tbl = top_principles(audit.stats, len(audit.stats))[stats_cols]
    stats_html = html_table(
        stats_tbl,
        formats={
            "strength": "signed",
            "strength_ci_low": "signed",
            "strength_ci_high": "signed",
            "relevance": "pct",
            "accuracy": "pct",
            "n_relevant": "int",
            "q_value": "float",
        },
    )
    recon_tbl = getattr(reconstruction, "table", None)
    recon_html = ""
    if recon_tbl is not None:
        rt = recon_tbl.copy()
        rt["method"] = [F.METHOD_LABELS.get(str(m), str(m)) for m in rt["method"]]
        keep = [c for c in ("method", "agreement", "ci_low", "ci_high", "n_test") if c in rt.columns]
        recon_html = html_table(
            rt[keep], formats={"agreement": "pct", "ci_low": "pct", "ci_high": "pct", "n_test": "int"}
        )

    settings_html = ""
    if settings:
        settings_html = (
            "<p class='muted'>Selection: "
            + ", ".join(f"{_e(k)} = {_e(v)}" for k, v in settings.items())
            + " (on the training split).</p>"
        )

    ex_html = []
    if examples and len(pairs):
        sample = pairs[pairs["preferred"] != "tie"].head(examples)
        for _, r in sample.iterrows():
            ex_html.append(
                f"<h3>Pair {_e(r['id'])} — annotator preferred {_e(str(r['preferred']).upper())}</h3>"
                f"<p class='muted'>Prompt</p><pre class='pair'>{_e(r['prompt'])}</pre>"
                f"<p class='muted'>Response A</p><pre class='pair'>{_e(r['text_a'])}</pre>"
                f"<p class='muted'>Response B</p><pre class='pair'>{_e(r['text_b'])}</pre>"
            )

    compare_html = ""
    if compare is not None and getattr(compare, "differences", None) is not None:
        diff = compare.differences
        sig = diff[diff["significant"]] if "significant" in diff.columns else diff
        compare_html = "<h2>Differences between groups</h2>" + html_table(sig.head(50))

    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    body = f"""
<h1>Principia audit — {_e(audit.dataset_name)}</h1>
<p class="muted">Generated {created} by Principia {_e(__version__)} · dataset hash {_e(audit.dataset_hash)}</p>
<div>
<span class="kpi"><b>{len(pairs):,}</b>pairs</span>
<span class="kpi"><b>{int(counts.get("a", 0)):,} / {int(counts.get("b", 0)):,} / {int(counts.get("tie", 0)):,}</b>A / B / tie</span>
<span class="kpi"><b>{len(entries)}</b>principles in the constitution</span>
</div>
<h2>Constitution</h2>
<p>The principles that best explain this annotator's choices, selected on the training split.
A principle the annotator penalises enters reversed.</p>
{settings_html}
{const_html}
<h2>Principle strength</h2>
<p>strength = relevance × (2·accuracy − 1) over all labelled pairs: above 0 the annotator rewards the
principle, below 0 it penalises it. Bars show 95% confidence intervals.</p>
{fig_html[0]}
{stats_html}
<h2>How well the constitution reconstructs the annotator</h2>
<p>Agreement with the annotator's held-out choices, with 95% Wilson intervals, against baselines.</p>
{fig_html[1]}
{recon_html}
<h2>Data</h2>
{fig_html[2]}
{"".join(fig_html[3:])}
{compare_html}
<h2>Example pairs</h2>
{"".join(ex_html) or "<p>No labelled pairs.</p>"}
"""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Principia audit — {_e(audit.dataset_name)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
