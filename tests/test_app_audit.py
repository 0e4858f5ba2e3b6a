"""Principles and Constitution pages: background audit with progress and cancel, the principle map,
threshold sliders that rebuild the constitution live, and the example browser."""

from __future__ import annotations

import time

import pytest

from icai_core.audit import AuditConfig
from tests.support.app_data import loaded_file
from tests.test_app_common import (
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    demo_app,
    needs_data,
    new_app,
    wait_for,
)

pytestmark = needs_data


def test_principles_page_runs_the_audit_in_the_background():
    at = new_app(dataset=loaded_file("prd_lfqa_expert.csv"), use_embeddings=False)
    at.switch_page("pages/principles.py").run()
    assert_ok(at)
    assert "Run offline audit" in at.info[0].value
    at.button(key="run_audit").click().run()
    assert_ok(at)
    wait_for(at, "audit")
    at.run()
    assert_ok(at)
    audit = at.session_state["audit"]
    assert audit.config.use_embeddings is False and len(audit.pairs) == 260
    assert any(s.value == "Principle table" for s in at.subheader)
    assert {m.label for m in at.metric} >= {"Distinct pairs", "Principles tested", "Significant"}
    # strength chart, relevance/accuracy chart and the UMAP principle map
    assert len(at.get("plotly_chart")) == 3
    assert at.selectbox(key="cl_choice").value != -1  # a real cluster is inspected first
    # the audit is recorded in the run store and listed on Home
    at.switch_page("pages/data.py").run()
    home = new_app()
    frames = [d.value for d in home.dataframe]
    assert frames and "offline_audit" in set(frames[0]["kind"])
    assert home.selectbox(key="run_pick").value is not None
    assert audit.constitution.text() in [c.value for c in home.code]  # the run's saved constitution


def test_cancel_stops_a_running_audit():
    at = new_app(dataset=loaded_file("hh_rlhf_harmless_test.csv"), use_embeddings=True)
    at.switch_page("pages/principles.py").run()
    at.button(key="run_audit").click().run()
    job = at.session_state["audit_job"]
    assert job.running
    at.button(key="cancel_audit_job").click().run()
    assert job.wait(60) and job.status == "cancelled"
    at.run()
    assert_ok(at)
    assert any("cancelled" in w.value for w in at.warning)
    assert "audit" not in at.session_state


@pytest.fixture(scope="module")
def demo():
    return demo_app(show_map=False)


def test_threshold_sliders_rebuild_the_constitution(demo):
    at = demo
    at.switch_page("pages/constitution.py").run()
    assert_ok(at)
    audit = at.session_state["audit"]
    default_text = at.code[0].value
    assert default_text == audit.constitution.text() and len(audit.constitution) >= 3

    at.slider(key="thr_max_size").set_value(2).run()
    assert_ok(at)
    two = at.code[0].value
    assert len(two.splitlines()) == 2 and two.splitlines() == default_text.splitlines()[:2]
    assert any(s.value == "Constitution (2 principles)" for s in at.subheader)

    at.slider(key="thr_max_size").set_value(10).run()
    at.slider(key="thr_min_abs_strength").set_value(0.95).run()
    assert_ok(at)
    assert any("No principle passes these thresholds" in w.value for w in at.warning)
    assert any(s.value == "Constitution (0 principles)" for s in at.subheader)

    at.slider(key="thr_min_abs_strength").set_value(0.0).run()
    at.checkbox(key="thr_require_significant").uncheck().run()
    at.slider(key="thr_min_relevance").set_value(0.0).run()
    assert_ok(at)
    loose = at.code[0].value
    assert len(loose.splitlines()) == 10
    assert at.session_state["selection"]["require_significant"] is False

    at.button(key="thr_reset").click().run()
    assert_ok(at)
    assert at.code[0].value == default_text


def test_reconstruction_and_example_browser(demo):
    at = demo
    at.switch_page("pages/constitution.py").run()
    recon_rows = at.dataframe[1].value
    assert {"constitution: logistic regression", "majority class"} <= set(recon_rows["method"])
    assert recon_rows["agreement"].between(0, 1).all()
    # example browser: pick a pair the constitution gets wrong; texts are plain st.text
    at.radio(key="ex_filter").set_value("wrong").run()
    assert_ok(at)
    at.number_input(key="ex_pos").set_value(2).run()
    assert_ok(at)
    assert any("constitution predicts" in m.value and "(wrong)" in m.value for m in at.markdown)
    assert len(at.text) >= 3  # prompt, response A, response B
    votes = at.dataframe[-1].value
    assert list(votes.columns) == ["principle", "key", "vote", "vs annotator", "in constitution"]
    assert set(votes["vote"]) <= {"A", "B"}
    at.toggle(key="ex_only_rel").set_value(False).run()
    assert set(at.dataframe[-1].value["vote"]) <= {"A", "B", "—"}
    assert len(at.dataframe[-1].value) == len(at.session_state["audit"].stats)


def test_rebuild_is_cached_and_fast(demo):
    from ui.common import rebuild_cached

    audit = demo.session_state["audit"]
    args = (audit.dataset_hash, "k", audit.annotator, 0.05, 0.01, 0.05, 5, True)
    t0 = time.perf_counter()
    first = rebuild_cached(*args, _audit=audit)
    t1 = time.perf_counter()
    second = rebuild_cached(*args, _audit=audit)
    t2 = time.perf_counter()
    assert first[0].keys == second[0].keys
    assert t2 - t1 < 0.2 and t1 - t0 < 5


def test_constitution_page_without_audit_points_to_principles():
    at = new_app(dataset=loaded_file("icai_synthetic_mixed.csv"))
    at.switch_page("pages/constitution.py").run()
    assert_ok(at)
    assert "run the offline audit" in at.info[0].value
    assert AuditConfig().test_size == 0.3
