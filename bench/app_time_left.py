"""Is the app's "about X left" honest? Issue 13, measured in a real browser on a large upload.

    .venv/bin/python bench/app_time_left.py [--pairs 100000] [--every 5] [--port 8531] [--file F.parquet]

Writes N distinct pairs recombined from real shared texts (`bench.synth.write_parquet`, seed 1) to a
Parquet file (or takes --file), serves `streamlit run app.py` on 127.0.0.1:--port with its own
PRINCIPIA_HOME, and drives it with headless Debian chromium through Playwright, as the browser tests
do: upload on the Data page, Principles page, embeddings off (on with --embeddings), "Run offline audit". Every --every
seconds it reads the progress bar's text and value (what the user sees); when the audit is done (the
"Principle table" heading is on screen) the actual remaining time of every sample is known, and each
sample's estimate is compared with it:

    rel_error = (estimate - actual remaining) / actual remaining

Prints one line per sample, the median and max |rel_error| (samples with an estimate), the share of
samples within 30 %, how many samples said "time left unknown" (the app withdraws an estimate once the
current step has run past it, `ui.jobs.BackgroundJob.message`; those samples have no estimate and are
not in the error figures), and one JSON line (prefix ``JSON``) with everything. Timestamps are taken here,
in the driver, after each read: the estimate a sample shows may be up to one page poll (2 s) old,
which counts against it. It is a measurement, not a test; the machine's load changes the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    goto_page,
    start_streamlit,
    stop_streamlit,
    wait_idle,
)

LEFT = re.compile(r"about (\d+(?:\.\d+)?) (s|min|h) left")
UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


def parse_left(text: str) -> float | None:
    """Seconds of the "about X left" part of a progress text (None when the text has none)."""
    m = LEFT.search(text or "")
    return float(m.group(1)) * UNIT_S[m.group(2)] if m else None


def _read_progress(page) -> tuple[str, float | None]:
    """The progress bar's text and value (0-1) as the browser shows them ("" / None when no bar)."""
    bar = page.locator('[data-testid="stProgress"]')
    if bar.count() == 0:
        return "", None
    text = " ".join(bar.first.all_inner_texts()).strip()
    value = bar.first.locator('[role="progressbar"]')
    now = value.first.get_attribute("aria-valuenow") if value.count() else None
    return text, (float(now) / 100.0 if now not in (None, "") else None)


def measure(file: Path, port: int, every: float, home: Path, timeout_s: float, shots: Path | None,
            embeddings: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    n_rows = None
    try:
        import pyarrow.parquet as pq

        n_rows = pq.ParquetFile(file).metadata.num_rows
    except Exception:  # a CSV or another format: the count is read from the page
        pass
    proc = start_streamlit(home, port, timeout_s=90)
    samples: list[dict] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            page.set_default_timeout(180_000)
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_role("heading", name="Principia").first.wait_for()
            wait_idle(page, 120)
            goto_page(page, "Data")
            t0 = time.perf_counter()
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(file))
            page.get_by_text(f"Loaded: {file.name}").wait_for(timeout=600_000)
            upload_s = time.perf_counter() - t0
            goto_page(page, "Principles")
            toggle = page.get_by_role("switch", name="Use sentence embeddings")
            if toggle.is_checked() != embeddings:
                page.locator("label").filter(has=toggle).first.click()
                wait_idle(page, 120)
            page.get_by_role("button", name="Run offline audit").click()
            t_click = time.perf_counter()
            done_heading = page.get_by_role("heading", name="Principle table")
            deadline = t_click + timeout_s
            next_t = t_click
            while time.perf_counter() < deadline:
                if done_heading.count() and page.locator('[data-testid="stProgress"]').count() == 0:
                    break
                if time.perf_counter() >= next_t:
                    text, value = _read_progress(page)
                    t = time.perf_counter() - t_click
                    if text:
                        samples.append({"t_s": round(t, 2), "value": value, "text": text,
                                        "estimate_s": parse_left(text), "stall_note": "has run" in text,
                                        "withdrawn": "time left unknown" in text})
                        print(f"  t={t:7.1f} s  {100 * (value or 0):5.1f}%  {text[:110]}", flush=True)
                        if shots is not None and len(samples) == 2:
                            shots.mkdir(parents=True, exist_ok=True)
                            page.screenshot(path=str(shots / "time_left_progress.png"))
                    next_t += every
                page.wait_for_timeout(200)
            else:
                raise SystemExit(f"the audit did not finish within {timeout_s:.0f} s")
            total_s = time.perf_counter() - t_click
            browser.close()
    finally:
        stop_streamlit(proc, 15)
    rows = []
    for s in samples:
        actual = total_s - s["t_s"]
        est = s["estimate_s"]
        rel = None if est is None or actual <= 0 else (est - actual) / actual
        rows.append({**s, "actual_left_s": round(actual, 2), "rel_error": None if rel is None else round(rel, 3)})
    errs = [abs(r["rel_error"]) for r in rows if r["rel_error"] is not None]
    return {
        "file": str(file), "n_rows": n_rows, "upload_to_loaded_s": round(upload_s, 1), "audit_s": round(total_s, 1),
        "every_s": every, "n_samples": len(rows), "n_with_estimate": len(errs),
        "n_withdrawn": sum(bool(r.get("withdrawn")) for r in rows),
        "median_abs_rel_error": round(statistics.median(errs), 3) if errs else None,
        "max_abs_rel_error": round(max(errs), 3) if errs else None,
        "share_within_30pct": round(sum(e <= 0.3 for e in errs) / len(errs), 3) if errs else None,
        "samples": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100_000, help="distinct pairs to write (bench.synth)")
    ap.add_argument("--file", type=Path, help="an existing file to upload instead of writing one")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--port", type=int, default=8531)
    ap.add_argument("--embeddings", action="store_true", help="with the embedding judge (cold cache)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds of audit")
    ap.add_argument("--workdir", type=Path, help="where the file, PRINCIPIA_HOME and screenshots go")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="principia-time-left-"))
    work.mkdir(parents=True, exist_ok=True)
    file = args.file
    if file is None:
        from bench.synth import write_parquet

        file = work / f"distinct_{args.pairs}.parquet"
        if not file.exists():
            t = time.perf_counter()
            write_parquet(file, args.pairs, seed=1)
            print(f"wrote {args.pairs:,} distinct pairs to {file} in {time.perf_counter() - t:.0f} s", flush=True)
    home = work / "home"
    home.mkdir(exist_ok=True)
    out = measure(file, args.port, args.every, home, args.timeout, work / "shots", args.embeddings)
    print(f"\n{'t (s)':>8} {'shown':>7} {'estimate (s)':>13} {'actual left (s)':>16} {'rel. error':>11}")
    for r in out["samples"]:
        est = ("unknown" if r.get("withdrawn") else "—") if r["estimate_s"] is None else f"{r['estimate_s']:.0f}"
        rel = "—" if r["rel_error"] is None else f"{100 * r['rel_error']:+.0f}%"
        print(f"{r['t_s']:8.1f} {100 * (r['value'] or 0):6.1f}% {est:>13} {r['actual_left_s']:16.1f} {rel:>11}")
    print(f"\naudit {out['audit_s']:.1f} s after the click ({out['n_rows'] or '?'} rows; upload -> Loaded "
          f"{out['upload_to_loaded_s']:.1f} s); {out['n_with_estimate']} of {out['n_samples']} samples show an "
          f"estimate, {out['n_withdrawn']} say 'time left unknown' (a step past its estimate); |rel. error| median {out['median_abs_rel_error']}, max {out['max_abs_rel_error']}, "
          f"within 30 %: {out['share_within_30pct']}")
    print("JSON " + json.dumps({k: v for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
