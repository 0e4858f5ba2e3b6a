"""LLM stages of the pipeline (ICAI, arXiv 2406.06560): propose, cluster, vote, annotate.

Every call goes through `icai_core.llm.LLMClient` (retries, concurrency, response cache, structured
outputs, cost); every answer is read by `icai_core.answers` and counted as valid / recovered /
invalid per stage (`data.stage_counts`), and a stage whose answers are mostly invalid stops the run
with a message that says what the model returned (`answers.check_stage`). Each stage stores its
per-request answers in the run store (`ChunkedRunner`), so an interrupted run resumes where it
stopped. Requests are pure functions of the data and the config (`*_requests`), which is what the
estimate counts.

Votes are asked once per DISTINCT pair (prompt + both responses), whatever the number of annotators.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pandas as pd

from icai_core import answers, prompts
from icai_core.config import LLMStagesConfig
from icai_core.jobs import check
from icai_core.judge import Judge, as_principle_text, inverse_of
from icai_core.llm import ChatRequest, raise_if_fatal
from icai_core.stats import wilson_interval

_SECONDS_PER_CALL = 1.0  # rough: progress weights only (calls run concurrently; cached calls are instant)


def _request(**kw) -> ChatRequest:
    """A ChatRequest; `json_schema` is dropped on a client layer that does not know it yet."""
    names = {f.name for f in dataclasses.fields(ChatRequest)}
    return ChatRequest(**{k: v for k, v in kw.items() if k in names})


def _pair_fields(row, max_chars: int, swap: bool = False) -> dict:
    a, b = (row.text_b, row.text_a) if swap else (row.text_a, row.text_b)
    return {
        "prompt": prompts.truncate(row.prompt, max_chars),
        "text_a": prompts.truncate(a, max_chars),
        "text_b": prompts.truncate(b, max_chars),
    }


def _counts(data, stage: str) -> answers.StageCounts:
    return data.stage_counts.setdefault(stage, answers.StageCounts())


def _finish_stage(data, stage: str) -> None:
    """Warn (a note) or stop (StageFailed) on a stage's invalid rate; counts become plain dicts later."""
    msg = answers.check_stage(stage, _counts(data, stage))
    if msg:
        data.notes.append(msg)


# ---------------------------------------------------------------- request builders (pure)
def proposal_rows(pairs: pd.DataFrame, train_rows: np.ndarray, config: LLMStagesConfig, seed: int) -> np.ndarray:
    """Labelled training rows sent to the proposer: a seeded sample of at most `max_propose_pairs`."""
    labelled = train_rows[pairs["preferred"].to_numpy()[train_rows] != "tie"]
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(labelled)[: config.max_propose_pairs])


def proposal_requests(pairs: pd.DataFrame, rows: np.ndarray, config: LLMStagesConfig) -> list[ChatRequest]:
    reqs = []
    n = config.n_principles_per_pair
    for i in rows:
        row = pairs.iloc[int(i)]
        if row.preferred not in ("a", "b"):
            continue
        msgs = prompts.PROPOSE.messages(**_pair_fields(row, config.max_text_chars),
                                        preferred=row.preferred.upper(), n=n)
        reqs.append(_request(messages=msgs, max_tokens=prompts.proposal_max_tokens(n), json_mode=True,
                             json_schema=prompts.proposal_schema(n), tag=f"propose:{int(i)}"))
    return reqs


def vote_requests(items: pd.DataFrame, texts: list[str], config: LLMStagesConfig) -> list[ChatRequest]:
    """One request per distinct pair and batch of principles."""
    reqs = []
    for start in range(0, len(texts), config.principle_batch_size):
        batch = texts[start : start + config.principle_batch_size]
        for i, row in enumerate(items.itertuples(index=False)):
            msgs = prompts.vote_messages(**_pair_fields(row, config.max_text_chars), principles=batch)
            reqs.append(_request(messages=msgs, max_tokens=prompts.vote_max_tokens(len(batch)), json_mode=True,
                                 json_schema=prompts.vote_schema(len(batch)), tag=f"vote:{start}:{i}"))
    return reqs


def annotate_requests(items: pd.DataFrame, item_ids: np.ndarray, constitution_text: str | None,
                      config: LLMStagesConfig, swap: bool = False, tag: str = "annotate") -> list[ChatRequest]:
    """One request per distinct pair: the LLM annotator's choice does not depend on whose label it is
    scored against, so annotators sharing a pair share the call."""
    if constitution_text:
        guidance = prompts.ANNOTATE_GUIDANCE_CONSTITUTION.format(constitution=constitution_text)
    else:
        guidance = prompts.ANNOTATE_GUIDANCE_NONE
    system = prompts.ANNOTATE.system.format(guidance=guidance)
    reqs = []
    for i in item_ids:
        row = items.iloc[int(i)]
        user = prompts.ANNOTATE.user.format(**_pair_fields(row, config.max_text_chars, swap=swap))
        reqs.append(_request(messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                             max_tokens=prompts.annotate_max_tokens(), json_mode=True,
                             json_schema=prompts.annotation_schema(), tag=f"{tag}:{int(i)}"))
    return reqs


def merge_requests(members_by_cluster: dict[int, list[str]]) -> list[ChatRequest]:
    return [
        _request(messages=prompts.MERGE_CLUSTER.messages(principles=prompts.numbered(members[:20])),
                 max_tokens=prompts.merge_max_tokens(), json_mode=True, json_schema=prompts.merge_schema(),
                 tag=f"merge:{c}")
        for c, members in members_by_cluster.items()
    ]


# ---------------------------------------------------------------- resumable execution
class ChunkedRunner:
    """Runs requests in stored chunks so a killed run resumes where it stopped.

    Stored per request: the answer text and the finish reason. A failed request stores nothing (it is
    asked again on resume); a truncated answer is stored with its finish reason, so it is read as
    truncated on resume too.
    """

    def __init__(self, ctx, chunk: int, stage_name: str):
        self.ctx, self.chunk, self.stage_name = ctx, chunk, stage_name

    def run(self, step: str, requests: list, label: str) -> dict[str, tuple[str | None, str | None]]:
        """{request tag: (answer text or None, finish_reason)}; stored answers are not requested again."""
        ctx = self.ctx
        store, run_id = ctx.store, ctx.run_id
        done: dict[str, tuple[str | None, str | None]] = {}
        if store is not None and run_id is not None:
            for tag, value in store.get_many(run_id, step).items():
                done[tag] = (value.get("text"), value.get("finish_reason")) if isinstance(value, dict) else (value, None)
        todo = [r for r in requests if r.tag not in done]
        total = len(requests)
        progress = ctx.stage_progress(self.stage_name)
        progress(total - len(todo), total, f"{label}: {total - len(todo):,} of {total:,} calls done")
        for start in range(0, len(todo), self.chunk):
            check(ctx.cancel)
            chunk = todo[start : start + self.chunk]
            base = total - len(todo) + start

            def _p(d, _t, _m, base=base):
                progress(base + d, total, f"{label}: {base + d:,} of {total:,} calls")

            results = ctx.client.complete_many(chunk, progress=_p, cancel=ctx.cancel)
            raise_if_fatal(results)  # wrong key / model / URL, or every call failed: stop with why
            items = {}
            for req, res in zip(chunk, results, strict=True):
                if res is None or res.error is not None:
                    continue
                finish = getattr(res, "finish_reason", None)
                done[req.tag] = (res.text, finish)
                items[req.tag] = {"text": res.text, "finish_reason": finish}
            if store is not None and run_id is not None:
                if items:
                    store.put_many(run_id, step, items)
                store.update(run_id, done=len(done), total=total, message=label, cost=ctx.client.usage.to_dict())
        return done


# ---------------------------------------------------------------- stages
class LLMProposer:
    """Proposer: the LLM proposes principles explaining each sampled training pair's label."""

    name = "llm_propose"
    consolidate = True  # its raw proposals go through the consolidator

    def __init__(self, config: LLMStagesConfig, seed: int = 0):
        self.config = config
        self.seed = seed

    def _rows(self, data, ctx=None) -> np.ndarray:
        """The training pairs shown to the proposer. Within the budget all of them; over it, chosen for
        coverage of how responses differ and of what the library cannot explain (icai_core.selection),
        unless `proposal_selection="random"`. The count is the same either way (what estimates use)."""
        rows = proposal_rows(data.pairs, data.train_rows, self.config, self.seed)
        if ctx is None or self.config.proposal_selection != "coverage":
            return rows
        labelled = data.train_rows[data.pairs["preferred"].to_numpy()[data.train_rows] != "tie"]
        if len(labelled) <= self.config.max_propose_pairs:
            return rows
        from pathlib import Path

        from icai_core.embed import Embedder
        from icai_core.selection import coverage_rows

        cache = Path(ctx.cache_dir) / "embeddings.sqlite" if ctx.cache_dir is not None else None
        embedder = Embedder(cache_path=cache, max_seq_length=64)
        return coverage_rows(data.pairs, labelled, self.config.max_propose_pairs, embedder=embedder,
                             seed=self.seed)

    def estimated_seconds(self, ctx, data) -> float:
        return _SECONDS_PER_CALL * len(self._rows(data)) / max(1, getattr(ctx.client.config, "concurrency", 1))

    def propose(self, ctx, data) -> list[Judge]:
        pairs = data.pairs
        reqs = proposal_requests(pairs, self._rows(data, ctx), self.config)
        got = ChunkedRunner(ctx, self.config.chunk_size, self.name).run("propose", reqs, "Proposing principles")
        counts = _counts(data, "propose")
        rows, judges = [], []
        for req in reqs:
            i = int(req.tag.split(":")[1])
            if req.tag not in got:
                counts.add("invalid", None)  # the request failed (its error is counted by the client)
                continue
            text, finish = got[req.tag]
            parsed = answers.parse_proposals(text, self.config.n_principles_per_pair, finish)
            counts.add(parsed.status, text)
            for t in parsed.value or []:
                rows.append({"row": i, "id": pairs.iloc[i]["id"], "principle": t})
        data.proposals = pd.DataFrame(rows, columns=["row", "id", "principle"])
        _finish_stage(data, "propose")
        if data.proposals.empty:
            faults = ctx.client.usage.to_dict().get("faults") or {}
            why = f" Faults reported by the client: {faults}." if faults else ""
            raise RuntimeError(
                f"The model proposed no usable principle in {len(reqs)} proposal calls "
                f"({counts.invalid} invalid answers).{why} Check the endpoint and model, or try another model."
            )
        for k, t in enumerate(data.proposals["principle"]):
            judges.append(Judge(key=f"proposal_{k:04d}", text=as_principle_text(t), inverse_text=inverse_of(t),
                                family="proposed", margin="the LLM answers 'None'", kind="llm"))
        return judges


class ClusterProposals:
    """Consolidator: embed + UMAP + HDBSCAN the proposals; one candidate per cluster (its most central
    member), and frequent noise proposals as candidates of their own, ranked by support (how many
    proposals stand behind them), so the most common principle is always tested on small sets."""

    name = "cluster"

    def __init__(self, config: LLMStagesConfig):
        self.config = config

    def estimated_seconds(self, ctx, data) -> float:
        return 5.0

    def consolidate(self, ctx, data, candidates: list[Judge]) -> list[Judge]:
        from icai_core.cluster import ClusterConfig, cluster_principles

        texts = [j.text for j in candidates]
        res = cluster_principles(texts, embedder=ctx.embedder, config=ClusterConfig(),
                                 progress=ctx.stage_progress(self.name), cancel=ctx.cancel)
        data.clusters = res
        ranked: list[tuple[int, str, int]] = []  # (support, text, cluster)
        for r in res.clusters.itertuples(index=False):
            ranked.append((int(r.size), str(r.representative), int(r.cluster)))
        noise = res.points[res.points["cluster"] == -1]
        for r in noise.itertuples(index=False):
            ranked.append((int(r.support), str(r.text), -1))
        ranked.sort(key=lambda t: -t[0])  # stable: clusters before noise at equal support
        ranked = ranked[: self.config.max_candidates]
        texts_out = [t for _, t, _ in ranked]
        if self.config.merge_with_llm:
            texts_out = self._merge(ctx, data, res, ranked, texts_out)
        return [
            Judge(key=f"llm_{k:02d}", text=as_principle_text(t), inverse_text=inverse_of(t), family="discovered by LLM",
                  margin="the LLM answers 'None'", kind="llm", cluster=c, support=s)
            for k, (t, (s, _, c)) in enumerate(zip(texts_out, ranked, strict=True))
        ]

    def _merge(self, ctx, data, res, ranked, texts: list[str]) -> list[str]:
        """One LLM summary per multi-member cluster; the representative when unusable or a singleton."""
        points = res.points
        members = {c: points.loc[points["cluster"] == c, "text"].astype(str).tolist() for _, _, c in ranked if c >= 0}
        multi = {c: m for c, m in members.items() if len(m) > 1}
        got = ChunkedRunner(ctx, self.config.chunk_size, self.name).run("merge", merge_requests(multi),
                                                                         "Merging clusters") if multi else {}
        counts = _counts(data, "merge") if multi else None
        out = []
        for (_, rep, c), text in zip(ranked, texts, strict=True):
            tag = f"merge:{c}"
            if c in multi and tag in got:
                parsed = answers.parse_principle(*got[tag])
                counts.add(parsed.status, got[tag][0])
                out.append(parsed.value if parsed.usable else rep)
            else:
                out.append(text)
        return out


class LLMVoter:
    """Voter: batched LLM votes (A / B / None) of every LLM judge on every distinct pair."""

    name = "llm_vote"

    def __init__(self, config: LLMStagesConfig):
        self.config = config

    def handles(self, judge: Judge) -> bool:
        return judge.kind == "llm"

    def estimated_seconds(self, ctx, data) -> float:
        batches = -(-self.config.max_candidates // self.config.principle_batch_size)
        conc = max(1, getattr(ctx.client.config, "concurrency", 1))
        return _SECONDS_PER_CALL * batches * data.n_items / conc

    def vote(self, ctx, data, judges: list[Judge]):
        items = data.items
        texts = [j.text for j in judges]
        reqs = vote_requests(items, texts, self.config)
        got = ChunkedRunner(ctx, self.config.chunk_size, self.name).run("vote", reqs, "Testing principles")
        arr = np.zeros((len(items), len(judges)), dtype=np.int8)
        ok = np.zeros((len(items), len(judges)), dtype=bool)
        counts = _counts(data, "vote")
        bs = self.config.principle_batch_size
        for req in reqs:
            _, start, i = req.tag.split(":")
            start, i = int(start), int(i)
            n = min(bs, len(judges) - start)
            text, finish = got.get(req.tag, (None, None))
            vs, statuses = answers.parse_votes(text, n, finish)
            arr[i, start : start + n] = vs
            ok[i, start : start + n] = [s != "invalid" for s in statuses]
            counts.add_many(statuses, text)
        _finish_stage(data, "vote")
        keys = [j.key for j in judges]
        return pd.DataFrame(arr, columns=keys), pd.DataFrame(ok, columns=keys)


_DESCRIPTIONS = {
    "llm_with_constitution": "LLM annotator prompted with the annotator's constitution",
    "llm_no_constitution": "the same LLM annotator without a constitution",
    "llm_random_constitution": "the same LLM annotator with a random constitution of the same size",
    "llm_with_constitution_flipped": "with the constitution, A and B swapped (position-bias check)",
}


class LLMAnnotator:
    """Reconstructor: an LLM annotator on each annotator's held-out pairs, with that annotator's
    constitution, without one, and with a random one (ICAI's evaluation)."""

    name = "llm_annotate"

    def __init__(self, config: LLMStagesConfig, seed: int = 0):
        self.config = config
        self.seed = seed

    def estimated_seconds(self, ctx, data) -> float:
        n = min(len(data.test_rows), self.config.max_annotate_pairs)
        conditions = 2 + int(self.config.random_constitution) + int(self.config.flipped_check)
        return _SECONDS_PER_CALL * n * conditions / max(1, getattr(ctx.client.config, "concurrency", 1))

    def test_items(self, data, analysis) -> tuple[np.ndarray, np.ndarray]:
        """(rows within the analysis, their distinct-pair ids) of the sampled labelled test pairs."""
        y = data.pairs["preferred"].to_numpy()[analysis.rows]
        te = analysis.test_index[y[analysis.test_index] != "tie"]
        rng = np.random.default_rng(self.seed)
        te = np.sort(rng.permutation(te)[: self.config.max_annotate_pairs])
        return te, data.item_of_row[analysis.rows[te]]

    def reconstruct(self, ctx, data, result) -> None:
        counts = _counts(data, "annotate")
        items = data.items
        seen: dict[tuple, dict] = {}  # identical requests (same condition text) are sent once per run
        for name, analysis in result.analyses.items():
            rows, item_ids = self.test_items(data, analysis)
            truth = data.pairs["preferred"].to_numpy()[analysis.rows[rows]]
            const_text = analysis.constitution.text()
            conditions: list[tuple[str, str | None, bool, str]] = []
            if analysis.constitution.entries:
                conditions.append(("llm_with_constitution", const_text, False, f"annotate:{name}:with"))
            else:
                analysis.notes.append("The constitution is empty: the 'with constitution' condition was not run "
                                      "(it would be the same request as 'without').")
            conditions.append(("llm_no_constitution", None, False, "annotate:none"))
            if self.config.random_constitution and analysis.constitution.entries:
                rnd = random.Random(self.seed)
                pick = rnd.sample(result.judges, min(len(analysis.constitution.entries), len(result.judges)))
                conditions.append(("llm_random_constitution", prompts.numbered([p.text for p in pick]), False,
                                   f"annotate:{name}:random"))
            if self.config.flipped_check and analysis.constitution.entries:
                conditions.append(("llm_with_constitution_flipped", const_text, True, f"annotate:{name}:flipped"))
            out = []
            for method, text, swap, step in conditions:
                reqs = annotate_requests(items, np.unique(item_ids), text, self.config, swap=swap, tag=method)
                memo = (method, text, swap)
                got = seen.get(memo, {})
                missing = [r for r in reqs if r.tag not in got]
                if missing:
                    got = {**got, **ChunkedRunner(ctx, self.config.chunk_size, self.name).run(
                        step, missing, f"Reconstructing ({method}, {name})")}
                    seen[memo] = got
                pred_by_item = {}
                for r in reqs:
                    text_, finish = got.get(r.tag, (None, None))
                    parsed = answers.parse_annotation(text_, swap=swap, finish_reason=finish)
                    counts.add(parsed.status, text_)
                    pred_by_item[int(r.tag.rsplit(":", 1)[1])] = parsed.value
                preds = [pred_by_item.get(int(i)) for i in item_ids]
                n_invalid = sum(p is None for p in preds)
                correct = sum(p == t for p, t in zip(preds, truth, strict=True) if p is not None)
                n = len(preds) - n_invalid
                lo, hi = wilson_interval(correct, n) if n else (float("nan"), float("nan"))
                out.append({"method": method, "agreement": correct / n if n else float("nan"), "ci_low": lo,
                            "ci_high": hi, "n_test": n, "n_correct": correct, "n_invalid": n_invalid,
                            "description": _DESCRIPTIONS.get(method, method)})
            analysis.llm_reconstruction = pd.DataFrame(out)
        _finish_stage(data, "annotate")
