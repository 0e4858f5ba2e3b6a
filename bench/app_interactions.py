"""How fast the app answers interactions on cached results, on a 10,000-pair dataset.

    .venv/bin/python bench/app_interactions.py [--pairs 10000] [--embeddings] [--repeat 5]

The dataset is real shared data (AlpacaEval human-vs-GPT-4, PandaLM, PRD, ICAI synthetic...),
concatenated in a fixed order and, if needed, replicated (with fresh ids) up to --pairs rows. The
offline audit runs once (its time is printed but it is not an interaction). Then it times:

* the functions the pages call on an interaction: `AuditResult.rebuild` for a slider move (cold),
  the memoised `rebuild_cached` (what a repeated slider position costs), the figures, the compare
  split, the exports;
* full Streamlit reruns with `streamlit.testing.v1.AppTest` (the real app.py router): a page
  switch to every page and a slider move on the Constitution page, with the audit already in the
  session (warm caches, as for a user who clicks around after an audit).

`--distinct` uses distinct pairs recombined from real texts (bench/synth.py) instead of replicated
rows, e.g. `--pairs 100000 --distinct` for the issue-13 upload size.

Target: every interaction under 1 s. Prints a table; it is not a unit test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PRINCIPIA_HOME", tempfile.mkdtemp(prefix="principia-bench-"))

import pandas as pd  # noqa: E402

FILES = [
    "alpacaeval_human_vs_gpt4.csv",
    "pandalm_human_vs_judges.csv",
    "prd_lfqa_expert.csv",
    "icai_synthetic_mixed.csv",
    "alpacaeval1_gpt4_judge.csv",
]
TARGET_S = 1.0


def data_dir() -> Path:
    for c in (
        os.environ.get("PRINCIPIA_DATA_DIR", ""),
        REPO / "shared" / "data",
        REPO.parent / "shared" / "data",
    ):
        if c and (Path(c) / FILES[0]).exists():
            return Path(c)
    sys.exit("shared data not found: set PRINCIPIA_DATA_DIR")


def build_dataset(n: int) -> pd.DataFrame:
    from icai_core.data import load_pairs

    d = data_dir()
    frames = []
    for f in FILES:
        p = load_pairs(d / f).pairs
        p["id"] = f.split(".")[0] + ":" + p["id"].astype(str)
        frames.append(p)
    base = pd.concat(frames, ignore_index=True)
    out = [base]
    k = 1
    while sum(len(x) for x in out) < n:
        extra = base.copy()
        extra["id"] = extra["id"] + f"#r{k}"
        out.append(extra)
        k += 1
    pairs = pd.concat(out, ignore_index=True).head(n).reset_index(drop=True)
    keep = ["id", "prompt", "text_a", "text_b", "preferred", "annotator", "model_a", "model_b", "language"]
    keep += ["pair_id", "category"]
    return pairs[[c for c in keep if c in pairs.columns]].fillna("")


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--embeddings", action="store_true", help="audit with the embedding-based judges too")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--distinct", action="store_true",
                    help="distinct pairs recombined from real texts (bench/synth.py) instead of replicated rows")
    args = ap.parse_args()

    from icai_core import figures as F
    from icai_core import report as R
    from icai_core.audit import AuditConfig, run_offline_audit
    from icai_core.compare import compare_groups

    if args.distinct:  # every text distinct: what a real 100k upload costs (no per-text cache flatters it)
        os.environ.setdefault("PRINCIPIA_DATA_DIR", str(data_dir()))
        from bench.synth import distinct_pairs

        pairs = distinct_pairs(args.pairs, seed=0)
        print(f"dataset: {len(pairs):,} distinct pairs recombined from real shared texts (bench/synth.py)")
    else:
        pairs = build_dataset(args.pairs)
        print(f"dataset: {len(pairs):,} pairs from {', '.join(FILES)} (replicated with fresh ids as needed)")
    t0 = time.perf_counter()
    audit = run_offline_audit(pairs, AuditConfig(use_embeddings=args.embeddings), dataset_name="bench-10k")
    print(
        f"offline audit (once, not an interaction): {time.perf_counter() - t0:.2f} s, {len(audit.stats)} principles"
    )

    rows: list[tuple[str, float, float]] = []

    def add(name, fn, repeat=args.repeat):
        med, worst = timed(fn, repeat)
        rows.append((name, med, worst))

    # ----------------------------------------------------------------- functions behind interactions
    settings = [
        dict(min_relevance=0.05, min_abs_strength=0.02, alpha=0.05, max_size=5, require_significant=True),
        dict(min_relevance=0.10, min_abs_strength=0.05, alpha=0.01, max_size=10, require_significant=True),
        dict(min_relevance=0.0, min_abs_strength=0.0, alpha=0.2, max_size=20, require_significant=False),
    ]
    it = iter(settings * args.repeat)
    add("slider move: AuditResult.rebuild (uncached)", lambda: audit.rebuild(**next(it)))
    const, recon = audit.rebuild(**settings[0])
    add("figure: strength bar", lambda: F.strength_bar(audit.stats, selected=const.keys).to_plotly_json())
    add("figure: reconstruction bar", lambda: F.reconstruction_bar(recon.table).to_plotly_json())
    add("figure: length histogram (10k pairs)", lambda: F.length_distribution(audit.pairs).to_plotly_json())
    add("figure: chosen vs rejected length (10k pairs)",
        lambda: F.chosen_rejected_lengths(audit.pairs).to_plotly_json())
    add("Data page: P(prefer longer) per annotator (10k pairs)", lambda: F.length_preference(audit.all_pairs))
    add("figure: relevance vs accuracy", lambda: F.relevance_accuracy(audit.stats).to_plotly_json())
    add(
        "compare: split by annotator (uncached)",
        lambda: compare_groups(audit.votes, audit.pairs, "annotator"),
    )
    cmp = compare_groups(audit.votes, audit.pairs, "annotator")
    add(
        "figure: strength heatmap",
        lambda: F.strength_heatmap(
            cmp.strength_matrix, cmp.strength_ci_low, cmp.strength_ci_high
        ).to_plotly_json(),
    )
    add("export: Markdown summary", lambda: R.markdown_summary(audit, const, recon))
    add("export: constitution JSON", lambda: R.constitution_json(audit, const, recon))
    add("export: stats CSV", lambda: R.stats_csv(audit.stats))
    add("export: votes CSV (cached on the page)", lambda: R.votes_csv(audit.pairs, audit.votes), repeat=1)
    add("export: HTML report (cached on the page)", lambda: R.html_report(audit, const, recon), repeat=1)

    # ----------------------------------------------------------------- full app reruns (AppTest)
    from streamlit.testing.v1 import AppTest

    from ui.common import AUDIT, DATASET, LoadedDataset

    ds = LoadedDataset(name="bench-10k", pairs=pairs, hash=audit.dataset_hash, source="upload")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.session_state[DATASET] = ds
    at.session_state[AUDIT] = audit
    at.session_state["show_map"] = True
    at.run()
    pages = [
        "pages/data.py",
        "pages/principles.py",
        "pages/constitution.py",
        "pages/compare.py",
        "pages/report.py",
    ]
    for p in pages:  # first visit fills the caches (principle map, compare, report bytes)
        t0 = time.perf_counter()
        at.switch_page(p).run()
        assert not at.exception, (p, [e.value for e in at.exception])
        rows.append((f"first visit (fills caches): {p}", time.perf_counter() - t0, float("nan")))
    for p in pages:

        def visit(p=p):
            at.switch_page(p).run()

        add(f"page switch (warm): {p}", visit, repeat=3)
    at.switch_page("pages/constitution.py").run()
    sizes = iter([3, 7, 5, 9, 4, 6, 8, 2, 10, 3, 7, 5, 9, 4, 6])

    def slide():
        at.slider(key="thr_max_size").set_value(next(sizes)).run()

    add("slider move on the Constitution page (full rerun, new value)", slide, repeat=5)
    at.slider(key="thr_max_size").set_value(3).run()
    add(
        "slider back to a seen value (rebuild_cached hit)",
        lambda: at.slider(key="thr_max_size").set_value(3).run(),
    )

    def reset():
        at.slider(key="thr_max_size").set_value(next(sizes)).run()
        at.button(key="thr_reset").click().run()

    add("move a slider, then Reset to defaults (two full reruns)", reset, repeat=3)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'interaction'.ljust(width)}  median s   worst s   < {TARGET_S:.0f} s")
    for name, med, worst in rows:
        interactive = not name.startswith(("first visit", "export: votes", "export: HTML"))
        flag = (
            ("yes" if max(med, worst if worst == worst else med) < TARGET_S else "NO")
            if interactive
            else "(n/a)"
        )
        w = "" if worst != worst else f"{worst:8.3f}"
        print(f"{name.ljust(width)}  {med:8.3f}  {w:>8}   {flag}")
    print(
        "\n(n/a): one-off work done once and then cached by the page (first visit, report bytes); "
        "they are shown for scale."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
