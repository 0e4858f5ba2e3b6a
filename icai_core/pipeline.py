"""One pipeline of pluggable stages for both engines.

    Pipeline(proposers, consolidator, voters, reconstructors).run(pairs, ctx) -> RunResult

* **proposers** (`Proposer.propose`) put candidate judges on the table: the measurable library, an
  LLM proposer, and other discoverers.
* the **consolidator** (`Consolidator.consolidate`) turns the candidates that need it (LLM proposals)
  into fewer judges: `KeepAll` (skip) or embed + UMAP + HDBSCAN (`stages_llm.ClusterProposals`).
* **voters** (`Voter.vote`) vote A / B / not relevant with every judge they handle on every DISTINCT
  pair (prompt + both responses): votes do not depend on the annotator, so one vote pass on a
  multi-annotator file serves every annotator's constitution. Votes carry a validity mask.
* the **analysis** (not pluggable: one definition of the statistics) splits whole distinct pairs into
  train / test, and per annotator computes stats, selects a constitution on train only and evaluates
  the vote-based reconstructions on test (`reconstruct.evaluate`).
* **reconstructors** (`Reconstructor.reconstruct`) add other reconstructions per annotator, e.g. an
  LLM annotator prompted with the constitution (`stages_llm.LLMAnnotator`).

The offline audit is this pipeline with the offline stages (`Pipeline.offline`); ICAI is the same
pipeline with LLM stages (`Pipeline.icai`). Progress (weighted by estimated work, with a time-left
estimate), cancellation, caching and resume live in `RunContext`, not in the engines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from icai_core.config import RunConfig
from icai_core.constitution import build_constitution
from icai_core.jobs import CancelToken, Progress, check, noop_progress
from icai_core.judge import Judge
from icai_core.reconstruct import content_groups, evaluate, split_train_test
from icai_core.result import ALL, Analysis, RunResult
from icai_core.stats import encode_preferred, principle_stats

# ------------------------------------------------------------------------------------ progress
_INSTANT_S = 0.5  # a stage done this soon after it began did not do its planned work (`WorkProgress._rebase`)

class WorkProgress:
    """Overall progress of a run, weighted by each stage's estimated work (seconds), with time left.

    Each stage gets `stage(name, weight)`, a `progress(done, total, message)` callback for its own
    units (texts, pairs, calls); the run's callback receives permille of the whole run and a message
    that says what is being done and about how long is left.
    """

    def __init__(self, progress: Progress | None, weights: dict[str, float]):
        self._out = progress or noop_progress
        total = sum(max(w, 0.0) for w in weights.values()) or 1.0
        self._weights = {k: max(w, 0.0) / total for k, w in weights.items()}
        self._done: dict[str, float] = dict.fromkeys(weights, 0.0)
        self._t0 = time.perf_counter()
        # The time left is extrapolated from the work since (_t_ref, _f_ref): the start, or the last
        # stage that was done as soon as it began (`_rebase`).
        self._t_ref, self._f_ref = self._t0, 0.0

    @property
    def fraction(self) -> float:
        return float(sum(self._weights[k] * f for k, f in self._done.items()))

    def stage(self, name: str) -> Progress:
        if name not in self._weights:  # an unplanned stage: give it a small share
            self._weights[name] = 0.0
            self._done[name] = 0.0

        started = time.perf_counter()

        def progress(done: int, total: int, message: str = "") -> None:
            before = self._done[name]
            self._done[name] = min(max(done / total, 0.0), 1.0) if total else 1.0
            if before == 0.0 and self._done[name] >= 1.0 and time.perf_counter() - started < _INSTANT_S:
                self._rebase()
            self.report(message)

        return progress

    def _rebase(self) -> None:
        """A stage done as soon as it began (votes read from the cache, nothing to do) took none of the
        time its planned share stands for, so it says nothing about the rate of the work left: the
        estimate extrapolates from the work after it (a 100k-pair audit with cached votes was told
        "about 4 s left" with 47 s to go)."""
        self._t_ref, self._f_ref = time.perf_counter(), self.fraction

    def finish_stage(self, name: str) -> None:
        self._done[name] = 1.0

    def complete(self, message: str) -> None:
        """Every stage done (skipped stages included): 1000 of 1000, no time-left suffix."""
        self._done = dict.fromkeys(self._done, 1.0)
        self._out(1000, 1000, message)

    def report(self, message: str = "") -> None:
        frac = self.fraction
        elapsed = time.perf_counter() - self._t_ref
        if frac - self._f_ref > 0.02 and frac < 1 and elapsed > 2:
            left = elapsed / (frac - self._f_ref) * (1 - frac)
            message = f"{message} — about {_duration(left)} left" if message else f"about {_duration(left)} left"
        self._out(int(round(frac * 1000)), 1000, message)


def _duration(seconds: float) -> str:
    """A time left the user can trust to the precision it shows: seconds below 90 s, minutes with one
    decimal below 10 min ("about 1.5 min left": 6 s steps, at most 5% rounding error; "2 min" used to
    cover 90-149 s, up to 33%), whole minutes below an hour (at most 5%), then hours with one decimal.
    One number and one unit, so `ui.jobs` (which withdraws a stale estimate) and the benchmarks that read
    "about N unit left" parse every form."""
    if seconds < 89.5:
        return f"{max(1, round(seconds))} s"
    if seconds < 595:
        return f"{seconds / 60:.1f} min"
    if seconds < 3570:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------------ context
@dataclass
class RunContext:
    """What every stage may use: progress, cancel, caches, the run store (resume), LLM client, embedder."""

    progress: Progress | None = None
    cancel: CancelToken | None = None
    cache_dir: Path | None = None  # votes / embeddings caches; None = no disk cache
    store: Any = None  # icai_core.store.RunStore for per-item step results (resume)
    run_id: str | None = None
    client: Any = None  # icai_core.llm.LLMClient (LLM stages)
    embedder: Any = None  # principle embedder for clustering (None = bundled MiniLM)
    work: WorkProgress | None = None

    def check(self) -> None:
        check(self.cancel)

    def stage_progress(self, name: str) -> Progress:
        return self.work.stage(name) if self.work is not None else (self.progress or noop_progress)


# ------------------------------------------------------------------------------------ the data
@dataclass
class PipelineData:
    """The pair table, its distinct pairs ("items") and the split, shared by every stage."""

    pairs: pd.DataFrame
    item_of_row: np.ndarray  # row -> item position
    item_rows: np.ndarray  # item -> first row judging it
    train_rows: np.ndarray
    test_rows: np.ndarray
    dataset_hash: str
    proposals: pd.DataFrame | None = None
    clusters: Any = None
    stage_counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # stage outputs pages may show (e.g. the discovery table)

    @property
    def items(self) -> pd.DataFrame:
        """One row per distinct pair (the first row that judges it), fresh RangeIndex."""
        return self.pairs.iloc[self.item_rows].reset_index(drop=True)

    @property
    def n_items(self) -> int:
        return len(self.item_rows)

    @classmethod
    def build(cls, pairs: pd.DataFrame, config: RunConfig, dataset_hash: str) -> PipelineData:
        groups = content_groups(pairs)
        codes, _ = pd.factorize(pd.Series(groups))
        codes = np.asarray(codes, dtype=np.int64)
        _, first = np.unique(codes, return_index=True)
        # Whole distinct pairs go to one side, so no annotator is trained and tested on the same pair.
        train, test = split_train_test(pairs["preferred"], test_size=config.split.test_size,
                                       seed=config.split.seed, groups=groups)
        return cls(pairs=pairs, item_of_row=codes, item_rows=np.asarray(first, dtype=np.int64),
                   train_rows=np.asarray(train, dtype=np.int64), test_rows=np.asarray(test, dtype=np.int64),
                   dataset_hash=dataset_hash)


# ------------------------------------------------------------------------------------ stage protocols
class Proposer(Protocol):
    name: str

    def propose(self, ctx: RunContext, data: PipelineData) -> list[Judge]: ...


class Consolidator(Protocol):
    name: str

    def consolidate(self, ctx: RunContext, data: PipelineData, candidates: list[Judge]) -> list[Judge]: ...


class Voter(Protocol):
    name: str

    def handles(self, judge: Judge) -> bool: ...

    def vote(self, ctx: RunContext, data: PipelineData, judges: list[Judge]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """Votes on the distinct pairs (`data.items`): int8 frame, one column per judge, and a bool
        validity frame of the same shape (None when every vote is valid by construction)."""
        ...


class Reconstructor(Protocol):
    name: str

    def reconstruct(self, ctx: RunContext, data: PipelineData, result: RunResult) -> None:
        """Add this reconstruction to each analysis of `result` (e.g. `analysis.llm_reconstruction`)."""
        ...


class KeepAll:
    """The explicit "skip" consolidator: every candidate is tested as proposed."""

    name = "keep_all"

    def consolidate(self, ctx: RunContext, data: PipelineData, candidates: list[Judge]) -> list[Judge]:
        return list(candidates)


# ------------------------------------------------------------------------------------ analysis
def annotator_rows(pairs: pd.DataFrame, view: str) -> list[tuple[str, np.ndarray, bool]]:
    """(name, row positions, pooled) of each analysis: one per annotator, and/or all rows pooled."""
    out: list[tuple[str, np.ndarray, bool]] = []
    n = len(pairs)
    names: list[str] = []
    if "annotator" in pairs.columns:
        ann = pairs["annotator"].astype(str)
        names = list(dict.fromkeys(ann))
    if len(names) <= 1:
        return [(names[0] if names else ALL, np.arange(n), False)]
    if view in ("each", "both"):
        ann_arr = ann.to_numpy()
        out += [(name, np.flatnonzero(ann_arr == name), False) for name in names]
    if view in ("pooled", "both"):
        out.append((ALL, np.arange(n), True))
    return out


def analyse(
    data: PipelineData,
    votes: pd.DataFrame,
    valid: pd.DataFrame | None,
    judges: Sequence[Judge],
    config: RunConfig,
    check: Callable[[], None] | None = None,
) -> dict[str, Analysis]:
    """Stats, constitution (train only) and vote-based reconstruction (test) for every annotator.
    `check` (the run's cancel check) is called before each annotator."""
    pairs = data.pairs
    is_train = np.zeros(len(pairs), dtype=bool)
    is_train[data.train_rows] = True
    analyses: dict[str, Analysis] = {}
    sel = config.constitution_settings()
    for name, rows, pooled in annotator_rows(pairs, config.annotators):
        if check is not None:
            check()
        v = votes.iloc[rows].reset_index(drop=True)
        ok = valid.iloc[rows].reset_index(drop=True) if valid is not None else None
        y = encode_preferred(pairs["preferred"].to_numpy()[rows])
        tr = np.flatnonzero(is_train[rows])
        te = np.flatnonzero(~is_train[rows])
        stats = principle_stats(v, y, judges, alpha=config.alpha, valid=ok)
        train_stats = principle_stats(v.iloc[tr], y[tr], judges, alpha=config.alpha,
                                      valid=ok.iloc[tr] if ok is not None else None)
        constitution = build_constitution(train_stats, principles=list(judges), **sel)
        constitution.settings.update({"test_size": config.split.test_size, "seed": config.split.seed,
                                      "selected_on": "train"})
        recon = evaluate(v, y, constitution, train_index=tr, test_index=te, seed=config.split.seed,
                         alpha=config.alpha)
        n_pairs = int(len(np.unique(data.item_of_row[rows])))
        analyses[name] = Analysis(name=name, rows=rows, train_index=tr, test_index=te, stats=stats,
                                  train_stats=train_stats, constitution=constitution,
                                  reconstruction=recon, n_pairs=n_pairs, pooled=pooled)
    return analyses


# ------------------------------------------------------------------------------------ the pipeline
@dataclass
class Pipeline:
    """Stages of one run; see the module docstring. Build one with `Pipeline.offline` / `Pipeline.icai`."""

    config: RunConfig
    proposers: list = field(default_factory=list)
    consolidator: Any = field(default_factory=KeepAll)
    voters: list = field(default_factory=list)
    reconstructors: list = field(default_factory=list)
    kind: str = "offline_audit"

    @classmethod
    def offline(cls, config: RunConfig | None = None) -> Pipeline:
        """The offline audit: the measurable library, voted by the measurable judges."""
        from icai_core.stages_offline import DataDiscovery, MeasurableLibrary, MeasurableVoter

        config = config or RunConfig()
        proposers: list = [MeasurableLibrary(config.measurable)]
        voters: list = [MeasurableVoter(config.measurable)]
        if config.discovery.discover:
            found = DataDiscovery(config.discovery, seed=config.split.seed)
            proposers.append(found)
            voters.append(found)
        return cls(config=config, proposers=proposers, voters=voters, reconstructors=evidence_stages(config),
                   kind="offline_audit")

    @classmethod
    def icai(cls, config: RunConfig | None = None) -> Pipeline:
        """ICAI: LLM proposals clustered into candidates, LLM votes (+ the measurable library, free),
        LLM annotator reconstruction with and without the constitution."""
        from icai_core.stages_llm import ClusterProposals, LLMAnnotator, LLMProposer, LLMVoter
        from icai_core.stages_offline import MeasurableLibrary, MeasurableVoter

        config = config or RunConfig(engine="llm")
        seed = config.split.seed
        proposers: list = [LLMProposer(config.llm, seed=seed)]
        voters: list = [LLMVoter(config.llm)]
        if config.measurable.include_measurable:
            proposers.append(MeasurableLibrary(config.measurable))
            voters.append(MeasurableVoter(config.measurable))
        if config.discovery.discover:  # directions found in the data, named by the same LLM (icai_core.naming)
            from icai_core.stages_offline import DataDiscovery

            found = DataDiscovery(config.discovery, seed=seed)
            proposers.append(found)
            voters.append(found)
        return cls(config=config, proposers=proposers, consolidator=ClusterProposals(config.llm),
                   voters=voters, reconstructors=[LLMAnnotator(config.llm, seed=seed), *evidence_stages(config)],
                   kind="icai")

    # -- work plan ---------------------------------------------------------------------------
    def _weights(self, data: PipelineData, ctx: RunContext) -> dict[str, float]:
        stages = list(self.proposers) + [self.consolidator] + list(self.voters) + list(self.reconstructors)
        weights = {}
        for s in stages:
            est = getattr(s, "estimated_seconds", None)
            weights[s.name] = float(est(ctx, data)) if est is not None else 0.1
        weights["analysis"] = 0.05 + 1e-5 * len(data.pairs)  # 0.2 s for 20,000 rows (measured)
        return weights

    # -- run -----------------------------------------------------------------------------------
    def run(
        self,
        pairs: pd.DataFrame,
        ctx: RunContext | None = None,
        *,
        dataset_name: str = "data",
        dataset_hash: str | None = None,
        stage_callback: Callable[[str], None] | None = None,
    ) -> RunResult:
        from icai_core import embed

        # Which embedder produced the vectors this run used, for its provenance: recorded by the
        # embedders themselves (a run without vectors records nothing and never resolves a backend).
        with embed.recording_usage() as embeddings_used:
            return self._run(pairs, ctx, dataset_name, dataset_hash, stage_callback, embeddings_used)

    def _run(self, pairs, ctx, dataset_name, dataset_hash, stage_callback, embeddings_used) -> RunResult:
        from icai_core.audit import dataset_hash as _hash

        ctx = ctx or RunContext()
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        data = PipelineData.build(pairs, self.config, dataset_hash or _hash(pairs))
        ctx.work = WorkProgress(ctx.progress, self._weights(data, ctx))
        stage = stage_callback or (lambda s: None)

        def timed(name: str, fn, *args):
            t = time.perf_counter()
            out = fn(*args)
            timings[f"{name}_s"] = time.perf_counter() - t
            ctx.work.finish_stage(name)
            ctx.check()
            return out

        # 1. proposers -> candidates (those needing consolidation are merged by the consolidator)
        stage("propose")
        raw, direct = [], []
        for p in self.proposers:
            found = timed(p.name, p.propose, ctx, data)
            (raw if getattr(p, "consolidate", False) else direct).extend(found)
        stage("cluster")
        judges = timed(self.consolidator.name, self.consolidator.consolidate, ctx, data, raw) if raw else []
        judges += direct

        # 2. voters: every judge to the first voter that handles it, on distinct pairs only
        stage("vote")
        item_votes, item_valid = [], []
        for v in self.voters:
            mine = [j for j in judges if v.handles(j) and not any(j.key in f.columns for f in item_votes)]
            if not mine:
                continue
            votes_v, valid_v = timed(v.name, v.vote, ctx, data, mine)
            item_votes.append(votes_v)
            item_valid.append(valid_v if valid_v is not None else
                              pd.DataFrame(True, index=votes_v.index, columns=votes_v.columns))
        timings["votes_s"] = sum(timings.get(f"{v.name}_s", 0.0) for v in self.voters)
        unvoted = [j.key for j in judges if not any(j.key in f.columns for f in item_votes)]
        if unvoted:
            raise RuntimeError(f"no voter handles the judges {unvoted}: add a voter for their kind")
        keys = [j.key for j in judges]
        if item_votes:
            iv = pd.concat(item_votes, axis=1)[keys]
            ivalid = pd.concat(item_valid, axis=1)[keys]
        else:
            iv = pd.DataFrame(index=range(data.n_items), dtype=np.int8)
            ivalid = pd.DataFrame(index=range(data.n_items), dtype=bool)
        votes = iv.iloc[data.item_of_row].reset_index(drop=True).astype(np.int8)
        votes.index = pairs.index
        valid = None
        if not bool(ivalid.to_numpy().all()):
            valid = ivalid.iloc[data.item_of_row].reset_index(drop=True).astype(bool)
            valid.index = pairs.index

        # 3. analysis per annotator
        stage("analysis")
        analyses = timed("analysis", analyse, data, votes, valid, judges, self.config, ctx.check)
        timings["stats_s"] = timings["analysis_s"]
        result = RunResult(
            kind=self.kind, dataset_name=dataset_name, dataset_hash=data.dataset_hash, config=self.config,
            all_pairs=pairs, judges=list(judges), all_votes=votes, all_valid=valid, analyses=analyses,
            annotator=next(iter(analyses)), proposals=data.proposals, clusters=data.clusters,
            stage_counts=data.stage_counts, notes=data.notes, run_id=ctx.run_id, extras=data.extras,
        )

        # 4. reconstructors (LLM annotator, ...)
        stage("annotate")
        for r in self.reconstructors:
            timed(r.name, r.reconstruct, ctx, data, result)
        if ctx.client is not None:
            result.usage = ctx.client.usage.to_dict()
        result.provenance = provenance(self.config, data.dataset_hash, ctx, embeddings_used)
        timings["total_s"] = time.perf_counter() - t0
        result.timings = timings
        ctx.work.complete("Audit finished" if self.kind == "offline_audit" else "Run finished")
        return result


def evidence_stages(config: RunConfig) -> list:
    """The statistics reviewers ask for, as a reconstructor (skipped when `config.evidence` is off)."""
    if not config.evidence.evidence:
        return []
    from icai_core.stages_offline import Evidence

    return [Evidence(config.evidence, config.constitution_settings(), seed=config.split.seed,
                     alpha=config.selection.alpha)]


def provenance(config: RunConfig, data_hash: str, ctx: RunContext, embeddings: list[dict] | None = None) -> dict:
    """Engine, model, config, data hash, version and time of a run (no secrets: the key never enters).

    `embeddings`: what produced the run's vectors (`embed.recording_usage`): model, backend and
    precision, since bf16 vectors move ~0.2% of the embedding votes. Empty when the run used none."""
    import datetime as _dt

    from icai_core import __version__

    prov = {"engine": config.engine, "config": config.to_dict(), "dataset_hash": data_hash,
            "principia_version": __version__, "embeddings": list(embeddings or []),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if ctx.client is not None:
        cfg = ctx.client.config
        prov["model"] = cfg.model
        prov["base_url"] = cfg.redacted().get("base_url")
    return prov
