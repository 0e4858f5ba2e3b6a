"""Real-browser test at scale (issue 13): a large upload keeps the app responsive and Cancel works.

Upload a file of distinct pairs built from real shared texts (`bench.synth`), start the offline audit
on the Principles page, see its progress bar with a time-left estimate, press Cancel and assert that
the "cancelled" state is on screen within 2 s (timestamps taken in the test), then open another page.
The size (24k pairs, past the Data page's 20k synchronous limit, so its background statistics path is
exercised) keeps the test well under 3 minutes on 2 loaded cores; the 100k figures are measured by
hand (engineer F's report). Serving and driving the app reuse `tests/test_browser.py`'s fixtures.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, REPO, goto_page, wait_idle
from tests.test_browser import UPLOAD, _shot, app_url, page  # noqa: F401

N_PAIRS = int(os.environ.get("PRINCIPIA_SCALE_PAIRS", "24000"))  # e.g. 100000 for a manual measurement
CANCEL_LIMIT_S = 2.0
TIME_LEFT = re.compile(r"about \d+(\.\d)? (s|min|h) left")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (apt-get install chromium)"),
    pytest.mark.skipif(UPLOAD is None, reason="shared real data not found"),
]


@pytest.fixture(scope="module")
def big_upload(tmp_path_factory):
    sys.path.insert(0, str(REPO))
    from bench.synth import write_parquet

    given = os.environ.get("PRINCIPIA_SCALE_FILE")  # a file of N_PAIRS distinct pairs written beforehand
    if given:
        return Path(given)
    path = tmp_path_factory.mktemp("scale") / f"distinct_{N_PAIRS // 1000}k.parquet"
    return write_parquet(path, N_PAIRS, seed=1)


def test_large_upload_progress_with_time_left_and_cancel_within_2_s(page, app_url, big_upload):  # noqa: F811
    page.goto(app_url)
    page.get_by_role("heading", name="Principia").first.wait_for()
    wait_idle(page)
    goto_page(page, "Data")
    t_up = time.perf_counter()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(big_upload))
    page.get_by_text(f"Loaded: {big_upload.name}").wait_for(timeout=120_000)
    loaded_s = time.perf_counter() - t_up
    # 24,000 rows (the sidebar badge) without waiting for the word counts
    page.locator('[data-testid="stSidebar"]').get_by_text(f"{N_PAIRS:,} rows").first.wait_for(timeout=60_000)

    # switch page at once, whatever the Data page's background statistics are doing
    t_sw = time.perf_counter()
    goto_page(page, "Principles")
    switch_s = time.perf_counter() - t_sw
    toggle = page.get_by_role("switch", name="Use sentence embeddings")
    if toggle.is_checked():
        page.locator("label").filter(has=toggle).first.click()
        wait_idle(page)
    assert not toggle.is_checked()

    t_run = time.perf_counter()
    page.get_by_role("button", name="Run offline audit").click()
    progress = page.locator('[data-testid="stProgress"]').first
    progress.wait_for(timeout=60_000)
    first_progress_s = time.perf_counter() - t_run
    seen, deadline, time_left_text = [], time.time() + 150, ""
    while time.time() < deadline and not time_left_text:  # the texts seen on the way (for a failure)
        texts = page.locator('[data-testid="stProgress"]').all_inner_texts()
        seen += [t for t in texts if t not in seen]
        time_left_text = next((t for t in texts if TIME_LEFT.search(t)), "")
        page.wait_for_timeout(250)
    if not time_left_text:
        _shot(page, "scale_fail_no_time_left")
    assert time_left_text, f"no time-left text in the progress bar; seen: {seen[-8:]}"
    _shot(page, "scale_01_audit_progress_time_left")

    cancel = page.get_by_role("button", name="Cancel")
    t_cancel = time.perf_counter()
    cancel.click()
    page.get_by_text("was cancelled").first.wait_for(timeout=30_000)
    cancel_s = time.perf_counter() - t_cancel
    _shot(page, "scale_02_cancelled")
    print(f"\n{N_PAIRS:,} pairs: upload -> Loaded {loaded_s:.1f} s; page switch {switch_s:.1f} s; "
          f"run -> progress bar {first_progress_s:.1f} s; {time_left_text!r}; Cancel -> cancelled {cancel_s:.2f} s")
    assert cancel_s < CANCEL_LIMIT_S, f"cancelled shown after {cancel_s:.2f} s"
    assert page.get_by_role("button", name="Run offline audit").is_enabled()

    # the page is still usable: another page opens and shows the loaded dataset's numbers
    goto_page(page, "Data")
    page.get_by_text(f"Loaded: {big_upload.name}").wait_for(timeout=30_000)
    page.locator('[data-testid="stMetric"]').filter(has_text="Distinct pairs").filter(
        has_text=f"{N_PAIRS:,}").first.wait_for(timeout=120_000)
    _shot(page, "scale_03_data_after_cancel")
