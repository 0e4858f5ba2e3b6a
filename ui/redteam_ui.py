"""Helpers of the Red-team (IterAlign) page, without Streamlit (so tests can call them directly).

The page (`pages/redteam.py`) only draws widgets; everything it computes goes through here:

* prompt sets: the bundled real HH-RLHF red-team prompts or an uploaded file (`load_prompts` errors
  become a message, never a traceback);
* endpoints per role (base / proposer / oracle) resolved from the Home page's engine settings plus
  optional per-role overrides -- API keys stay in memory (they are never part of `public()`, a
  repr, the run store, a cache key or an export);
* `estimate_plan`: calls / tokens / dollars of a planned run, an upper bound built with
  `LLMClient.estimate_cost` from requests made of the real prompts;
* `run_plan`: the run itself (used by the page's background job *and* synchronously by tests);
* `start_run` / `collect_run`: the background job with progress and cancel (`ui.jobs.BackgroundJob`),
  stored in the session mapping the page passes in;
* result views and exports: iteration chart, constitution and duplicates tables, SFT JSONL,
  preference pairs CSV (neutralised against CSV injection) and constitution JSON, and the pair table
  that "Audit these pairs" loads as the current dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from icai_core import prompts as P
from icai_core.iteralign import IterAlignConfig, IterAlignResult, respond_requests
from ui.common import RunRecorder

JOB = "rt_job"  # session key of the running BackgroundJob
RESULT = "rt_result"  # session key of the last finished RedTeamRun

ORACLE_LLM = "LLM oracle"
ORACLE_OFFLINE = "Offline refusal judge (free)"
ORACLE_CHOICES = [ORACLE_LLM, ORACLE_OFFLINE]

UPLOAD_TYPES = ["csv", "tsv", "json", "jsonl", "txt"]

BUNDLED_NAME = "HH-RLHF harmless-base red-team prompts (bundled)"
BUNDLED_DESCRIPTION = (
    "80 real single-turn red-team prompts written by crowdworkers for Anthropic's HH-RLHF data set "
    "(`anthropics/hh-rlhf`, harmless-base, test split); each row names the source file and line."
)

UPPER_BOUND_NOTE = (
    "Upper bound: every iteration runs and the oracle flags every prompt, so each flagged reply is "
    "revised and re-checked. Real runs usually send fewer calls (only flagged replies are revised; "
    "the loop stops early once nothing is flagged), and answers cached from earlier runs are free."
)

FINE_TUNING_CAVEAT = (
    'Fine-tuning is outside this tool. The next iteration\'s "improved model" is approximated by the '
    "**same base model with the accumulated constitution in its system prompt** — not a fine-tuned "
    "model. The revised replies are exported as SFT data and as preference pairs for you to train on."
)


# --------------------------------------------------------------------------- prompt sets
@dataclass
class PromptSet:
    name: str
    prompts: list[str]
    source: str = "upload"  # upload | bundled
    ids: list[str] | None = None

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def hash(self) -> str:
        return hashlib.sha256("\x00".join(self.prompts).encode("utf-8")).hexdigest()[:16]

    def preview(self, n: int = 20) -> pd.DataFrame:
        df = pd.DataFrame({"prompt": self.prompts[:n]})
        if self.ids:
            df.insert(0, "id", self.ids[:n])
        return df


def bundled_prompt_set() -> PromptSet:
    from icai_core.redteam import bundled_prompts

    df = bundled_prompts()
    keep = df["prompt"].astype(str).str.strip() != ""
    df = df[keep]
    ids = df["id"].astype(str).tolist() if "id" in df.columns else None
    return PromptSet(BUNDLED_NAME, df["prompt"].astype(str).str.strip().tolist(), "bundled", ids)


def prompt_set_from_upload(name: str, data: bytes) -> tuple[PromptSet | None, str | None]:
    """(prompt set, None) or (None, the loader's own message). Never raises for bad files."""
    from icai_core.redteam import load_prompts

    try:
        prompts_ = load_prompts(bytes(data), name=name)
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # defensive: the loader should only raise ValueError
        return None, f"{name}: could not read the file ({type(exc).__name__}: {exc})."
    return PromptSet(name, prompts_, "upload"), None


# --------------------------------------------------------------------------- endpoints
@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)

    def llm_config(self):
        from icai_core.llm import LLMConfig

        return LLMConfig(base_url=self.base_url, model=self.model, api_key=self.api_key or None)

    def public(self) -> dict:
        """What may be shown, stored or exported: never the key, only whether one is set."""
        return {"base_url": self.base_url, "model": self.model, "api_key_set": bool(self.api_key)}

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return f"Endpoint(base_url={self.base_url!r}, model={self.model!r}, api_key=***)"


def endpoint_ready(engine: Any) -> bool:
    """True when the Home page's engine points at an OpenAI-compatible endpoint (LLM mode)."""
    return bool(engine is not None and getattr(engine, "llm_ready", False))


def resolve_endpoints(
    engine: Any,
    *,
    oracle_kind: str = ORACLE_LLM,
    proposer_model: str = "",
    proposer_base_url: str = "",
    proposer_api_key: str = "",
    oracle_model: str = "",
    oracle_base_url: str = "",
    oracle_api_key: str = "",
) -> dict[str, Endpoint]:
    """Endpoints per role. Blank proposer fields use the base model's (the Home engine settings);
    blank oracle fields use the proposer's. The offline oracle needs no endpoint."""
    base = Endpoint(
        str(getattr(engine, "base_url", "") or "").strip(),
        str(getattr(engine, "model", "") or "").strip(),
        str(getattr(engine, "api_key", "") or ""),
    )
    proposer = Endpoint(
        (proposer_base_url or "").strip() or base.base_url,
        (proposer_model or "").strip() or base.model,
        proposer_api_key or base.api_key,
    )
    out = {"base": base, "proposer": proposer}
    if oracle_kind == ORACLE_LLM:
        out["oracle"] = Endpoint(
            (oracle_base_url or "").strip() or proposer.base_url,
            (oracle_model or "").strip() or proposer.model,
            oracle_api_key or proposer.api_key,
        )
    return out


@dataclass
class RedTeamPlan:
    prompt_set: PromptSet
    endpoints: dict[str, Endpoint]
    oracle_kind: str = ORACLE_LLM
    config: IterAlignConfig = field(default_factory=lambda: IterAlignConfig(iterations=2))

    @property
    def prompts(self) -> list[str]:
        """The prompts the run will use (after max_prompts), exactly as run_iteralign selects them."""
        ps = [str(p) for p in self.prompt_set.prompts if str(p).strip()]
        return ps[: self.config.max_prompts] if self.config.max_prompts else ps

    def public(self) -> dict:
        """Settings without any key (for the run store, the results header and exports)."""
        from dataclasses import asdict

        return {
            "prompts": self.prompt_set.name,
            "prompt_source": self.prompt_set.source,
            "n_prompts": len(self.prompts),
            "oracle": self.oracle_kind,
            "endpoints": {role: ep.public() for role, ep in self.endpoints.items()},
            "iteralign": asdict(self.config),
        }


def make_config(
    iterations: int = 2,
    principles_per_iteration: int = 3,
    dedup_threshold: float = 0.85,
    max_prompts: int | None = None,
) -> IterAlignConfig:
    return IterAlignConfig(
        iterations=int(iterations),
        principles_per_iteration=int(principles_per_iteration),
        dedup_threshold=float(dedup_threshold),
        max_prompts=int(max_prompts) if max_prompts else None,
    )


# --------------------------------------------------------------------------- cost estimate
def _filler(tokens: int, seed: str = "reply") -> str:
    """Placeholder text of about `tokens` tokens (chars/4, as the client's approximation counts)."""
    word = f"{seed} "
    return (word * (4 * tokens // len(word) + 1))[: 4 * tokens]


def _placeholder_constitution(n: int) -> list[str]:
    return [
        f"Placeholder principle number {i + 1} of about the length of a real principle here."
        for i in range(n)
    ]


def _oracle_requests(prompts_: list[str], reply: str, config: IterAlignConfig, tag: str):
    from icai_core.iteralign import LLMOracle

    return LLMOracle(None, config.max_text_chars).requests(prompts_, [reply] * len(prompts_), tag)


def _propose_request(prompts_: list[str], reply: str, config: IterAlignConfig, tag: str):
    from icai_core.iteralign import failure_examples, propose_constitution_request

    shown = prompts_[: config.max_examples_for_proposer]
    examples = failure_examples(shown, [reply] * len(shown), [_filler(12, "reason")] * len(shown))
    return [propose_constitution_request(examples, config, tag)]


def _revise_requests(
    prompts_: list[str], reply: str, constitution: list[str], config: IterAlignConfig, tag: str
):
    from icai_core.iteralign import revise_requests

    return revise_requests(prompts_, [reply] * len(prompts_), constitution, config, tag)


ESTIMATE_COLUMNS = [
    "iteration",
    "stage",
    "role",
    "model",
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "dollars",
]


def estimate_plan(plan: RedTeamPlan, cache: Any = None) -> tuple[pd.DataFrame, dict]:
    """Calls, tokens and dollars of a planned IterAlign run, per iteration and stage (an upper bound).

    Per iteration: N respond calls (base) + N oracle calls + 1 proposer call + up to N revise calls
    (base) + up to N re-check calls (oracle); the offline oracle costs nothing. Requests are built from
    the real prompts with the run's own templates; replies not yet known are stood in for by
    placeholder texts of the templates' expected length, and completions are counted at each
    template's `expected_completion_tokens`. Returns (table, totals); totals['note'] names the prices.
    """
    from icai_core.llm import LLMClient

    config = plan.config
    prompts_ = plan.prompts
    clients = {role: LLMClient(ep.llm_config(), cache) for role, ep in plan.endpoints.items()}
    reply = _filler(P.RESPOND.expected_completion_tokens)
    revised = _filler(P.REVISE.expected_completion_tokens, "revised")
    k = config.principles_per_iteration
    rows = []

    def add(t: int, stage: str, role: str, reqs: list, expected: int) -> None:
        if role not in clients:  # offline oracle: free, no calls
            rows.append(
                {
                    "iteration": t,
                    "stage": stage,
                    "role": "offline judge",
                    "model": "—",
                    "calls": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "dollars": 0.0,
                }
            )
            return
        est = clients[role].estimate_cost(reqs, expected)
        rows.append(
            {
                "iteration": t,
                "stage": stage,
                "role": role,
                "model": plan.endpoints[role].model,
                "calls": est.calls,
                "prompt_tokens": est.prompt_tokens,
                "completion_tokens": est.completion_tokens,
                "dollars": est.dollars,
            }
        )

    notes = {}
    if prompts_:
        for t in range(1, config.iterations + 1):
            before = _placeholder_constitution(k * (t - 1))
            after = _placeholder_constitution(k * t)
            add(
                t,
                "respond",
                "base",
                respond_requests(prompts_, before, config, f"it{t}:respond"),
                P.RESPOND.expected_completion_tokens,
            )
            add(
                t,
                "oracle review",
                "oracle",
                _oracle_requests(prompts_, reply, config, f"it{t}:flag"),
                P.ORACLE.expected_completion_tokens,
            )
            add(
                t,
                "propose principles",
                "proposer",
                _propose_request(prompts_, reply, config, f"it{t}:propose"),
                P.PROPOSE_CONSTITUTION.expected_completion_tokens,
            )
            add(
                t,
                "self-reflection (≤)",
                "base",
                _revise_requests(prompts_, reply, after, config, f"it{t}:revise"),
                P.REVISE.expected_completion_tokens,
            )
            add(
                t,
                "oracle re-check (≤)",
                "oracle",
                _oracle_requests(prompts_, revised, config, f"it{t}:reflag"),
                P.ORACLE.expected_completion_tokens,
            )
    for role, client in clients.items():
        notes[role] = client.config.prices()[2]
    table = pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    totals = {
        "calls": int(table["calls"].sum()) if len(table) else 0,
        "prompt_tokens": int(table["prompt_tokens"].sum()) if len(table) else 0,
        "completion_tokens": int(table["completion_tokens"].sum()) if len(table) else 0,
        "dollars": float(table["dollars"].sum()) if len(table) else 0.0,
        "calls_per_iteration": int(table.groupby("iteration")["calls"].sum().max()) if len(table) else 0,
        "prices": notes,
        "note": UPPER_BOUND_NOTE,
    }
    return table, totals


# --------------------------------------------------------------------------- the run
_EMBEDDERS: dict[str, Any] = {}
_EMB_LOCK = threading.Lock()


def shared_embedder():
    """One MiniLM embedder per process (vectors cached in the app's cache folder)."""
    from icai_core.audit import default_cache_dir
    from icai_core.embed import Embedder

    path = str(default_cache_dir() / "embeddings.sqlite")
    with _EMB_LOCK:
        if path not in _EMBEDDERS:
            _EMBEDDERS[path] = Embedder(cache_path=path, max_seq_length=64)
        return _EMBEDDERS[path]


class StagedProgress:
    """Turns run_iteralign's per-stage progress (each stage counts from 0) into one overall bar.

    Stages are recognised from the runner's messages ("Iteration t: <stage>: d of n calls"); within an
    iteration they are laid end to end with the planned sizes (N, N, 1, N, N).
    """

    _RE = re.compile(r"Iteration (\d+): ([^:]+)")
    ORDER = (
        "base model answers",
        "oracle review",
        "proposing principles",
        "self-reflection",
        "oracle re-check",
    )

    def __init__(self, progress, n_prompts: int, iterations: int):
        self.progress = progress
        self.n = max(int(n_prompts), 1)
        self.iterations = max(int(iterations), 1)
        sizes = [self.n, self.n, 1, self.n, self.n]
        self.offsets = dict(zip(self.ORDER, [sum(sizes[:i]) for i in range(len(sizes))], strict=True))
        self.sizes = dict(zip(self.ORDER, sizes, strict=True))
        self.per_iteration = sum(sizes)
        self.total = self.per_iteration * self.iterations

    def __call__(self, done: int, total: int, message: str = "") -> None:
        m = self._RE.match(message or "")
        if not m:
            return
        t, stage = int(m.group(1)), m.group(2).strip()
        off = self.offsets.get(stage, 0)
        size = self.sizes.get(stage, 1)
        frac = min(max(done / max(total, 1), 0.0), 1.0)
        overall = (t - 1) * self.per_iteration + off + round(frac * size)
        self.progress(
            min(overall, self.total),
            self.total,
            f"iteration {t} of {self.iterations} · {message.split(': ', 1)[-1]}",
        )

    def finish(self) -> None:
        self.progress(self.total, self.total, "done")


@dataclass
class RedTeamRun:
    """A finished run as the page keeps it: the IterAlign result, its settings (no keys), exports."""

    result: IterAlignResult
    settings: dict
    prompt_set_name: str
    run_id: str | None = None
    seconds: float = 0.0
    finished: float = field(default_factory=time.time)
    _exports: dict | None = field(default=None, repr=False)

    @property
    def exports(self) -> dict[str, bytes]:
        if self._exports is None:
            self._exports = export_payloads(self.result)
        return self._exports


def run_plan(
    plan: RedTeamPlan,
    *,
    progress=None,
    cancel=None,
    cache: Any = "default",
    embedder: Any = None,
    record: bool = True,
) -> RedTeamRun:
    """Run IterAlign for `plan` (blocking). The page runs this in a BackgroundJob; tests call it directly.

    `cache`: a ResponseCache, None (no cache) or "default" (the app's `~/.principia/llm_cache.sqlite`,
    or `$PRINCIPIA_HOME/...`): answers are cached, so a cancelled run resumes without paying twice.
    """
    from icai_core.iteralign import LLMOracle, OfflineOracle, run_iteralign
    from icai_core.jobs import noop_progress
    from icai_core.llm import LLMClient, ResponseCache, default_cache_path

    if cache == "default":
        cache = ResponseCache(default_cache_path())
    base = LLMClient(plan.endpoints["base"].llm_config(), cache)
    proposer = LLMClient(plan.endpoints["proposer"].llm_config(), cache)
    if plan.oracle_kind == ORACLE_LLM and "oracle" in plan.endpoints:
        oracle = LLMOracle(
            LLMClient(plan.endpoints["oracle"].llm_config(), cache), plan.config.max_text_chars
        )
    else:
        oracle = OfflineOracle()
    staged = StagedProgress(progress or noop_progress, len(plan.prompts), plan.config.iterations)
    recorder = (RunRecorder("iteralign", plan.prompt_set.name, plan.prompt_set.hash, plan.public())
                if record else None)
    prog = recorder.wrap(staged) if recorder is not None else staged
    t0 = time.perf_counter()
    try:
        result = run_iteralign(
            plan.prompts,
            base,
            proposer,
            oracle,
            plan.config,
            embedder=embedder if embedder is not None else shared_embedder(),
            progress=prog,
            cancel=cancel,
        )
    except BaseException as exc:
        if recorder is not None:
            recorder.finish(exc)
        raise
    if recorder is not None:
        cost = {"dollars": sum(float(u.get("dollars", 0.0)) for u in result.usage.values()), **result.usage}
        recorder.finish(None, {"constitution": result.constitution_dict(), "iterations": result.iteration_table()},
                        message="IterAlign finished (app)", cost=cost)
    staged.finish()
    return RedTeamRun(
        result=result,
        settings=plan.public(),
        prompt_set_name=plan.prompt_set.name,
        run_id=recorder.run_id if recorder is not None else None,
        seconds=time.perf_counter() - t0,
    )


def start_run(state: MutableMapping, plan: RedTeamPlan, **kw):
    """Start `run_plan(plan)` in a background thread; the job goes in `state[JOB]`."""
    from ui.jobs import BackgroundJob

    running = state.get(JOB)
    if running is not None and running.running:
        running.cancel()

    def work(progress, cancel):
        return run_plan(plan, progress=progress, cancel=cancel, **kw)

    job = BackgroundJob(work, label="IterAlign run", key=(plan.prompt_set.hash, plan.prompt_set.name))
    state[JOB] = job
    return job


def collect_run(state: MutableMapping, job: Any = None) -> None:
    """Move a finished job's RedTeamRun into `state[RESULT]` (failed/cancelled jobs are left for the
    page to report)."""
    job = job if job is not None else state.get(JOB)
    if job is None or job.running:
        return
    if job.status == "done" and job.result is not None:
        state[RESULT] = job.result
        state.pop(JOB, None)


# --------------------------------------------------------------------------- views and exports
def iteration_view(result: IterAlignResult) -> pd.DataFrame:
    """The iteration table with the duplicates counted, in display order."""
    table = result.iteration_table()
    if table.empty:
        return table
    table["n_duplicates"] = [len(r.duplicates) for r in result.iterations]
    cols = [
        "iteration",
        "n_prompts",
        "n_flagged",
        "flagged_rate",
        "n_proposed",
        "n_added",
        "n_duplicates",
        "n_revised",
        "n_flagged_after",
        "flagged_rate_after",
    ]
    return table[[c for c in cols if c in table.columns]]


def flagged_rate_figure(result: IterAlignResult):
    """Grouped bars: share of prompts flagged before vs after self-reflection, per iteration."""
    import plotly.graph_objects as go

    table = result.iteration_table()
    x = [f"Iteration {int(i)}" for i in table.get("iteration", [])]
    fig = go.Figure()
    for col, name, color in (
        ("flagged_rate", "before revision", "#d62728"),
        ("flagged_rate_after", "after revision", "#2ca02c"),
    ):
        vals = table[col].astype(float).tolist() if col in table else []
        fig.add_bar(
            x=x,
            y=vals,
            name=name,
            marker_color=color,
            text=[f"{v:.0%}" for v in vals],
            textposition="outside",
            hovertemplate="%{x}<br>" + name + ": %{y:.1%}<extra></extra>",
        )
    fig.update_layout(
        barmode="group",
        title="Flagged replies per iteration (share of red-team prompts)",
        yaxis={"title": "flagged rate", "tickformat": ".0%", "range": [0, 1.12]},
        xaxis={"title": None},
        legend={"orientation": "h", "y": -0.15},
        height=380,
        margin={"l": 40, "r": 20, "t": 60, "b": 40},
    )
    return fig


def constitution_table(result: IterAlignResult) -> pd.DataFrame:
    d = result.constitution_dict()
    rows = [
        {"#": i, "principle": p["text"], "iteration": p["iteration"]}
        for i, p in enumerate(d["principles"], start=1)
    ]
    return pd.DataFrame(rows, columns=["#", "principle", "iteration"])


def duplicates_table(result: IterAlignResult) -> pd.DataFrame:
    rows = [
        {
            "iteration": r.iteration,
            "dropped principle": d.get("text", ""),
            "duplicate of": d.get("duplicate_of", ""),
            "similarity": float(d.get("similarity", float("nan"))),
        }
        for r in result.iterations
        for d in r.duplicates
    ]
    return pd.DataFrame(rows, columns=["iteration", "dropped principle", "duplicate of", "similarity"])


def pairs_csv(result: IterAlignResult) -> bytes:
    """The pairs (ICAI/Principia CSV layout) with formula-like cells neutralised (CSV injection)."""
    from icai_core.report import safe_csv

    return safe_csv(result.preference_table())


EXPORT_FILES = {
    "sft": ("iteralign_sft.jsonl", "application/jsonl"),
    "pairs": ("iteralign_preference_pairs.csv", "text/csv"),
    "constitution": ("iteralign_constitution.json", "application/json"),
}


def export_payloads(result: IterAlignResult) -> dict[str, bytes]:
    return {
        "sft": result.sft_jsonl().encode("utf-8"),
        "pairs": pairs_csv(result),
        "constitution": json.dumps(result.constitution_dict(), indent=2, ensure_ascii=False).encode("utf-8"),
    }


PAIRS_NAME = "IterAlign revisions (revised preferred over original)"


def pairs_load_result(result: IterAlignResult):
    """`result.preference_pairs()` read through the Data page's loader (canonical schema, with a load
    report), so the audit pages see it exactly like an uploaded file. Raises DataError when empty."""
    from icai_core.data import load_pairs

    # every text field quoted: a lone CR in a model reply must not split the record
    raw = result.preference_pairs().to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")
    return load_pairs(io.BytesIO(raw), name="iteralign_pairs.csv")


def examples_view(result: IterAlignResult, iteration: int | None = None, which: str = "all") -> pd.DataFrame:
    """Flagged examples of one iteration (or all): which = all | still | fixed | failed."""
    ex = result.examples
    if iteration is not None:
        ex = ex[ex["iteration"] == iteration]
    if which == "still":
        ex = ex[ex["flagged_after"].eq(True)]
    elif which == "fixed":
        ex = ex[ex["flagged_after"].eq(False)]
    elif which == "failed":
        ex = ex[ex["revised"].isna()]
    return ex.reset_index(drop=True)
