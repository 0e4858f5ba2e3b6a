"""AlpacaEval ``annotations.json``: ``instruction, output_1, output_2, preference`` (1, 2, 1.5 = tie)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from icai_core.intake.build import Built, Ctx, meta_text
from icai_core.intake.tables import json_kind
from icai_core.intake.unit import InputFormat


def build(ctx: Ctx) -> Built:
    df = ctx.df
    prompt = ctx.text("instruction", "the instruction text")
    ta = ctx.text("output_1", "the response text")
    tb = ctx.text("output_2", "the response text")
    raw = df["preference"].reset_index(drop=True)
    values = raw.array
    null = np.fromiter(
        (v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")
         for v in values), dtype=bool, count=len(values))
    num = pd.to_numeric(pd.Series([None if n else v for v, n in zip(values, null, strict=True)],
                                  dtype=object), errors="coerce").to_numpy(dtype=float)
    bad_text = np.flatnonzero(np.isnan(num) & ~null)
    if bad_text.size:
        pos = int(bad_text[0])
        v = values[pos]
        shown = repr(v) if isinstance(v, str) else json_kind(v)
        raise ctx.error(pos, "preference", f"the preference value {shown} is not a number",
                        "AlpacaEval preferences are numbers: 1 = output_1 better, 2 = output_2 better, "
                        "1.5 = tie (values in between are weighted preferences)")
    zero = num == 0
    out_of_range = ~null & ~zero & ((num < 1) | (num > 2))
    if out_of_range.any():
        pos = int(np.flatnonzero(out_of_range)[0])
        raise ctx.error(pos, "preference",
                        f"the preference value {values[pos]!r} is outside AlpacaEval's range 1 to 2",
                        "Use 1 (output_1 better), 2 (output_2 better), 1.5 (tie) or a weighted value in between")
    pref = np.where(null | zero | (num == 1.5), "tie", np.where(num < 1.5, "a", "b"))
    n_zero, n_null = int(zero.sum()), int(null.sum())
    if n_zero or n_null:
        parts = []
        if n_zero:
            parts.append(f"{n_zero} with preference 0")
        if n_null:
            parts.append(f"{n_null} without a preference")
        ctx.warnings.append(
            f"{' and '.join(parts)} treated as ties (AlpacaEval uses 0 for a draw and leaves the "
            "preference empty when the judge's answer could not be parsed); raw values are in raw_preference"
        )
    consumed = {"instruction", "output_1", "output_2", "preference"}
    extras: dict[str, pd.Series] = {}
    mapping = {"prompt": "instruction", "text_a": "output_1", "text_b": "output_2", "preferred": "preference"}
    for src, dst in (("generator_1", "model_a"), ("generator_2", "model_b")):
        if src in df.columns and dst not in df.columns:
            extras[dst] = meta_text(df[src], ctx, src)
            consumed.add(src)
            mapping[dst] = src
    if "dataset" in df.columns and "category" not in df.columns:
        extras["category"] = meta_text(df["dataset"], ctx, "dataset")  # a copy: 'dataset' stays as metadata
        mapping["category"] = "dataset"
    return Built(prompt=prompt, text_a=ta, text_b=tb, preferred=pd.Series(pref, dtype="str"),
                 consumed=consumed, label_col="preference", extras=extras, mapping=mapping)


FORMAT = InputFormat(
    name="alpacaeval",
    description="AlpacaEval annotations.json: instruction, output_1, output_2, preference (1, 2, 1.5 = tie)",
    signature=("instruction", "output_1", "output_2", "preference"),
    build=build,
)
