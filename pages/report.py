"""Report: downloads of the audit (HTML report, Markdown summary, constitution JSON, votes and stats CSV)."""

from __future__ import annotations

import streamlit as st

from icai_core import report as R
from ui import common as C
from ui import gallery as G
from ui import report_ui as RU
from ui import safe as S

st.title("Report")
ds = C.require_data()
audit = C.require_audit(ds)
constitution, recon, sel = C.current_constitution(audit)
compare = st.session_state.get("cmp_last")

st.markdown(
    f"Exports of the audit of **{S.md(audit.dataset_name)}** ({S.md(C.annotator_label(audit.annotator, audit))}) with the "
    f"current constitution ({len(constitution)} principle{'' if len(constitution) == 1 else 's'}; thresholds "
    "from the Constitution page)."
)
include_compare = False
if compare is not None:
    include_compare = st.checkbox(
        f"Include the latest comparison (by {compare.by}, {len(compare.groups)} groups) in the HTML report",
        value=True,
        key="rep_include_compare",
    )

base = RU.file_stem(audit.dataset_name)
key = (audit.dataset_hash, getattr(audit, 'run_id', None), audit.annotator, C.config_key(audit.config),
       tuple(sorted(sel.items())))

c1, c2 = st.columns(2)
with c1:
    st.markdown("##### Stakeholder report (HTML)")
    st.caption(
        "For stakeholders: an executive summary first (strongest findings with their evidence, the "
        "reconstruction verdict, the judge report card, caveats), a data card, then the details. Opens "
        "offline (plotly.js inlined) and prints to PDF (File → Print)."
    )
    card = G.card_for(audit.dataset_hash)
    html_key = key + ((compare.by, tuple(compare.groups)) if include_compare else ()) + (
        (card or {}).get("name"),)
    html_bytes = RU.html_report_bytes(
        html_key, include_compare, _audit=audit, _c=constitution, _r=recon, _s=sel, _cmp=compare, _card=card
    )
    st.download_button(
        "HTML report",
        data=html_bytes,
        file_name=f"{base}-report.html",
        mime=R.MIME["html"],
        icon=":material/description:",
        key="dl_html",
        on_click="ignore",
    )
    st.caption(f"{len(html_bytes) / 1e6:.1f} MB")

    st.markdown("##### Markdown summary")
    st.caption("Top principles, the constitution and the reconstruction table, for a paper or an issue.")
    md = R.markdown_summary(audit, constitution, recon, sel).encode("utf-8")
    st.download_button(
        "Markdown summary",
        data=md,
        file_name=f"{base}-summary.md",
        mime=R.MIME["md"],
        icon=":material/article:",
        key="dl_md",
        on_click="ignore",
    )

    st.markdown("##### Constitution (JSON)")
    st.caption(
        "Entries with strength/accuracy/relevance/q-value, selection settings, audit config, reconstruction."
    )
    st.download_button(
        "Constitution JSON",
        data=R.constitution_json(audit, constitution, recon, sel),
        file_name=f"{base}-constitution.json",
        mime=R.MIME["json"],
        icon=":material/data_object:",
        key="dl_json",
        on_click="ignore",
    )
with c2:
    st.markdown("##### Votes (CSV)")
    st.caption(
        "One row per pair: id, metadata, the annotator's choice and every principle's vote "
        "(1 = picks A, -1 = picks B, 0 = not relevant). Text cells starting with =, +, -, @, a tab or a "
        "carriage return get a leading ' so spreadsheets do not run them as formulas."
    )
    with_text = st.checkbox("Include prompt and response texts", value=False, key="rep_votes_text")
    st.download_button(
        "Votes CSV",
        data=RU.votes_csv_bytes(key[:2], with_text, _audit=audit),
        file_name=f"{base}-votes.csv",
        mime=R.MIME["csv"],
        icon=":material/table:",
        key="dl_votes",
        on_click="ignore",
    )

    st.markdown("##### Principle statistics (CSV)")
    st.caption("relevance, accuracy, strength with 95% CIs, p- and q-values for every principle: the numbers "
               "the report and the Principles page show (column *inference*: clustered by prompt when the run has "
               "evidence, with the row-level binomial ones beside them as *binomial_…*).")
    st.download_button(
        "Statistics CSV",
        data=R.stats_csv(R.stats_export(audit)),
        file_name=f"{base}-stats.csv",
        mime=R.MIME["csv"],
        icon=":material/table_chart:",
        key="dl_stats",
        on_click="ignore",
    )

with st.expander("Preview the Markdown summary"):
    st.code(md.decode("utf-8"), language="markdown", wrap_lines=True)
