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
    "stats_export",
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
    """`stats` as CSV; a frame that says which inference made it (``attrs["inference"]``) gets an
    ``inference`` column, so the file cannot be read as the other one."""
    out = stats.copy()
    if stats.attrs.get("inference"):
        out["inference"] = stats.attrs["inference"]
    return safe_csv(out)


def stats_export(audit: Any) -> pd.DataFrame:
    """The principle statistics a download carries: the table the app and the report show
    (`evidence.presented_stats`: clustered CIs, p, q and significance when the run has evidence) and,
    beside clustered numbers, the row-level binomial ones as ``binomial_*`` columns (labelled, for
    comparison; never the significance a view shows)."""
    from icai_core.evidence import CLUSTERED

    out = _presented(audit)
    if out.attrs.get("inference") == CLUSTERED:
        b = audit.stats.set_index("key")
        for c in ("strength_ci_low", "strength_ci_high", "p_value", "q_value", "significant"):
            if c in b.columns:
                out[f"binomial_{c}"] = out["key"].map(b[c]).to_numpy()
    return out


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


def top_principles(stats: pd.DataFrame, n: int = 10, principles: Any = None) -> pd.DataFrame:
    """The `n` strongest principles in the rewarded wording (`figures.rewarded_view`)."""
    return F.rewarded_view(stats, principles).head(n)


def _principles_of(audit: Any) -> Any:
    return getattr(audit, "principles", None) if hasattr(audit, "judges") else None


def _presented(audit: Any) -> pd.DataFrame:
    """The principle table the report shows: `evidence.presented_stats` (the clustered numbers that
    summary.json and the app's principle table show), or the labelled binomial stats of an object that
    has no evidence stage. ``attrs["inference"]`` says which."""
    from icai_core.evidence import presented_stats

    return presented_stats(audit)


def _inference_note(stats: pd.DataFrame) -> str:
    """One sentence saying which test made the table's intervals and q-values (plain text)."""
    from icai_core.evidence import CLUSTERED

    if stats.attrs.get("inference") == CLUSTERED:
        return ("95% CIs and q-values are clustered by prompt (judgements of one prompt are not independent), "
                "as in summary.json; significant = Benjamini-Hochberg q < alpha.")
    why = stats.attrs.get("no_evidence") or ""
    return ("95% CIs and q-values are binomial, NOT clustered by prompt: they treat judgements that share a "
            "prompt as independent, so intervals may be too narrow and the significant set too large"
            + (f" (no clustered evidence: {why.rstrip('.')})" if why else "") + ".")


def _entry(audit: Any) -> dict:
    """`summary.annotator_entry` of the presented annotator ({} for objects that are not a RunResult):
    the evidence other modules add (controlled effects, proxies for length, the cross-validated
    verdict, the judge report card) arrives here, and each report section shows only what exists."""
    if not hasattr(audit, "analysis"):
        return {}
    try:
        from icai_core.summary import annotator_entry

        return annotator_entry(audit)
    except Exception:  # a report must still be written when an optional section fails
        return {}


def _settings_text(settings: Mapping[str, Any] | None, esc) -> str:
    if not settings:
        return ""
    return ", ".join(f"{esc(k)} = {esc(v)}" for k, v in settings.items())


def markdown_summary(
    audit: Any,
    constitution: Any = None,
    reconstruction: Any = None,
    settings: Mapping[str, Any] | None = None,
    *,
    top: int = 10,
) -> str:
    """A Markdown summary for a paper or an issue: the rewarded principles (one sign convention,
    `figures.SIGN_RULE`), the constitution with the exact thresholds it was selected with, and the
    held-out reconstruction."""
    constitution = constitution if constitution is not None else audit.constitution
    reconstruction = reconstruction if reconstruction is not None else audit.reconstruction
    pairs = audit.pairs
    counts = pairs["preferred"].value_counts()
    n_pairs = _n_distinct(audit)
    who = _who(audit)
    stats = _presented(audit)
    tag = stats.attrs.get("inference", "")
    lines = [
        f"# Principia audit: {_md_escape(audit.dataset_name)}",
        "",
        f"*{n_pairs:,} distinct pairs, {len(pairs):,} judgements*{(' by ' + _md_escape(who)) if who else ''} "
        f"(A preferred {int(counts.get('a', 0)):,} · B preferred {int(counts.get('b', 0)):,} · ties "
        f"{int(counts.get('tie', 0)):,}); dataset hash `{audit.dataset_hash}`; generated by Principia "
        f"{__version__}.",
        "",
        "## What this annotator rewards",
        "",
        f"Top {top} principles by strength over all labelled pairs. {F.SIGN_RULE} "
        f"{_md_escape(_inference_note(stats))} ✔ = significant after Benjamini-Hochberg.",
        "",
        f"| principle (rewarded wording) | strength [95% CI, {tag}] | relevance | accuracy | sig. ({tag}) |",
        "|---|---|---|---|---|",
    ]
    for _, r in top_principles(stats, top, _principles_of(audit)).iterrows():
        lines.append(
            f"| {_md_escape(r['wording'])} | {_fmt_signed(r['reward'])} "
            f"[{_fmt_signed(r['reward_ci_low'])}, {_fmt_signed(r['reward_ci_high'])}] | "
            f"{_fmt_pct(r['relevance'])} | {_fmt_pct(r.get('reward_accuracy'))} | "
            f"{'✔' if r.get('significant') else ''} |"
        )
    lines += ["", "## Constitution", ""]
    if settings:
        lines.append("Selected on the training split with " + _settings_text(settings, _md_escape) + ".")
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
    verdict = (_entry(audit).get("reconstruction") or {}).get("verdict")
    if verdict:
        lines += ["", f"Cross-validated verdict: {_md_escape(verdict)}"]
    lines.append("")
    return "\n".join(lines)


def _n_distinct(audit: Any) -> int:
    analysis = getattr(audit, "analysis", None)
    if analysis is not None and getattr(analysis, "n_pairs", None) is not None:
        return int(analysis.n_pairs)
    from icai_core.reconstruct import content_groups

    return int(len(pd.unique(content_groups(audit.pairs)))) if len(audit.pairs) else 0


def _who(audit: Any) -> str:
    analysis = getattr(audit, "analysis", None)
    if analysis is None:
        return ""
    if analysis.pooled:
        return "all annotators pooled"
    name = getattr(audit, "annotator", "")
    return "" if name in ("", "all") else str(name)


# --------------------------------------------------------------------------- HTML
_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:980px;margin:2rem auto;
padding:0 1rem;color:#1d2733;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
.muted{color:#5b6b7c} .small{font-size:.85rem}
table{border-collapse:collapse;width:100%;font-size:.88rem;margin:.6rem 0;table-layout:fixed}
th,td{border-bottom:1px solid #e4e8ee;padding:.3rem .45rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere;word-break:normal}
th{background:#f4f6f9;font-weight:600;font-size:.8rem;overflow-wrap:normal}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
col.wide{width:auto} col.n{width:6.5rem} col.ci{width:9.8rem} col.s{width:5.6rem}
ol.constitution li{margin:.35rem 0}
pre.pair{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f8fa;border:1px solid #e4e8ee;padding:.5rem;
max-height:16rem;overflow:auto;font-size:.82rem;margin:.2rem 0 .6rem}
.kpis{display:flex;flex-wrap:wrap;gap:.6rem 2rem;margin:.8rem 0}
.kpi b{font-size:1.35rem;display:block}
.exec{background:#f4f7fb;border:1px solid #dde6f0;border-radius:6px;padding:.2rem 1rem .6rem}
.exec li{margin:.3rem 0} .verdict{font-weight:600}
.pair-grid{display:grid;grid-template-columns:1fr 1fr;gap:.6rem}
.fig{max-width:100%;overflow:hidden}
.trunc{color:#c0392b;font-style:italic}
@page{size:A4;margin:14mm 12mm}
@media print{
 html{font-size:12px}
 body{max-width:none;margin:0;padding:0}
 h2{break-after:avoid} table,.fig,.example,.exec{break-inside:avoid}
 pre.pair{max-height:none;overflow:visible}
 .pair-grid{grid-template-columns:1fr 1fr}
 .noprint{display:none}
}
"""

# How wide the report's figures are drawn: fits the screen column and an A4 page (about 700 px).
FIGURE_WIDTH = 700
TEXT_LIMIT = 1500  # characters of a prompt / response the report embeds (issue 11 item 6)
LIMITS = (
    "The measurable judges see surface features of the texts (length, formatting, tone, hedging, refusals, "
    "overlap with the prompt). They cannot see factual accuracy, reasoning, instruction following or harm "
    "beyond word lists; a principle here describes what goes with the annotator's choices, not why it chose."
)


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _pct0(x: Any) -> str:
    try:
        return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.0%}"
    except (TypeError, ValueError):
        return "n/a"


def _ci_pct(lo: Any, hi: Any) -> str:
    a, b = _fmt_pct(lo), _fmt_pct(hi)
    return "" if "n/a" in (a, b) else f"{a} – {b}"


def _ci_signed(lo: Any, hi: Any) -> str:
    a, b = _fmt_signed(lo), _fmt_signed(hi)
    return "" if "n/a" in (a, b) else f"[{a}, {b}]"


def _q(x: Any) -> str:
    try:
        q = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(q):
        return "n/a"
    return "< 0.001" if q < 0.001 else f"{q:.3f}"


def html_table(df: pd.DataFrame, *, formats: Mapping[str, str] | None = None, max_rows: int = 200,
               widths: Mapping[str, str] | None = None) -> str:
    """An escaped HTML table that fits its page: fixed layout, long cells wrap.

    `formats` maps column -> "pct", "pct0", "signed", "int", "float", "q" (numbers right-aligned);
    `widths` maps column -> a <col> class ("n", "ci", "s") for narrow numeric columns."""
    formats = dict(formats or {})
    widths = dict(widths or {})
    cols = "".join(f"<col class='{_e(widths.get(c, 'wide'))}'>" for c in df.columns)
    head = "".join(f"<th{' class=num' if c in formats else ''}>{_e(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.head(max_rows).iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            f = formats.get(c)
            if f == "pct":
                cells.append(f"<td class='num'>{_e(_fmt_pct(v))}</td>")
            elif f == "pct0":
                cells.append(f"<td class='num'>{_e(_pct0(v))}</td>")
            elif f == "signed":
                cells.append(f"<td class='num'>{_e(_fmt_signed(v))}</td>")
            elif f == "int":
                cells.append(f"<td class='num'>{_e('' if pd.isna(v) else f'{int(v):,}')}</td>")
            elif f == "float":
                cells.append(f"<td class='num'>{_e('' if pd.isna(v) else f'{float(v):.3g}')}</td>")
            elif f == "q":
                cells.append(f"<td class='num'>{_e(_q(v))}</td>")
            elif f == "text":
                cells.append(f"<td class='num'>{_e(v)}</td>")
            else:
                cells.append(f"<td>{_e(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f"<p class='muted'>{len(df) - max_rows:,} more rows in the CSV export.</p>"
        if len(df) > max_rows
        else ""
    )
    return (f"<table><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table>{more}")


def _truncate(text: Any, limit: int) -> str:
    """Escaped text capped at `limit` characters, with a visible mark saying how much was cut."""
    s = "" if text is None else str(text)
    if len(s) <= limit:
        return _e(s) if s else "<span class='muted'>(empty)</span>"
    return _e(s[:limit]) + f"<span class='trunc'> … [truncated: {len(s) - limit:,} more characters]</span>"


def _finding(r: pd.Series, p: Mapping[str, Any] | None) -> str:
    """One executive-summary finding in plain words, with its evidence."""
    txt = (f"<b>{_e(F.short_wording(r['wording']))}</b> — applies to {_pct0(r['relevance'])} of labelled "
           f"pairs; there the annotator sides with it {_pct0(r.get('reward_accuracy'))} of the time "
           f"(strength {_fmt_signed(r['reward'])} {_ci_signed(r['reward_ci_low'], r['reward_ci_high'])}, "
           f"q {_q(r.get('q_value'))}, n = {int(r.get('n_relevant', 0) or 0):,} pairs).")
    if p:
        ctrl = p.get("controlled") or {}
        if p.get("proxy_for_length"):
            txt += " <i>Not significant once length is controlled: largely a proxy for length.</i>"
        elif ctrl.get("effect") is not None and ctrl.get("status") in (None, "ok"):
            sign = -1.0 if r.get("reversed") else 1.0
            ci = ctrl.get("ci") or [None, None]
            lo, hi = (None if x is None else sign * x for x in ci)
            if sign < 0:
                lo, hi = hi, lo
            txt += (f" Length-controlled effect {_fmt_signed(sign * ctrl['effect'])} "
                    f"{_ci_signed(lo, hi)} (log-odds, q {_q(ctrl.get('q'))}).")
    return f"<li>{txt}</li>"


def _executive_summary(audit: Any, entry: dict, rv: pd.DataFrame, constitution: Any, reconstruction: Any,
                       n_pairs: int) -> str:
    by_key = {p.get("key"): p for p in entry.get("principles", []) or []}
    sig = rv[rv.get("significant", pd.Series(False, index=rv.index)).astype(bool)] if len(rv) else rv
    found = "".join(_finding(r, by_key.get(r["key"])) for _, r in sig.head(3).iterrows())
    tag = rv.attrs.get("inference", "")
    found = (f"<ol>{found}</ol>" if found else
             "<p>No principle is significant for this annotator after Benjamini-Hochberg correction"
             f"{f' ({_e(tag)})' if tag else ''}.</p>")
    # reconstruction verdict: the cross-validated one when it exists, else the held-out comparison
    verdict = (entry.get("reconstruction") or {}).get("verdict")
    table = getattr(reconstruction, "table", None)
    if not verdict and table is not None and len(table):
        from icai_core.figures import METHOD_LABELS
        from icai_core.reconstruct import constitution_vs_baseline

        vs = constitution_vs_baseline(table)  # the strongest baseline, not the weakest (majority class)
        if vs is not None:
            agree, method, base = vs
            c = table.set_index("method").loc["logistic_regression"]
            beats = "" if agree > base else " It does not beat it."
            verdict = (f"The constitution ({len(constitution_entries(constitution))} principles) agrees with "
                       f"{_fmt_pct(agree)} ({_ci_pct(c['ci_low'], c['ci_high'])}) of "
                       f"{int(c['n_test']):,} held-out choices, against {_fmt_pct(base)} for the strongest "
                       f"baseline ({METHOD_LABELS.get(method, method)}).{beats}")
    card = ""
    sentences = entry.get("sentences") or {}
    if sentences:
        names = {"length": "Length", "length_coef": "Length model", "lists": "Lists", "position": "Position",
                 "ties": "Ties", "self_preference": "Self-preference", "proxies": "Proxies for length",
                 "style_control": "Style control"}
        items = "".join(f"<li><b>{_e(names.get(k, k.replace('_', ' ').capitalize()))}:</b> {_e(v)}</li>"
                        for k, v in sentences.items() if v and k != "reconstruction")
        card = f"<h3>Judge report card</h3><ul>{items}</ul>"
    else:
        lp = F.length_preference(audit.pairs.drop(columns=["annotator"], errors="ignore"))
        if len(lp) and lp.iloc[0]["n_unequal"]:
            r = lp.iloc[0]
            card = (f"<h3>Judge report card</h3><ul><li><b>Length:</b> chose the longer response in "
                    f"{_fmt_pct(r['p_prefer_longer'])} ({_ci_pct(r['ci_low'], r['ci_high'])}) of "
                    f"{int(r['n_unequal']):,} decided judgements with unequal lengths (50% = no preference)."
                    "</li></ul>")
    analysis = getattr(audit, "analysis", None)
    n_test = int(getattr(reconstruction, "n_test", 0) or 0)
    caveats = [f"Sample size: {n_pairs:,} distinct pairs; the reconstruction is scored on {n_test:,} held-out "
               "pairs, so differences of a few points are within noise (see the 95% intervals)."]
    if analysis is not None:
        names = [n for n in getattr(audit, "annotator_names", []) if n != "all"]
        if analysis.pooled:
            caveats.append("These are all annotators pooled: where annotators disagree, their preferences "
                           "average out; the per-annotator audits are in the app.")
        elif len(names) > 1:
            caveats.append(f"This report presents one annotator ({_e(_who(audit))}) of {len(names)}; each "
                           "annotator is audited separately, on its own judgements.")
    inv = audit.invalid_rate() if hasattr(audit, "invalid_rate") else None
    if inv:
        caveats.append(f"{inv:.1%} of the LLM's votes were invalid answers (counted as not relevant).")
    caveats.append(LIMITS)
    return (
        "<section class='exec'><h2>Executive summary</h2>"
        f"<h3>The three strongest findings</h3><p class='muted small'>{_e(_inference_note(rv))}</p>{found}"
        + (f"<h3>Reconstruction</h3><p class='verdict'>{_e(verdict)}</p>" if verdict else "")
        + card
        + "<h3>Caveats</h3><ul>" + "".join(f"<li>{c}</li>" for c in caveats) + "</ul></section>"
    )


def _data_card(audit: Any, n_pairs: int, card: Mapping[str, Any] | None) -> str:
    pairs = getattr(audit, "all_pairs", None)
    pairs = audit.pairs if pairs is None else pairs
    counts = pairs["preferred"].value_counts()
    rows: list[tuple[str, str]] = [("Dataset", str(audit.dataset_name))]
    card = dict(card or {})
    for label, key in (("Source", "source"), ("Licence", "licence"), ("Good for", "good_for")):
        if card.get(key):
            rows.append((label, str(card[key])))
    rows.append(("Judgements in the file", f"{len(pairs):,} (A {int(counts.get('a', 0)):,} · B "
                                           f"{int(counts.get('b', 0)):,} · tie {int(counts.get('tie', 0)):,})"))
    rows.append(("Distinct pairs presented", f"{n_pairs:,}"))
    if "annotator" in pairs.columns:
        ann = pairs["annotator"].astype(str).value_counts()
        shown = ", ".join(f"{k} ({v:,})" for k, v in ann.head(12).items())
        rows.append(("Annotators", f"{len(ann)}: {shown}" + (" …" if len(ann) > 12 else "")))
    for label, col in (("Models", "model_a"), ("Categories", "category"), ("Languages", "language")):
        if col in pairs.columns:
            vals = pairs[col].astype(str)
            vals = vals[vals != ""]
            if len(vals):
                top = vals.value_counts().head(6)
                rows.append((label, f"{vals.nunique():,} distinct; most frequent: "
                                    + ", ".join(f"{k} ({v:,})" for k, v in top.items())))
    words = pd.concat([pairs["text_a"], pairs["text_b"]]).astype(str).str.split().str.len()
    if len(words):
        rows.append(("Response length", f"median {int(words.median()):,} words (10–90%: "
                                        f"{int(words.quantile(0.1)):,}–{int(words.quantile(0.9)):,})"))
    rows.append(("Dataset hash", str(audit.dataset_hash)))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return ("<h2>Data card</h2><table><colgroup><col style='width:12rem'><col class='wide'></colgroup>"
            f"<tbody>{body}</tbody></table>")


def _compare_section(compare: Any, texts: Mapping[str, str], inverse: Mapping[str, str]) -> str:
    diff = getattr(compare, "differences", None)
    if diff is None:
        return ""
    d = diff[diff["significant"].astype(bool)] if "significant" in diff.columns else diff
    out = [f"<h2>Differences between groups (by {_e(getattr(compare, 'by', ''))})</h2>"]
    if not len(d):
        out.append("<p>No principle differs significantly between the groups (Benjamini-Hochberg, all "
                   "comparisons).</p>")
        return "".join(out)
    d = d.reindex(d["difference"].abs().sort_values(ascending=False).index).head(30)
    rows = []
    for _, r in d.iterrows():
        flip = float(r["difference"]) < 0  # word each row so that group A rewards it more
        key = str(r["key"])
        text = inverse.get(key) if flip else texts.get(key, r.get("text", key))
        sgn = -1.0 if flip else 1.0
        lo, hi = sgn * float(r["diff_ci_low"]), sgn * float(r["diff_ci_high"])
        rows.append({"principle": F.short_wording(text or r.get("text", key)),
                     "group A": r["group_a"], "group B": r["group_b"],
                     "A": sgn * float(r["strength_a"]), "B": sgn * float(r["strength_b"]),
                     "A − B [95% CI]": f"{_fmt_signed(sgn * float(r['difference']))} {_ci_signed(min(lo, hi), max(lo, hi))}",
                     "q": r["q_value"]})
    t = pd.DataFrame(rows)
    out.append("<p>Each row is worded so that group A rewards it more; A and B are each group's strength for "
               "that wording (negative = the group penalises it). Significant differences only (BH).</p>")
    out.append(html_table(t, formats={"A": "signed", "B": "signed", "A − B [95% CI]": "text", "q": "q"},
                          widths={"A": "s", "B": "s", "A − B [95% CI]": "ci", "q": "s"}))
    return "".join(out)


def _examples(audit: Any, rv: pd.DataFrame, reconstruction: Any, n: int, limit: int) -> str:
    """`n` held-out pairs, each shown once with every annotator's choice and every voting principle
    (in the rewarded wording; 'picks' is the side that wording favours)."""
    pairs, votes = audit.pairs, getattr(audit, "votes", None)
    if not n or not len(pairs):
        return "<p>No labelled pairs.</p>"
    from icai_core.reconstruct import content_groups

    groups = content_groups(pairs)
    test = getattr(audit, "test_index", None)
    order = list(test) if test is not None and len(test) else list(range(len(pairs)))
    preds = getattr(reconstruction, "predictions", None)
    seen, chosen = set(), []
    for pos in order:
        if pairs.iloc[pos]["preferred"] == "tie" or groups[pos] in seen:
            continue
        seen.add(groups[pos])
        chosen.append(pos)
        if len(chosen) >= n:
            break
    all_pairs = getattr(audit, "all_pairs", None)
    all_groups = content_groups(all_pairs) if all_pairs is not None and "annotator" in all_pairs else None
    wording = dict(zip(rv["key"], rv["wording"], strict=False))
    flipped = set(rv.loc[rv["reversed"].astype(bool), "key"]) if len(rv) else set()
    out = []
    for pos in chosen:
        r = pairs.iloc[pos]
        label = pairs.index[pos]
        pref = str(r["preferred"])
        choices = f"annotator preferred <b>{_e(pref.upper())}</b>"
        if all_groups is not None:
            same = all_pairs[all_groups == groups[pos]]
            if len(same) > 1:  # every annotator's choice, grouped by the side it chose
                parts = []
                for side, grp in same.groupby(same["preferred"].astype(str), sort=True):
                    names = list(dict.fromkeys(grp["annotator"].astype(str)))
                    shown = ", ".join(_e(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3
                                                                   else "")
                    parts.append(f"<b>{_e(side.upper())}</b>: {len(grp)} ({shown})")
                choices = "choices — " + "; ".join(parts)
        if preds is not None and label in preds.index and "logistic_regression" in preds.columns:
            p = preds.loc[label, "logistic_regression"]
            choices += f"; the constitution predicts <b>{_e(str(p).upper())}</b> ({'right' if p == pref else 'wrong'})"
        vote_rows = []
        if votes is not None:
            target = {"a": 1, "b": -1}.get(pref, 0)
            for key, v in votes.loc[label].items():
                v = int(v) * (-1 if key in flipped else 1)
                if v == 0:
                    continue
                vote_rows.append({"principle (rewarded wording)": F.short_wording(wording.get(key, key)),
                                  "picks": "A" if v > 0 else "B",
                                  "vs annotator": "agrees" if v == target else "disagrees"})
        vt = (html_table(pd.DataFrame(vote_rows), widths={"picks": "s", "vs annotator": "n"})
              if vote_rows else "<p class='muted'>No principle votes on this pair.</p>")
        out.append(
            f"<div class='example'><h3>Pair {_e(r['id'])}</h3><p class='small'>{choices}</p>"
            f"<p class='muted small'>Prompt</p><pre class='pair'>{_truncate(r.get('prompt', ''), limit)}</pre>"
            "<div class='pair-grid'>"
            f"<div><p class='muted small'>Response A</p><pre class='pair'>{_truncate(r['text_a'], limit)}</pre></div>"
            f"<div><p class='muted small'>Response B</p><pre class='pair'>{_truncate(r['text_b'], limit)}</pre></div>"
            f"</div>{vt}</div>"
        )
    return "".join(out) or "<p>No decided pair to show.</p>"


def _fig(fig: Any, i: int) -> str:
    fig.update_layout(width=FIGURE_WIDTH, autosize=False)
    return "<div class='fig'>" + fig.to_html(
        full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}",
        config={"displaylogo": False, "responsive": False},
    ) + "</div>"


def html_report(
    audit: Any,
    constitution: Any = None,
    reconstruction: Any = None,
    settings: Mapping[str, Any] | None = None,
    *,
    compare: Any = None,
    examples: int = 3,
    extra_figures: Iterable[tuple[str, Any]] = (),
    data_card: Mapping[str, Any] | None = None,
    text_limit: int = TEXT_LIMIT,
) -> str:
    """A standalone report people can present: an executive summary first (the three strongest
    findings with their evidence, the reconstruction verdict, the judge report card, the caveats),
    then a data card and the details. Offline (plotly.js inline once), every piece of data escaped,
    rounded numbers with units, tables with a fixed layout that fit an A4 page, a print stylesheet,
    and example pairs shown once each with every principle's vote. Sections whose data the run does
    not hold (controlled effects, report card, comparison) are left out."""
    constitution = constitution if constitution is not None else audit.constitution
    reconstruction = reconstruction if reconstruction is not None else audit.reconstruction
    principles = _principles_of(audit)
    stats = _presented(audit)  # the clustered numbers (= summary.json, the app) or the labelled binomial ones
    tag = stats.attrs.get("inference", "")
    rv = F.rewarded_view(stats, principles)
    rv.attrs.update(stats.attrs)
    entry = _entry(audit)
    pairs = audit.pairs
    n_pairs = _n_distinct(audit)
    entries = constitution_entries(constitution)
    selected_keys = [e.get("key") for e in entries if e.get("key")]
    texts = dict(zip(audit.stats["key"], audit.stats["text"], strict=False))
    inverse = F._inverse_texts(principles)

    figs = [F.strength_bar(stats, selected=selected_keys, principles=principles, top=20),
            F.reconstruction_bar(getattr(reconstruction, "table", None)),
            F.chosen_rejected_lengths(pairs)]
    if compare is not None and getattr(compare, "strength_matrix", None) is not None:
        figs.append(F.strength_heatmap(compare.strength_matrix, getattr(compare, "strength_ci_low", None),
                                       getattr(compare, "strength_ci_high", None), texts=texts))
    figs.extend(fig for _t, fig in extra_figures)
    fig_html = [_fig(fig, i) for i, fig in enumerate(figs)]

    text = constitution_text(constitution)
    const_html = ("<ol class='constitution'>" + "".join(
        f"<li>{_e(e.get('text', ''))} <span class='muted small'>(strength {_fmt_signed(e.get('strength'))}, "
        f"accuracy {_pct0(e.get('accuracy'))})</span></li>" for e in entries) + "</ol>"
        if text.strip() else "<p><em>No principle passed the thresholds.</em></p>")
    settings_html = (f"<p class='muted'>Selected on the training split with "
                     f"{_settings_text(settings, _e)}.</p>" if settings else "")

    pt = pd.DataFrame({
        "principle (rewarded wording)": rv["wording"],
        "strength": rv["reward"],
        f"95% CI ({tag})": [_ci_signed(a, b) for a, b in zip(rv["reward_ci_low"], rv["reward_ci_high"],
                                                             strict=True)],
        "relevance": rv["relevance"],
        "accuracy": rv.get("reward_accuracy", rv.get("accuracy")),
        "n": rv["n_relevant"],
        f"q ({tag})": rv["q_value"],
        "significant": ["yes" if bool(x) else "" for x in rv["significant"]],
    })
    if "proxy_for_length" in rv:
        pt["length proxy"] = ["yes" if bool(x) else "" for x in rv["proxy_for_length"]]
    stats_html = html_table(pt, formats={"strength": "signed", f"95% CI ({tag})": "text", "relevance": "pct0",
                                         "accuracy": "pct0", "n": "int", f"q ({tag})": "q"},
                            widths={"strength": "s", f"95% CI ({tag})": "ci", "relevance": "s", "accuracy": "s",
                                    "n": "s", f"q ({tag})": "ci", "significant": "s", "length proxy": "s"})
    recon_html = ""
    recon_tbl = getattr(reconstruction, "table", None)
    if recon_tbl is not None:
        rt = pd.DataFrame({
            "method": [F.METHOD_LABELS.get(str(m), str(m)) for m in recon_tbl["method"]],
            "agreement": recon_tbl["agreement"],
            "95% CI": [_ci_pct(a, b) for a, b in zip(recon_tbl["ci_low"], recon_tbl["ci_high"], strict=True)],
            "n test": recon_tbl["n_test"],
        })
        recon_html = html_table(rt, formats={"agreement": "pct", "95% CI": "text", "n test": "int"},
                                widths={"agreement": "n", "95% CI": "ci", "n test": "n"})

    lp = F.length_preference(getattr(audit, "all_pairs", None) if getattr(audit, "all_pairs", None) is not None
                             else pairs)
    # all ties (or no row at all): no decided judgement, so there is no length preference to tabulate
    lp_html = ("<p><em>No decided judgement (every pair is a tie): the length preference cannot be "
               "computed.</em></p>") if lp.empty or "annotator" not in lp.columns else html_table(pd.DataFrame({
        "annotator": lp["annotator"], "decided judgements": lp["judgements"], "unequal length": lp["n_unequal"],
        "P(prefer longer)": lp["p_prefer_longer"],
        "95% CI": [_ci_pct(a, b) for a, b in zip(lp["ci_low"], lp["ci_high"], strict=True)],
        "median words chosen / rejected": [f"{a:.0f} / {b:.0f}" if pd.notna(a) else "" for a, b in
                                            zip(lp["median_chosen"], lp["median_rejected"], strict=True)],
    }), formats={"decided judgements": "int", "unequal length": "int", "P(prefer longer)": "pct",
                 "95% CI": "text", "median words chosen / rejected": "text"}, max_rows=40,
       widths={"decided judgements": "n", "unequal length": "n", "P(prefer longer)": "n", "95% CI": "ci",
               "median words chosen / rejected": "ci"})

    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    who = _who(audit)
    counts = pairs["preferred"].value_counts()
    recon_kpi = ""
    if recon_tbl is not None and "logistic_regression" in set(recon_tbl["method"]):
        a = recon_tbl.set_index("method").loc["logistic_regression", "agreement"]
        recon_kpi = f"<span class='kpi'><b>{_e(_fmt_pct(a))}</b>held-out agreement</span>"
    body = f"""
<h1>Principia audit — {_e(audit.dataset_name)}</h1>
<p class="muted">{_e(who + ' · ') if who else ''}generated {created} by Principia {_e(__version__)}</p>
<div class="kpis">
<span class="kpi"><b>{n_pairs:,}</b>distinct pairs</span>
<span class="kpi"><b>{int(counts.get("a", 0)):,} / {int(counts.get("b", 0)):,} / {int(counts.get("tie", 0)):,}</b>A / B / tie</span>
<span class="kpi"><b>{len(entries)}</b>principles in the constitution</span>
{recon_kpi}
</div>
{_executive_summary(audit, entry, rv, constitution, reconstruction, n_pairs)}
{_data_card(audit, n_pairs, data_card)}
<h2>Constitution</h2>
<p>The principles that best explain this annotator's choices, each in the wording the annotator rewards.</p>
{settings_html}
{const_html}
<h2>What the annotator rewards</h2>
<p>{_e(F.SIGN_RULE)} Relevance = share of labelled pairs where the principle picks a side; accuracy = how
often the annotator sides with it there; q = Benjamini-Hochberg corrected p-value. {_e(_inference_note(stats))}
{"Length proxy = significant alone but not once length is controlled." if "proxy_for_length" in rv else ""}</p>
{fig_html[0]}
{stats_html}
<h2>How well the constitution reconstructs the annotator</h2>
<p>Agreement with the annotator's held-out choices (ties excluded), with 95% Wilson intervals, against
baselines.</p>
{fig_html[1]}
{recon_html}
<h2>Length</h2>
<p>Chosen vs rejected response, per decided judgement; P(prefer longer) among judgements whose responses
differ in length (50% = no length preference).</p>
{fig_html[2]}
{lp_html}
{"".join(fig_html[3:])}
{_compare_section(compare, texts, inverse) if compare is not None else ""}
<h2>Example pairs</h2>
<p class="muted">Held-out pairs, each shown once (texts longer than {text_limit:,} characters are truncated,
with a mark).</p>
{_examples(audit, rv, reconstruction, examples, text_limit)}
"""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Principia audit — {_e(audit.dataset_name)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
