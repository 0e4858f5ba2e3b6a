"""Chatbot Arena battles: ``model_a, model_b, conversation_a, conversation_b, winner``."""

from __future__ import annotations

import pandas as pd

from icai_core.intake.build import Built, Ctx, as_turns, meta_text, split_all
from icai_core.intake.tables import json_kind
from icai_core.intake.unit import InputFormat

ARENA_LABELS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"}


def build(ctx: Ctx) -> Built:
    df = ctx.df
    turns: dict[str, list] = {}
    for col in ("conversation_a", "conversation_b"):
        out = []
        for pos, v in enumerate(df[col].array):
            t = as_turns(v, ctx, pos, col)
            if t is None:
                raise ctx.error(pos, col, f"expected a conversation (a list of {{role, content}} turns) "
                                f"but found {json_kind(v) if not isinstance(v, str) else 'other text'}",
                                "Give the conversation as a JSON list such as "
                                "[{\"role\": \"user\", \"content\": ...}, {\"role\": \"assistant\", \"content\": ...}]")
            out.append(t)
        turns[col] = out
    prompt, ta, tb = split_all(ctx, turns["conversation_a"], turns["conversation_b"], "conversation_a",
                               "conversation_b")
    pref = ctx.labels("winner", ARENA_LABELS, "model_a, model_b, tie, tie (bothbad)")
    extras: dict[str, pd.Series] = {}
    mapping = {"prompt": "conversation_a", "text_a": "conversation_a", "text_b": "conversation_b",
               "preferred": "winner"}
    if "judge" in df.columns and "annotator" not in df.columns:
        extras["annotator"] = meta_text(df["judge"], ctx, "judge")  # a copy: 'judge' stays as metadata
        mapping["annotator"] = "judge"
    return Built(prompt=prompt, text_a=ta, text_b=tb, preferred=pref,
                 consumed={"conversation_a", "conversation_b", "winner"}, label_col="winner",
                 extras=extras, mapping=mapping)


FORMAT = InputFormat(
    name="arena",
    description="Chatbot Arena battles: model_a, model_b, conversation_a, conversation_b, winner",
    signature=("conversation_a", "conversation_b", "winner"),
    build=build,
)
