"""The one result type of a run, for both engines, and how it is saved to and loaded from the run store.

A `RunResult` carries the whole run: the pair table, the judges and their votes (with a validity mask
so an invalid LLM answer stays distinguishable from "not relevant"), one `Analysis` per annotator
(stats, constitution, reconstruction on the held-out split), proposals and clusters of the LLM
engine, cost, per-stage answer counts and provenance (engine, model, config, data hash).

Pages show one annotator at a time: a `RunResult` *presents* the analysis named by `annotator`, and
its `pairs`, `votes`, `stats`, `constitution`, `reconstruction` ... are that annotator's; `view(name)`
gives the same run presenting another annotator (no recomputation). `all_pairs` / `all_votes` are the
whole file (Compare uses them).

Saving: DataFrames are stored as Parquet, the rest as one pickle (our own local store, see
`icai_core.store`), under a format version. A run saved in another format version is not guessed
at: loading it raises a KeyError whose message says to run the audit again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icai_core.config import RunConfig
from icai_core.constitution import Constitution
from icai_core.judge import Judge
from icai_core.reconstruct import ReconstructionResult

FORMAT_VERSION = 1
ALL = "all"  # name of the analysis of every row (a file without annotators, or the pooled view)


@dataclass
class Analysis:
    """One annotator's audit (or the pooled one): what the pages show for that annotator."""

    name: str
    rows: np.ndarray  # positions of this annotator's rows in RunResult.all_pairs
    train_index: np.ndarray  # positions within `rows`
    test_index: np.ndarray
    stats: pd.DataFrame
    train_stats: pd.DataFrame
    constitution: Constitution
    reconstruction: ReconstructionResult
    n_pairs: int  # distinct pairs (prompt + both responses) among the rows
    pooled: bool = False
    llm_reconstruction: pd.DataFrame | None = None  # LLM annotator conditions (LLM engine only)
    notes: list[str] = field(default_factory=list)
    evidence: Any = None  # icai_core.evidence.AnnotatorEvidence (controlled effects, k-fold verdict, ...)


@dataclass
class RunResult:
    kind: str  # "offline_audit" | "icai"
    dataset_name: str
    dataset_hash: str
    config: RunConfig
    all_pairs: pd.DataFrame
    judges: list[Judge]
    all_votes: pd.DataFrame  # int8, one column per judge key, rows like all_pairs
    all_valid: pd.DataFrame | None  # bool, same shape; None = every vote is a valid answer
    analyses: dict[str, Analysis]
    annotator: str  # the analysis this object presents
    proposals: pd.DataFrame | None = None
    clusters: Any = None  # icai_core.cluster.ClusterResult of the LLM proposals
    usage: dict = field(default_factory=dict)
    stage_counts: dict = field(default_factory=dict)  # stage -> {valid, recovered, invalid}
    provenance: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # e.g. "discovery": the discovered directions' table
    agreement: list = field(default_factory=list)  # agreement between annotators (reportcard)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- which annotator -------------------------------------------------------------------
    @property
    def analysis(self) -> Analysis:
        return self.analyses[self.annotator]

    @property
    def annotator_names(self) -> list[str]:
        return list(self.analyses)

    def view(self, annotator: str) -> RunResult:
        """The same run presenting another annotator's analysis."""
        if annotator not in self.analyses:
            raise KeyError(f"no analysis named {annotator!r}; have {list(self.analyses)}")
        if annotator == self.annotator:
            return self
        return dataclasses.replace(self, annotator=annotator, _cache={})

    # -- the presented annotator's data ----------------------------------------------------------
    def _subset(self, name: str, frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return None
        rows = self.analysis.rows
        if len(rows) == len(frame) and np.array_equal(rows, np.arange(len(frame))):
            return frame
        key = (name, self.annotator)
        if key not in self._cache:
            self._cache[key] = frame.iloc[rows].reset_index(drop=True)
        return self._cache[key]

    @property
    def pairs(self) -> pd.DataFrame:
        return self._subset("pairs", self.all_pairs)

    @property
    def votes(self) -> pd.DataFrame:
        return self._subset("votes", self.all_votes)

    @property
    def valid(self) -> pd.DataFrame | None:
        return self._subset("valid", self.all_valid)

    @property
    def stats(self) -> pd.DataFrame:
        return self.analysis.stats

    @property
    def train_stats(self) -> pd.DataFrame:
        return self.analysis.train_stats

    @property
    def constitution(self) -> Constitution:
        return self.analysis.constitution

    @property
    def reconstruction(self) -> ReconstructionResult:
        return self.analysis.reconstruction

    @property
    def llm_reconstruction(self) -> pd.DataFrame | None:
        return self.analysis.llm_reconstruction

    @property
    def train_index(self) -> np.ndarray:
        return self.analysis.train_index

    @property
    def test_index(self) -> np.ndarray:
        return self.analysis.test_index

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def principles(self) -> pd.DataFrame:
        """One row per judge (key, text, inverse_text, family, margin, kind) in vote-column order."""
        return pd.DataFrame(
            {
                "key": [j.key for j in self.judges],
                "text": [j.text for j in self.judges],
                "inverse_text": [j.inverse_text for j in self.judges],
                "family": [j.family for j in self.judges],
                "margin": [j.margin for j in self.judges],
                "kind": [j.kind for j in self.judges],
            }
        )

    def principle_objects(self) -> list[Judge]:
        """The judges behind the vote columns, in column order."""
        return list(self.judges)

    def judge(self, key: str) -> Judge:
        for j in self.judges:
            if j.key == key:
                return j
        raise KeyError(key)

    def invalid_rate(self) -> float | None:
        """Share of invalid answers among all votes (None when every vote is valid by construction)."""
        if self.all_valid is None or self.all_valid.size == 0:
            return None
        return float(1.0 - self.all_valid.to_numpy().mean())

    # -- cheap re-selection (sliders) --------------------------------------------------------------
    def rebuild(self, **settings) -> tuple[Constitution, ReconstructionResult]:
        """Re-select this annotator's constitution with new thresholds (train split only) and
        re-evaluate it on the held-out split. Reuses the stored votes: sliders respond at once."""
        from icai_core.constitution import build_constitution
        from icai_core.reconstruct import evaluate

        merged = {**self.config.constitution_settings(), **settings}
        constitution = build_constitution(self.train_stats, principles=self.judges, **merged)
        recon = evaluate(
            self.votes,
            self.pairs["preferred"],
            train_index=self.train_index,
            test_index=self.test_index,
            constitution=constitution,
            seed=self.config.seed,
        )
        return constitution, recon

    def summary(self) -> str:
        from icai_core.audit import format_summary

        return format_summary(self)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


# ------------------------------------------------------------------------------------ persistence
_FRAMES = ("all_pairs", "all_votes", "all_valid", "proposals")


def save_result(store, run_id: str, result: RunResult) -> None:
    """Write `result` into the run store under `run_id` (frames as Parquet, the rest pickled)."""
    for name in _FRAMES:
        frame = getattr(result, name)
        if frame is not None:
            store.save_result(run_id, f"frame:{name}", frame)
    rest = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
            if f.name not in _FRAMES and f.name != "_cache"}
    rest["run_id"] = run_id
    store.save_result(run_id, "result", {"format": FORMAT_VERSION, "fields": rest})
    # Small, readable summaries for `icai runs` and Home, independent of the pickle.
    store.save_result(run_id, "constitution", result.constitution.to_dict())


def load_result(store, run_id: str) -> RunResult:
    """Rebuild the `RunResult` saved under `run_id` (raises KeyError when the run saved none)."""
    names = set(store.list_results(run_id))
    if "result" not in names:
        raise KeyError(f"run {run_id} has no saved result (it did not finish, or it predates saved results)")
    frames = {n: store.load_result(run_id, f"frame:{n}") if f"frame:{n}" in names else None for n in _FRAMES}
    try:
        saved = store.load_result(run_id, "result")
    except Exception as exc:  # a class changed since: re-analyse from the stored votes
        saved = {"format": None, "error": f"{type(exc).__name__}: {exc}"}
    if saved.get("format") == FORMAT_VERSION:
        fields = dict(saved["fields"])
        result = RunResult(**frames, **fields)
        result.run_id = run_id
        return result
    raise KeyError(
        f"run {run_id} was saved in an older format ({saved.get('error') or saved.get('format')}); "
        "run the audit again to reopen it"
    )
