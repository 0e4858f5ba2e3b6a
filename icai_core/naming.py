"""LLM names for discovered directions, each scored by how well the LLM's own votes with that name
reproduce the direction (fidelity); names below a threshold are flagged.

Offline discovery (`icai_core.discover`) describes a direction only by its keyword contrast ("uses more
of the words ..."), which is honest but hard to read. With an LLM configured, this module asks the LLM
to name each kept direction from that contrast and its most typical pairs, then checks the name: on
pairs the namer never saw, the LLM votes with the name exactly as it votes with any principle (the
pipeline's batched vote prompt, one principle per call), and its votes are compared with the
direction's own votes. A name is a hypothesis about what the direction measures; fidelity is the test
of that hypothesis, so a reader can tell a name that describes the votes from one that only sounds
plausible. The direction's votes never change: the name is its label, not its definition.

Method (the defaults are justified in docs/discovery.md):

1. **Shown pairs**: the `n_examples` distinct pairs with the largest |activation| (as
   `Discovery.examples`), each shown as the response with MORE of the direction and the one with LESS
   (texts cut at `example_chars`), with the keyword lists. One call per direction; JSON schema
   `{"principle": str}`; read by `answers.parse_principle`.
2. **Held pairs**: a fixed, seeded sample (per direction) of distinct pairs NOT shown to the namer:
   `n_voted` where the direction votes, balanced between "A has more" and "B has more" (so an LLM that
   always answers "A" scores 0.5, not its position bias), plus `n_unvoted` where it does not vote.
3. **Fidelity** = the share of the held voted pairs, among valid answers, on which the LLM's vote with
   the name equals the direction's vote ("not relevant" counts as a miss: the direction says the pair
   differs along it), with a Wilson 95 % interval. Also reported: `sign_accuracy` (the same among the
   LLM's A/B votes only) and `relevance_agreement` (over every held pair with a valid answer: whether
   the LLM and the direction agree that the name applies at all).
4. A name is flagged `low_fidelity` when fewer than `min_answers` (10) valid answers measure it, when
   its fidelity is below `threshold` (0.7), or when its Wilson lower bound is not above `chance` (0.5,
   a coin flip between A and B: with few held pairs, 7 of 10 is not evidence).

Accounting: every call goes through the one `LLMClient` (its cache, cost, retries); requests are pure
functions of the data, the discovery and the config, so a rerun costs zero new calls. Answers are
counted per stage (`counts["discovery_name"]`, `counts["discovery_fidelity"]`: valid / recovered /
invalid); an invalid answer is counted, never fatal (an invalid name keeps the keyword text; an invalid
vote is left out of the fidelity). Only `llm.raise_if_fatal` errors (wrong key, model, URL; every call
failing on the server side) stop the run. No label is used: naming and fidelity never see which
response the annotator preferred.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from icai_core import answers, prompts
from icai_core.jobs import CancelToken, Progress, check
from icai_core.judge import Judge, inverse_of
from icai_core.llm import ChatRequest, raise_if_fatal

__all__ = [
    "NAMING_COLUMNS",
    "DirectionName",
    "Naming",
    "NamingConfig",
    "estimated_calls",
    "fidelity_plan",
    "name_directions",
    "naming_requests",
    "naming_table",
]

NAME_STAGE = "discovery_name"
FIDELITY_STAGE = "discovery_fidelity"

# Columns `naming_table` adds to the discovery table (present whether or not an LLM named anything).
NAMING_COLUMNS = [
    "name_source",
    "keyword_text",
    "keyword_inverse_text",
    "name_status",
    "fidelity",
    "fidelity_ci_low",
    "fidelity_ci_high",
    "n_fidelity",
    "n_fidelity_asked",
    "sign_accuracy",
    "relevance_agreement",
    "n_relevance",
    "n_fidelity_invalid",
    "low_fidelity",
    "fidelity_note",
    "named_from_pair_ids",
    "fidelity_pair_ids",
]


@dataclass(frozen=True)
class NamingConfig:
    """Parameters of `name_directions` (why these defaults: docs/discovery.md, "Names and fidelity").

    * `n_examples`: typical pairs shown to the namer; `example_chars`: each response cut there (the
      prompt at half of it). Discovery embeds only the first 64 word pieces, so 500 characters show
      what it measured and a little more.
    * `n_voted`, `n_unvoted`: held pairs voted with the name where the direction votes (balanced
      high-A / high-B) and where it does not; `vote_chars`: texts cut there in those votes.
    * `threshold`: a name is flagged below this fidelity, and also when the Wilson lower bound of its
      fidelity is not above `chance` (0.5: a voter flipping a coin between A and B); `min_answers`:
      fewer valid answers on voted pairs than this flag the name as not measured.
    * `seed`: the held-pair sample (same data + seed = same requests = cache hits on rerun).
    """

    n_examples: int = 5
    example_chars: int = 500
    n_voted: int = 20
    n_unvoted: int = 10
    vote_chars: int = 1000
    threshold: float = 0.7
    chance: float = 0.5
    min_answers: int = 10
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_examples < 1 or self.n_voted < 1 or self.n_unvoted < 0:
            raise ValueError("n_examples and n_voted must be at least 1, n_unvoted at least 0")
        if not 0 < self.threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if self.example_chars < 50 or self.vote_chars < 50:
            raise ValueError("example_chars and vote_chars must be at least 50 characters")


@dataclass
class DirectionName:
    """The name of one direction and its fidelity. `text` is the LLM's name when `name_source` is
    "llm", else the keyword text (`keyword_text`), which is always kept. Fidelity numbers are NaN
    when nothing was measured (no valid name, or no valid vote); `fidelity_note` says why."""

    key: str
    keyword_text: str
    keyword_inverse_text: str
    text: str
    inverse_text: str
    name_source: str = "keywords"
    name_status: str = "not asked"
    fidelity: float = float("nan")
    fidelity_ci_low: float = float("nan")
    fidelity_ci_high: float = float("nan")
    n_fidelity: int = 0  # held voted pairs with a valid answer
    n_fidelity_asked: int = 0  # held pairs voted with the name (voted + unvoted)
    sign_accuracy: float = float("nan")
    relevance_agreement: float = float("nan")
    n_relevance: int = 0
    n_fidelity_invalid: int = 0
    low_fidelity: bool = False
    fidelity_note: str = ""
    named_from_pair_ids: list[str] = field(default_factory=list)
    fidelity_pair_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Naming:
    """Outcome of `name_directions`: one `DirectionName` per named direction (in the order of
    `Discovery.judges`), every fidelity vote (`votes`: key, pair_id, position, side, direction_vote,
    llm_vote, status), the answers by status per stage, and the config used."""

    names: list[DirectionName]
    votes: pd.DataFrame
    counts: dict[str, answers.StageCounts]
    config: NamingConfig
    notes: list[str] = field(default_factory=list)

    def by_key(self) -> dict[str, DirectionName]:
        return {n.key: n for n in self.names}

    def apply(self, judges: Sequence[Judge]) -> list[Judge]:
        """The judges with each LLM name as `text` (and its inverse); others unchanged. The `family`
        says "discovered (LLM name)" or "discovered (LLM name, low fidelity)", so every table that shows
        a judge's family carries the flag without knowing about naming."""
        names = self.by_key()
        out = []
        for j in judges:
            n = names.get(j.key)
            if n is not None and n.name_source == "llm":
                family = "discovered (LLM name, low fidelity)" if n.low_fidelity else "discovered (LLM name)"
                j = dataclasses.replace(j, text=n.text, inverse_text=n.inverse_text, family=family)
            out.append(j)
        return out


# ---------------------------------------------------------------------------- pair plans (pure)


@dataclass(frozen=True)
class _Plan:
    """Positions (in the distinct-pair frame) shown to the namer and held for fidelity, per direction."""

    key: str
    shown: np.ndarray
    voted: np.ndarray
    unvoted: np.ndarray


def _distinct(pairs: pd.DataFrame) -> np.ndarray:
    """Row positions of the first row of every distinct (prompt, text_a, text_b)."""
    from icai_core.reconstruct import content_groups

    codes = pd.factorize(pd.Series(content_groups(pairs)), sort=False)[0]
    _, first = np.unique(codes, return_index=True)
    return np.sort(first)


def _pair_ids(pairs: pd.DataFrame) -> np.ndarray:
    from icai_core.discover import _pair_ids as ids

    return ids(pairs).to_numpy()


def _activation(found, pairs: pd.DataFrame, key: str, first: np.ndarray) -> np.ndarray:
    """The direction's activation on the distinct pairs (0 where it does not vote)."""
    a = found.activations[key]
    if not a.index.equals(pairs.index):
        raise ValueError(f"the discovery's activations are not indexed like the pair table given ({key})")
    return a.to_numpy(dtype=np.float64)[first]


def _balanced(pos: np.ndarray, neg: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n positions, half from `pos` and half from `neg` where both have enough, the rest from whichever
    has more; sorted."""
    a = min(len(pos), -(-n // 2))
    b = min(len(neg), n - a)
    a = min(len(pos), n - b)
    out = np.concatenate([rng.choice(pos, a, replace=False), rng.choice(neg, b, replace=False)])
    return np.sort(out.astype(np.int64))


def fidelity_plan(found, pairs: pd.DataFrame, config: NamingConfig | None = None) -> list[_Plan]:
    """Which distinct pairs each kept direction shows the namer and holds for fidelity (pure, seeded:
    one generator per direction from (seed, crc32(key)), so adding a direction changes no other plan)."""
    config = config or NamingConfig()
    first = _distinct(pairs)
    plans = []
    for j in found.judges:
        act = _activation(found, pairs, j.key, first)
        order = np.argsort(-np.abs(act), kind="stable")
        shown = np.array([i for i in order[: config.n_examples] if act[i] != 0], dtype=np.int64)
        held = np.ones(len(act), dtype=bool)
        held[shown] = False
        rng = np.random.default_rng([config.seed, zlib.crc32(j.key.encode())])
        voted = _balanced(np.flatnonzero(held & (act > 0)), np.flatnonzero(held & (act < 0)), config.n_voted, rng)
        zero = np.flatnonzero(held & (act == 0))
        unvoted = np.sort(rng.choice(zero, min(len(zero), config.n_unvoted), replace=False).astype(np.int64))
        plans.append(_Plan(j.key, shown, voted, unvoted))
    return plans


def _row(pairs: pd.DataFrame, first: np.ndarray, pos: int):
    return pairs.iloc[int(first[int(pos)])]


def _keywords(found, key: str) -> tuple[list[str], list[str]]:
    t = found.table
    row = t.loc[t["key"] == key]
    if row.empty:
        return [], []
    r = row.iloc[0]
    return list(r["keywords_high"] or []), list(r["keywords_low"] or [])


def naming_requests(found, pairs: pd.DataFrame, config: NamingConfig | None = None,
                    plans: list[_Plan] | None = None) -> list[ChatRequest]:
    """One naming request per kept direction (tag `name:<key>`), a pure function of its inputs."""
    config = config or NamingConfig()
    plans = plans if plans is not None else fidelity_plan(found, pairs, config)
    first = _distinct(pairs)
    reqs = []
    for plan in plans:
        act = _activation(found, pairs, plan.key, first)
        examples = []
        for i in plan.shown:
            r = _row(pairs, first, i)
            a, b = str(r["text_a"]), str(r["text_b"])
            more, less = (a, b) if act[i] > 0 else (b, a)
            examples.append((str(r.get("prompt", "")), more, less))
        high, low = _keywords(found, plan.key)
        msgs = prompts.name_direction_messages(high, low, examples, max_chars=config.example_chars)
        reqs.append(ChatRequest(messages=msgs, max_tokens=prompts.name_direction_max_tokens(), json_mode=True,
                                json_schema=prompts.name_direction_schema(), tag=f"name:{plan.key}"))
    return reqs


def _fidelity_requests(pairs: pd.DataFrame, first: np.ndarray, plan: _Plan, name: str,
                       config: NamingConfig) -> list[ChatRequest]:
    """The pipeline's vote prompt with the one principle `name`, on every held pair of the plan."""
    reqs = []
    for i in np.concatenate([plan.voted, plan.unvoted]):
        r = _row(pairs, first, i)
        msgs = prompts.vote_messages(prompts.truncate(r.get("prompt", ""), config.vote_chars),
                                     prompts.truncate(r["text_a"], config.vote_chars),
                                     prompts.truncate(r["text_b"], config.vote_chars), [name])
        reqs.append(ChatRequest(messages=msgs, max_tokens=prompts.vote_max_tokens(1), json_mode=True,
                                json_schema=prompts.vote_schema(1), tag=f"fidelity:{plan.key}:{int(i)}"))
    return reqs


def estimated_calls(found, pairs: pd.DataFrame, config: NamingConfig | None = None) -> int:
    """Requests a fault-free run sends without any cache: one name per kept direction plus its held
    pairs (an upper bound: a direction whose name is invalid is not voted)."""
    plans = fidelity_plan(found, pairs, config)
    return sum(1 + len(p.voted) + len(p.unvoted) for p in plans)


_INSTRUCTION_WORDS = ("of the property", "more of the property", "less of the property", "select the response")


def _restated(parsed: answers.Parsed) -> answers.Parsed:
    """An answer that only restates the instruction ("... has more of the property", "Select the
    response that select the response with MORE ...": SmolLM2-135M's answers) names nothing: invalid."""
    if not parsed.usable:
        return parsed
    body = str(parsed.value)[len(answers.PREFIX):].lower()
    if any(w in body for w in _INSTRUCTION_WORDS):
        return answers.Parsed(None, answers.INVALID, f"the name restates the instruction: {parsed.value!r}")
    return parsed


# ---------------------------------------------------------------------------- the scores (pure)


def _score(name: DirectionName, direction: np.ndarray, llm: np.ndarray, ok: np.ndarray, voted: np.ndarray,
           config: NamingConfig) -> None:
    """Fill the fidelity fields of `name` from the direction's votes and the LLM's (in place)."""
    from icai_core.stats import wilson_interval

    v_ok = voted & ok
    n = int(v_ok.sum())
    hits = int((llm[v_ok] == direction[v_ok]).sum())
    name.n_fidelity = n
    name.n_fidelity_invalid = int((~ok).sum())
    if n:
        name.fidelity = hits / n
        name.fidelity_ci_low, name.fidelity_ci_high = wilson_interval(hits, n, config.alpha)
    sided = v_ok & (llm != 0)
    if sided.any():
        name.sign_accuracy = float((llm[sided] == direction[sided]).mean())
    name.n_relevance = int(ok.sum())
    if ok.any():
        name.relevance_agreement = float(((llm[ok] != 0) == (direction[ok] != 0)).mean())
    if n < config.min_answers:
        name.low_fidelity = True
        name.fidelity_note = (f"only {n} valid answers on held pairs where the direction votes "
                              f"(< {config.min_answers}): the name is not measured well enough")
    elif name.fidelity < config.threshold:
        name.low_fidelity = True
        name.fidelity_note = (f"the LLM's votes with this name reproduce the direction on {hits} of {n} held "
                              f"pairs ({name.fidelity:.0%} < {config.threshold:.0%}): the name does not "
                              "describe what the direction measures")
    elif not name.fidelity_ci_low > config.chance:
        name.low_fidelity = True
        name.fidelity_note = (f"the LLM's votes with this name reproduce the direction on {hits} of {n} held "
                              f"pairs, but the 95% interval reaches {name.fidelity_ci_low:.0%}: too few pairs to "
                              f"rule out a coin flip between A and B ({config.chance:.0%})")
    else:
        name.fidelity_note = f"the LLM's votes with this name reproduce the direction on {hits} of {n} held pairs"


# ---------------------------------------------------------------------------- main entry point


def _phase(progress: Progress | None, base: int, total: int) -> Progress:
    """A phase's progress (its own done count) on one bar of `total` calls."""

    def cb(done: int, _total: int, message: str) -> None:
        if progress is not None:
            progress(min(base + done, total), total, message)

    return cb


def name_directions(
    client,
    found,
    pairs: pd.DataFrame,
    config: NamingConfig | None = None,
    *,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> Naming:
    """Name every kept direction of `found` (an `icai_core.discover.Discovery` computed on `pairs`) with
    the LLM behind `client` (an `icai_core.llm.LLMClient`) and score each name's fidelity.

    Two batches through the client: the names (one call per direction), then the fidelity votes (one
    call per held pair of each validly named direction). Raises `llm.LLMError` only for what
    `raise_if_fatal` calls fatal; `jobs.Cancelled` when cancelled."""
    config = config or NamingConfig()
    plans = fidelity_plan(found, pairs, config)
    first = _distinct(pairs)
    ids = _pair_ids(pairs)[first]
    counts = {NAME_STAGE: answers.StageCounts(), FIDELITY_STAGE: answers.StageCounts()}
    judges = {j.key: j for j in found.judges}
    names = [DirectionName(key=p.key, keyword_text=judges[p.key].text, keyword_inverse_text=judges[p.key].inverse_text,
                           text=judges[p.key].text, inverse_text=judges[p.key].inverse_text,
                           named_from_pair_ids=[str(ids[i]) for i in p.shown],
                           fidelity_pair_ids=[str(ids[i]) for i in np.concatenate([p.voted, p.unvoted])])
             for p in plans]
    vote_rows: list[dict] = []
    empty_votes = pd.DataFrame(columns=["key", "pair_id", "position", "side", "direction_vote", "llm_vote",
                                        "status"])
    if not plans:
        return Naming(names, empty_votes, counts, config)
    total = sum(1 + len(p.voted) + len(p.unvoted) for p in plans)

    # ---- 1. names
    check(cancel)
    name_reqs = naming_requests(found, pairs, config, plans)
    results = client.complete_many(name_reqs, progress=_phase(progress, 0, total), cancel=cancel)
    raise_if_fatal(results)
    for n, res in zip(names, results, strict=True):
        text = res.text if res is not None and res.ok else None
        parsed = _restated(answers.parse_principle(text, getattr(res, "finish_reason", None)))
        n.name_status = parsed.status
        counts[NAME_STAGE].add(parsed.status, text if text is not None else (res.error if res else None))
        if parsed.usable:
            n.text, n.inverse_text, n.name_source = parsed.value, inverse_of(parsed.value), "llm"
        else:
            n.fidelity_note = "the LLM gave no usable name; the keyword description is kept"

    # ---- 2. fidelity votes with each valid name
    check(cancel)
    fid_reqs, owner = [], []
    for k, (plan, n) in enumerate(zip(plans, names, strict=True)):
        if n.name_source != "llm":
            continue
        reqs = _fidelity_requests(pairs, first, plan, n.text, config)
        fid_reqs += reqs
        owner += [k] * len(reqs)
    results = client.complete_many(fid_reqs, progress=_phase(progress, len(name_reqs), total), cancel=cancel) if fid_reqs else []
    raise_if_fatal(results)
    by_dir: dict[int, list] = {}
    for k, res in zip(owner, results, strict=True):
        by_dir.setdefault(k, []).append(res)
    for k, got in by_dir.items():
        plan, n = plans[k], names[k]
        pos = np.concatenate([plan.voted, plan.unvoted])
        act = _activation(found, pairs, plan.key, first)
        direction = np.sign(act[pos]).astype(np.int64)
        llm = np.zeros(len(pos), dtype=np.int64)
        ok = np.zeros(len(pos), dtype=bool)
        for m, res in enumerate(got):
            text = res.text if res is not None and res.ok else None
            vs, st = answers.parse_votes(text, 1, getattr(res, "finish_reason", None))
            llm[m], ok[m] = vs[0], st[0] != answers.INVALID
            counts[FIDELITY_STAGE].add(st[0], text if text is not None else (res.error if res else None))
            vote_rows.append({"key": plan.key, "pair_id": str(ids[pos[m]]), "position": int(pos[m]),
                              "side": "voted" if m < len(plan.voted) else "unvoted",
                              "direction_vote": int(direction[m]), "llm_vote": int(llm[m]), "status": st[0]})
        n.n_fidelity_asked = len(pos)
        voted = np.zeros(len(pos), dtype=bool)
        voted[: len(plan.voted)] = True
        _score(n, direction, llm, ok, voted, config)

    notes = []
    for stage, c in counts.items():
        msg = answers.check_stage(stage, c, stop=1.0)  # counted, never fatal
        if msg:
            notes.append(msg)
    flagged = [n.key for n in names if n.name_source == "llm" and n.low_fidelity]
    if flagged:
        notes.append(f"{len(flagged)} of {sum(n.name_source == 'llm' for n in names)} LLM names of discovered "
                     f"directions have low fidelity (below {config.threshold:.0%} or under {config.min_answers} "
                     f"valid answers): {', '.join(flagged)}; their keyword descriptions are kept beside them.")
    votes = pd.DataFrame(vote_rows, columns=empty_votes.columns) if vote_rows else empty_votes
    return Naming(names, votes, counts, config, notes)


def naming_table(table: pd.DataFrame, naming: Naming | None = None) -> pd.DataFrame:
    """The discovery table with `NAMING_COLUMNS` added (`text` / `inverse_text` become the LLM name
    where there is one; `keyword_text` keeps the keyword description). Without `naming` every row is
    `name_source="keywords"`, fidelity NaN, `low_fidelity=False`."""
    names = naming.by_key() if naming is not None else {}
    blank = DirectionName(key="", keyword_text="", keyword_inverse_text="", text="", inverse_text="")
    out = table.copy()
    cols: dict[str, list] = {c: [] for c in ("text", "inverse_text", *NAMING_COLUMNS)}
    for key, text, inv in zip(out["key"], out["text"], out["inverse_text"], strict=True):
        n = names.get(key) or dataclasses.replace(blank, key=key, keyword_text=text, keyword_inverse_text=inv,
                                                  text=text, inverse_text=inv)
        for c in cols:
            value = getattr(n, c)
            cols[c].append(list(value) if isinstance(value, list) else value)
    for c, values in cols.items():
        out[c] = pd.Series(values, index=out.index, dtype=object if c.endswith("_ids") else None)
    out["low_fidelity"] = out["low_fidelity"].astype(bool)
    rest = [c for c in out.columns if c not in NAMING_COLUMNS]
    return out[rest + NAMING_COLUMNS]
