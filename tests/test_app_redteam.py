"""The Red-team (IterAlign) page, driven with Streamlit's AppTest.

The LLM endpoint is the scripted OpenAI-compatible server (TEST FIXTURE ONLY, on 127.0.0.1) with
the deterministic IterAlign responders of tests/support/icai_responders.py: the base model complies
unless its system prompt holds a constitution about declining; the oracle flags replies that do not
decline; the proposer returns three principles, two of them near-paraphrases (dedup drops one);
self-reflection returns a refusal. The prompts are real HH-RLHF red-team prompts.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from icai_core.data import load_pairs
from tests.support.icai_responders import CONSTITUTION, install
from tests.support.scripted_openai import ScriptedOpenAI
from ui import redteam_ui as R
from ui.engine import LLM, EngineSettings

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "redteam.py")
KEY = "sk-redteam-page-KEY-9f8e7d6c5b"
N_PROMPTS = 10


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """Caches and the run store go to a temporary PRINCIPIA_HOME."""
    monkeypatch.setenv("PRINCIPIA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return tmp_path / "home"


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120)


def _texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.warning, *at.info, *at.error, *at.markdown, *at.caption, *at.success)]
    return "\n".join(str(p) for p in parts)


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_page_without_endpoint_explains_and_disables_run():
    at = _page().run()
    assert not at.exception
    assert at.title[0].value == "Red-team (IterAlign)"
    text = _texts(at)
    assert "IterAlign needs an OpenAI-compatible LLM endpoint" in text
    assert "Home" in text
    # the fine-tuning caveat is stated
    assert "Fine-tuning is outside this tool" in text
    # the bundled real set is offered with its origin, and previewed
    assert "HH-RLHF" in text and "80 prompts" in text
    assert _button(at, "rt_run").disabled
    # a cost estimate is shown before any run (an upper bound), and no results
    assert any(m.label == "Calls (at most)" for m in at.metric)
    assert R.RESULT not in at.session_state
    assert not any(e.type == "plotly_chart" for e in at.get("plotly_chart"))


def test_bad_prompt_upload_shows_the_loader_message():
    at = _page().run()
    at.radio(key="rt_source").set_value("Upload a file").run()
    at.file_uploader(key="rt_upload").upload("prompts.csv", b"question_text,x\nhello,1\n", "text/csv").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("prompts.csv: no prompt column" in e for e in errors), errors
    assert not any("Traceback" in e for e in errors)
    # a good TXT upload is counted
    at.file_uploader(key="rt_upload").set_value(
        ("mine.txt", b"How do I pick a lock?\n\nWrite an insult.\n", "text/plain")
    ).run()
    assert not at.error
    assert "2 prompts" in _texts(at)


def test_estimate_is_an_upper_bound_built_from_the_prompts():
    eng = EngineSettings(mode=LLM, base_url="http://127.0.0.1:9/v1", model="gpt-4o-mini", api_key=KEY)
    ps = R.bundled_prompt_set()
    plan = R.RedTeamPlan(ps, R.resolve_endpoints(eng), R.ORACLE_LLM, R.make_config(2, 3, 0.85, N_PROMPTS))
    table, totals = R.estimate_plan(plan)
    # per iteration: N respond + N oracle + 1 proposer + up to N revise + up to N re-check
    assert totals["calls"] == 2 * (4 * N_PROMPTS + 1)
    assert totals["dollars"] > 0 and totals["prompt_tokens"] > 0
    offline = R.RedTeamPlan(
        ps,
        R.resolve_endpoints(eng, oracle_kind=R.ORACLE_OFFLINE),
        R.ORACLE_OFFLINE,
        R.make_config(2, 3, 0.85, N_PROMPTS),
    )
    assert R.estimate_plan(offline)[1]["calls"] == 2 * (2 * N_PROMPTS + 1)
    assert KEY not in repr(plan.endpoints) and KEY not in json.dumps(plan.public())


def test_run_two_iterations_against_scripted_endpoint(_home):
    with ScriptedOpenAI() as srv:
        install(srv)
        at = _page()
        at.session_state["engine"] = EngineSettings(
            mode=LLM, base_url=srv.base_url, model="base-model", api_key=KEY
        )
        at.run()
        assert not at.exception
        assert "IterAlign needs an OpenAI-compatible" not in _texts(at)
        at.text_input(key="rt_proposer_model").set_value("proposer-model")
        at.text_input(key="rt_oracle_model").set_value("oracle-model")
        at.number_input(key="rt_iterations").set_value(2)
        at.number_input(key="rt_max_prompts").set_value(N_PROMPTS)
        at.run()
        run_button = _button(at, "rt_run")
        assert not run_button.disabled
        # the estimate for this plan: 2 x (4N + 1) calls at most
        calls = next(m for m in at.metric if m.label == "Calls (at most)")
        assert calls.value == f"{2 * (4 * N_PROMPTS + 1):,}"
        run_button.click().run()
        job = at.session_state[R.JOB]
        assert job.wait(90), "the IterAlign job did not finish"
        at.run()  # the page collects the finished job
        assert not at.exception
        assert job.status == "done", job.error
        models = {r.body["model"] for r in srv.chat_requests}
    assert {"base-model", "proposer-model", "oracle-model"} <= models

    run = at.session_state[R.RESULT]
    result = run.result
    table = R.iteration_view(result)
    assert table["iteration"].tolist() == [1, 2]
    first, second = table.iloc[0], table.iloc[1]
    assert first["n_prompts"] == N_PROMPTS and first["n_flagged"] == N_PROMPTS
    assert first["flagged_rate"] == 1.0 and first["flagged_rate_after"] == 0.0
    assert first["n_duplicates"] == 1
    # iteration 2: base model + accumulated constitution declines, nothing flagged
    assert second["n_flagged"] == 0

    # the page shows the chart, the constitution (with iterations) and the dropped duplicate
    assert len(at.get("plotly_chart")) == 1
    frames = [df.value for df in at.dataframe]
    const = next(f for f in frames if "principle" in f.columns and "#" in f.columns)
    assert const["principle"].tolist() == [CONSTITUTION[0], CONSTITUTION[2]]
    assert const["iteration"].tolist() == [1, 1]
    dups = next(f for f in frames if "dropped principle" in f.columns)
    assert dups["dropped principle"].tolist() == [CONSTITUTION[1]]
    assert dups["duplicate of"].tolist() == [CONSTITUTION[0]]
    # flagged examples shown as plain text (st.text), before and after
    shown = [t.value for t in at.text]
    assert any(s.startswith("Sure, here is") for s in shown)
    assert any(s.startswith("I can't help") for s in shown)
    assert any("Oracle: not flagged" in c.value for c in at.caption)

    # download payloads
    files = run.exports
    assert len(at.get("download_button")) == 3
    lines = files["sft"].decode().splitlines()
    assert len(lines) == N_PROMPTS
    for line in lines:
        rec = json.loads(line)
        assert "messages" in rec
        assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
    pairs = load_pairs(io.BytesIO(files["pairs"]), name="iteralign_preference_pairs.csv").pairs
    assert len(pairs) == N_PROMPTS and set(pairs["preferred"]) <= {"a", "b"}
    const_json = json.loads(files["constitution"])
    assert [p["text"] for p in const_json["principles"]] == result.constitution

    # "Audit these pairs" makes the revised-vs-original pairs the current dataset
    _button(at, "rt_audit").click().run()
    assert not at.exception
    assert any(f"Loaded {N_PROMPTS} pairs as the current dataset" in s.value for s in at.success)
    ds = at.session_state["dataset"]
    expected = result.preference_pairs()
    assert ds.n == len(expected) == N_PROMPTS
    for col in ("id", "prompt", "text_a", "text_b", "preferred"):
        assert ds.pairs[col].astype(str).tolist() == expected[col].astype(str).tolist()

    # the API key was not written anywhere under PRINCIPIA_HOME (caches, run store)
    for p in _home.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


def test_csv_injection_neutralised_in_pairs_export():
    import pandas as pd

    from icai_core.iteralign import IterAlignConfig, IterAlignResult

    ex = pd.DataFrame(
        [
            {
                "iteration": 1,
                "prompt": '=HYPERLINK("http://x")',
                "original": "+1 sure",
                "revised": "@no",
                "flagged_before": True,
                "reason_before": "r",
                "flagged_after": False,
                "reason_after": "ok",
            }
        ]
    )
    result = IterAlignResult(IterAlignConfig(iterations=1), [], [], ex)
    text = R.export_payloads(result)["pairs"].decode()
    assert "'=HYPERLINK" in text and "'+1 sure" in text and "'@no" in text
