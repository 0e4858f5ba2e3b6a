"""Kaggle "LMSYS Chatbot Arena": ``prompt, response_a, response_b, winner_model_a/_b/_tie``; the
text columns hold JSON lists of turns (or plain text)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from icai_core.intake.build import Built, Ctx, interleave, split_all
from icai_core.intake.tables import json_kind
from icai_core.intake.unit import InputFormat


def _turn_list(ctx: Ctx, pos: int, col: str, v: Any, nulls: list[int]) -> list[str]:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, str):
        t = v.lstrip()
        if t.startswith("["):
            try:
                parsed = ctx.cell_json(pos, col, v)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list) and all(x is None or isinstance(x, str) for x in parsed):
                v = parsed
        if isinstance(v, str):
            return [v]
    if isinstance(v, list) and all(x is None or isinstance(x, str) for x in v):
        nulls[0] += sum(x is None for x in v)
        return ["" if x is None else x for x in v]
    raise ctx.error(pos, col, f"expected text or a JSON list of texts but found {json_kind(v)}",
                    "Give the turns as text or as a JSON list of strings")


def build(ctx: Ctx) -> Built:
    df = ctx.df
    nulls = [0]
    conv_a, conv_b = [], []
    cols = {c: df[c].array for c in ("prompt", "response_a", "response_b")}
    for pos in range(ctx.n):
        p = _turn_list(ctx, pos, "prompt", cols["prompt"][pos], nulls)
        ra = _turn_list(ctx, pos, "response_a", cols["response_a"][pos], nulls)
        rb = _turn_list(ctx, pos, "response_b", cols["response_b"][pos], nulls)
        conv_a.append(interleave(p, ra))
        conv_b.append(interleave(p, rb))
    if nulls[0]:
        ctx.warnings.append(f"{nulls[0]} turns are null in the source (no text); they are read as empty text")
    prompt, ta, tb = split_all(ctx, conv_a, conv_b, "response_a", "response_b")
    flag_cols = ("winner_model_a", "winner_model_b", "winner_tie")
    flags = []
    for c in flag_cols:
        f = pd.to_numeric(df[c].reset_index(drop=True), errors="coerce").to_numpy(dtype=float)
        flags.append(f)
    flags_arr = np.vstack(flags).T
    valid = np.isin(flags_arr, (0.0, 1.0)).all(axis=1) & (np.nansum(flags_arr, axis=1) == 1)
    if not valid.all():
        pos = int(np.flatnonzero(~valid)[0])
        shown = ", ".join(f"{c}={df[c].array[pos]!r}" for c in flag_cols)
        raise ctx.error(pos, None, f"exactly one of winner_model_a, winner_model_b, winner_tie must be 1, "
                        f"but this row has {shown}",
                        "Set the column of the winner to 1 and the two others to 0")
    pref = np.select([flags_arr[:, 0] == 1, flags_arr[:, 1] == 1], ["a", "b"], "tie")
    return Built(prompt=prompt, text_a=ta, text_b=tb, preferred=pd.Series(pref, dtype="str"),
                 consumed={"prompt", "response_a", "response_b"}, label_col=None,
                 mapping={"prompt": "prompt", "text_a": "response_a", "text_b": "response_b",
                          "preferred": "winner_model_a/winner_model_b/winner_tie"})


FORMAT = InputFormat(
    name="arena_kaggle",
    description="Kaggle LMSYS Arena: prompt, response_a, response_b, winner_model_a/_b/_tie",
    signature=("prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"),
    build=build,
)
