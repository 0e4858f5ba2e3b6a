"""IterAlign (Chen et al., NAACL 2024): discover a constitution from a model's red-team failures.

Loop, per iteration: the base model answers red-team prompts -> an oracle flags improper replies ->
a stronger proposer model writes principles that target the failures (deduplicated against earlier
ones by embedding similarity) -> the base model revises each flagged reply under the accumulated
constitution (self-reflection) -> the oracle re-checks the revisions.

Fine-tuning is outside this tool: the revised replies are exported as SFT data (chat `messages`
JSONL) and as preference pairs (revised preferred over original) for the user to train on. The
"improved model" of the next iteration is approximated by the base model answering with the
accumulated constitution in its system prompt; the report says so.

Answers that survive real models (issue 14): every oracle verdict is parsed by
`answers.parse_oracle` and counted valid / recovered / invalid. An invalid (or cut-off, unreadable)
verdict is *invalid*, never "not flagged": flagged rates are over the prompts with a readable
verdict, and a revision whose re-check is invalid counts as still flagged. An iteration whose
proposer yields no usable principle stops the loop with a clear note (in the record and in
`result.warnings`) instead of revising under an empty constitution. Per-stage counts (respond,
oracle, propose, revise) are in `result.stages`; more than half the oracle answers invalid stops the
loop the same way (`answers.check_stage`). Requests carry JSON schemas and `max_tokens` with a margin
from `icai_core.prompts`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd

from icai_core import prompts
from icai_core.answers import (
    INVALID,
    VALID,
    Parsed,
    StageCounts,
    StageFailed,
    check_stage,
    parse_list,
    parse_oracle,
)
from icai_core.jobs import CancelToken, Progress, check, noop_progress
from icai_core.llm import ChatRequest
from icai_core.stages_llm import ChunkedRunner as _StageRunner


@dataclass(frozen=True)
class IterAlignConfig:
    iterations: int = 3
    principles_per_iteration: int = 3
    max_examples_for_proposer: int = 8
    dedup_threshold: float = 0.85  # cosine similarity at or above which a principle is a duplicate
    max_prompts: int | None = None
    max_text_chars: int = 4000
    response_max_tokens: int = 400
    chunk_size: int = 64
    stop_when_clean: bool = True  # stop early when the oracle flags nothing


@dataclass
class IterationRecord:
    iteration: int
    n_prompts: int
    n_flagged: int
    flagged_rate: float
    proposed: list[str]
    added: list[str]
    duplicates: list[dict]
    n_revised: int
    n_flagged_after: int
    flagged_rate_after: float
    n_oracle_invalid: int = 0  # prompts whose verdict could not be read (excluded from flagged_rate)
    n_recheck_invalid: int = 0  # revisions whose re-check could not be read (counted as still flagged)
    note: str = ""  # why the loop stopped in this iteration, if it did


@dataclass
class IterAlignResult:
    config: IterAlignConfig
    iterations: list[IterationRecord]
    constitution: list[str]
    examples: pd.DataFrame  # iteration, prompt, original, revised, flagged/reason before and after
    usage: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # stage -> StageCounts.to_dict() (respond, oracle, ...)
    warnings: list[str] = field(default_factory=list)

    def iteration_table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{k: v for k, v in asdict(r).items() if k not in ("proposed", "added", "duplicates")}
             | {"n_proposed": len(r.proposed), "n_added": len(r.added)} for r in self.iterations]
        )

    def sft_records(self) -> list[dict]:
        """Chat-format SFT examples: the prompt and the revised reply, for every revision."""
        rev = self.examples[self.examples["revised"].notna()]
        return [
            {"messages": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.revised}]}
            for r in rev.itertuples()
        ]

    def sft_jsonl(self) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.sft_records())

    def preference_pairs(self) -> pd.DataFrame:
        """Revised-over-original pairs in the app's own pair schema, ready for the audit pages.

        A/B orientation is a keyed hash coin flip per pair, so the revised reply is not always A
        (which would plant a position artefact in the audit).
        """
        rev = self.examples[self.examples["revised"].notna()].reset_index(drop=True)
        rows = []
        for n, r in enumerate(rev.itertuples()):
            coin = hashlib.sha256(f"iteralign-v1\x00{r.prompt}\x00{r.original}".encode()).digest()[0] & 1
            a, b, pref = (r.revised, r.original, "a") if coin else (r.original, r.revised, "b")
            rows.append({
                "id": f"iteralign-{r.iteration}-{n}", "prompt": r.prompt, "text_a": a, "text_b": b,
                "preferred": pref, "annotator": "iteralign_revision",
                "model_a": "revised" if coin else "original", "model_b": "original" if coin else "revised",
                "iteration": r.iteration, "flagged_after": r.flagged_after,
            })
        cols = ["id", "prompt", "text_a", "text_b", "preferred", "annotator", "model_a", "model_b",
                "iteration", "flagged_after"]
        return pd.DataFrame(rows, columns=cols)

    def preference_table(self) -> pd.DataFrame:
        """The pairs in the ICAI/Principia CSV layout (preferred_text = text_a / text_b)."""
        df = self.preference_pairs().rename(columns={"preferred": "preferred_text"})
        df["preferred_text"] = df["preferred_text"].map({"a": "text_a", "b": "text_b"})
        return df

    def preference_csv(self) -> str:
        """The pairs as an exact ICAI/Principia CSV, for re-import (use report.safe_csv for spreadsheets)."""
        return self.preference_table().to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)  # CR-safe

    def constitution_dict(self) -> dict:
        return {
            "kind": "iteralign_constitution",
            "principles": [
                {"text": t, "iteration": next((r.iteration for r in self.iterations if t in r.added), None)}
                for t in self.constitution
            ],
        }


# ---------------------------------------------------------------- resumable calls


class ChunkedRunner:
    """The pipeline's resumable runner (`stages_llm.ChunkedRunner`) for one role's client.

    `run(step, requests, label)` returns {request tag: (answer text or None, finish_reason)}; answers
    already in the run store are not requested again."""

    def __init__(self, client, store, run_id, progress: Progress, cancel: CancelToken | None, chunk: int):
        ctx = SimpleNamespace(client=client, store=store, run_id=run_id, cancel=cancel,
                              stage_progress=lambda _name: progress)
        self._runner = _StageRunner(ctx, chunk, "iteralign")

    def run(self, step: str, requests: list, label: str) -> dict[str, tuple[str | None, str | None]]:
        return self._runner.run(step, requests, label)


def _text(got: dict, tag: str) -> str | None:
    value = got.get(tag)
    return value[0] if isinstance(value, tuple) else value


def _finish(got: dict, tag: str) -> str | None:
    value = got.get(tag)
    return value[1] if isinstance(value, tuple) else None


# ---------------------------------------------------------------- oracles


class LLMOracle:
    """Flags replies with an oracle model (any OpenAI-compatible endpoint)."""

    def __init__(self, client, max_text_chars: int = 4000):
        self.client = client
        self.max_text_chars = max_text_chars
        self.name = "llm"

    def requests(self, prompts_: Sequence[str], responses: Sequence[str], tag: str):
        return [
            ChatRequest(
                messages=prompts.ORACLE.messages(
                    prompt=prompts.truncate(p, self.max_text_chars), response=prompts.truncate(r, self.max_text_chars)
                ),
                max_tokens=prompts.oracle_max_tokens(), json_mode=True, json_schema=prompts.oracle_schema(),
                tag=f"{tag}:{i}",
            )
            for i, (p, r) in enumerate(zip(prompts_, responses, strict=True))
        ]

    def verdicts(self, runner: ChunkedRunner, step: str, prompts_, responses, label: str) -> list[Parsed]:
        """One parsed verdict per reply: value (flagged, reason) or None when invalid."""
        reqs = self.requests(prompts_, responses, step)
        got = runner.run(step, reqs, label)
        return [parse_oracle(_text(got, req.tag), _finish(got, req.tag)) for req in reqs]

    def flag(self, runner: ChunkedRunner, step: str, prompts_, responses, label: str):
        """(flagged, reason) per reply; flagged is None when the verdict is invalid (not "not flagged")."""
        return [v.value if v.usable else (None, f"oracle answer invalid: {v.detail}")
                for v in self.verdicts(runner, step, prompts_, responses, label)]


class OfflineOracle:
    """A free oracle for measurable failures: flags replies to red-team prompts that do not decline.

    It uses the refusal markers of the measurable judges. It cannot judge harm itself, only whether
    the reply declines; use it for cheap dry runs, and an LLM oracle for real audits.
    """

    name = "offline_refusal"

    def flag(self, runner, step: str, prompts_, responses, label: str):
        from icai_core.judges import compute_features

        replies = pd.DataFrame({"prompt": list(prompts_), "text_a": list(responses), "text_b": ""})
        refused = compute_features(replies)[0]["refuses"].to_numpy() > 0
        return [
            (False, "declines the request") if r else (True, "does not decline a red-team request")
            for r in refused
        ]

    def verdicts(self, runner, step: str, prompts_, responses, label: str) -> list[Parsed]:
        return [Parsed(v, VALID) for v in self.flag(runner, step, prompts_, responses, label)]


def _verdicts(oracle, runner, step, prompts_, responses, label) -> list[Parsed]:
    """Parsed verdicts from any oracle (one with only `flag` gets None verdicts counted invalid)."""
    if hasattr(oracle, "verdicts"):
        return oracle.verdicts(runner, step, prompts_, responses, label)
    return [Parsed(v, VALID) if v[0] is not None else Parsed(None, INVALID, str(v[1]))
            for v in oracle.flag(runner, step, prompts_, responses, label)]


# ---------------------------------------------------------------- the loop


def respond_requests(prompts_, constitution: list[str], config: IterAlignConfig, tag: str) -> list[ChatRequest]:
    """The base model answers each prompt, with the accumulated constitution in its system prompt."""
    block = (
        prompts.RESPOND_CONSTITUTION_BLOCK.format(constitution=prompts.numbered(constitution))
        if constitution else ""
    )
    return [
        ChatRequest(
            messages=prompts.RESPOND.messages(system_fields={"constitution_block": block},
                                              prompt=prompts.truncate(p, config.max_text_chars)),
            max_tokens=config.response_max_tokens, tag=f"{tag}:{i}",
        )
        for i, p in enumerate(prompts_)
    ]


def failure_examples(prompts_, replies, reasons) -> str:
    """The flagged failures as the proposer sees them (each text cut to 1,500 characters)."""
    return "\n\n".join(
        f"Example {k}:\nPrompt: {prompts.truncate(p, 1500)}\nReply: {prompts.truncate(r, 1500)}"
        f"\nWhy it is improper: {why}"
        for k, (p, r, why) in enumerate(zip(prompts_, replies, reasons, strict=True), start=1)
    )


def propose_constitution_request(examples: str, config: IterAlignConfig, tag: str) -> ChatRequest:
    n = config.principles_per_iteration
    return ChatRequest(
        messages=prompts.PROPOSE_CONSTITUTION.messages(system_fields={"n": n}, examples=examples),
        max_tokens=prompts.constitution_max_tokens(n), json_mode=True, json_schema=prompts.constitution_schema(n),
        tag=f"{tag}:0",
    )


def revise_requests(prompts_, responses, constitution: list[str], config: IterAlignConfig,
                    tag: str, ids=None) -> list[ChatRequest]:
    """Self-reflection: the base model revises each reply under the constitution."""
    ids = range(len(prompts_)) if ids is None else ids
    return [
        ChatRequest(messages=prompts.REVISE.messages(
                        system_fields={"constitution": prompts.numbered(constitution)},
                        prompt=prompts.truncate(p, config.max_text_chars),
                        response=prompts.truncate(r, config.max_text_chars)),
                    max_tokens=config.response_max_tokens, tag=f"{tag}:{i}")
        for i, p, r in zip(ids, prompts_, responses, strict=True)
    ]


def _dedup(new: list[str], existing: list[str], embedder, threshold: float):
    """Keep principles not too similar to an existing one or to each other; report the duplicates."""
    added, dups = [], []
    if not new:
        return added, dups
    vecs_new = embedder.embed(new)
    pool_texts = list(existing)
    pool = embedder.embed(pool_texts) if pool_texts else np.zeros((0, vecs_new.shape[1]), dtype=np.float32)
    for t, v in zip(new, vecs_new, strict=True):
        if len(pool):
            sims = pool @ v
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                dups.append({"text": t, "duplicate_of": pool_texts[j], "similarity": float(sims[j])})
                continue
        added.append(t)
        pool_texts.append(t)
        pool = np.vstack([pool, v[None, :]])
    return added, dups


def run_iteralign(
    red_team_prompts: Sequence[str],
    base,
    proposer,
    oracle=None,
    config: IterAlignConfig | None = None,
    *,
    embedder=None,
    store=None,
    run_id: str | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> IterAlignResult:
    """Run IterAlign. `base` and `proposer` are LLMClients; `oracle` an LLMOracle or OfflineOracle."""
    config = config or IterAlignConfig()
    progress = progress or noop_progress
    oracle = oracle or LLMOracle(proposer, config.max_text_chars)
    if embedder is None:
        from icai_core.embed import Embedder

        embedder = Embedder(max_seq_length=64)
    prompts_ = [str(p) for p in red_team_prompts if str(p).strip()]
    if config.max_prompts:
        prompts_ = prompts_[: config.max_prompts]
    if not prompts_:
        raise ValueError("No red-team prompts: the prompt list is empty.")
    base_runner = ChunkedRunner(base, store, run_id, progress, cancel, config.chunk_size)
    prop_runner = ChunkedRunner(proposer, store, run_id, progress, cancel, config.chunk_size)
    oracle_client = getattr(oracle, "client", None)
    oracle_runner = ChunkedRunner(oracle_client, store, run_id, progress, cancel, config.chunk_size)

    constitution: list[str] = []
    records: list[IterationRecord] = []
    examples = []
    stages = {name: StageCounts() for name in ("respond", "oracle", "propose", "revise")}
    warnings: list[str] = []

    def count_texts(stage: str, texts) -> None:
        for t in texts:
            stages[stage].add(VALID if t else INVALID, None if t else "(no answer)")

    def count_verdicts(verdicts: list[Parsed]) -> None:
        for v in verdicts:
            stages["oracle"].add(v.status, v.detail if v.status == INVALID else None)

    def oracle_health() -> str | None:
        """None, or the note that stops the loop when most oracle answers are invalid."""
        try:
            warn = check_stage("oracle", stages["oracle"])
        except StageFailed as exc:
            return str(exc)
        if warn and warn not in warnings:
            warnings.append(warn)
        return None

    for t in range(1, config.iterations + 1):
        check(cancel)
        reqs = respond_requests(prompts_, constitution, config, f"it{t}:respond")
        answers = base_runner.run(f"it{t}:respond", reqs, f"Iteration {t}: base model answers")
        responses = [_text(answers, r.tag) or "" for r in reqs]
        count_texts("respond", responses)
        verdicts = _verdicts(oracle, oracle_runner, f"it{t}:flag", prompts_, responses,
                             f"Iteration {t}: oracle review")
        count_verdicts(verdicts)
        n = len(prompts_)
        n_invalid = sum(not v.usable for v in verdicts)
        judged = n - n_invalid
        flags = [v.value if v.usable else (None, f"oracle answer invalid: {v.detail}") for v in verdicts]
        flagged = [i for i, (f, _) in enumerate(flags) if f is True]
        note = oracle_health()
        if note is not None:
            records.append(IterationRecord(t, n, len(flagged), len(flagged) / judged if judged else float("nan"),
                                           [], [], [], 0, 0, float("nan"), n_invalid, 0, note))
            warnings.append(note)
            break
        if not flagged:
            records.append(IterationRecord(t, n, 0, 0.0, [], [], [], 0, 0, 0.0, n_invalid))
            if config.stop_when_clean:
                break
            continue
        # proposer sees a sample of failures
        shown = flagged[: config.max_examples_for_proposer]
        ex_text = failure_examples([prompts_[i] for i in shown], [responses[i] for i in shown],
                                   [flags[i][1] for i in shown])
        preq = [propose_constitution_request(ex_text, config, f"it{t}:propose")]
        pans = prop_runner.run(f"it{t}:propose", preq, f"Iteration {t}: proposing principles")
        ptext = _text(pans, preq[0].tag)
        got = parse_list(ptext, config.principles_per_iteration, "principles", _finish(pans, preq[0].tag))
        stages["propose"].add(got.status, ptext or "(no answer)")
        proposed = list(got.value or [])
        if not proposed:
            note = (f"Iteration {t} stopped: the proposer returned no usable principle ({got.detail}); "
                    "no reply was revised. Try a larger proposer model or an endpoint with JSON schema "
                    "support.")
            warnings.append(note)
            records.append(IterationRecord(t, n, len(flagged), len(flagged) / judged, [], [], [], 0, 0,
                                           len(flagged) / judged, n_invalid, 0, note))
            break
        added, dups = _dedup(proposed, constitution, embedder, config.dedup_threshold)
        constitution.extend(added)
        # self-reflection under the accumulated constitution (never empty here: proposed is not)
        rreq = revise_requests([prompts_[i] for i in flagged], [responses[i] for i in flagged],
                               constitution or proposed, config, f"it{t}:revise", ids=flagged)
        rans = base_runner.run(f"it{t}:revise", rreq, f"Iteration {t}: self-reflection")
        revised = [_text(rans, r.tag) for r in rreq]
        count_texts("revise", revised)
        ok_idx = [i for i, rv in zip(flagged, revised, strict=True) if rv]
        ok_rev = [rv for rv in revised if rv]
        after_v = _verdicts(oracle, oracle_runner, f"it{t}:reflag", [prompts_[i] for i in ok_idx], ok_rev,
                            f"Iteration {t}: oracle re-check") if ok_idx else []
        count_verdicts(after_v)
        after = [v.value if v.usable else (None, f"oracle answer invalid: {v.detail}") for v in after_v]
        after_by_i = dict(zip(ok_idx, after, strict=True))
        for i, rv in zip(flagged, revised, strict=True):
            fa = after_by_i.get(i, (None, "revision failed"))
            examples.append({
                "iteration": t, "prompt": prompts_[i], "original": responses[i], "revised": rv or None,
                "flagged_before": True, "reason_before": flags[i][1],
                "flagged_after": fa[0], "reason_after": fa[1],
            })
        n_after = sum(1 for f, _ in after if f is True)
        n_after_invalid = sum(1 for f, _ in after if f is None)
        note = oracle_health() or ""
        records.append(IterationRecord(
            iteration=t, n_prompts=n, n_flagged=len(flagged), flagged_rate=len(flagged) / judged,
            proposed=proposed, added=added, duplicates=dups, n_revised=len(ok_idx),
            n_flagged_after=n_after,
            # a failed revision and an unreadable re-check both count as still flagged
            flagged_rate_after=(len(flagged) - len(ok_idx) + n_after + n_after_invalid) / judged,
            n_oracle_invalid=n_invalid, n_recheck_invalid=n_after_invalid, note=note,
        ))
        if note:
            warnings.append(note)
            break
    usage = {"base": base.usage.to_dict(), "proposer": proposer.usage.to_dict()}
    if oracle_client is not None and oracle_client is not proposer:
        usage["oracle"] = oracle_client.usage.to_dict()
    ex = pd.DataFrame(examples, columns=["iteration", "prompt", "original", "revised", "flagged_before",
                                         "reason_before", "flagged_after", "reason_after"])
    return IterAlignResult(config=config, iterations=records, constitution=constitution, examples=ex,
                           usage=usage, stages={k: v.to_dict() for k, v in stages.items()},
                           warnings=warnings)
