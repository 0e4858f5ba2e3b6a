"""`summary.json`: the machine-readable result of a run (schema in docs/metrics.md).

One entry per annotator (a file without an annotator column has one), counts in distinct pairs,
every principle with its `kind`, the marginal effect and, where the evidence module computed them,
the length-controlled effect, length and position views and the cross-validated reconstruction
verdict; plus the agreement between annotators and, for LLM runs, the answers' validity per stage.
The app, the reports and this file read the same numbers from the same `RunResult`. No NaN is
written: a missing number is `null`, and a sentence says why where a reader needs to know.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1


def _num(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "to_dict"):
        return _clean(obj.to_dict())
    return str(obj)


def _discovered_fields(view) -> dict[str, dict]:
    """Per discovered principle: how it is named (`name_source` "keywords" | "llm", the keyword
    description) and, for an LLM name, its fidelity (icai_core.naming) and the `low_fidelity` flag."""
    table = (getattr(view, "extras", None) or {}).get("discovery")
    if table is None or "key" not in getattr(table, "columns", ()):
        return {}
    out = {}
    for _, r in table.iterrows():
        if "name_source" not in r:
            out[r["key"]] = {"name_source": "keywords", "keyword_text": r.get("text"), "fidelity": None,
                             "low_fidelity": False}
            continue
        out[r["key"]] = {
            "name_source": r["name_source"],
            "keyword_text": r.get("keyword_text"),
            "fidelity": None if r["name_source"] != "llm" else {
                "value": _num(r.get("fidelity")), "ci": [_num(r.get("fidelity_ci_low")), _num(r.get("fidelity_ci_high"))],
                "n": int(r.get("n_fidelity", 0) or 0), "n_asked": int(r.get("n_fidelity_asked", 0) or 0),
                "n_invalid": int(r.get("n_fidelity_invalid", 0) or 0),
                "sign_accuracy": _num(r.get("sign_accuracy")),
                "relevance_agreement": _num(r.get("relevance_agreement")),
                "metric": "share of held pairs where the direction votes on which the LLM's vote with the name "
                          "equals it (not relevant = miss), Wilson 95% CI",
                "note": r.get("fidelity_note") or ""},
            "low_fidelity": bool(r.get("low_fidelity", False)),
        }
    return out


def _principles(view) -> list[dict]:
    kinds = {j.key: j.kind for j in view.judges}
    texts = {j.key: (j.text, j.inverse_text) for j in view.judges}
    discovered = _discovered_fields(view) if "discovered" in kinds.values() else {}
    out = []
    for _, r in view.stats.iterrows():
        out.append({
            "key": r["key"],
            "kind": kinds.get(r["key"], "measurable"),
            "text": texts.get(r["key"], (r["text"], ""))[0],
            "inverse_text": texts.get(r["key"], ("", ""))[1],
            "n_relevant": int(r["n_relevant"]),
            "n_invalid": int(r.get("n_invalid", 0) or 0),
            "marginal": {"strength": _num(r["strength"]),
                         "ci": [_num(r["strength_ci_low"]), _num(r["strength_ci_high"])],
                         "accuracy": _num(r["accuracy"]), "relevance": _num(r["relevance"]),
                         "p": _num(r["p_value"]), "q": _num(r["q_value"]),
                         "significant": bool(r["significant"])},
            "controlled": None,
            "proxy_for_length": False,
            **(discovered.get(r["key"], {}) if kinds.get(r["key"]) == "discovered" else {}),
        })
    return out


def _holdout(view) -> dict:
    table = view.reconstruction.table
    methods = {r["method"]: {"accuracy": _num(r["agreement"]), "ci": [_num(r["ci_low"]), _num(r["ci_high"])],
                             "n_test": int(r["n_test"])} for _, r in table.iterrows()}
    if view.llm_reconstruction is not None:
        for _, r in view.llm_reconstruction.iterrows():
            methods[r["method"]] = {"accuracy": _num(r["agreement"]), "ci": [_num(r["ci_low"]), _num(r["ci_high"])],
                                    "n_test": int(r["n_test"]), "n_invalid": int(r.get("n_invalid", 0) or 0)}
    return {"split": "single held-out split of distinct pairs", "n_test": int(view.reconstruction.n_test),
            "methods": methods}


def annotator_entry(view) -> dict:
    a = view.analysis
    pairs = view.pairs
    n_ties = int((pairs["preferred"] == "tie").sum())
    entry: dict[str, Any] = {
        "n_pairs": int(a.n_pairs),
        "n_rows": int(len(pairs)),
        "pooled": bool(a.pooled),
        "tie_rate": _num(n_ties / len(pairs)) if len(pairs) else None,
        "principles": _principles(view),
        "constitution": view.constitution.to_dict(),
        "holdout": _holdout(view),
        "notes": list(a.notes),
    }
    evidence = getattr(a, "evidence", None)
    if evidence is not None:
        extra = evidence.to_summary() if hasattr(evidence, "to_summary") else dict(evidence)
        by_key = {p["key"]: p for p in entry["principles"]}
        for p in extra.pop("principles", []) or []:
            target = by_key.get(p.get("key"))
            if target is not None:
                for k in ("controlled", "proxy_for_length"):
                    if k in p:
                        target[k] = p[k]
                if "marginal" in p:  # the cluster-robust CI, p and q replace the row-level ones
                    target["marginal"].update({k: v for k, v in p["marginal"].items() if k in ("ci", "p", "q")})
                    target["marginal"]["inference"] = "clustered by prompt"
                    q = target["marginal"].get("q")
                    target["marginal"]["significant"] = bool(q is not None and q < view.config.alpha)
        entry.update(extra)
    return entry


def summary_document(result) -> dict:
    """The whole `summary.json` of a run."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": result.dataset_name,
        "dataset_hash": result.dataset_hash,
        "run_id": result.run_id,
        "kind": result.kind,
        "engine": result.config.engine,
        "n_rows": int(len(result.all_pairs)),
        "n_distinct_pairs": int(len(pd.unique(_pair_ids(result.all_pairs)))),
        "provenance": result.provenance,
        "annotators": {name: annotator_entry(result.view(name)) for name in result.annotator_names},
        "agreement": list(getattr(result, "agreement", None) or []),
        "notes": list(result.notes),
    }
    if result.config.engine == "llm" or result.stage_counts:
        doc["llm"] = {
            "stages": {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v)) for k, v in result.stage_counts.items()},
            "usage": result.usage,
        }
    return _clean(doc)


def _pair_ids(pairs: pd.DataFrame) -> np.ndarray:
    from icai_core.reconstruct import content_groups

    return content_groups(pairs)
