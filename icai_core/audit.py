"""The offline audit: measurable judges -> principle stats -> constitution -> reconstruction.

One function, `run_offline_audit`, glues the pieces together for the CLI, the app and the
benchmarks. It reports progress, honours cancellation, and caches the expensive part (the vote
matrix and the text embeddings) on disk keyed by the dataset's content hash, so a rerun or a resumed
run after a cancel skips what is already done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from icai_core import judges
from icai_core.constitution import Constitution, build_constitution, settings_of
from icai_core.data import CANONICAL_COLUMNS
from icai_core.jobs import CancelToken, Progress, check, noop_progress
from icai_core.reconstruct import (
    ReconstructionResult,
    audit_split,
    content_groups,
    evaluate,
    split_train_test,
)
from icai_core.stats import principle_stats


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one offline audit; everything that changes results is in here (and in the cache key)."""

    test_size: float = 0.3
    seed: int = 0
    alpha: float = 0.05
    use_embeddings: bool = True
    min_relevance: float = 0.05
    min_abs_strength: float = 0.02
    max_size: int = 10
    require_significant: bool = True
    principles: tuple[str, ...] | None = None  # subset of judge keys; None = all

    def constitution_settings(self) -> dict:
        return settings_of(self)


@dataclass
class AuditResult:
    dataset_name: str
    dataset_hash: str
    config: AuditConfig
    pairs: pd.DataFrame
    votes: pd.DataFrame
    principles: pd.DataFrame
    stats: pd.DataFrame
    train_stats: pd.DataFrame
    constitution: Constitution
    reconstruction: ReconstructionResult
    train_index: np.ndarray
    test_index: np.ndarray
    timings: dict = field(default_factory=dict)

    def rebuild(self, **settings) -> tuple[Constitution, ReconstructionResult]:
        """Re-select the constitution with new thresholds (train split only) and re-evaluate it.

        Cheap: reuses the cached votes and train stats, so sliders in the app respond at once.
        """
        merged = {**self.config.constitution_settings(), **settings}
        constitution = build_constitution(self.train_stats, principles=self.principle_objects(), **merged)
        recon = evaluate(
            self.votes,
            self.pairs["preferred"],
            train_index=self.train_index,
            test_index=self.test_index,
            constitution=constitution,
            seed=self.config.seed,
        )
        return constitution, recon

    def principle_objects(self) -> list:
        """The Principle objects behind the vote columns, in column order."""
        return [judges.get_principle(k) for k in self.votes.columns]

    def summary(self) -> str:
        """A plain-text summary for terminals and logs."""
        return format_summary(self)


def dataset_hash(pairs: pd.DataFrame) -> str:
    """Content hash of the canonical columns: same data -> same hash, whatever the file name."""
    cols = [c for c in CANONICAL_COLUMNS if c in pairs.columns]
    h = pd.util.hash_pandas_object(pairs[cols].astype(str), index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(cols).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    home = os.environ.get("PRINCIPIA_HOME")
    return Path(home) if home else Path.home() / ".principia"


def _votes_cache_path(cache_dir: Path, data_hash: str, keys: list[str], use_embeddings: bool) -> Path:
    # The judges' own source is part of the key: any change to a judge invalidates cached votes.
    judges_src = hashlib.sha256(Path(judges.__file__).read_bytes()).hexdigest()
    tag = hashlib.sha256(json.dumps([judges_src, keys, use_embeddings]).encode()).hexdigest()[:12]
    return cache_dir / "votes" / f"{data_hash}-{tag}.parquet"


def compute_votes_cached(
    pairs: pd.DataFrame,
    *,
    keys: list[str] | None = None,
    use_embeddings: bool = True,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    data_hash: str | None = None,
) -> pd.DataFrame:
    """Votes of the measurable judges, from the on-disk cache when this exact data was seen before."""
    progress = progress or noop_progress
    principles = [judges.get_principle(k) for k in keys] if keys else list(judges.PRINCIPLES)
    keys = [p.key for p in principles]
    path = None
    if cache_dir is not None:
        path = _votes_cache_path(Path(cache_dir), data_hash or dataset_hash(pairs), keys, use_embeddings)
        if path.exists():
            votes = pd.read_parquet(path)
            if len(votes) == len(pairs):
                votes.index = pairs.index
                progress(1, 1, "Votes loaded from cache")
                return votes
    embedder = None
    if use_embeddings:
        from icai_core.embed import Embedder

        emb_cache = Path(cache_dir) / "embeddings.sqlite" if cache_dir is not None else None
        embedder = Embedder(cache_path=emb_cache, batch_size=128, max_seq_length=64)
    votes = judges.compute_votes(pairs, principles, embedder=embedder, progress=progress, cancel=cancel)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        votes.reset_index(drop=True).to_parquet(tmp)
        tmp.replace(path)
    return votes


def run_offline_audit(
    pairs: pd.DataFrame,
    config: AuditConfig | None = None,
    *,
    dataset_name: str = "data",
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    cache_dir: str | Path | None = None,
) -> AuditResult:
    """Run the whole offline audit on a canonical pair table (see icai_core.data)."""
    config = config or AuditConfig()
    progress = progress or noop_progress
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data_hash = dataset_hash(pairs)
    keys = list(config.principles) if config.principles else None

    votes = compute_votes_cached(
        pairs,
        keys=keys,
        use_embeddings=config.use_embeddings,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        progress=progress,
        cancel=cancel,
        data_hash=data_hash,
    )
    timings["votes_s"] = time.perf_counter() - t0
    check(cancel)

    t1 = time.perf_counter()
    principle_objs = [judges.get_principle(k) for k in votes.columns]
    preferred = pairs["preferred"]
    stats = principle_stats(votes, preferred, principle_objs, alpha=config.alpha)
    # Rows judging the same pair (several annotators) stay on one side of the split: no leakage.
    train_index, test_index = split_train_test(
        preferred, test_size=config.test_size, seed=config.seed, groups=content_groups(pairs)
    )
    train_stats, constitution, recon = audit_split(
        votes, preferred, principle_objs, train_index=train_index, test_index=test_index,
        test_size=config.test_size, seed=config.seed, **config.constitution_settings(),
    )
    timings["stats_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    progress(1, 1, "Audit finished")
    principles_df = judges.principles_frame()
    principles_df = principles_df[principles_df["key"].isin(votes.columns)].reset_index(drop=True)
    return AuditResult(
        dataset_name=dataset_name,
        dataset_hash=data_hash,
        config=config,
        pairs=pairs,
        votes=votes,
        principles=principles_df,
        stats=stats,
        train_stats=train_stats,
        constitution=constitution,
        reconstruction=recon,
        train_index=np.asarray(train_index),
        test_index=np.asarray(test_index),
        timings=timings,
    )


def config_dict(config: AuditConfig) -> dict:
    d = asdict(config)
    d["principles"] = list(config.principles) if config.principles else None
    return d


def format_summary(result: AuditResult, top: int = 10) -> str:
    """Readable multi-line summary: dataset, top principles with CIs, constitution, reconstruction."""
    pairs = result.pairs
    counts = pairs["preferred"].value_counts()
    lines = [
        f"Dataset: {result.dataset_name}  ({len(pairs):,} pairs; A {counts.get('a', 0):,} / "
        f"B {counts.get('b', 0):,} / tie {counts.get('tie', 0):,})",
        "",
        f"Principles the annotator rewards or penalises (top {top} by |strength|, all labelled pairs):",
    ]
    s = result.stats.copy()
    s = s.reindex(s["strength"].abs().sort_values(ascending=False).index).head(top)
    for _, r in s.iterrows():
        flag = "*" if r["significant"] else " "
        acc = "   n/a" if pd.isna(r["accuracy"]) else f"{r['accuracy']:6.1%}"
        lines.append(
            f" {flag} {r['strength']:+.3f} [{r['strength_ci_low']:+.3f}, {r['strength_ci_high']:+.3f}]  "
            f"acc {acc}  rel {r['relevance']:5.1%}  {r['text']}"
        )
    lines += ["   (* = significant after Benjamini-Hochberg correction)", "", "Constitution (selected on the training split):"]
    text = result.constitution.text()
    lines += ["  " + ln for ln in text.splitlines()] if text.strip() else ["  (no principle passed the thresholds)"]
    lines += ["", "Reconstruction of held-out preferences (agreement, 95% CI):"]
    for _, r in result.reconstruction.table.iterrows():
        lines.append(
            f"  {r['method']:<24} {r['agreement']:6.1%}  [{r['ci_low']:.1%}, {r['ci_high']:.1%}]  n={int(r['n_test'])}"
        )
    return "\n".join(lines)
