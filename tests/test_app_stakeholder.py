"""Issue 12 in the app (AppTest): the Reset button restores the sliders and the exports state exactly
the thresholds in force; one sign convention (the rewarded wording, strength >= 0) on Home, the
Principles and Constitution pages and in the reports; the column mapping pre-fills every confident
guess and uses error styling only for errors; the Data page's chosen-vs-rejected view; user text
stays inert Markdown (issue 11 item 3)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from icai_core import figures as F
from icai_core import report as R
from tests.test_app_common import (
    DATA,
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    demo_app,
    needs_data,
    new_app,
)
from ui import intake as I
from ui import safe as S

pytestmark = needs_data


@pytest.fixture(scope="module")
def demo():
    at = demo_app()
    assert_ok(at)
    return at


def _slider_values(at) -> dict:
    return {
        "min_relevance": at.slider(key="thr_min_relevance").value,
        "min_abs_strength": at.slider(key="thr_min_abs_strength").value,
        "alpha": at.select_slider(key="thr_alpha").value,
        "max_size": at.slider(key="thr_max_size").value,
        "require_significant": at.checkbox(key="thr_require_significant").value,
    }


def test_reset_restores_the_sliders_and_the_export_states_them(demo):
    at = demo
    at.switch_page("pages/constitution.py").run()
    assert_ok(at)
    audit = at.session_state["audit"]
    defaults = dict(audit.config.constitution_settings())
    assert _slider_values(at) == {k: defaults[k] for k in _slider_values(at)}
    assert at.button(key="thr_reset").disabled  # shown, but nothing to reset
    # move three thresholds away from the defaults
    at.slider(key="thr_min_relevance").set_value(0.2).run()
    at.slider(key="thr_max_size").set_value(3).run()
    at.select_slider(key="thr_alpha").set_value(0.2).run()
    assert_ok(at)
    moved = _slider_values(at)
    assert moved["min_relevance"] == 0.2 and moved["max_size"] == 3 and moved["alpha"] == 0.2
    assert at.session_state["selection"]["max_size"] == 3
    assert not at.button(key="thr_reset").disabled
    at.button(key="thr_reset").click().run()
    assert_ok(at)
    # the sliders show the defaults, the selection in force is the defaults, the button stays
    assert _slider_values(at) == {k: defaults[k] for k in moved}
    assert at.session_state["selection"] == {k: defaults[k] for k in moved}
    assert at.button(key="thr_reset").disabled
    # the next touch of one slider keeps the others at their (reset) values, not the stale ones
    at.slider(key="thr_min_abs_strength").set_value(0.05).run()
    after = _slider_values(at)
    assert after["min_relevance"] == defaults["min_relevance"] and after["max_size"] == defaults["max_size"]
    assert after["alpha"] == defaults["alpha"] and after["min_abs_strength"] == 0.05
    # the Markdown export on the Report page states exactly the thresholds shown
    at.switch_page("pages/report.py").run()
    assert_ok(at)
    md = [c.value for c in at.code if "Principia audit" in str(c.value)][0]
    assert "min\\_abs\\_strength = 0.05" in md
    assert f"min\\_relevance = {defaults['min_relevance']}" in md
    assert f"max\\_size = {defaults['max_size']}" in md
    at.switch_page("pages/constitution.py").run()
    at.button(key="thr_reset").click().run()


def _rewarded_pairs(audit) -> dict[str, tuple[str, float]]:
    """Independent expectation: key -> (wording the annotator rewards, |strength|)."""
    inv = {j.key: j.inverse_text for j in audit.judges}
    out = {}
    for _, r in audit.stats.iterrows():
        if pd.isna(r["strength"]):
            continue
        out[r["key"]] = (r["text"] if r["strength"] >= 0 else inv[r["key"]], abs(float(r["strength"])))
    return out


@pytest.mark.slow
def test_one_sign_convention_on_every_page(demo):
    at = demo
    audit = at.session_state["audit"]
    expected = _rewarded_pairs(audit)
    negative = [k for k, v in audit.stats.set_index("key")["strength"].items() if v < 0]
    assert negative, "the demo needs a penalised library principle for this test"
    # Home: no "penalised" list, only rewarded wordings with a + sign
    home = new_app()
    home.button(key="demo_button").click().run()
    from tests.test_app_common import wait_for

    home = wait_for(home, "audit")
    md = " ".join(m.value for m in home.markdown)
    assert "penalised" not in md.lower()
    lines = [m.value for m in home.markdown if m.value.startswith("- ") and "strength" in m.value]
    assert lines
    for line in lines:
        assert re.search(r"strength \+\d\.\d{3}", line), line
    # The tables on Principles and Constitution: wording = rewarded wording, strength = |strength|
    view = __import__("ui.widgets", fromlist=["stats_view"]).stats_view(audit.stats, (), audit.principles)
    for _, r in view.iterrows():
        if pd.isna(r["strength"]):
            continue
        text, s = expected[r["key"]]
        assert r["rewarded principle"] == text and r["strength"] == pytest.approx(s)
        assert r["strength"] >= 0
        lo, hi = (float(x) for x in r["strength 95% CI"].strip("[]").split(","))
        assert lo <= r["strength"] + 1e-3 and hi >= r["strength"] - 1e-3
    for page in ("pages/principles.py", "pages/constitution.py"):
        at.switch_page(page).run()
        assert_ok(at)
        frames = [d.value for d in at.dataframe if "rewarded principle" in d.value.columns]
        assert frames, page
        for df in frames:
            for _, r in df.iterrows():
                if r.get("key") in expected and not pd.isna(r["strength"]):
                    assert r["rewarded principle"] == expected[r["key"]][0], (page, r["key"])
                    assert r["strength"] == pytest.approx(expected[r["key"]][1], abs=0.06), (page, r["key"])
    # the constitution itself uses the same wording (inverse text for a penalised principle)
    for e in audit.constitution.entries:
        assert e.strength > 0
        assert e.text == (audit.judge(e.key).inverse_text if e.inverted else audit.judge(e.key).text)
    # strength chart: every bar >= 0, labels are the rewarded wordings
    fig = F.strength_bar(audit.stats, principles=audit.principles)
    assert (np.asarray(fig.data[0].x, dtype=float) >= 0).all()
    k = negative[0]
    assert F.short_wording(expected[k][0])[:20] in " ".join(fig.data[0].y).replace("<br>", " ")
    # Markdown summary: no negative strength printed beside a wording
    md = R.markdown_summary(audit)
    for row in md.splitlines():
        if row.startswith("| ") and "[" in row:
            assert not re.search(r"\| -\d", row), row


def test_rewarded_view_by_hand():
    stats = pd.DataFrame({
        "key": ["x", "y"], "text": ["Select the response that is longer.", "Select the response that is polite."],
        "strength": [-0.2, 0.1], "strength_ci_low": [-0.3, 0.05], "strength_ci_high": [-0.1, 0.15],
        "accuracy": [0.3, 0.6], "relevance": [0.5, 0.4],
    })
    judges = [type("J", (), {"key": "x", "inverse_text": "Select the response that is shorter."})()]
    v = F.rewarded_view(stats, judges)
    assert v["key"].tolist() == ["x", "y"]
    assert v["wording"].tolist() == ["Select the response that is shorter.", "Select the response that is polite."]
    assert v["reward"].tolist() == pytest.approx([0.2, 0.1])
    assert v["reward_ci_low"].tolist() == pytest.approx([0.1, 0.05])
    assert v["reward_ci_high"].tolist() == pytest.approx([0.3, 0.15])
    assert v["reward_accuracy"].tolist() == pytest.approx([0.7, 0.6])
    assert F.short_wording("Select the response that is shorter.") == "is shorter"


# --------------------------------------------------------------------------- column mapping
def _without_preference() -> bytes:
    df = pd.read_csv(DATA / "prd_lfqa_expert.csv", keep_default_na=False, dtype=str)
    df = df.rename(columns={"preferred_text": "verdict"})
    return df.to_csv(index=False).encode()


def test_mapping_prefills_every_exactly_named_column():
    data = _without_preference()
    out = I.handle_upload("lfqa_no_pref.csv", data)
    assert out.needs_mapping and not out.ok
    guess = I.prefill(out)
    # every column the file names exactly is pre-selected
    for fld in ("id", "pair_id", "prompt", "text_a", "text_b", "model_a", "model_b", "annotator", "language",
                "category"):
        assert guess.get(fld) == fld, (fld, guess)
    assert guess.get("preferred") == "verdict"  # the only column left that can hold a/b labels
    assert "ColumnMapping" not in (out.error or "") and "fmt=" not in (out.error or "")


def test_mapping_form_is_not_styled_as_an_error_and_loads():
    data = _without_preference()
    at = new_app()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="upload_file").upload("lfqa_no_pref.csv", data, "text/csv").run()
    assert_ok(at)
    assert not at.error, [e.value for e in at.error]
    assert any("Say which column holds what" in m.value for m in at.markdown)
    assert at.selectbox(key="map_text_a").value == "text_a"
    assert at.selectbox(key="map_prompt").value == "prompt"
    at.selectbox(key="map_preferred").set_value("verdict")
    at.text_input(key="map_values").input("text_a=a, text_b=b, tie=tie")
    at.button(key="FormSubmitter:mapping_form-Load with this mapping").click().run()
    assert_ok(at)
    assert not at.error, [e.value for e in at.error]
    ds = at.session_state["dataset"]
    assert ds.n == 260 and set(ds.pairs["preferred"]) <= {"a", "b", "tie"}


# --------------------------------------------------------------------------- data page
def test_chosen_vs_rejected_and_prefer_longer_by_hand():
    pairs = pd.DataFrame({
        "prompt": ["p1", "p2", "p3", "p1", "p4"],
        "text_a": ["a b c", "a", "x y", "a b c", "same len"],
        "text_b": ["a", "a b", "z", "a", "two w"],
        "preferred": ["a", "b", "b", "a", "a"],
        "annotator": ["h", "h", "h", "h", "g"],
    })
    # row 3 repeats row 0 for annotator h: counted once
    t = F.length_preference(pairs).set_index("annotator")
    assert t.loc["h", "judgements"] == 3 and t.loc["h", "n_unequal"] == 3
    assert t.loc["h", "n_longer_chosen"] == 2 and t.loc["h", "p_prefer_longer"] == pytest.approx(2 / 3)
    assert t.loc["g", "n_unequal"] == 0 and np.isnan(t.loc["g", "p_prefer_longer"])
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(2, 3, method="wilson")
    assert t.loc["h", "ci_low"] == pytest.approx(lo) and t.loc["h", "ci_high"] == pytest.approx(hi)
    cw = F.chosen_rejected_words(pairs[pairs["annotator"] == "h"])
    assert cw["chosen"].tolist() == [3, 2, 1] and cw["rejected"].tolist() == [1, 1, 2]


def test_data_page_shows_chosen_vs_rejected(demo):
    at = demo
    at.switch_page("pages/data.py").run()
    assert_ok(at)
    titles = " ".join(str(c.proto.spec) for c in at.get("plotly_chart"))
    assert "Chosen vs rejected" in titles
    assert any(m.label == "P(prefer longer)" for m in at.metric)
    assert not any("load data on the Data page" in i.value for i in at.info)


# --------------------------------------------------------------------------- markdown choke point
@pytest.mark.parametrize("evil", ["![x](http://127.0.0.2/p.png)", ":red[alert] :material/home:", "[a](http://x)",
                                  "<img src=x onerror=alert(1)>", "# head\n- list", "`code` *b* _i_ ~s~ $x$"])
def test_markdown_choke_point_is_inert(evil):
    import markdown_it

    html = markdown_it.MarkdownIt("commonmark").render(S.md(evil))
    assert "<img" not in html and "<a " not in html and "<h1" not in html and "<li" not in html
    assert "<code" not in html and "<em" not in html and "<strong" not in html
    text = re.sub(r"<[^>]+>", "", html).strip()
    import html as H

    assert H.unescape(text) == " ".join(evil.replace("\n", " ").split(" ")).strip() or \
        H.unescape(text) == evil.replace("\n", " ")
    assert "(" not in S.md(evil).replace("\\(", "")
    assert ":" not in S.md(evil).replace("\\:", "")


# --------------------------------------------------------------------------- gallery
REDISTRIBUTABLE = {"CC BY-NC 4.0", "Apache-2.0", "MIT"}


def test_gallery_cards_match_their_files_and_licences():
    from icai_core.data import load_pairs
    from icai_core.reconstruct import content_groups
    from ui import gallery as G

    cards = G.cards()
    assert len(cards) >= 10
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    sources = {c.name: c for c in cards}
    assert "prd_lfqa_expert" not in " ".join(sources)  # its README asks to check terms first
    for card in cards:
        assert card.path.stat().st_size < 2_000_000, card.file  # a few MB at most
        pairs = load_pairs(card.path).pairs
        assert len(pairs) == card.rows, card.name
        assert int(pd.Series(content_groups(pairs)).nunique()) == card.pairs, card.name
        assert pairs["annotator"].nunique() == card.n_annotators, card.name
        lic = card.licence.split(" (")[0]
        assert lic in REDISTRIBUTABLE, card.licence
        # the licence is the one the shared README gives for the source file of this sample
        src = card.file.replace("_sample", "")
        row = [ln for ln in readme.splitlines() if ln.startswith(f"| `{src}`")]
        assert row and lic in row[0], (card.name, row)


def test_gallery_click_loads_audits_and_the_report_has_its_data_card():
    at = new_app()
    at.button(key="gallery_icai_synthetic_mixed").click().run()
    assert_ok(at)
    from tests.test_app_common import wait_for

    at = wait_for(at, "audit")
    ds = at.session_state["dataset"]
    assert ds.name == "icai_synthetic_mixed" and ds.n == 60
    audit = at.session_state["audit"]
    assert audit.dataset_hash == ds.hash and audit.config.use_embeddings is False
    card = at.session_state["data_cards"][ds.hash]
    html = R.html_report(audit, data_card=card)
    assert "rdnfn/icai@cb88e65" in html and "Apache-2.0" in html and "Executive summary" in html


def test_hostile_names_reach_the_data_page_only_escaped():
    from icai_core.data import load_pairs
    from tests.support.app_data import loaded

    evil = "![x](http://127.0.0.2/p.png) :red[alert] [link](http://127.0.0.2/)"
    pairs = load_pairs(DATA / "icai_synthetic_mixed.csv").pairs.copy()
    pairs["annotator"] = [evil if i % 2 else "rater <b>2</b>" for i in range(len(pairs))]
    ds = loaded(pairs, evil + ".csv")
    at = new_app(dataset=ds)
    at.switch_page("pages/data.py").run()
    assert_ok(at)
    m = at.main  # the page itself (the sidebar badge is ui.common's)
    shown = [e.value for e in [*m.markdown, *m.caption, *m.subheader, *m.info, *m.warning, *m.error]]
    assert any(S.md(evil) in v for v in shown)  # the name is there, escaped
    for v in shown:
        assert "](http" not in v and ":red[" not in v and "<b>" not in v, v
