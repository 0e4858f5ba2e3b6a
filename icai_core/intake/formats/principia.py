"""ICAI / Principia CSV: ``text_a, text_b, preferred_text`` (+ ``prompt``); the shared real data."""

from __future__ import annotations

from icai_core.intake.build import PRINCIPIA_LABELS, Built, Ctx, build_text_format
from icai_core.intake.unit import InputFormat


def build(ctx: Ctx) -> Built:
    return build_text_format(ctx, "preferred_text", PRINCIPIA_LABELS,
                             "text_a, text_b, tie (a, b, A and B are also accepted)")


def text_mapping(label_col: str):
    def default_mapping(columns: list[str]) -> dict[str, str]:
        m = {"text_a": "text_a", "text_b": "text_b", "preferred": label_col}
        if "prompt" in columns:
            m = {"prompt": "prompt", **m}
        if "id" in columns:
            m["id"] = "id"
        return m

    return default_mapping


FORMAT = InputFormat(
    name="principia",
    description="ICAI / Principia CSV: text_a, text_b, preferred_text (text_a / text_b / tie), optional prompt",
    signature=("text_a", "text_b", "preferred_text"),
    build=build,
    usual=("prompt",),
    default_mapping=text_mapping("preferred_text"),
)
