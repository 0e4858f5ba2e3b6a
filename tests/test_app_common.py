"""AppTest helpers shared by the app tests, plus the checks every page must pass with no data loaded.

Every app test runs the real `app.py` router (st.navigation) with `streamlit.testing.v1.AppTest`,
with PRINCIPIA_HOME pointed at a temporary directory so vote caches and the run store stay out of
the user's home.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGES = [
    "pages/data.py",
    "pages/principles.py",
    "pages/constitution.py",
    "pages/compare.py",
    "pages/report.py",
    "pages/redteam.py",
]
# PRINCIPIA_DATA_DIR, else the shared data beside the clone (CI layout: ../shared/data), else inside it
_CANDIDATES = [os.environ.get("PRINCIPIA_DATA_DIR", ""), REPO.parent / "shared" / "data", REPO / "shared" / "data"]
DATA = next((Path(p) for p in _CANDIDATES if p and (Path(p) / "prd_lfqa_expert.csv").exists()), None)
needs_data = pytest.mark.skipif(DATA is None, reason="shared real data (shared/data) not found")


@pytest.fixture(scope="module", autouse=True)
def _principia_home(tmp_path_factory):
    """PRINCIPIA_HOME -> a fresh temporary directory for the whole module (module scope, so it is set
    before any module-scoped app fixture starts an audit); restored afterwards."""
    home = tmp_path_factory.mktemp("principia-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRINCIPIA_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield home


def new_app(**session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in session.items():
        at.session_state[k] = v
    return at.run()


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def wait_for(at: AppTest, key: str, timeout: float = 90.0) -> AppTest:
    """Rerun (as the page's polling fragment would) until `key` is in session state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if key in at.session_state and at.session_state[key] is not None:
            return at
        time.sleep(0.3)
        at.run()
    raise AssertionError(f"{key!r} not in session state after {timeout} s")


def demo_app(**session) -> AppTest:
    """Home -> Demo: the bundled real sample is loaded and its audit finished."""
    at = new_app(**session)
    at.button(key="demo_button").click().run()
    assert_ok(at)
    return wait_for(at, "audit")


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


# --------------------------------------------------------------------------- tests
def test_home_renders_with_engine_and_runs():
    at = new_app()
    assert_ok(at)
    assert at.title[0].value == "Principia"
    assert any("Try it on real data" in s.value for s in at.subheader)
    assert at.button(key="demo_button").label == "Demo"
    assert at.radio(key="_eng_mode").value.startswith("Offline")


@pytest.mark.parametrize("page", PAGES[:-1])
def test_pages_without_data_say_how_to_load(page):
    at = new_app()
    at.switch_page(page).run()
    assert_ok(at)
    msgs = " ".join(texts(at.info))
    if page == "pages/data.py":  # the Data page itself does not send the user to the Data page
        assert "upload a file above" in msgs and "Data** page" not in msgs, msgs
    else:
        assert "load data on the **Data** page or click **Demo**" in msgs, msgs


def test_redteam_page_is_registered_and_points_to_the_engine_on_home():
    at = new_app()
    at.switch_page("pages/redteam.py").run()
    assert_ok(at)
    assert at.title[0].value.startswith("Red-team")
    assert any("on the **Home** page" in w.value for w in at.warning)


def test_engine_key_stays_in_session_only():
    at = new_app()
    at.radio(key="_eng_mode").set_value("LLM (OpenAI-compatible endpoint)").run()
    assert_ok(at)
    at.text_input(key="_eng_base_url").set_value("http://127.0.0.1:9/v1").run()
    at.text_input(key="_eng_api_key").input("sk-test-secret-123456").run()
    eng = at.session_state["engine"]
    assert eng.mode == "llm" and eng.api_key == "sk-test-secret-123456"
    assert "sk-test" not in repr(eng) and eng.public()["api_key_set"] is True
    # the key survives a page switch (held in the session, not only in the widget)
    at.switch_page("pages/data.py").run()
    assert at.session_state["engine"].api_key == "sk-test-secret-123456"
    home = at.session_state["engine"].public()
    assert home == {
        "mode": "llm",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "gpt-4o-mini",
        "api_key_set": True,
    }
    # nothing written under PRINCIPIA_HOME contains the key
    home = Path(os.environ["PRINCIPIA_HOME"])
    for f in home.rglob("*"):
        if f.is_file():
            assert b"sk-test-secret-123456" not in f.read_bytes(), f


@needs_data
def test_demo_loads_data_and_runs_the_audit():
    at = demo_app()
    assert_ok(at)
    ds = at.session_state["dataset"]
    assert ds.source == "demo" and ds.n > 100
    audit = at.session_state["audit"]
    assert audit.dataset_hash == ds.hash and len(audit.stats) >= 20
    labels = [m.label for m in at.metric]
    assert "Held-out agreement" in labels and "Constitution size" in labels
    assert any("ready" in s.value for s in at.success)
