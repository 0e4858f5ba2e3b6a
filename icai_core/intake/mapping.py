"""Explicit column mappings: the builder for `ColumnMapping`, and suggestions for a mapping UI."""

from __future__ import annotations

from icai_core.intake.build import DEFAULT_MAPPING_LABELS, PRINCIPIA_LABELS, Built, Ctx, label_key, meta_text
from icai_core.intake.errors import DataError
from icai_core.intake.model import OPTIONAL_COLUMNS, ColumnMapping

MAPPING_DESCRIPTION = "any other columns, read through an explicit ColumnMapping"

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "instruction", "question", "query", "input", "context", "conversation", "history",
               "user_prompt", "prompt_text"),
    "text_a": ("text_a", "response_a", "output_1", "output_a", "answer_a", "completion_a", "response_1",
               "response1", "answer1", "answer_1", "output1", "a", "model_a_response", "chosen"),
    "text_b": ("text_b", "response_b", "output_2", "output_b", "answer_b", "completion_b", "response_2",
               "response2", "answer2", "answer_2", "output2", "b", "model_b_response", "rejected"),
    "preferred": ("preferred", "preferred_text", "preference", "winner", "label", "choice", "verdict",
                  "preferred_response", "better", "human_preference", "score"),
    "id": ("id", "uid", "row_id", "example_id", "sample_id"),
    "annotator": ("annotator", "judge", "rater", "worker", "worker_id", "annotator_id", "labeler", "evaluator"),
    "model_a": ("model_a", "generator_1", "model_1", "generator_a"),
    "model_b": ("model_b", "generator_2", "model_2", "generator_b"),
    "language": ("language", "lang"),
    "pair_id": ("pair_id", "question_id"),
    "category": ("category", "dataset", "topic", "domain", "task"),
}


def _norm_name(c: str) -> str:
    return str(c).strip().lower().replace(" ", "_").replace("-", "_")


def suggest_mapping(columns) -> ColumnMapping | None:
    """A best-guess ColumnMapping from column names (for a column-mapping UI), or None when no
    columns for both responses and the preference can be found. Never applied automatically."""
    cols = [str(c) for c in columns]
    by_norm: dict[str, str] = {}
    for c in cols:
        by_norm.setdefault(_norm_name(c), c)
    used: set[str] = set()
    picked: dict[str, str | None] = {}
    for target in ("text_a", "text_b", "preferred", "prompt", "id", "annotator", "model_a", "model_b",
                   "language", "pair_id", "category"):
        picked[target] = None
        for syn in _SYNONYMS[target]:
            c = by_norm.get(syn)
            if c is not None and c not in used:
                picked[target] = c
                used.add(c)
                break
    if not (picked["text_a"] and picked["text_b"] and picked["preferred"]):
        return None
    return ColumnMapping(
        prompt=picked["prompt"], text_a=picked["text_a"], text_b=picked["text_b"],
        preferred=picked["preferred"], id=picked["id"], annotator=picked["annotator"],
        model_a=picked["model_a"], model_b=picked["model_b"], language=picked["language"],
        pair_id=picked["pair_id"], category=picked["category"],
    )


def suggest_value_map(values) -> dict[str, str]:
    """Guess how distinct preference labels map to a / b / tie (a suggestion for a UI to show and let
    the user confirm; never applied automatically). Unknown labels are left out."""
    keys = {label_key(v) for v in values}
    keys.discard(None)
    known = {label_key(k): v for k, v in DEFAULT_MAPPING_LABELS.items()}
    out = {k: known[k] for k in keys if k in known}
    rest = keys - set(out)
    if rest and rest <= {"1", "2", "0", "1.5", "3"}:
        out.update({k: v for k, v in {"1": "a", "2": "b"}.items() if k in rest})
        for k in ("0", "1.5", "3"):
            if k in rest:
                out[k] = "tie"
    elif rest and rest <= {"-1", "0", "1"}:
        out.update({k: v for k, v in {"-1": "a", "1": "b", "0": "tie"}.items() if k in rest})
    return out


def build_mapping(ctx: Ctx, mapping: ColumnMapping) -> Built:
    cols = list(ctx.df.columns)
    for target, src in mapping.columns().items():
        if src not in ctx.df.columns:
            raise DataError(
                ctx.file, None, src,
                f"the column mapping uses this column for {target}, but the file has no such column",
                "Choose one of the file's columns: " + ", ".join(cols),
            )
    vocab = dict(DEFAULT_MAPPING_LABELS)
    for k, v in (mapping.values or {}).items():
        target = PRINCIPIA_LABELS.get(str(v).strip(), None) if isinstance(v, str) else None
        if target is None:
            raise DataError(ctx.file, None, mapping.preferred,
                            f"the value map sends {k!r} to {v!r}, which is not a preference",
                            "Map every label to 'a', 'b' or 'tie'")
        vocab[str(k)] = target
    allowed = ", ".join(sorted(map(str, mapping.values))) if mapping.values else "a, b, tie (or A, B, text_a, text_b)"
    if mapping.prompt is None:
        prompt = ctx.empty()
        ctx.warnings.append("no prompt column is mapped, so every prompt is empty")
    else:
        prompt = ctx.text(mapping.prompt)
    built = Built(
        prompt=prompt, text_a=ctx.text(mapping.text_a), text_b=ctx.text(mapping.text_b),
        preferred=ctx.labels(mapping.preferred, vocab, allowed),
        consumed={c for c in (mapping.prompt, mapping.text_a, mapping.text_b, mapping.preferred) if c},
        label_col=mapping.preferred, mapping=mapping.columns(), prompt_absent=mapping.prompt is None,
    )
    for name in OPTIONAL_COLUMNS:
        src = getattr(mapping, name)
        if src is not None:
            built.extras[name] = meta_text(ctx.df[src], ctx, src)
            built.consumed.add(src)
    return built
