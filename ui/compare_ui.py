"""Helpers of the Compare page: split columns, cached comparisons, dataset comparison job, diffs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui import common as C
from ui.jobs import BackgroundJob

JOB = "cmp_job"
RESULT = "cmp_datasets_result"
# Text columns, ids and the label itself (splitting by the label would be circular).
NOT_SPLITTABLE = {
    "id",
    "pair_id",
    "prompt",
    "text_a",
    "text_b",
    "preferred",
    "preferred_text",
    "raw_preference",
}
MIN_GROUPS, MAX_GROUPS = 2, 30


def split_columns(pairs: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Columns with 2-30 distinct values (annotator, model_a, language, category, …) -> count.

    `exclude`: more columns to leave out, e.g. the source's label column named in the intake report."""
    out: dict[str, int] = {}
    for col in pairs.columns:
        if col in NOT_SPLITTABLE or col in exclude:
            continue
        try:
            n = int(pairs[col].astype(str).nunique(dropna=False))
        except TypeError:
            continue
        if MIN_GROUPS <= n <= MAX_GROUPS:
            out[str(col)] = n
    return out


@st.cache_data(show_spinner="Comparing groups…", max_entries=64)
def compare_groups_cached(
    dataset_hash: str, cfg_key: str, by: str, min_pairs: int, alpha: float, _audit: Any
):
    from icai_core.compare import compare_groups

    # The whole file (every annotator's rows), not only the annotator the other pages show.
    return compare_groups(
        _audit.all_votes,
        _audit.all_pairs,
        by,
        principles=C.principle_objects(_audit),
        min_pairs=min_pairs,
        alpha=alpha,
    )


LOADED_PREFIX = "loaded: "


def dataset_choices(ds: C.LoadedDataset) -> dict[str, Any]:
    """Datasets offered for comparison: the loaded one, the files uploaded earlier in this session,
    the gallery samples and every bundled one."""
    choices: dict[str, Any] = {ds.name: None}
    for name, spec in (st.session_state.get("session_uploads") or {}).items():
        choices.setdefault(f"uploaded: {name}", spec)
    for name, spec in C.bundled_choices().items():
        choices.setdefault(name, spec)
    try:
        from ui.gallery import cards

        for card in cards():
            choices.setdefault(card.name, {"path": str(card.path)})
    except Exception:  # the gallery is optional here
        pass
    choices.pop(ds.name, None)
    return {ds.name: None, **choices}


def start_dataset_compare(
    names: list[str], choices: dict[str, Any], *, use_embeddings: bool, alpha: float
) -> None:
    from icai_core import data
    from icai_core.audit import compute_votes_cached, default_cache_dir
    from icai_core.compare import compare_datasets

    ds = C.get_dataset()
    audit = C.get_audit()
    names = list(names)
    principles = C.principle_objects(audit)

    def work(progress, cancel):
        items = []
        for i, name in enumerate(names):
            progress(i, len(names), f"Votes of {name}")
            if choices.get(name) is None and ds is not None and name == ds.name and audit is not None:
                items.append((name, audit.votes, audit.pairs["preferred"]))
                continue
            spec = choices[name]
            if hasattr(spec, "pairs"):  # a dataset uploaded earlier in this session
                pairs = spec.pairs
            else:
                path = spec.get("path") if isinstance(spec, dict) else getattr(spec, "path", spec)
                pairs = data.load_pairs(path, name=name).pairs

            def sub(done, total, message, i=i, name=name):
                frac = done / max(total, 1)
                progress(int(1000 * (i + frac)), 1000 * len(names), f"{name}: {message}")

            votes = compute_votes_cached(
                pairs,
                use_embeddings=use_embeddings,
                cache_dir=default_cache_dir(),
                progress=sub,
                cancel=cancel,
            )
            items.append((name, votes, pairs["preferred"]))
        progress(len(names), len(names), "Comparing")
        return {"names": names, "result": compare_datasets(items, principles=principles, alpha=alpha)}

    st.session_state.pop(RESULT, None)
    st.session_state[JOB] = BackgroundJob(work, label="dataset comparison")


def collect(job: BackgroundJob) -> None:
    if job.status == "done" and job.result is not None:
        st.session_state[RESULT] = job.result
        st.session_state.pop(JOB, None)


def group_constitution(result: Any, group: str, selection: dict):
    from icai_core.constitution import build_constitution

    stats = result.per_group[result.per_group["group"] == group].drop(columns=["group"])
    return build_constitution(stats, principles=C.principle_objects(C.get_audit()), **selection)


def group_constitution_diff(result: Any, group_a: str, group_b: str, selection: dict):
    from icai_core.compare import constitution_diff

    return constitution_diff(
        group_constitution(result, group_a, selection), group_constitution(result, group_b, selection)
    )


STATUS = {"both": "in both", "flipped": "opposite directions", "only_a": "only in A", "only_b": "only in B"}


def diff_view(d: Any, group_a: str, group_b: str) -> pd.DataFrame:
    t = d.table.copy()
    t["status"] = t["status"].map(lambda s: STATUS.get(s, s))
    t = t.rename(
        columns={
            "text_a": f"wording in A ({group_a})",
            "text_b": f"wording in B ({group_b})",
            "strength_a": "strength A",
            "strength_b": "strength B",
        }
    )
    return t.drop(columns=[c for c in ("inverted_a", "inverted_b") if c in t.columns])


@st.cache_data(show_spinner="Building the judge report card…", max_entries=32)
def report_card_cached(dataset_hash: str, run_key: str, reference: str | None, groups: tuple, _audit: Any):
    """(report card DataFrame, agreement list) over every annotator's rows of the run.

    `groups`: ((name, (member, ...)), ...) pooled sides for the agreement table, e.g. all GPT-4 runs."""
    from icai_core.reportcard import agreement_table, report_card

    pairs = _audit.all_pairs
    order = _audit.config.evidence.order_known
    card = report_card(pairs, reference=reference, order_known=order, alpha=_audit.config.alpha)
    agree = agreement_table(pairs, reference=reference, groups={g: list(m) for g, m in groups} or None,
                            alpha=_audit.config.alpha)
    return card, agree


def agreement_matrix(agree: list[dict], names: list[str]) -> pd.DataFrame:
    """Square table of pairwise agreement (diagonal empty) from `agreement_table` rows."""
    m = pd.DataFrame(index=names, columns=names, dtype=float)
    for r in agree:
        if r["a"] in m.index and r["b"] in m.columns and r.get("agreement") is not None:
            m.loc[r["a"], r["b"]] = m.loc[r["b"], r["a"]] = r["agreement"]
    return m
