"""Real-browser test: `streamlit run app.py` driven by Debian chromium (headless) through Playwright.

Upload a shared CSV through the file input, run the offline audit, see the principle chart, visit
every page (a screenshot each under test-artifacts/screenshots/), and download the HTML report.
Browsers cannot be downloaded here: the test uses /usr/bin/chromium (`apt-get install chromium`)
and is skipped with a reason when it is absent. Marker: `browser`.
"""

from __future__ import annotations

import contextlib
import html
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    AppDidNotStart,
    free_port,
    goto_page,
    start_streamlit,
    stop_streamlit,
    wait_idle,
)

SHOTS = REPO / "test-artifacts" / "screenshots"
# PRINCIPIA_DATA_DIR, else the shared data beside the clone (CI layout: ../shared/data), else inside it
_CANDIDATES = [os.environ.get("PRINCIPIA_DATA_DIR", ""), REPO.parent / "shared" / "data", REPO / "shared" / "data"]
DATA = next((Path(p) for p in _CANDIDATES if p and (Path(p) / "alpacaeval_human_vs_gpt4.csv").exists()), None)
UPLOAD = DATA / "alpacaeval_human_vs_gpt4.csv" if DATA else None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(UPLOAD is None, reason="shared real data (alpacaeval_human_vs_gpt4.csv) not found"),
]


@contextlib.contextmanager
def serve_app(home: Path):
    """`streamlit run app.py` on a free 127.0.0.1 port with PRINCIPIA_HOME=home; yields the URL and
    stops the server afterwards (also used by tests/test_browser_map.py, which reads the run store)."""
    port = free_port()
    try:
        proc = start_streamlit(home, port)
    except AppDidNotStart as exc:  # pragma: no cover - diagnostic
        pytest.fail(str(exc))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_streamlit(proc)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with serve_app(tmp_path_factory.mktemp("principia-home")) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        context.on("request", lambda r: _REQUESTS.append(r.url))
        yield pg
        context.close()
        browser.close()


_REQUESTS: list[str] = []  # every URL the browser asked for during this module (issue 11 item 16)
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "file:", "about:")


def _shot(page, name: str) -> Path:
    """Screenshot of the whole page: Streamlit scrolls inside its main section, so the viewport is
    stretched to the content height for the shot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stAppViewContainer], [data-testid=stSidebarContent]'))"
        ".map(e => e.scrollHeight), 1000)"
    )
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 9000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 1000})
    return path


def test_upload_audit_report_in_a_real_browser(page, app_url, tmp_path):
    page.goto(app_url)
    page.get_by_role("heading", name="Principia").first.wait_for()
    wait_idle(page)
    assert page.get_by_text("Which principles does your annotator really reward?").count() == 1
    _shot(page, "01_home")

    # Data: upload a real shared CSV through the browser's file input
    goto_page(page, "Data")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(UPLOAD))
    page.get_by_text(f"Loaded: {UPLOAD.name}").wait_for(timeout=60_000)
    wait_idle(page)
    assert page.get_by_text("principia").count() >= 1  # detected format shown
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    _shot(page, "02_data")

    # Principles: run the offline audit (embedding judges off to keep the test quick)
    goto_page(page, "Principles")
    toggle = page.get_by_role("switch", name="Use sentence embeddings")
    if toggle.is_checked():
        page.locator("label").filter(has=toggle).first.click()
        wait_idle(page)
    assert not toggle.is_checked()
    page.get_by_role("button", name="Run offline audit").click()
    page.get_by_role("heading", name="Principle table").wait_for(timeout=120_000)
    chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    chart.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot .bars, .js-plotly-plot .barlayer").count() >= 1
    page.get_by_text("Principle map").first.wait_for()
    page.locator('[data-testid="stPlotlyChart"]').nth(2).wait_for(timeout=120_000)  # the UMAP map
    wait_idle(page, 120)
    _shot(page, "03_principles")

    # Constitution: the constitution text, used below to check the report
    goto_page(page, "Constitution & reconstruction")
    code = page.locator('[data-testid="stCode"] code').first
    code.wait_for()
    constitution_text = code.inner_text().strip()
    assert constitution_text.startswith("1. Select the response that")
    _shot(page, "04_constitution")

    # Compare: split by annotator (human majority vs 8 GPT-4 runs)
    goto_page(page, "Compare annotators")
    page.get_by_role("heading", name="Principle strength by annotator").wait_for(timeout=60_000)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    wait_idle(page)
    _shot(page, "05_compare")

    # Report: download the HTML report and check it holds the constitution
    goto_page(page, "Report")
    with page.expect_download(timeout=120_000) as dl:
        page.get_by_role("button", name="HTML report").click()
    target = tmp_path / "report.html"
    dl.value.save_as(str(target))
    report = target.read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>") and "window.PlotlyConfig" in report
    first_rule = constitution_text.splitlines()[0].split(". ", 1)[1]  # "1. Select ..." -> an <li> in the report
    assert f"<li>{html.escape(first_rule, quote=True)} " in report
    _shot(page, "06_report")

    # The downloaded report renders with every network request blocked (plotly.js is inline)
    offline = page.context.new_page()
    offline.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    offline.set_viewport_size({"width": 1200, "height": 1000})
    offline.goto(target.as_uri())
    offline.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
    assert offline.locator(".js-plotly-plot").count() >= 3
    offline.screenshot(path=str(SHOTS / "08_html_report.png"), full_page=True)
    offline.close()

    goto_page(page, "Red-team (IterAlign)")
    _shot(page, "07_redteam")

    # Home now summarises the audit of the uploaded data
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Home").first.click()
    page.get_by_text("Most rewarded").wait_for()
    wait_idle(page)
    _shot(page, "09_home_after_audit")


def test_reload_keeps_the_run_and_a_copied_link_opens_it_in_a_fresh_browser(page, app_url):
    """Runs that last: the URL holds the run (?run=<id>); a reload lands on the same dataset and run,
    and the link from Home opens the same view in a fresh browser context (no shared session)."""
    assert "run=" in page.url, page.url
    page.reload()
    page.get_by_role("heading", name="Principia").first.wait_for()
    wait_idle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text(UPLOAD.name).first.wait_for(timeout=30_000)
    sidebar.get_by_text("Run ready").first.wait_for(timeout=30_000)
    page.get_by_text("Most rewarded").wait_for()
    page.get_by_text("Link to the current run").wait_for()
    link = page.locator('[data-testid="stCode"] code').last.inner_text().strip()
    assert "?run=" in link and link.startswith(app_url), link
    _shot(page, "10_home_after_reload")

    fresh = page.context.browser.new_context(viewport={"width": 1280, "height": 1000})
    other = fresh.new_page()
    other.set_default_timeout(60_000)
    other.goto(link)
    other.get_by_role("heading", name="Principia").first.wait_for()
    wait_idle(other)
    other.locator('[data-testid="stSidebar"]').get_by_text(UPLOAD.name).first.wait_for(timeout=30_000)
    other.get_by_text("Most rewarded").wait_for()
    # the same run on another page too: the Constitution page shows the same first rule
    other.locator('[data-testid="stSidebarNav"] a').filter(has_text="Constitution").first.click()
    other.locator('[data-testid="stCode"] code').first.wait_for()
    wait_idle(other)
    assert other.locator('[data-testid="stCode"] code').first.inner_text().startswith("1. Select the response that")
    _shot(other, "11_shared_link_constitution")
    fresh.close()


# --------------------------------------------------------------------------- issue 12 / issue 11 item 16
def _gallery_cards():
    sys.path.insert(0, str(REPO))
    from ui.gallery import cards

    return cards()


def test_every_gallery_dataset_loads_audits_and_downloads_its_report(page, app_url, tmp_path):
    """Home -> gallery card -> "Load & audit" -> the audit finishes -> the Report page's HTML report
    downloads, with the executive summary and the dataset's data card, for every gallery dataset."""
    cards = _gallery_cards()
    assert len(cards) >= 10
    page.goto(app_url)
    page.get_by_role("heading", name="Dataset gallery").first.wait_for()
    wait_idle(page)
    _shot(page, "12_home_gallery")
    for i, card in enumerate(cards):
        page.goto(app_url)
        page.get_by_role("heading", name="Dataset gallery").first.wait_for()
        wait_idle(page)
        page.locator(f".st-key-gallery_{card.name} button").click()
        try:
            page.get_by_text("Most rewarded").wait_for(timeout=300_000)
        except Exception:
            _shot(page, f"fail_gallery_{card.name}")
            raise
        wait_idle(page)
        page.locator('[data-testid="stSidebar"]').get_by_text(card.name).first.wait_for()
        if i == 0:
            _shot(page, "13_home_gallery_audited")
        goto_page(page, "Report")
        with page.expect_download(timeout=120_000) as dl:
            page.get_by_role("button", name="HTML report").click()
        target = tmp_path / f"{card.name}.html"
        dl.value.save_as(str(target))
        report = target.read_text(encoding="utf-8")
        assert "Executive summary" in report and "Data card" in report, card.name
        assert html.escape(card.source, quote=True) in report, card.name
        assert html.escape(card.licence, quote=True) in report, card.name


A4_CSS_PX = 718  # 210 mm page - 2 x 12 mm margins (the report's @page rule), at 96 px per inch


def test_html_report_prints_to_pdf_and_no_table_overflows_the_page(page, tmp_path):
    """The stakeholder report, printed: headless chromium writes a PDF, and in print media at the A4
    printable width no table, figure or text block is wider than the page."""
    sys.path.insert(0, str(REPO))
    from icai_core import data as D
    from icai_core import report as R
    from icai_core.audit import AuditConfig, run_offline_audit

    pairs = D.load_pairs(REPO / "assets" / "alpacaeval_human_vs_gpt4_sample.csv").pairs
    audit = run_offline_audit(pairs, AuditConfig(use_embeddings=False), dataset_name="cross <a href=x>annotators</a>")
    from icai_core.compare import compare_groups

    cmp = compare_groups(audit.all_votes, audit.all_pairs, "annotator", principles=audit.judges)
    view = audit.view("human_crowd_majority_of_4")
    path = tmp_path / "report.html"
    path.write_text(R.html_report(view, settings=view.config.constitution_settings(), compare=cmp,
                                  examples=3), encoding="utf-8")
    pdf = tmp_path / "report.pdf"
    subprocess.run([str(CHROMIUM), "--headless", *CHROMIUM_ARGS, "--no-pdf-header-footer",
                    f"--print-to-pdf={pdf}", path.as_uri()], check=True, capture_output=True, timeout=180)
    head = pdf.read_bytes()
    assert head.startswith(b"%PDF") and head.count(b"/Type /Page") + head.count(b"/Type/Page") >= 3
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS.parent / "report.pdf").write_bytes(head)

    pr = page.context.new_page()
    pr.set_viewport_size({"width": A4_CSS_PX, "height": 1100})
    pr.emulate_media(media="print")
    pr.goto(path.as_uri())
    pr.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
    found = pr.evaluate(
        """() => {
          const W = document.documentElement.clientWidth, bad = [];
          for (const el of document.querySelectorAll('table, .fig, pre, h1, h2, p, ul, ol')) {
            const r = el.getBoundingClientRect();
            if (r.right > W + 1 || el.scrollWidth > el.clientWidth + 1) bad.push(el.tagName + ' ' + Math.round(r.right));
          }
          return {W, doc: document.documentElement.scrollWidth, tables: document.querySelectorAll('table').length,
                  links: document.querySelectorAll('a[href]').length, bad};
        }"""
    )
    assert found["tables"] >= 6 and found["W"] == A4_CSS_PX
    assert found["doc"] <= A4_CSS_PX and not found["bad"], found
    assert found["links"] == 0  # group / dataset names with <a href> stay text, also in the heatmap
    pr.emulate_media(media="screen")
    pr.set_viewport_size({"width": 1280, "height": 1000})
    pr.screenshot(path=str(SHOTS / "14_html_report_stakeholder.png"), full_page=True)
    pr.close()


def test_the_browser_made_no_request_outside_this_machine():
    """Issue 11 item 16: every asset (fonts, icons, favicon, plotly.js) is served by the app itself."""
    assert _REQUESTS, "no request recorded: the browser tests above did not run"
    outside = sorted({u for u in _REQUESTS if not u.startswith(LOCAL)})
    assert not outside, outside
