"""Principles page, ICAI through the LLM engine: cost estimate, background run, results.

The endpoint is the scripted OpenAI-compatible server of tests/support (a TEST FIXTURE, never a
product backend) reached over HTTP on 127.0.0.1 by the real `openai` client.
"""

from __future__ import annotations

import os
from pathlib import Path

from icai_core.data import load_demo
from tests.support.icai_responders import install
from tests.support.scripted_openai import ScriptedOpenAI
from tests.test_app_common import (
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    needs_data,
    new_app,
    wait_for,
)
from ui.common import LoadedDataset, pairs_hash
from ui.engine import EngineSettings

pytestmark = needs_data
KEY = "sk-app-icai-test-key-0042"


def test_icai_run_from_the_principles_page():
    res = load_demo()
    pairs = res.pairs.head(240).reset_index(drop=True)
    ds = LoadedDataset(name="alpacaeval1 sample (240)", pairs=pairs, hash=pairs_hash(pairs))
    with ScriptedOpenAI() as srv:
        install(srv)
        engine = EngineSettings(mode="llm", base_url=srv.base_url, model="scripted-model", api_key=KEY)
        at = new_app(dataset=ds, engine=engine, use_embeddings=False, show_map=False)
        at.switch_page("pages/principles.py").run()
        assert_ok(at)
        at.number_input(key="icai_prop").set_value(30)
        at.number_input(key="icai_cand").set_value(8)
        at.number_input(key="icai_ann").set_value(40).run()
        at.button(key="icai_estimate").click().run()
        assert_ok(at)
        est = at.session_state["icai_estimate_table"]
        assert list(est["stage"]) == ["propose", "vote", "annotate", "total"]
        assert est.loc[est["stage"] == "propose", "calls"].iloc[0] == 30
        assert srv.chat_count == 0  # estimating sends nothing

        at.button(key="icai_run").click().run()
        wait_for(at, "icai_result", timeout=180)
        at.run()
        assert_ok(at)
        result = at.session_state["icai_result"]["result"]
        n_llm = sum(j.kind == "llm" for j in result.judges)
        assert len(result.proposals) >= 30 and 1 <= n_llm <= 8
        # the ICAI run becomes the current run: the other pages show it
        assert at.session_state["audit"].run_id == result.run_id and at.session_state["audit"].engine == "llm"
        methods = set(result.llm_reconstruction["method"])
        assert {"llm_with_constitution", "llm_no_constitution"} <= methods
        for page in ("pages/constitution.py", "pages/compare.py", "pages/report.py"):
            at.switch_page(page).run()
            assert_ok(at)
        # the key went to the endpoint over HTTP, and nowhere on disk
        assert {r.authorization for r in srv.chat_requests} == {f"Bearer {KEY}"}
    for f in Path(os.environ["PRINCIPIA_HOME"]).rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    home = new_app()
    assert "icai" in set(home.dataframe[0].value["kind"])
