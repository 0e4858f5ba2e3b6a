"""Shared pieces of the format builders: the build context, typed column access, label
normalisation, conversations, and assembling the canonical pair table.

A format unit's builder gets a `Ctx` (the source `Table` plus a warnings list) and returns a
`Built` (the four canonical series, which source columns it consumed, extras); `assemble` then adds
ids, optional metadata and every source column that was not consumed.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icai_core.intake import safejson
from icai_core.intake.errors import DataError
from icai_core.intake.model import OPTIONAL_COLUMNS, ColumnMapping
from icai_core.intake.tables import Table, json_kind

PRINCIPIA_LABELS = {
    "text_a": "a", "text_b": "b", "tie": "tie",
    "a": "a", "b": "b", "A": "a", "B": "b", "Tie": "tie", "TIE": "tie",
}
DEFAULT_MAPPING_LABELS = {**PRINCIPIA_LABELS, "model_a": "a", "model_b": "b", "draw": "tie"}

_NESTED_HINT = "Replace the value with text, or export the data again with the value flattened"


@dataclass
class Built:
    prompt: pd.Series
    text_a: pd.Series
    text_b: pd.Series
    preferred: pd.Series
    consumed: set[str]
    label_col: str | None = None
    extras: dict[str, pd.Series] = field(default_factory=dict)  # canonical optional / added columns
    mapping: dict[str, str] = field(default_factory=dict)
    prompt_absent: bool = False  # the source has no prompt at all (already warned about)


class Ctx:
    def __init__(self, file: str, table: Table, warnings: list[str]) -> None:
        self.file = file
        self.table = table
        self.df = table.df
        self.warnings = warnings
        self.n = len(table.df)

    def error(self, pos: int | None, column: str | None, message: str, hint: str, **kw) -> DataError:
        return DataError(self.file, None if pos is None else self.table.row(pos), column, message, hint, **kw)

    def empty(self) -> pd.Series:
        return pd.Series([""] * self.n, dtype="str")

    def cell_json(self, pos: int, col: str, text: str) -> Any:
        """JSON inside one cell, through the one safe JSON parser (JSONDecodeError is the caller's)."""
        return safejson.loads(text, self.file, row=self.table.row(pos), column=col)

    def text(self, col: str, what: str = "text") -> pd.Series:
        """The column as str; any cell that is not text raises DataError."""
        s = self.df[col]
        if isinstance(s.dtype, pd.StringDtype):
            if not s.isna().any():
                return s.reset_index(drop=True)
        values = s.array
        ok = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
        if not ok.all():
            pos = int(np.flatnonzero(~ok)[0])
            v = values[pos]
            rec = self.table.records[pos] if self.table.records is not None else None
            if rec is not None and col not in rec:
                raise self.error(pos, col, f"this record has no '{col}' field",
                                 f"Give every record a '{col}' field holding the {what}")
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise self.error(pos, col, f"expected {what} but the cell is empty (null)",
                                 "Put the text in a string; use an empty string \"\" if the model produced nothing")
            raise self.error(pos, col, f"expected {what} but found {json_kind(v)}",
                             "Put the text in a string (in JSON: in double quotes); use an empty string \"\" "
                             "if the model produced nothing")
        return pd.Series(list(values), dtype="str")

    def labels(self, col: str, vocab: dict[str, str], allowed: str) -> pd.Series:
        s = self.df[col].reset_index(drop=True)
        out = s.map(vocab) if isinstance(s.dtype, pd.StringDtype) else pd.Series([None] * self.n, dtype=object)
        miss = np.flatnonzero(out.isna().to_numpy())
        if miss.size:
            norm = {}
            for k, v in vocab.items():
                norm.setdefault(label_key(k), v)
            out = out.astype(object)
            values = s.array
            for pos in miss:
                v = values[pos]
                key = label_key(v) if isinstance(v, (str, int, float, bool, np.integer, np.floating)) else None
                lab = norm.get(key) if key is not None else None
                if lab is None:
                    shown = repr(v) if isinstance(v, str) else json_kind(v)
                    raise self.error(
                        int(pos), col, f"the preference value {shown} is not recognised",
                        f"Use one of: {allowed}; or translate the value with the value map of a ColumnMapping",
                        hint_web=f"Use one of: {allowed}; or translate the value in the column-mapping form's "
                                 "'Preference labels' field",
                    )
                out.iat[pos] = lab
        return pd.Series(out.to_numpy(dtype=object), dtype="str")


def meta_text(s: pd.Series, ctx: Ctx | None = None, column: str | None = None) -> pd.Series:
    """A metadata column as text ('' for missing; whole floats without '.0'). A value nested too
    deeply to be turned into text is a DataError naming its row (when `ctx` is given)."""
    if isinstance(s.dtype, pd.StringDtype) and not s.isna().any():
        return s.reset_index(drop=True)

    def conv(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, str):
            return v
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    out = []
    for pos, v in enumerate(s.array):
        try:
            out.append(conv(v))
        except RecursionError:
            where = ctx.table.row(pos) if ctx is not None else pos + 1
            raise DataError(ctx.file if ctx is not None else "the data", where, column or str(s.name),
                            "the value is nested too deeply to be turned into text", _NESTED_HINT) from None
    return pd.Series(out, dtype="str")


def label_key(v: Any) -> str | None:
    """Normalised text of a label: numbers compare by value, text ignores case and outer spaces."""
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    if isinstance(v, str):
        t = v.strip()
        try:
            f = float(t)
        except ValueError:
            return t.casefold()
        if math.isfinite(f):
            return label_key(f)
        return t.casefold()
    return None


# --------------------------------------------------------------------------- conversations

USER_ROLES = {"user", "human", "prompter"}
ASSISTANT_ROLES = {"assistant", "gpt", "model", "bot", "chatbot"}


def _role_label(role: str) -> str:
    if role in USER_ROLES:
        return "User"
    if role in ASSISTANT_ROLES:
        return "Assistant"
    return role[:1].upper() + role[1:]


def as_turns(value: Any, ctx: Ctx | None = None, pos: int = 0, col: str = "") -> list[tuple[str, str]] | None:
    """A conversation as [(role, content)], from a list of {role, content} dicts or its JSON (or
    Python-literal) text. Text that is not a conversation gives None; hostile text (nested too
    deeply, lone surrogates, giant integers) is a DataError naming the row and column."""
    if isinstance(value, str):
        text = value
        try:
            value = ctx.cell_json(pos, col, text) if ctx is not None else json.loads(text)
            literal = False
        except ValueError:
            literal = True
        if literal:  # not JSON: maybe a Python literal (Arena dumps made with str(list))
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                return None
            if ctx is not None and safejson.first_bad_string(value) is not None:
                raise ctx.error(pos, col, "the text holds a lone surrogate (half of a UTF-16 character pair), "
                                "which cannot be stored as UTF-8",
                                "Remove the escape or complete the pair (e.g. \\ud83d\\ude00 for one emoji)")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        return None
    turns = []
    for t in value:
        if not isinstance(t, dict):
            return None
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        if role is None:
            return None
        if isinstance(content, np.ndarray):
            content = content.tolist()
        if isinstance(content, list):  # OpenAI-style content parts
            content = "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        if content is None:
            content = ""
        if not isinstance(content, str):
            return None
        turns.append((str(role).strip().lower(), content))
    return turns


def _render(turns: list[tuple[str, str]], single_role: set[str]) -> str:
    if not turns:
        return ""
    if len(turns) == 1 and turns[0][0] in single_role:
        return turns[0][1]
    return "\n\n".join(f"{_role_label(r)}: {c}" for r, c in turns)


def split_conversations(ta: list, tb: list) -> tuple[str, str, str, bool] | None:
    """(prompt, text_a, text_b, earlier_turns_differ) or None when a side has no final reply."""
    if not ta or not tb or ta[-1][0] not in ASSISTANT_ROLES or tb[-1][0] not in ASSISTANT_ROLES:
        return None
    ha, hb = ta[:-1], tb[:-1]
    if ha == hb:
        return _render(ha, USER_ROLES), ta[-1][1], tb[-1][1], False
    k = 0
    while k < min(len(ha), len(hb)) and ha[k] == hb[k]:
        k += 1
    return (_render(ta[:k], USER_ROLES), _render(ta[k:], ASSISTANT_ROLES),
            _render(tb[k:], ASSISTANT_ROLES), True)


def split_all(ctx: Ctx, turns_a: list, turns_b: list, col_a: str,
              col_b: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    prompts, texts_a, texts_b = [], [], []
    differ = 0
    for pos, (a, b) in enumerate(zip(turns_a, turns_b, strict=True)):
        split = split_conversations(a, b)
        if split is None:
            col = col_a if not a or a[-1][0] not in ASSISTANT_ROLES else col_b
            raise ctx.error(pos, col, "the conversation does not end with an assistant reply",
                            "Each side must end with the assistant reply that was judged")
        p, x, y, d = split
        differ += d
        prompts.append(p)
        texts_a.append(x)
        texts_b.append(y)
    if differ:
        ctx.warnings.append(
            f"{differ} multi-turn conversations have different earlier replies on the two sides; for these "
            "the prompt is the shared opening and each response text holds that side's whole rest of the "
            "conversation, labelled 'Assistant:' / 'User:'"
        )
    return (pd.Series(prompts, dtype="str"), pd.Series(texts_a, dtype="str"), pd.Series(texts_b, dtype="str"))


def interleave(prompts: list[str], replies: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i in range(max(len(prompts), len(replies))):
        if i < len(prompts):
            out.append(("user", prompts[i]))
        if i < len(replies):
            out.append(("assistant", replies[i]))
    return out


def build_text_format(ctx: Ctx, label_col: str, vocab: dict[str, str], allowed: str) -> Built:
    """Builder shared by the formats that already hold text_a / text_b (+ prompt) columns."""
    consumed = {"text_a", "text_b", label_col}
    if "prompt" in ctx.df.columns:
        prompt = ctx.text("prompt")
        consumed.add("prompt")
    else:
        prompt = ctx.empty()
        ctx.warnings.append(
            "the file has no 'prompt' column, so every prompt is empty (ICAI's original CSVs keep the "
            "instruction inside the response texts)"
        )
    return Built(
        prompt=prompt, text_a=ctx.text("text_a"), text_b=ctx.text("text_b"),
        preferred=ctx.labels(label_col, vocab, allowed), consumed=consumed, label_col=label_col,
        prompt_absent="prompt" not in ctx.df.columns,
    )


# --------------------------------------------------------------------------- the canonical table


def assemble(ctx: Ctx, built: Built, mapping: ColumnMapping | None) -> tuple[pd.DataFrame, list[str]]:
    """The canonical pair table from a builder's output: ids, optional metadata, kept source columns."""
    df = ctx.df
    n = ctx.n
    prompt, ta, tb, pref = built.prompt, built.text_a, built.text_b, built.preferred
    pv, av, bv = (prompt == "").to_numpy(), (ta == "").to_numpy(), (tb == "").to_numpy()
    all_empty = pv & av & bv
    if all_empty.any():
        pos = int(np.flatnonzero(all_empty)[0])
        raise ctx.error(pos, None, "the prompt and both responses are empty",
                        "Remove this row or fill in its texts: a pair needs a prompt or at least one response")
    both = av & bv
    single_a, single_b = int((av & ~bv).sum()), int((bv & ~av).sum())
    if single_a or single_b:
        ctx.warnings.append(
            f"{single_a + single_b} rows have one empty response (text_a: {single_a}, text_b: {single_b}); "
            "they are kept: an empty output is what the model produced"
        )
    if both.any():
        ctx.warnings.append(f"{int(both.sum())} rows have two empty responses (only a prompt); they are kept")
    if pv.any() and not built.prompt_absent:
        ctx.warnings.append(f"{int(pv.sum())} rows have an empty prompt")

    # ids
    id_col = (mapping.id if mapping is not None else None) or ("id" if "id" in df.columns else None)
    if id_col is not None:
        ids = meta_text(df[id_col], ctx, id_col)
        empty = np.flatnonzero((ids == "").to_numpy())
        if empty.size:
            raise ctx.error(int(empty[0]), id_col, "the id is empty",
                            "Give every row an id, or drop the id column to have ids generated (row-1, row-2, ...)")
        dup = ids.duplicated(keep="first").to_numpy()
        if dup.any():
            p2 = int(np.flatnonzero(dup)[0])
            value = ids.iat[p2]
            p1 = int(np.flatnonzero((ids == value).to_numpy())[0])
            raise ctx.error(p2, id_col,
                            f"the id {value!r} appears more than once (rows {ctx.table.row(p1)} and {ctx.table.row(p2)})",
                            "Ids must be unique: remove the duplicated row or give it its own id, or drop the "
                            "id column to have ids generated")
    else:
        ids = pd.Series([f"row-{ctx.table.row(i)}" for i in range(n)], dtype="str")

    out: dict[str, pd.Series] = {"id": ids, "prompt": prompt, "text_a": ta, "text_b": tb, "preferred": pref}
    consumed = set(built.consumed)
    if id_col is not None:
        consumed.add(id_col)
    label_col = built.label_col
    raw_label = None
    if label_col is not None and label_col in df.columns:
        lab = df[label_col].reset_index(drop=True)
        same = isinstance(lab.dtype, pd.StringDtype) and not lab.isna().any() and bool(
            (lab.to_numpy(dtype=object) == pref.to_numpy(dtype=object)).all())
        if not same:
            if "raw_preference" not in df.columns:
                raw_label = lab
            else:
                consumed.discard(label_col)  # keep the label column under its own name
    for name in OPTIONAL_COLUMNS:
        if name in built.extras:
            out[name] = built.extras[name]
        elif name in df.columns and name not in consumed:
            out[name] = meta_text(df[name], ctx, name)
            consumed.add(name)
    meta: list[str] = []
    renamed: list[str] = []
    for c in df.columns:
        if c in consumed:
            continue
        target = c
        if target in out:
            target = f"source_{c}"
            while target in out or target in df.columns:
                target = "source_" + target
            renamed.append(f"'{c}' -> '{target}'")
        out[target] = df[c].reset_index(drop=True)
        meta.append(target)
    if raw_label is not None:
        out["raw_preference"] = raw_label
        meta.append("raw_preference")
    for name, s in built.extras.items():
        if name not in out:
            out[name] = s.reset_index(drop=True)
            meta.append(name)
    if renamed:
        ctx.warnings.append("source columns whose names are taken by canonical columns were renamed: "
                            + ", ".join(renamed))
    pairs = pd.DataFrame(out)
    for c in meta:
        if pairs[c].dtype == object:
            pairs[c] = pairs[c].infer_objects()
    return pairs, meta
