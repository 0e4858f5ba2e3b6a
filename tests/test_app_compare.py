"""Compare page: split a dataset by annotator (human majority vs GPT-4 runs on the same pairs), and
compare bundled datasets (AlpacaEval GPT-4 judge vs Chatbot Arena users); heatmap, differences, diff."""

from __future__ import annotations

from icai_core.data import bundled_datasets, load_demo
from tests.support.app_data import audited_app, loaded
from tests.test_app_common import (
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    needs_data,
    wait_for,
)
from ui.compare_ui import split_columns

pytestmark = needs_data
HUMAN_VS_GPT4 = "alpacaeval_human_vs_gpt4_sample"
ARENA = "arena_llama3_70b_human_sample"


def _app_with_audit(name: str):
    return audited_app(loaded(load_demo(name).pairs, name, source="bundled"))


def test_split_columns_offer_metadata_with_2_to_30_values():
    pairs = load_demo(HUMAN_VS_GPT4).pairs
    cols = split_columns(pairs)
    assert cols["annotator"] == 9
    assert "id" not in cols and "text_a" not in cols and "prompt" not in cols
    assert "preferred_text" not in cols and "raw_preference" not in cols
    assert all(2 <= n <= 30 for n in cols.values())


def test_compare_annotators_within_a_dataset():
    at = _app_with_audit(HUMAN_VS_GPT4)
    at.switch_page("pages/compare.py").run()
    assert_ok(at)
    assert at.selectbox(key="cmp_by").value == "annotator"
    assert any(s.value == "Principle strength by annotator" for s in at.subheader)
    heat = at.get("plotly_chart")[0]
    assert heat is not None
    result = at.session_state["cmp_last"]
    assert len(result.groups) == 9 and "human_crowd_majority_of_4" in result.groups
    assert result.strength_matrix.shape[1] == 9
    # the constitution diff between the human majority and one GPT-4 run
    at.selectbox(key="cmp_diff_a").set_value("human_crowd_majority_of_4")
    at.selectbox(key="cmp_diff_b").set_value("gpt4_alpacafarm_gpt4_b1_seed0").run()
    assert_ok(at)
    labels = [m.label for m in at.metric]
    assert labels[:2] == ["Shared", "Flipped"]
    diff = at.dataframe[-1].value
    assert {"key", "status"} <= set(diff.columns)
    if diff.empty:  # 150 pairs per annotator: often nothing is significant at these thresholds
        assert any("Neither group's constitution" in i.value for i in at.info)
    # the label columns are never offered (splitting by the label would be circular)
    assert not any(
        o.startswith(("preferred_text", "raw_preference")) for o in at.selectbox(key="cmp_by").options
    )
    at.selectbox(key="cmp_by").set_value("source").run()
    assert_ok(at)
    assert at.session_state["cmp_last"].by == "source"


def test_compare_two_bundled_datasets():
    assert {HUMAN_VS_GPT4, ARENA} <= set(bundled_datasets())
    demo = load_demo()
    at = audited_app(loaded(demo.pairs, "alpacaeval1_gpt4_judge_sample"))
    at.switch_page("pages/compare.py").run()
    at.radio(key="cmp_mode").set_value("datasets").run()
    assert_ok(at)
    at.multiselect(key="cmp_datasets").set_value(["alpacaeval1_gpt4_judge_sample", ARENA]).run()
    at.button(key="cmp_run").click().run()
    wait_for(at, "cmp_datasets_result")
    at.run()
    assert_ok(at)
    result = at.session_state["cmp_last"]
    assert sorted(result.groups) == sorted(["alpacaeval1_gpt4_judge_sample", ARENA])
    assert any(s.value == "Principle strength by dataset" for s in at.subheader)
    # GPT-4 judge vs Arena users: some principle differs significantly (the judge's length bias)
    sig = result.differences[result.differences["significant"]]
    assert len(sig) >= 1
    assert any(s.value == "Significant differences" for s in at.subheader)
