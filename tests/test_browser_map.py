"""Real-browser test of the principle map (issue 10 "Must show"): an uploaded file's map shows labelled points.

Upload a real shared file through the Data page's file input (not a gallery sample), switch on
offline discovery on Principles, run the audit, and check the principle map's SVG:

* every point carries a text label (plotly `.textpoint text`), and the labels are the principle
  names of THIS run: the judges of the run saved in the run store (read independently from the
  store, not from the page; st.dataframe draws its cells on a canvas), among them the discovered
  directions of the run's discovery table (shown under "Discovered directions");
* the hover keeps the sign: every point's hover text states the strength of the wording shown with
  its sign, equal to the run's own statistics, and hovering a penalised principle with the mouse shows
  a negative strength and "prefer the opposite";
* a screenshot of the map at 1280 px (test-artifacts/screenshots/20_principle_map*.png).

Uses the server and browser helpers of tests/test_browser.py. Marker: `browser` (slow).
"""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, REPO, goto_page, wait_idle
from tests.test_browser import (
    DATA,
    LOCAL,
    SHOTS,
    _shot,
    serve_app,
)

UPLOAD = DATA / "icai_synthetic_mixed.csv" if DATA else None  # 60 pairs (shared ICAI synthetic set): discovery in seconds

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (apt-get install chromium)"),
    pytest.mark.skipif(UPLOAD is None or not UPLOAD.exists(), reason="shared data (icai_synthetic_mixed.csv) not found"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home = tmp_path_factory.mktemp("principia-home-map")
    with serve_app(home) as url:
        yield url, home


@pytest.fixture(scope="module")
def page(app):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.on("request", lambda r: _REQUESTS.append(r.url))
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


def _saved_run(home: Path, run_id: str):
    """The run as the store saved it (independent of what the page rendered)."""
    sys.path.insert(0, str(REPO))
    from icai_core.result import load_result
    from icai_core.workspace import Workspace

    with Workspace(home) as ws:
        return load_result(ws.store, run_id)


_MAP = ".st-key-principle_map .js-plotly-plot"
_REQUESTS: list[str] = []


def test_uploaded_file_principle_map_has_labelled_points_with_signed_hover(page, app):
    url, home = app
    page.goto(url)
    page.get_by_role("heading", name="Principia").first.wait_for()
    wait_idle(page)

    goto_page(page, "Data")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(UPLOAD))
    page.get_by_text(f"Loaded: {UPLOAD.name}").wait_for(timeout=60_000)
    wait_idle(page)

    goto_page(page, "Principles")
    emb = page.get_by_role("switch", name="Use sentence embeddings")
    if emb.is_checked():
        page.locator("label").filter(has=emb).first.click()
        wait_idle(page)
    disc = page.get_by_role("switch", name="Discover directions in the data")
    if not disc.is_checked():
        page.locator("label").filter(has=disc).first.click()
        wait_idle(page)
    assert disc.is_checked() and not emb.is_checked()
    t0 = time.time()
    page.get_by_role("button", name="Run offline audit").click()
    try:
        page.get_by_role("heading", name="Principle table").wait_for(timeout=600_000)
    except Exception:
        _shot(page, "fail_map_audit")
        raise
    audit_s = time.time() - t0
    page.get_by_text("discovery on").first.wait_for()
    page.get_by_role("heading", name="Discovered directions").wait_for()
    page.locator(_MAP + " .textpoint text").first.wait_for(timeout=300_000)
    wait_idle(page, 120)

    run_id = re.search(r"[?&]run=([^&]+)", page.url).group(1)
    run = _saved_run(home, run_id)
    assert run.dataset_name == UPLOAD.name and run.config.discover
    from icai_core.principle_map import short_label

    expected = {j.key: short_label(j.text) for j in run.judges}
    discovered = {j.key: short_label(j.text) for j in run.judges if j.kind == "discovered"}
    assert discovered, "discovery kept no direction on this file: the check below needs one"

    # 1. every point is labelled, and the labels are exactly this run's principles
    labels = page.locator(_MAP + " .textpoint text").all_text_contents()
    n_points = page.locator(_MAP + " .scatterlayer .point").count()
    assert n_points == len(run.judges) and len(labels) == n_points, (n_points, len(labels), len(run.judges))
    assert sorted(labels) == sorted(expected.values())
    assert set(discovered.values()) <= set(labels)
    # ... and the discovered directions are the ones the page's discovery table lists
    kept = run.extras["discovery"]
    assert set(kept.loc[kept["kept"].astype(bool), "key"]) == set(discovered)
    # (st.dataframe draws its cells on a canvas, so the table's text is read from the stored run above)
    assert page.get_by_role("heading", name="Discovered directions").locator(
        "xpath=following::*[@data-testid='stDataFrame'][1]").count() == 1

    # 2. the hover keeps the sign: figure data as the browser holds it vs the run's own stats
    strength = dict(zip(run.stats["key"], run.stats["strength"].astype(float), strict=True))
    points = page.evaluate(
        f"""() => document.querySelector('{_MAP}')._fullData.flatMap(t => t.customdata.map((c, i) => (
              {{trace: t.name, key: c[0], hover: t.hovertext[i], x: t.x[i], y: t.y[i]}})))"""
    )
    assert {p["key"] for p in points} == set(expected)
    assert "discovered" in {p["trace"] for p in points}
    for p in points:
        s = strength[p["key"]]
        if not math.isfinite(s):
            assert "strength not measured" in p["hover"], p
            continue
        want = "strength 0.000" if s == 0 else f"strength {s:+.3f}"  # zero: no preference, no sign
        assert want in p["hover"], (p["key"], s, p["hover"])
        if s < 0:
            assert "prefer the opposite" in p["hover"], p
    negative = [p for p in points if strength[p["key"]] < -0.005]  # NaN compares False
    assert negative, "no penalised principle on this file"
    # the mouse hovers the penalised point farthest from any other point (plotly shows the nearest one)
    sx = (max(p["x"] for p in points) - min(p["x"] for p in points)) or 1.0
    sy = (max(p["y"] for p in points) - min(p["y"] for p in points)) or 1.0

    def isolation(q) -> float:
        return min(math.hypot((q["x"] - o["x"]) / sx, (q["y"] - o["y"]) / sy) for o in points if o is not q)

    target = max(negative, key=isolation)
    # a real mouse hover over that point: the tooltip shows the minus sign
    page.locator(_MAP).scroll_into_view_if_needed()
    xy = page.evaluate(
        f"""([x, y]) => {{ const el = document.querySelector('{_MAP}'), L = el._fullLayout,
              r = el.querySelector('.nsewdrag').getBoundingClientRect();
              return [r.left + L.xaxis.d2p(x), r.top + L.yaxis.d2p(y)]; }}""",
        [target["x"], target["y"]],
    )
    page.mouse.move(xy[0] - 30, xy[1] - 30)
    page.mouse.move(xy[0], xy[1], steps=5)
    hover = page.locator(_MAP + " .hoverlayer .hovertext").first
    hover.wait_for(timeout=10_000)
    shown = hover.text_content()  # an SVG node: its tspans concatenated
    assert target["key"] in shown and f"strength {strength[target['key']]:+.3f}" in shown, shown
    assert f"{strength[target['key']]:+.3f}".startswith("-")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".st-key-principle_map").screenshot(path=str(SHOTS / "20_principle_map_hover.png"))
    page.mouse.move(5, 5)
    page.wait_for_timeout(500)
    page.locator(".st-key-principle_map").screenshot(path=str(SHOTS / "20_principle_map.png"))
    _shot(page, "21_principles_discovery")
    # Home -> Engine -> Local model: the bundled GGUF is named and nothing is started at page load
    from icai_core.local_engine import bundled_gguf

    gguf = bundled_gguf()
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Home").first.click()
    page.get_by_role("heading", name="Engine").first.wait_for()
    wait_idle(page)
    page.get_by_text("Local model (GGUF, llama.cpp on this machine, no key)").click()
    wait_idle(page)
    if gguf is not None:
        page.get_by_text("will be served by llama.cpp on 127.0.0.1 when an ICAI run starts").wait_for()
        assert page.get_by_text(gguf.name).count() >= 1
    page.get_by_role("spinbutton", name="Threads").wait_for()
    assert page.get_by_role("spinbutton", name="Threads").input_value() == "1"
    _shot(page, "22_home_local_engine")
    goto_page(page, "Principles")
    page.get_by_text("ICAI with the local model").first.wait_for()
    wait_idle(page)
    _shot(page, "23_principles_local_engine")
    outside = sorted({u for u in _REQUESTS if not u.startswith(LOCAL)})
    assert _REQUESTS and not outside, outside  # the map page too fetches nothing from outside this machine
    print(f"\n[browser map] {UPLOAD.name}: audit with discovery {audit_s:.0f} s in the browser; "
          f"{n_points} labelled points ({len(discovered)} discovered), "
          f"{len(negative)} penalised; hover over {target['key']} shows {strength[target['key']]:+.3f}")
