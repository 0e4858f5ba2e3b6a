"""Inverse Constitutional AI on an OpenAI-compatible endpoint (arXiv 2406.06560): the pipeline with LLM stages.

`run_icai` is `Pipeline.icai(config).run(...)`: propose principles per training pair -> embed and
cluster them (UMAP, HDBSCAN), one candidate per cluster -> every candidate votes on every distinct
pair (batched calls; plus the free measurable library) -> per annotator: stats and a constitution
selected on the training split (the same analysis as the offline engine) -> reconstruction of
held-out preferences by an LLM annotator with the constitution, without one and with a random one.
The stages live in `icai_core.stages_llm`; this module keeps the engine's entry points.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pandas as pd

from icai_core import prompts
from icai_core.config import RunConfig
from icai_core.jobs import CancelToken, Progress
from icai_core.result import RunResult
from icai_core.stages_llm import (
    LLMAnnotator,
    annotate_requests,
    merge_requests,
    proposal_requests,
    proposal_rows,
    vote_requests,
)

STAGES = ("propose", "cluster", "vote", "annotate")
ICAIResult = RunResult


def ICAIConfig(**flat) -> RunConfig:  # noqa: N802 - kept as the familiar constructor name
    """The LLM engine's `RunConfig` from flat settings (`max_propose_pairs=60, seed=1, ...`)."""
    return RunConfig.from_flat(engine="llm", **flat)


def config_dict(config: RunConfig) -> dict:
    return config.to_dict()


def run_icai(
    pairs: pd.DataFrame,
    client,
    config: RunConfig | None = None,
    *,
    store=None,
    run_id: str | None = None,
    embedder=None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    stage_callback: Callable[[str], None] | None = None,
    cache_dir=None,
    dataset_name: str = "data",
) -> RunResult:
    """Run ICAI end to end; `store` + `run_id` make it resumable (stored answers are not asked again)."""
    from icai_core.pipeline import Pipeline, RunContext

    config = config or RunConfig(engine="llm")
    if config.engine != "llm":
        config = config.replace(engine="llm")
    ctx = RunContext(progress=progress, cancel=cancel, store=store, run_id=run_id, client=client,
                     embedder=embedder, cache_dir=cache_dir)
    return Pipeline.icai(config).run(pairs, ctx, dataset_name=dataset_name, stage_callback=stage_callback)


def estimate_run(pairs: pd.DataFrame, config: RunConfig, client, n_candidates: int | None = None) -> dict:
    """Calls, tokens and dollars per stage (a dict of llm.CostEstimate), computed before a run starts.

    Proposal requests are built exactly as the run builds them. Vote requests depend on how many
    clusters the proposals form: before a run the estimate assumes `max_candidates` candidates (an
    upper bound); pass `n_candidates` once clustering is done and the estimate equals the calls the
    run makes. Annotation assumes every annotator's constitution is non-empty (an upper bound: an
    empty one skips its "with constitution" conditions). Cache hits the client can know about are
    counted in `cached_calls`.
    """
    from icai_core.audit import dataset_hash
    from icai_core.pipeline import PipelineData, annotator_rows

    cfg = config.llm
    data = PipelineData.build(pairs, config, dataset_hash(pairs))
    n = cfg.max_candidates if n_candidates is None else min(n_candidates, cfg.max_candidates)
    placeholder = [f"Select the response that has property {i}" for i in range(n)]
    prop = proposal_requests(pairs, proposal_rows(pairs, data.train_rows, cfg, config.split.seed), cfg)
    stages = {
        "propose": (prop, prompts.proposal_expected_tokens(cfg.n_principles_per_pair)),
        "vote": (vote_requests(data.items, placeholder, cfg),
                 prompts.vote_expected_tokens(cfg.principle_batch_size)),
    }
    annotator = LLMAnnotator(cfg, seed=config.split.seed)
    is_train = np.zeros(len(pairs), dtype=bool)
    is_train[data.train_rows] = True
    ann, shared = [], set()
    per_annotator = 1 + int(cfg.random_constitution) + int(cfg.flipped_check)
    for name, rows, _pooled in annotator_rows(pairs, config.annotators):
        split = SimpleNamespace(rows=rows, test_index=np.flatnonzero(~is_train[rows]))  # as in its Analysis
        _, item_ids = annotator.test_items(data, split)
        item_ids = np.unique(item_ids)
        for c in range(per_annotator):
            ann += annotate_requests(data.items, item_ids, f"1. {name} condition {c}", cfg, tag=f"estimate{c}")
        shared |= set(int(i) for i in item_ids)
    ann += annotate_requests(data.items, np.array(sorted(shared)), None, cfg, tag="estimate_none")
    stages["annotate"] = (ann, prompts.ANNOTATE.expected_completion_tokens)
    if cfg.merge_with_llm:  # at most one merge call per candidate cluster
        stages["merge"] = (merge_requests({c: placeholder[c : c + 2] for c in range(n)}),
                           prompts.MERGE_CLUSTER.expected_completion_tokens)
    return {name: client.estimate_cost(reqs, expected_completion_tokens=completion)
            for name, (reqs, completion) in stages.items()}
