"""Report page: every download button serves non-empty data with the right MIME type.

AppTest keeps download payloads in an in-memory media store that lives only during a run; the
store class is wrapped here so the test can read back exactly what each button would serve.
"""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest
import streamlit.testing.v1.app_test as app_test_mod
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from tests.test_app_common import (
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    demo_app,
    needs_data,
)

pytestmark = needs_data

EXPECTED = {
    "dl_html": ("text/html", ".html"),
    "dl_md": ("text/markdown", ".md"),
    "dl_json": ("application/json", ".json"),
    "dl_votes": ("text/csv", ".csv"),
    "dl_stats": ("text/csv", ".csv"),
}


class _RecordingStorage(MemoryMediaFileStorage):
    instances: list[MemoryMediaFileStorage] = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _RecordingStorage.instances.append(self)


@pytest.fixture
def media(monkeypatch):
    _RecordingStorage.instances = []
    monkeypatch.setattr(app_test_mod, "MemoryMediaFileStorage", _RecordingStorage)
    return _RecordingStorage.instances


def _served(storages, url: str):
    name = url.rsplit("/", 1)[-1]
    for storage in reversed(storages):
        try:
            return storage.get_file(name)
        except Exception:
            continue
    raise AssertionError(f"no media file for {url}")


def _buttons(at) -> dict:
    return {b.key: b for b in at.get("download_button")}


def test_every_download_serves_the_right_data(media):
    at = demo_app(show_map=False)
    at.switch_page("pages/constitution.py").run()
    at.slider(key="thr_max_size").set_value(3).run()  # exports follow the current thresholds
    at.switch_page("pages/report.py").run()
    assert_ok(at)
    buttons = _buttons(at)
    assert set(EXPECTED) <= set(buttons), buttons.keys()
    audit = at.session_state["audit"]
    files = {}
    for key, (mime, ext) in EXPECTED.items():
        f = _served(media, buttons[key].proto.url)
        assert f.mimetype == mime, (key, f.mimetype)
        assert f.filename.endswith(ext) and f.filename.startswith("alpacaeval1_gpt4_judge_sample")
        assert len(f.content) > 100, key
        files[key] = f.content

    html = files["dl_html"].decode("utf-8")
    assert html.startswith("<!DOCTYPE html>") and "window.PlotlyConfig" in html
    doc = json.loads(files["dl_json"])
    assert len(doc["constitution"]["entries"]) == 3 and doc["selection"]["max_size"] == 3
    first_rule = doc["constitution"]["entries"][0]["text"]
    assert first_rule in html.replace("&#x27;", "'")
    assert re.search(r"<b>3</b>\s*principles in the constitution", html)
    assert files["dl_md"].decode().startswith("# Principia audit")

    votes = pd.read_csv(io.BytesIO(files["dl_votes"]), keep_default_na=False)
    assert len(votes) == len(audit.pairs)
    assert {f"vote_{k}" for k in audit.votes.columns} <= set(votes.columns)
    stats = pd.read_csv(io.BytesIO(files["dl_stats"]))
    assert list(stats["key"]) == list(audit.stats["key"])
    # the CSV's significance is the one summary.json (and the report, the Principles page) shows, labelled
    from icai_core.summary import annotator_entry

    entry = annotator_entry(audit)
    assert set(stats.loc[stats["significant"].astype(bool), "key"]) == {
        p["key"] for p in entry["principles"] if p["marginal"]["significant"]}
    assert stats["inference"].nunique() == 1 and stats["inference"].iloc[0] in (
        "clustered by prompt", "binomial, not clustered")

    # with texts: formula-looking cells are neutralised
    at.checkbox(key="rep_votes_text").check().run()
    assert_ok(at)
    f = _served(media, _buttons(at)["dl_votes"].proto.url)
    with_text = pd.read_csv(io.BytesIO(f.content), keep_default_na=False)
    assert "text_a" in with_text.columns
    for col in ("prompt", "text_a", "text_b"):
        assert not with_text[col].astype(str).str.match(r"^[=+\-@\t\r]").any()


def test_no_export_contains_the_api_key(media):
    at = demo_app(show_map=False)
    at.radio(key="_eng_mode").set_value("LLM (OpenAI-compatible endpoint)").run()
    at.text_input(key="_eng_api_key").input("sk-never-export-me-42").run()
    at.switch_page("pages/report.py").run()
    assert_ok(at)
    for key in EXPECTED:
        content = _served(media, _buttons(at)[key].proto.url).content
        assert b"sk-never-export-me-42" not in content, key
