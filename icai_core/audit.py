"""The offline audit: the pipeline with its offline stages (measurable judges, no key, no network).

`run_offline_audit` is `Pipeline.offline(config).run(...)` with a disk cache: the votes of the
measurable judges (and the text embeddings) are cached keyed by the distinct pairs' content hash, so
a rerun or a resumed run after a cancel skips what is already done. `AuditConfig(**flat)` builds the
one `RunConfig` from flat setting names; `AuditResult` is the one result type, `RunResult`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from icai_core.config import RunConfig
from icai_core.data import CANONICAL_COLUMNS
from icai_core.jobs import CancelToken, Progress
from icai_core.result import RunResult
from icai_core.stages_offline import compute_votes_cached  # noqa: F401  (public: the app and benches use it)

AuditResult = RunResult


def AuditConfig(**flat) -> RunConfig:  # noqa: N802 - kept as the familiar constructor name
    """The offline engine's `RunConfig` from flat settings (`use_embeddings=False, alpha=0.01, ...`)."""
    return RunConfig.from_flat(engine="offline", **flat)


def dataset_hash(pairs: pd.DataFrame) -> str:
    """Content hash of the canonical columns: same data -> same hash, whatever the file name."""
    cols = [c for c in CANONICAL_COLUMNS if c in pairs.columns]
    h = pd.util.hash_pandas_object(pairs[cols].astype(str), index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(cols).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    home = os.environ.get("PRINCIPIA_HOME")
    return Path(home) if home else Path.home() / ".principia"


def run_offline_audit(
    pairs: pd.DataFrame,
    config: RunConfig | None = None,
    *,
    dataset_name: str = "data",
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    cache_dir: str | Path | None = None,
    run_id: str | None = None,
    client=None,
    dataset_hash: str | None = None,
) -> RunResult:
    """Run the whole offline audit on a canonical pair table (see icai_core.data).

    `client` (an `icai_core.llm.LLMClient`, optional) is used only by discovery, to name the
    discovered directions and score the names' fidelity (`icai_core.naming`); the judges stay offline.
    `dataset_hash`: the content hash when the caller already has it (hashing 100k pairs takes seconds).
    """
    from icai_core.pipeline import Pipeline, RunContext

    config = config or RunConfig()
    if config.engine != "offline":
        config = config.replace(engine="offline")
    ctx = RunContext(progress=progress, cancel=cancel, run_id=run_id, client=client,
                     cache_dir=Path(cache_dir) if cache_dir is not None else None)
    return Pipeline.offline(config).run(pairs, ctx, dataset_name=dataset_name, dataset_hash=dataset_hash)


def config_dict(config: RunConfig) -> dict:
    return config.to_dict()


def format_summary(result: RunResult, top: int = 10) -> str:
    """Readable multi-line summary, one block per annotator: counts in distinct pairs, top principles
    with CIs, constitution, reconstruction."""
    blocks = []
    from icai_core.reconstruct import content_groups

    n_rows = len(result.all_pairs)
    n_distinct = len(pd.unique(content_groups(result.all_pairs)))
    names = result.annotator_names
    head = f"Dataset: {result.dataset_name}  ({n_distinct:,} pairs, {n_rows:,} rows"
    if len(names) > 1:
        head += f", {len(names)} annotators audited separately)"
    else:
        head += ")"
    blocks.append(head)
    for name in names:
        blocks.append(_annotator_block(result.view(name), top))
    if result.notes:
        blocks.append("Notes:\n" + "\n".join(f"  - {n}" for n in result.notes))
    return "\n\n".join(blocks)


def _annotator_block(result: RunResult, top: int) -> str:
    a = result.analysis
    counts = result.pairs["preferred"].value_counts()
    who = "all annotators pooled" if a.pooled else ("the annotator" if a.name == "all" else f"annotator {a.name!r}")
    lines = [
        f"== {who}: {a.n_pairs:,} distinct pairs ({len(result.pairs):,} rows; A {counts.get('a', 0):,} / "
        f"B {counts.get('b', 0):,} / tie {counts.get('tie', 0):,})",
        "",
        f"Principles {who} rewards or penalises (top {top} by |strength|, all labelled pairs):",
    ]
    from icai_core.evidence import CLUSTERED, presented_stats

    s = presented_stats(result)  # the numbers of the report and summary.json (clustered by prompt)
    clustered = s.attrs.get("inference") == CLUSTERED
    why = s.attrs.get("no_evidence", "")
    s = s.reindex(s["strength"].abs().sort_values(ascending=False).index).head(top)
    for _, r in s.iterrows():
        flag = "*" if r["significant"] else " "
        acc = "   n/a" if pd.isna(r["accuracy"]) else f"{r['accuracy']:6.1%}"
        if pd.isna(r["strength"]):
            lines.append(f"   (no labelled pair with a valid vote)  {r['text']}")
            continue
        ci = ("[CI needs 2+ pairs]" if pd.isna(r["strength_ci_low"]) else
              f"[{r['strength_ci_low']:+.3f}, {r['strength_ci_high']:+.3f}]")
        lines.append(f" {flag} {r['strength']:+.3f} {ci}  acc {acc}  rel {r['relevance']:5.1%}  {r['text']}")
    lines += [("   (* = significant after Benjamini-Hochberg correction; CIs and q-values clustered by prompt, "
               "as in the report and summary.json)") if clustered else
              ("   (* = significant after Benjamini-Hochberg correction; binomial CIs, NOT clustered by prompt"
               + (f": {why}" if why else "") + ")"), "",
              "Constitution (selected on the training split):"]
    text = result.constitution.text()
    lines += ["  " + ln for ln in text.splitlines()] if text.strip() else ["  (no principle passed the thresholds)"]
    lines += ["", "Reconstruction of held-out preferences (agreement, 95% CI):"]
    table = result.reconstruction.table
    if result.llm_reconstruction is not None and len(result.llm_reconstruction):
        table = pd.concat([result.llm_reconstruction, table], ignore_index=True)
    for _, r in table.iterrows():
        if pd.isna(r["agreement"]):
            lines.append(f"  {r['method']:<30} {r.get('description', 'not computed')}")
            continue
        lines.append(
            f"  {r['method']:<30} {r['agreement']:6.1%}  [{r['ci_low']:.1%}, {r['ci_high']:.1%}]  n={int(r['n_test'])}"
        )
    if int(result.reconstruction.n_test) == 0:
        lines.append("  (no labelled held-out pair: nothing to score; the file needs more non-tie pairs)")
    ev = getattr(a, "evidence", None)
    if ev is not None:
        lines += ["", "Evidence (inference clustered by prompt; effects with length controlled; "
                      f"{result.config.evidence.folds}-fold reconstruction grouped by prompt):"]
        sentences = ev.sentences()
        lines += [f"  - {s}" for s in (sentences.values() if isinstance(sentences, dict) else sentences) if s]
    for note in a.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
