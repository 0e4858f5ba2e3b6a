"""Import and export in formats other tools read.

* The **annotated pairs** JSON format (version 1.0) used by ICAI (`rdnfn/icai`) and Feedback
  Forensics: one annotator per principle (id = first 8 hex digits of the md5 of its text), votes as
  `{"pref": "text_a" | "text_b"}` or `{"pref": null, "no_pref_reason": "not_applicable" | "invalid"}`,
  plus the dataset's own annotator as the default annotator. Version 2.0 files (responses as dicts
  with a `text` field) are read too.
* The constitution as JSON (ours, round-trips) and as ICAI's plain numbered text.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from icai_core.report import safe_csv

FORMAT_VERSION = "1.0"
DEFAULT_ANNOTATOR_DESCRIPTION = "Default annotator from original dataset (from column `preferred_text`)"
_PREF = {"a": "text_a", "b": "text_b", "tie": "tie"}
_PREF_BACK = {"text_a": "a", "text_b": "b", "tie": "tie", "a": "a", "b": "b"}


def hash_string(s: str) -> str:
    """8-hex-digit id, as ICAI and Feedback Forensics compute it."""
    return hashlib.md5(s.encode("utf-8")).hexdigest()[:8]


def _comparison_id(prompt: str | None, text_a: str, text_b: str) -> str:
    combined = f"{text_a}|{text_b}|"
    if prompt is not None:
        combined = f"{prompt}|{combined}"
    return hash_string(combined)


def to_annotated_pairs(
    pairs: pd.DataFrame,
    votes: pd.DataFrame,
    principles: list,
    *,
    dataset_name: str = "data",
    invalid: pd.DataFrame | None = None,
) -> dict:
    """Pairs, their annotator's label and every principle's vote in the annotated pairs format.

    `principles` are objects with `.key` and `.text` in the order of `votes.columns` (or a superset).
    `invalid` (optional, bool DataFrame like `votes`) marks LLM answers that could not be parsed.
    """
    by_key = {p.key: p for p in principles}
    default_id = hash_string(DEFAULT_ANNOTATOR_DESCRIPTION)
    annotators = {
        default_id: {"name": "preferred_text", "description": DEFAULT_ANNOTATOR_DESCRIPTION, "type": "unknown"}
    }
    ids = {}
    for key in votes.columns:
        text = by_key[key].text
        ids[key] = hash_string(text)
        annotators[ids[key]] = {"description": text, "type": "principle", "principia_key": key}
    meta_cols = [c for c in pairs.columns if c not in ("prompt", "text_a", "text_b", "preferred")]
    v = votes.to_numpy()
    inv = invalid.reindex(columns=votes.columns).fillna(False).to_numpy(bool) if invalid is not None else None
    comparisons = []
    for n, row in enumerate(pairs.itertuples(index=False)):
        r = row._asdict()
        ann = {default_id: {"pref": _PREF[r["preferred"]]}}
        for j, key in enumerate(votes.columns):
            if inv is not None and inv[n, j]:
                ann[ids[key]] = {"pref": None, "no_pref_reason": "invalid"}
            elif v[n, j] == 1:
                ann[ids[key]] = {"pref": "text_a"}
            elif v[n, j] == -1:
                ann[ids[key]] = {"pref": "text_b"}
            else:
                ann[ids[key]] = {"pref": None, "no_pref_reason": "not_applicable"}
        comparisons.append({
            "id": _comparison_id(r["prompt"], r["text_a"], r["text_b"]),
            "prompt": r["prompt"],
            "text_a": r["text_a"],
            "text_b": r["text_b"],
            "annotations": ann,
            "metadata": {c: str(r[c]) for c in meta_cols if r[c] is not None and r[c] == r[c]},
        })
    return {
        "metadata": {
            "version": FORMAT_VERSION,
            "description": "Annotated pairs dataset with principle annotations from Principia",
            "created_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "dataset_name": dataset_name,
            "default_annotator": default_id,
            "available_metadata_keys_per_comparison": meta_cols,
        },
        "annotators": annotators,
        "comparisons": comparisons,
    }


def from_annotated_pairs(obj: dict | str | Path):
    """Read an annotated pairs file -> (pairs table, votes DataFrame, list of principle dicts).

    Principle annotators become vote columns (1 = text_a, -1 = text_b, 0 = no preference); the
    default annotator becomes `preferred`. Raises ValueError with a clear message on bad structure.
    """
    if not isinstance(obj, dict):
        obj = json.loads(Path(obj).read_text(encoding="utf-8"))
    try:
        meta = obj.get("metadata", {})
        annotators = obj["annotators"]
        comparisons = obj["comparisons"]
    except (KeyError, AttributeError, TypeError):
        raise ValueError(
            "Not an annotated pairs file: expected top-level 'annotators' and 'comparisons' keys."
        ) from None
    v2 = str(meta.get("version", "1.0")).split(".")[0] == "2"
    default_id = meta.get("default_annotator")
    if default_id is None:
        raise ValueError("Annotated pairs file has no metadata.default_annotator: cannot tell the label.")
    principle_ids = [a for a, info in annotators.items() if info.get("type") == "principle"]
    rows, vote_rows = [], []
    for n, c in enumerate(comparisons):
        if v2:
            ta, tb = c["response_a"].get("text", ""), c["response_b"].get("text", "")
        else:
            ta, tb = c["text_a"], c["text_b"]
        pref = (c.get("annotations", {}).get(default_id) or {}).get("pref")
        if pref not in _PREF_BACK:
            raise ValueError(
                f"comparison {n + 1} (id {c.get('id')}): default annotator preference {pref!r} "
                "is not text_a, text_b or tie"
            )
        row = {"id": str(c.get("id", f"row-{n}")), "prompt": c.get("prompt") or "", "text_a": ta,
               "text_b": tb, "preferred": _PREF_BACK[pref]}
        row.update(c.get("metadata", {}) or {})
        rows.append(row)
        vr = []
        for pid in principle_ids:
            p = (c.get("annotations", {}).get(pid) or {}).get("pref")
            vr.append(1 if p in ("text_a", "a") else -1 if p in ("text_b", "b") else 0)
        vote_rows.append(vr)
    keys = [annotators[p].get("principia_key") or f"p_{p}" for p in principle_ids]
    pairs = pd.DataFrame(rows)
    votes = pd.DataFrame(np.array(vote_rows, dtype=np.int8).reshape(len(rows), len(keys)),
                         columns=keys, index=pairs.index)
    principles = [{"key": k, "text": annotators[p].get("description", ""), "annotator_id": p}
                  for k, p in zip(keys, principle_ids, strict=True)]
    return pairs, votes, principles


def write_icai_outputs(result, out: Path) -> None:
    """Files only an ICAI run has (the common ones come from `cli.write_audit_outputs`): each
    annotator's constitution as ICAI's numbered text, proposals, clusters, the annotated pairs JSON
    (invalid LLM answers marked "invalid", not "not applicable") and usage with per-stage answer counts."""
    out = Path(out)
    for name in result.annotator_names:
        view = result.view(name)
        suffix = "" if len(result.annotator_names) == 1 else "_" + "".join(
            ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]
        (out / f"constitution{suffix}.txt").write_text(view.constitution.text() + "\n")  # ICAI's numbered list
    if result.proposals is not None:
        (out / "proposals.csv").write_bytes(safe_csv(result.proposals))
    if result.clusters is not None:
        (out / "clusters.csv").write_bytes(safe_csv(result.clusters.points))
    invalid = ~result.all_valid if result.all_valid is not None else None
    doc = to_annotated_pairs(result.all_pairs, result.all_votes, result.judges, dataset_name=result.dataset_name,
                             invalid=invalid)
    (out / "annotated_pairs.json").write_text(json.dumps(doc, ensure_ascii=False))
    stages = {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v)) for k, v in result.stage_counts.items()}
    (out / "usage.json").write_text(json.dumps({"usage": result.usage, "stages": stages}, indent=2))
