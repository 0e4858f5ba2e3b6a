"""The Inverse Constitutional AI pipeline on an OpenAI-compatible endpoint (arXiv 2406.06560).

Stages: split -> propose principles per training pair -> embed + cluster (UMAP, HDBSCAN) and keep one
representative per cluster -> test every candidate on every pair (batched vote calls) -> stats and
filtering into a constitution (same code as the offline engine) -> reconstruction of held-out
preferences by an LLM annotator with the constitution, without one, and with a random one.

Every LLM call goes through `icai_core.llm.LLMClient` (retries, concurrency, cache, cost). Each
stage stores its per-item results in the run store, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from icai_core import prompts
from icai_core.constitution import Constitution, settings_of
from icai_core.jobs import CancelToken, Progress, check, noop_progress
from icai_core.llm import ChatRequest, parse_json_answer, raise_if_fatal
from icai_core.reconstruct import audit_split, content_groups, split_train_test
from icai_core.stats import principle_stats, wilson_interval

STAGES = ("propose", "cluster", "vote", "annotate")


@dataclass(frozen=True)
class ICAIConfig:
    """Settings of one ICAI run; all of them enter the run's identity (and so its resume key)."""

    n_principles_per_pair: int = 3
    max_propose_pairs: int = 200  # training pairs sent to the proposal step
    max_candidates: int = 30  # cluster representatives tested
    principle_batch_size: int = 10  # principles per vote call
    include_measurable: bool = True  # also test the measurable library (free, offline judges)
    test_size: float = 0.3
    seed: int = 0
    alpha: float = 0.05
    min_relevance: float = 0.05
    min_abs_strength: float = 0.02
    max_size: int = 10
    require_significant: bool = True
    max_annotate_pairs: int = 300  # held-out pairs annotated per reconstruction condition
    flipped_check: bool = False  # also annotate with A/B swapped to expose position bias
    random_constitution: bool = True
    merge_with_llm: bool = False  # ask the LLM to summarise each multi-member cluster in one principle
    max_text_chars: int = 4000
    chunk_size: int = 128  # requests per stored chunk (progress + resume granularity)

    def constitution_settings(self) -> dict:
        return settings_of(self)


@dataclass
class LLMPrinciple:
    """A discovered principle; duck-types judges.Principle for stats and constitution code."""

    key: str
    text: str
    inverse_text: str
    family: str = "discovered"
    margin: str = "the LLM answers 'None'"
    source: str = "llm"
    cluster: int = -1
    support: int = 1


@dataclass
class ICAIResult:
    config: ICAIConfig
    pairs: pd.DataFrame
    train_index: np.ndarray
    test_index: np.ndarray
    proposals: pd.DataFrame  # pair id, principle text
    clusters: object  # icai_core.cluster.ClusterResult
    candidates: list[LLMPrinciple]
    votes: pd.DataFrame  # int8, columns = candidate keys (+ measurable keys when included)
    invalid_votes: dict[str, int]
    stats: pd.DataFrame
    train_stats: pd.DataFrame
    constitution: Constitution
    reconstruction: pd.DataFrame  # method, agreement, ci_low, ci_high, n_test, n_correct, n_invalid, description
    usage: dict = field(default_factory=dict)
    run_id: str | None = None


def _inverse(text: str) -> str:
    body = text.strip()
    prefix = "Select the response that "
    if body.lower().startswith(prefix.lower()):
        return "Do not select the response that " + body[len(prefix) :]
    return "The opposite of: " + body


def _pair_fields(row, max_chars: int, swap: bool = False) -> dict:
    a, b = (row.text_b, row.text_a) if swap else (row.text_a, row.text_b)
    return {
        "prompt": prompts.truncate(row.prompt, max_chars),
        "text_a": prompts.truncate(a, max_chars),
        "text_b": prompts.truncate(b, max_chars),
    }


# ---------------------------------------------------------------- request builders (pure, used for estimates)


def proposal_requests(pairs: pd.DataFrame, idx: np.ndarray, config: ICAIConfig):
    reqs = []
    for i in idx:
        row = pairs.iloc[i]
        if row.preferred not in ("a", "b"):
            continue
        fields = _pair_fields(row, config.max_text_chars)
        msgs = prompts.PROPOSE.messages(
            **fields, preferred=row.preferred.upper(), n=config.n_principles_per_pair
        )
        reqs.append(
            ChatRequest(
                messages=msgs,
                max_tokens=40 * config.n_principles_per_pair + 60,
                json_mode=True,
                tag=f"propose:{i}",
            )
        )
    return reqs


def vote_requests(pairs: pd.DataFrame, idx: np.ndarray, texts: list[str], config: ICAIConfig):
    reqs = []
    for start in range(0, len(texts), config.principle_batch_size):
        batch = texts[start : start + config.principle_batch_size]
        for i in idx:
            row = pairs.iloc[i]
            msgs = prompts.VOTE.messages(
                **_pair_fields(row, config.max_text_chars), principles=prompts.numbered(batch)
            )
            reqs.append(
                ChatRequest(
                    messages=msgs,
                    max_tokens=prompts.vote_expected_tokens(len(batch)) + 20,
                    json_mode=True,
                    tag=f"vote:{start}:{i}",
                )
            )
    return reqs


def annotate_requests(pairs: pd.DataFrame, idx: np.ndarray, constitution_text: str | None, config: ICAIConfig,
                      swap: bool = False, tag: str = "annotate"):
    if constitution_text:
        guidance = prompts.ANNOTATE_GUIDANCE_CONSTITUTION.format(constitution=constitution_text)
    else:
        guidance = prompts.ANNOTATE_GUIDANCE_NONE
    system = prompts.ANNOTATE.system.format(guidance=guidance)
    reqs = []
    for i in idx:
        row = pairs.iloc[i]
        user = prompts.ANNOTATE.user.format(**_pair_fields(row, config.max_text_chars, swap=swap))
        reqs.append(
            ChatRequest(
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                max_tokens=20,
                json_mode=True,
                tag=f"{tag}:{i}",
            )
        )
    return reqs


# ---------------------------------------------------------------- parsing (defensive, never raises)


def parse_proposals_free(text: str | None, n_max: int) -> list[str]:
    """Principle strings from a `{"principles": [...]}` answer (or a bare list), whitespace-normalised."""
    data = parse_json_answer(text or "")
    items = data.get("principles") if isinstance(data, dict) else data if isinstance(data, list) else None
    out = [" ".join(item.split()) for item in items or [] if isinstance(item, str) and item.strip()]
    return out[:n_max]


def parse_proposals(text: str | None, n_max: int) -> list[str]:
    """Like parse_proposals_free, and every principle phrased "Select the response that ..."."""
    out = []
    for t in parse_proposals_free(text, n_max):
        if not t.lower().startswith("select the response that"):
            t = "Select the response that " + t[0].lower() + t[1:]
        out.append(t)
    return out


_NOT_RELEVANT = ("NONE", "NULL", "N/A", "NEITHER", "NOT RELEVANT", "TIE")


def parse_votes(text: str | None, n: int) -> tuple[list[int], list[bool]]:
    """Votes for a batch of n principles -> ([1 | -1 | 0] * n, [entry was valid] * n).

    "A" -> 1, "B" -> -1, a not-relevant word -> 0; anything else (missing, malformed) is invalid and
    stored as 0, and the caller counts it.
    """
    data = parse_json_answer(text or "")
    votes = data.get("votes") if isinstance(data, dict) else None
    if isinstance(votes, list):
        votes = {str(i + 1): v for i, v in enumerate(votes)}
    if not isinstance(votes, dict):
        return [0] * n, [False] * n
    out, valid = [], []
    for j in range(1, n + 1):
        v = votes.get(str(j), votes.get(j))
        v = str(v).strip().strip('"').upper() if v is not None else None
        out.append(1 if v == "A" else -1 if v == "B" else 0)
        valid.append(v in ("A", "B") or v in _NOT_RELEVANT)
    return out, valid


def parse_annotation(text: str | None, swap: bool = False) -> str | None:
    data = parse_json_answer(text or "")
    v = data.get("preferred") if isinstance(data, dict) else None
    v = str(v).strip().upper() if v is not None else None
    if v not in ("A", "B"):
        return None
    choice = "a" if v == "A" else "b"
    if swap:
        choice = "b" if choice == "a" else "a"
    return choice


# ---------------------------------------------------------------- the pipeline


class ChunkedRunner:
    """Runs requests in stored chunks so a killed run resumes where it stopped."""

    def __init__(self, client, store, run_id, progress: Progress, cancel: CancelToken | None, chunk: int):
        self.client, self.store, self.run_id = client, store, run_id
        self.progress, self.cancel, self.chunk = progress, cancel, chunk

    def run(self, step: str, requests: list, label: str) -> dict[str, str | None]:
        """Return {request tag: answer text or None}; answers already stored are not requested again."""
        done: dict[str, str | None] = {}
        if self.store is not None and self.run_id is not None:
            done = dict(self.store.get_many(self.run_id, step))
        todo = [r for r in requests if r.tag not in done]
        total = len(requests)
        self.progress(total - len(todo), total, f"{label}: {total - len(todo):,} of {total:,} calls done")
        for start in range(0, len(todo), self.chunk):
            check(self.cancel)
            chunk = todo[start : start + self.chunk]
            base = total - len(todo) + start

            def _p(d, _t, _m, base=base):
                self.progress(base + d, total, f"{label}: {base + d:,} of {total:,} calls")

            results = self.client.complete_many(chunk, progress=_p, cancel=self.cancel)
            raise_if_fatal(results)  # wrong key / model / URL: stop with the endpoint's message
            for req, res in zip(chunk, results, strict=True):
                if res is None:
                    continue
                answer = res.text if res.error is None else None
                done[req.tag] = answer
                if self.store is not None and self.run_id is not None and res.error is None:
                    self.store.put(self.run_id, step, req.tag, answer)
            if self.store is not None and self.run_id is not None:
                self.store.update(self.run_id, done=len(done), total=total, message=label,
                                  cost=self.client.usage.to_dict())
        return done


def merge_requests(members_by_cluster: dict[int, list[str]]) -> list[ChatRequest]:
    return [
        ChatRequest(messages=prompts.MERGE_CLUSTER.messages(principles=prompts.numbered(members[:20])),
                    max_tokens=80, json_mode=True, tag=f"merge:{c}")
        for c, members in members_by_cluster.items()
    ]


def merge_clusters(clusters, cluster_ids: list[int], representatives: list[str], runner, config) -> list[str]:
    """Ask the LLM for one summary principle per multi-member cluster; keep the representative when
    a cluster has one member or the answer is unusable."""
    points = clusters.points
    members = {c: points.loc[points["cluster"] == c, "text"].astype(str).tolist() for c in cluster_ids}
    multi = {c: m for c, m in members.items() if len(m) > 1}
    answers = runner.run("merge", merge_requests(multi), "Merging clusters") if multi else {}
    out = []
    for c, rep in zip(cluster_ids, representatives, strict=True):
        data = parse_json_answer(answers.get(f"merge:{c}") or "")
        text = data.get("principle") if isinstance(data, dict) else None
        if isinstance(text, str) and text.strip():
            text = " ".join(text.split())
            if not text.lower().startswith("select the response that"):
                text = "Select the response that " + text[0].lower() + text[1:]
            out.append(text)
        else:
            out.append(rep)
    return out


def estimate_run(pairs: pd.DataFrame, config: ICAIConfig, client, n_candidates: int | None = None) -> dict:
    """Calls, tokens and dollars per stage (a dict of llm.CostEstimate), computed before a run starts.

    Proposal and annotation requests are built exactly as the run will build them. Vote requests
    depend on how many clusters the proposals form: before a run the estimate assumes
    `max_candidates` candidates (an upper bound); pass `n_candidates` once clustering is done and
    the estimate equals the calls the run makes (cached calls are counted separately).
    """
    train_idx, test_idx, prop_idx, ann_idx = _indices(pairs, config)
    n = config.max_candidates if n_candidates is None else min(n_candidates, config.max_candidates)
    placeholder = [f"Select the response that has property {i}" for i in range(n)]
    all_idx = np.sort(np.concatenate([train_idx, test_idx]))
    stages = {
        "propose": (proposal_requests(pairs, prop_idx, config), prompts.PROPOSE.expected_completion_tokens),
        "vote": (vote_requests(pairs, all_idx, placeholder, config),
                 prompts.vote_expected_tokens(config.principle_batch_size)),
    }
    n_conditions = 2 + int(config.random_constitution) + int(config.flipped_check)
    ann = []
    for c in range(n_conditions):
        ann += annotate_requests(pairs, ann_idx, f"1. condition {c}", config, tag=f"estimate{c}")
    stages["annotate"] = (ann, prompts.ANNOTATE.expected_completion_tokens)
    if config.merge_with_llm:  # at most one merge call per candidate cluster
        stages["merge"] = (merge_requests({c: placeholder[c : c + 2] for c in range(n)}),
                           prompts.MERGE_CLUSTER.expected_completion_tokens)
    return {name: client.estimate_cost(reqs, expected_completion_tokens=completion)
            for name, (reqs, completion) in stages.items()}


def _indices(pairs: pd.DataFrame, config: ICAIConfig):
    train_idx, test_idx = split_train_test(pairs["preferred"], test_size=config.test_size, seed=config.seed,
                                          groups=content_groups(pairs))
    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    rng = np.random.default_rng(config.seed)
    labelled_train = train_idx[pairs["preferred"].to_numpy()[train_idx] != "tie"]
    prop_idx = np.sort(rng.permutation(labelled_train)[: config.max_propose_pairs])
    labelled_test = test_idx[pairs["preferred"].to_numpy()[test_idx] != "tie"]
    ann_idx = np.sort(rng.permutation(labelled_test)[: config.max_annotate_pairs])
    return train_idx, test_idx, prop_idx, ann_idx


def run_icai(
    pairs: pd.DataFrame,
    client,
    config: ICAIConfig | None = None,
    *,
    store=None,
    run_id: str | None = None,
    embedder=None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    stage_callback: Callable[[str], None] | None = None,
) -> ICAIResult:
    """Run the whole ICAI pipeline; see the module docstring for the stages."""
    from icai_core import judges
    from icai_core.cluster import ClusterConfig, cluster_principles

    config = config or ICAIConfig()
    progress = progress or noop_progress
    stage = stage_callback or (lambda s: None)
    runner = ChunkedRunner(client, store, run_id, progress, cancel, config.chunk_size)
    train_idx, test_idx, prop_idx, ann_idx = _indices(pairs, config)

    # 1. proposal
    stage("propose")
    reqs = proposal_requests(pairs, prop_idx, config)
    answers = runner.run("propose", reqs, "Proposing principles")
    rows = []
    for req in reqs:
        i = int(req.tag.split(":")[1])
        for t in parse_proposals(answers.get(req.tag), config.n_principles_per_pair):
            rows.append({"row": i, "id": pairs.iloc[i]["id"], "principle": t})
    proposals = pd.DataFrame(rows, columns=["row", "id", "principle"])
    check(cancel)

    # 2. clustering
    stage("cluster")
    if proposals.empty:
        raise RuntimeError(
            "The model proposed no usable principles (every proposal answer was empty or not JSON). "
            "Check the endpoint and model on the Home page, or try another model."
        )
    clusters = cluster_principles(
        proposals["principle"].tolist(), embedder=embedder, config=ClusterConfig(), progress=progress,
        cancel=cancel,
    )
    cl = clusters.clusters.sort_values("size", ascending=False).head(config.max_candidates)
    texts = [str(t) for t in cl["representative"]]
    if config.merge_with_llm:
        texts = merge_clusters(clusters, cl["cluster"].tolist(), texts, runner, config)
    candidates = [
        LLMPrinciple(key=f"llm_{k:02d}", text=t, inverse_text=_inverse(t), cluster=int(r["cluster"]),
                     support=int(r["size"]))
        for k, (t, (_, r)) in enumerate(zip(texts, cl.iterrows(), strict=True))
    ]
    check(cancel)

    # 3. testing: batched votes on every train and test pair
    stage("vote")
    all_idx = np.sort(np.concatenate([train_idx, test_idx]))
    texts = [c.text for c in candidates]
    reqs = vote_requests(pairs, all_idx, texts, config)
    answers = runner.run("vote", reqs, "Testing principles")
    vote_arr = np.zeros((len(pairs), len(candidates)), dtype=np.int8)
    invalid = dict.fromkeys((c.key for c in candidates), 0)
    for req in reqs:
        _, start, i = req.tag.split(":")
        start, i = int(start), int(i)
        batch = candidates[start : start + config.principle_batch_size]
        vs, valid = parse_votes(answers.get(req.tag), len(batch))
        vote_arr[i, start : start + len(batch)] = vs
        for c, ok in zip(batch, valid, strict=True):
            invalid[c.key] += 0 if ok else 1
    votes = pd.DataFrame(vote_arr, index=pairs.index, columns=[c.key for c in candidates])
    principle_objs: list = list(candidates)
    if config.include_measurable:
        mv = judges.compute_votes(pairs, progress=progress, cancel=cancel)
        votes = pd.concat([votes, mv], axis=1)
        principle_objs += [judges.get_principle(k) for k in mv.columns]
    check(cancel)

    # 4. stats and constitution (train split only)
    preferred = pairs["preferred"]
    stats = principle_stats(votes, preferred, principle_objs, alpha=config.alpha)
    train_stats, constitution, offline_result = audit_split(
        votes, preferred, principle_objs, train_index=train_idx, test_index=test_idx,
        test_size=config.test_size, seed=config.seed, **config.constitution_settings(),
    )

    # 5. reconstruction
    stage("annotate")
    offline = offline_result.table.copy()
    offline["method"] = "votes_" + offline["method"].astype(str)
    conditions = [("llm_with_constitution", constitution.text(), False),
                  ("llm_no_constitution", None, False)]
    if config.random_constitution and len(constitution.entries):
        rnd = random.Random(config.seed)
        pick = rnd.sample(principle_objs, min(len(constitution.entries), len(principle_objs)))
        conditions.append(("llm_random_constitution", prompts.numbered([p.text for p in pick]), False))
    if config.flipped_check:
        conditions.append(("llm_with_constitution_flipped", constitution.text(), True))
    truth = preferred.to_numpy()
    rows = []
    for name, text, swap in conditions:
        reqs = annotate_requests(pairs, ann_idx, text, config, swap=swap, tag=name)
        answers = runner.run(f"annotate:{name}", reqs, f"Reconstructing ({name})")
        preds = [parse_annotation(answers.get(r.tag), swap=swap) for r in reqs]
        n_invalid = sum(p is None for p in preds)
        correct = sum(p == truth[i] for p, i in zip(preds, ann_idx, strict=True) if p is not None)
        n = len(preds) - n_invalid
        lo, hi = wilson_interval(correct, n) if n else (float("nan"), float("nan"))
        rows.append({"method": name, "agreement": correct / n if n else float("nan"), "ci_low": lo,
                     "ci_high": hi, "n_test": n, "n_correct": correct, "n_invalid": n_invalid,
                     "description": _DESCRIPTIONS.get(name, name)})
    recon = pd.concat([pd.DataFrame(rows), offline], ignore_index=True)
    return ICAIResult(
        config=config, pairs=pairs, train_index=train_idx, test_index=test_idx, proposals=proposals,
        clusters=clusters, candidates=candidates, votes=votes, invalid_votes=invalid, stats=stats,
        train_stats=train_stats, constitution=constitution, reconstruction=recon,
        usage=client.usage.to_dict(), run_id=run_id,
    )


_DESCRIPTIONS = {
    "llm_with_constitution": "LLM annotator prompted with the discovered constitution",
    "llm_no_constitution": "the same LLM annotator without a constitution",
    "llm_random_constitution": "the same LLM annotator with a random constitution of the same size",
    "llm_with_constitution_flipped": "with the constitution, A and B swapped (position-bias check)",
}


def config_dict(config: ICAIConfig) -> dict:
    return asdict(config)
