"""Driving the Streamlit app in Debian chromium through Playwright: one set of helpers for the browser
tests (`tests/test_browser*.py`) and the app benchmark (`bench/app_time_left.py`).

Chromium runs headless with the flags this machine's closed network needs (without the
background-networking flags it keeps opening connections that are refused). Streamlit is started on
127.0.0.1 with its own PRINCIPIA_HOME, offline, usage statistics off.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class AppDidNotStart(RuntimeError):
    """Streamlit exited or did not answer its health check in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(home: Path, port: int, timeout_s: float = 60.0) -> subprocess.Popen:
    """`streamlit run app.py` on 127.0.0.1:`port` with PRINCIPIA_HOME=`home` (its log in
    home/streamlit.log), returned once /_stcore/health answers 200. The caller stops it
    (`stop_streamlit`). Raises AppDidNotStart with the log's tail otherwise."""
    env = {
        **os.environ,
        "PRINCIPIA_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    log_path = home / "streamlit.log"
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AppDidNotStart("streamlit exited: " + log_path.read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_streamlit(proc)
    raise AppDidNotStart(f"streamlit did not start within {timeout_s:.0f} s: " + log_path.read_text()[-2000:])


def stop_streamlit(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:  # pragma: no cover - a server that ignores SIGTERM
        proc.kill()


def wait_idle(page, timeout: float = 90.0) -> None:
    """Wait until Streamlit has finished the current script run (no 'running' status widget, twice
    300 ms apart: a rerun can start right after one ends)."""
    page.wait_for_timeout(300)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            page.wait_for_timeout(300)
            if page.locator('[data-testid="stStatusWidget"]').count() == 0:
                return
        page.wait_for_timeout(250)


def goto_page(page, title: str, timeout: float = 90.0) -> None:
    """Open a page from the sidebar by its title and wait for its heading and the end of its run."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for()
    wait_idle(page, timeout)
