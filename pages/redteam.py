"""Red-team (IterAlign) and LLM-engine controls: placeholder until the LLM features are wired in."""

from __future__ import annotations

import streamlit as st

from ui import common as C

st.title("Red-team & LLM engine")
st.info(
    "Red-teaming a model with IterAlign (find prompts where it breaks a constitution, propose new "
    "principles, self-reflect) and ICAI principle proposals run through the **LLM engine**. "
    "This page is a placeholder: the controls will be added here.",
    icon=":material/construction:",
)
eng = C.engine()
st.markdown(
    "The LLM engine settings (OpenAI-compatible base URL, model, API key) live on the **Home** page. "
    f"Current engine: **{'LLM' if eng.mode == 'llm' else 'offline'}**"
    + (
        f" — model {C.escape_md(eng.model)}, key {'set' if eng.api_key else 'not set'}."
        if eng.mode == "llm"
        else "."
    )
)
if C.HOME is not None:
    st.page_link(C.HOME, label="Engine settings on Home", icon=":material/settings:")
