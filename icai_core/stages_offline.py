"""Offline stages: the measurable library as a proposer, and its judges as a voter (cached on disk).

The vote cache is keyed by the distinct pairs' content hash, the judges' own source (any change to a
judge invalidates cached votes), the judge keys and the embeddings switch. Writes go to a unique
temporary file and an atomic rename, so concurrent audits of the same data never collide; a cache
file that cannot be read is discarded, recomputed and reported once (a log warning), never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from icai_core import judges as J
from icai_core.config import MeasurableConfig
from icai_core.jobs import CancelToken, Progress, noop_progress
from icai_core.judge import Judge

log = logging.getLogger("principia.cache")

EMBEDDING_KEYS = tuple(J.EMBEDDING_KEYS)  # judges that need the sentence embedder

# Cost model for the progress weights and the time-left estimate (wall seconds on the idle 2-core
# development machine). Only the ratios matter: the estimate extrapolates from the time the finished
# work took. Measured in the app on 100,000 distinct pairs (`bench/app_time_left.py`, load ~1): on
# 2 December 2026 07:00 UTC, after the judges' polars kernels and compiled tokeniser, ~35 s of votes
# and ~38 s of evidence (03:57 UTC: 42 s and 32 s; the older weights then made the time left 30-60%
# short during the evidence). The cold embedding judge ~14 ms per distinct text (~2.5 texts per
# distinct pair).
_SECONDS_PER_PAIR = 3.5e-4
# Embedding one distinct pair (3 texts, cold cache; an upper bound when the vectors are cached): ONNX
# fp32 on the Zen 3 of earlier sessions; bf16 measured in the app on a Zen 4 (10,000 distinct pairs,
# 30,000 texts, 229 s with the browser on the same 2 cores: `bench/app_time_left.py --embeddings`).
_SECONDS_PER_EMBEDDED_PAIR = {"fp32": 3.0e-2, "bf16": 2.2e-2}
_EVIDENCE_SECONDS_PER_ROW = 3.2e-4  # 3.8e-4 before the bootstrap ranked its scores once (-19% at 100k)
# The evidence's text features (list items, markdown emphasis), per distinct pair: their share of the
# evidence stage's progress next to `evidence.step_plan` (same units: seconds per distinct pair).
_EVIDENCE_FEATURE_SECONDS_PER_ITEM = 1.2e-5  # 0.16 s at 20,000 and 1.05 s at 100,000 distinct pairs (Zen 4)


def _embedding_seconds(n_items: int) -> float:
    from icai_core.embed import vector_precision

    return _SECONDS_PER_EMBEDDED_PAIR[vector_precision()] * n_items


class MeasurableLibrary:
    """Proposer: the built-in measurable principles (all of them, or `config.principles`)."""

    name = "measurable_library"
    consolidate = False

    def __init__(self, config: MeasurableConfig | None = None):
        self.config = config or MeasurableConfig()

    def judges(self) -> list[Judge]:
        keys = self.config.principles
        chosen = [J.get_principle(k) for k in keys] if keys else list(J.PRINCIPLES)
        if not self.config.use_embeddings:
            chosen = [p for p in chosen if p.key not in EMBEDDING_KEYS]
        return chosen

    def propose(self, ctx, data) -> list[Judge]:
        return self.judges()


class MeasurableVoter:
    """Voter: the measurable judges, vectorised over the distinct pairs, cached by content hash."""

    name = "measurable_votes"

    def __init__(self, config: MeasurableConfig | None = None):
        self.config = config or MeasurableConfig()

    def handles(self, judge: Judge) -> bool:
        return judge.kind == "measurable"

    def estimated_seconds(self, ctx, data) -> float:
        secs = _SECONDS_PER_PAIR * data.n_items
        if self.config.use_embeddings:
            secs += _embedding_seconds(data.n_items)
        return secs

    def vote(self, ctx, data, judges: list[Judge]):
        votes = compute_votes_cached(
            data.items, keys=[j.key for j in judges], use_embeddings=self.config.use_embeddings,
            cache_dir=ctx.cache_dir, progress=ctx.stage_progress(self.name), cancel=ctx.cancel,
            data_hash=data.dataset_hash,  # the distinct pairs are a function of the pair table
        )
        return votes, None


def items_hash(pairs: pd.DataFrame) -> str:
    from icai_core.audit import dataset_hash

    return dataset_hash(pairs)


def _votes_cache_path(cache_dir: Path, data_hash: str, keys: list[str], use_embeddings: bool,
                      precision: str = "fp32") -> Path:
    """One file per data, judge code, judges and embedding precision: bf16 vectors (the default on a
    CPU with native bf16) move ~0.2% of the embedding judge's votes, so a run with
    PRINCIPIA_EMBED_BACKEND=onnx must not be served the votes of a bf16 run, nor the reverse."""
    judges_src = hashlib.sha256(Path(J.__file__).read_bytes()).hexdigest()
    parts = [judges_src, keys, use_embeddings] + ([precision] if use_embeddings and precision != "fp32" else [])
    tag = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
    return cache_dir / "votes" / f"{data_hash}-{tag}.parquet"


def _read_cached(path: Path, n_rows: int, keys: list[str]) -> pd.DataFrame | None:
    """The cached votes, or None when absent; a damaged file is removed and reported once."""
    if not path.exists():
        return None
    try:
        votes = pd.read_parquet(path)
    except Exception as exc:  # truncated / garbage file: discard and recompute
        log.warning("vote cache %s could not be read (%s: %s); recomputing it", path.name, type(exc).__name__, exc)
        path.unlink(missing_ok=True)
        return None
    if len(votes) != n_rows or list(votes.columns) != keys:
        log.warning("vote cache %s does not match the data (%d rows); recomputing it", path.name, len(votes))
        path.unlink(missing_ok=True)
        return None
    return votes.astype(np.int8)


def _write_atomic(path: Path, votes: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        votes.reset_index(drop=True).to_parquet(tmp)
        os.replace(tmp, path)  # atomic: concurrent writers of the same votes simply replace each other
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    principles = [J.get_principle(k) for k in keys] if keys else list(J.PRINCIPLES)
    if not use_embeddings:
        principles = [p for p in principles if p.key not in EMBEDDING_KEYS]
    keys = [p.key for p in principles]
    embeds = use_embeddings and any(p.key in EMBEDDING_KEYS for p in principles)
    path = None
    wanted = "fp32"
    if cache_dir is not None:
        from icai_core.embed import vector_precision

        wanted = vector_precision() if embeds else "fp32"
        data_hash = data_hash or items_hash(pairs)
        path = _votes_cache_path(Path(cache_dir), data_hash, keys, use_embeddings, wanted)
        cached = _read_cached(path, len(pairs), keys)
        if cached is not None:
            if embeds:
                from icai_core.embed import DEFAULT_MODEL, note_usage

                note_usage(DEFAULT_MODEL, "cache", wanted)
            cached.index = pairs.index
            progress(1, 1, "Votes loaded from cache")
            return cached
    embedder = None
    if embeds:
        from icai_core.embed import Embedder

        emb_cache = Path(cache_dir) / "embeddings.sqlite" if cache_dir is not None else None
        # 32 texts per forward pass: same CPU time as 128, 128 MB less peak memory (measured)
        embedder = Embedder(cache_path=emb_cache, batch_size=32, max_seq_length=64)
    precision = None
    try:
        votes = J.compute_votes(pairs, principles, embedder=embedder, progress=progress, cancel=cancel)
        if embedder is not None:  # read before the model is dropped: a bf16 backend may have fallen back
            precision = embedder.precision
    finally:
        if embedder is not None:  # the stages after the votes do not need the model: free its memory first
            embedder.release_model()
    if path is not None:
        if precision is not None and precision != wanted:  # bf16 fell back to fp32
            path = _votes_cache_path(Path(cache_dir), data_hash, keys, use_embeddings, precision)
        _write_atomic(path, votes)
    return votes


class DataDiscovery:
    """Proposer and voter: directions in which the two responses differ that the measurable library
    does not already name (icai_core.discover, WIMHF-style). Which directions are kept does not look at
    the labels, so discovering on all distinct pairs leaks nothing into the held-out split; their effects
    are then measured per annotator like any other judge's.

    With an LLM client in the context (`ctx.client`) and `config.name_with_llm`, each kept direction is
    named by the LLM and the name scored by fidelity (icai_core.naming, no label used either): the
    judge's `text` becomes the name, the keyword description stays in the discovery table
    (`keyword_text`), and `name_source`, `fidelity` (+ CI) and `low_fidelity` travel with it. The votes
    stay the direction's own: a name labels a direction, it never changes what it measures."""

    name = "discovery"
    consolidate = False

    def __init__(self, config, seed: int = 0):
        self.config = config
        self.seed = seed
        self._votes: pd.DataFrame | None = None

    def _naming(self, ctx) -> bool:
        return ctx.client is not None and bool(getattr(self.config, "name_with_llm", True))

    def naming_config(self):
        from icai_core.naming import NamingConfig

        c = self.config
        return NamingConfig(n_examples=getattr(c, "name_examples", 5), n_voted=getattr(c, "fidelity_voted_pairs", 20),
                            n_unvoted=getattr(c, "fidelity_unvoted_pairs", 10),
                            threshold=getattr(c, "fidelity_threshold", 0.7), seed=self.seed)

    def estimated_seconds(self, ctx, data) -> float:
        secs = _embedding_seconds(data.n_items) + 2.0
        if self._naming(ctx):  # ~1 s per call, run concurrently (cached calls are instant)
            nc = self.naming_config()
            calls = self.config.n_directions * (1 + nc.n_voted + nc.n_unvoted)
            secs += calls / max(1, getattr(getattr(ctx.client, "config", None), "concurrency", 1))
        return secs

    def propose(self, ctx, data) -> list[Judge]:
        from icai_core.discover import DiscoverConfig, discover
        from icai_core.embed import Embedder
        from icai_core.naming import naming_table

        progress = ctx.stage_progress(self.name)
        naming = self._naming(ctx)
        split = 0.5 if naming else 1.0  # share of the stage's bar for discovery itself

        def part(lo: float, hi: float):
            def cb(done: int, total: int, message: str) -> None:
                frac = done / total if total else 1.0
                progress(int(round(1000 * (lo + (hi - lo) * frac))), 1000, message)
            return cb

        embedder = None
        if ctx.cache_dir is not None:
            embedder = Embedder(cache_path=Path(ctx.cache_dir) / "embeddings.sqlite", max_seq_length=64)
        found = discover(data.items, embedder=embedder,
                         config=DiscoverConfig(n_directions=self.config.n_directions, seed=self.seed),
                         progress=part(0.0, split), cancel=ctx.cancel)
        self._votes = found.votes.reset_index(drop=True)
        judges = list(found.judges)
        named = None
        if naming and judges:
            from icai_core.naming import name_directions

            named = name_directions(ctx.client, found, data.items, self.naming_config(),
                                    progress=part(split, 1.0), cancel=ctx.cancel)
            judges = named.apply(judges)
            data.stage_counts.update(named.counts)
            data.notes.extend(named.notes)
            data.extras["discovery_fidelity_votes"] = named.votes
        data.extras["discovery"] = naming_table(found.table, named)
        data.extras["discovery_examples"] = {
            j.key: found.examples(data.items, j.key, n=5)[["pair_id", "activation", "high_side"]]
            for j in found.judges
        }
        if not found.judges:
            data.notes.append("Offline discovery kept no direction beyond the measurable library "
                              f"(of {len(found.table)} learned; see the discovery table for why).")
        return judges

    def handles(self, judge: Judge) -> bool:
        return judge.kind == "discovered"

    def vote(self, ctx, data, judges: list[Judge]):
        assert self._votes is not None, "DataDiscovery votes only on the directions it proposed"
        return self._votes[[j.key for j in judges]], None


class Evidence:
    """Reconstructor (statistics only, no model call): for every annotator's analysis the evidence of
    icai_core.evidence — cluster-robust marginal and length-controlled effects, the length and position
    views, the k-fold reconstruction verdict grouped by prompt — and the agreement between annotators.
    Text features are computed once per distinct pair and shared by every annotator."""

    name = "evidence"

    def __init__(self, config, selection_settings: dict, seed: int = 0, alpha: float = 0.05):
        self.config = config
        self.selection = selection_settings
        self.seed = seed
        self.alpha = alpha

    def estimated_seconds(self, ctx, data) -> float:
        n_ann = max(1, data.pairs["annotator"].nunique()) if "annotator" in data.pairs else 1
        return n_ann * 1.0 + _EVIDENCE_SECONDS_PER_ROW * len(data.pairs)

    def reconstruct(self, ctx, data, result) -> None:
        from icai_core.evidence import (
            EVIDENCE_FEATURES,
            STEP_COST_PER_1000_ROWS,
            agreement_summary,
            audit_annotator,
            step_plan,
        )
        from icai_core.jobs import Cancelled

        progress = ctx.stage_progress(self.name)
        names = list(result.analyses)
        # Progress in units of measured cost (`evidence.step_plan`, per 1,000 rows of each annotator), so
        # the fraction moves near-linearly in time: the text features first, then each annotator's pieces,
        # then the agreement between annotators.
        plans = {name: np.cumsum([0.0] + step_plan(len(result.all_votes.columns), self.config.folds))
                 * len(a.rows) / 1000 for name, a in result.analyses.items()}
        feature_cost = _EVIDENCE_FEATURE_SECONDS_PER_ITEM * data.n_items
        agreement_cost = STEP_COST_PER_1000_ROWS["views"] * len(result.all_pairs) / 1000 if len(names) > 1 else 0.0
        total = feature_cost + sum(p[-1] for p in plans.values()) + agreement_cost
        scale = 1_000_000 / total if total > 0 else 1.0

        def report(units: float, message: str) -> None:
            progress(int(min(units * scale, 999_999)), 1_000_000, message)

        ctx.check()
        report(0.0, "Evidence: text features of every distinct pair")
        fa_i, fb_i = J.compute_features(data.items, names=EVIDENCE_FEATURES, cancel=ctx.cancel)
        fa = fa_i.iloc[data.item_of_row].set_axis(result.all_pairs.index)
        fb = fb_i.iloc[data.item_of_row].set_axis(result.all_pairs.index)
        before = feature_cost
        for k, (name, analysis) in enumerate(result.analyses.items()):
            cum = plans[name]
            calls = [0]

            def step(message: str, name=name, k=k, cum=cum, calls=calls, before=before) -> None:
                # called inside the fits and the folds: cancel within one fit, a bar that moves
                ctx.check()
                if not message:  # a cancel check only (inside a bootstrap)
                    return
                if not message.startswith("style control without"):  # a refit is not in the plan
                    calls[0] = min(calls[0] + 1, len(cum) - 1)
                report(before + cum[calls[0] - 1], f"Evidence for {name} ({k + 1} of {len(names)}): {message}")

            step("controlled effects")
            rows = result.all_pairs.iloc[analysis.rows]
            try:
                analysis.evidence = audit_annotator(
                    rows, result.all_votes, annotator=name, valid=result.all_valid, principles=result.judges,
                    order_known=self.config.order_known, folds=self.config.folds, seed=self.seed,
                    alpha=self.alpha, constitution_settings=self.selection, features=(fa, fb),
                    n_boot=self.config.n_boot, step=step)
            except Cancelled:
                raise
            except Exception as exc:  # never lose the run over one annotator's evidence: say why
                analysis.notes.append(f"The evidence (controlled effects, cross-validation) could not be "
                                      f"computed for {name}: {type(exc).__name__}: {exc}")
            before += cum[-1]
        ctx.check()
        report(before, "Agreement between annotators")
        if len(names) > 1:
            result.agreement = agreement_summary(result.all_pairs, reference=self.config.reference, alpha=self.alpha)
