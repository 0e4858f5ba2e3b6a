"""Principia web app: router (st.navigation) + the Home page.

Run with `streamlit run app.py`. Pages live in `pages/`; shared helpers in `ui/`; all logic in
`icai_core` (no Streamlit there).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import streamlit as st  # noqa: E402

from ui import common as C  # noqa: E402
from ui import home  # noqa: E402

st.set_page_config(
    page_title="Principia — preference data audit",
    page_icon=str(Path(__file__).parent / "assets" / "favicon.png"),  # served locally: no font CDN
    layout="wide",
)

pages = {
    "": [st.Page(home.render, title="Home", icon=":material/home:", default=True, url_path="home")],
    "Audit": [
        st.Page("pages/data.py", title="Data", icon=":material/upload_file:"),
        st.Page("pages/principles.py", title="Principles", icon=":material/science:"),
        st.Page("pages/constitution.py", title="Constitution & reconstruction", icon=":material/gavel:"),
        st.Page("pages/compare.py", title="Compare annotators", icon=":material/compare_arrows:"),
    ],
    "Export": [st.Page("pages/report.py", title="Report", icon=":material/download:")],
    "IterAlign": [st.Page("pages/redteam.py", title="Red-team (IterAlign)", icon=":material/shield:")],
}
current = st.navigation(pages)
C.HOME = pages[""][0]

C.apply_query_params()
C.collect_finished_job()
try:
    current.run()
finally:  # after the page, so the badge reflects a dataset loaded or an audit finished by this run
    C.dataset_badge()
    C.sync_query_params()
