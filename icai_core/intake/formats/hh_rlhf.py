"""Anthropic HH-RLHF and other ``chosen`` / ``rejected`` data.

Orientation: always putting the chosen reply in position A would create a position artefact, so
A/B are assigned by a keyed hash of the row: SHA-256 of
``HH_ORIENTATION_KEY + "\\x00" + chosen + "\\x00" + rejected`` (the source strings as stored; for
conversation lists, the JSON text of their turns); the chosen reply is A when the first byte of the
digest is even. The result does not depend on row order and is the same on every run; the added
``swapped`` column is True where A is the rejected reply (the reply the source lists second).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from icai_core.intake.build import ASSISTANT_ROLES, Built, Ctx, as_turns, split_conversations
from icai_core.intake.tables import json_kind
from icai_core.intake.unit import InputFormat

HH_ORIENTATION_KEY = "principia-hh-orientation-v1"
_HH_MARK = "\n\nAssistant:"


def _common_prefix_len(x: str, y: str) -> int:
    lo, hi = 0, min(len(x), len(y))
    while lo < hi:  # largest L with x[:L] == y[:L], by binary search on C-level slice comparisons
        mid = (lo + hi + 1) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _hh_split(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    common = chosen[: _common_prefix_len(chosen, rejected)]
    cut = common.rfind(_HH_MARK)
    if cut < 0:
        return None
    prompt = chosen[:cut]
    if prompt.startswith("\n\n"):
        prompt = prompt[2:]

    def reply(s: str) -> str:
        r = s[cut + len(_HH_MARK):]
        return r[1:] if r.startswith(" ") else r

    return prompt, reply(chosen), reply(rejected)


def hh_chosen_is_a(chosen: str, rejected: str) -> bool:
    """The documented keyed coin flip that places the chosen reply in position A or B."""
    digest = hashlib.sha256(
        f"{HH_ORIENTATION_KEY}\x00{chosen}\x00{rejected}".encode("utf-8", "surrogatepass")
    ).digest()
    return digest[0] % 2 == 0


def build(ctx: Ctx) -> Built:
    df = ctx.df
    raw_c = df["chosen"].array
    raw_r = df["rejected"].array
    # DPO style: a 'prompt' column and chosen/rejected holding only the replies.
    dpo = "prompt" in df.columns and not any(isinstance(v, str) and _HH_MARK in v for v in raw_c)
    prompt_col = ctx.text("prompt") if dpo else None
    prompts, chosen, rejected, keys_c, keys_r = [], [], [], [], []
    for pos in range(ctx.n):
        c, r = raw_c[pos], raw_r[pos]
        tc = as_turns(c, ctx, pos, "chosen") if not isinstance(c, str) or c.lstrip().startswith("[") else None
        tr = as_turns(r, ctx, pos, "rejected") if not isinstance(r, str) or r.lstrip().startswith("[") else None
        for col, v, t in (("chosen", c, tc), ("rejected", r, tr)):
            if t is None and not isinstance(v, str):
                raise ctx.error(pos, col, f"expected a dialogue text or a conversation but found {json_kind(v)}",
                                "Give the dialogue as text ('\\n\\nHuman: ...\\n\\nAssistant: ...') or as a "
                                "list of {role, content} turns")
        if tc is not None and tr is not None:
            split = split_conversations(tc, tr)
            if split is None:
                col = "chosen" if tc[-1][0] not in ASSISTANT_ROLES else "rejected"
                raise ctx.error(pos, col, "the conversation does not end with an assistant reply",
                                "Each side must end with the assistant reply that was judged")
            p, x, y, _ = split
            if dpo and p == "":
                p = prompt_col.iat[pos]
            kc = json.dumps(tc, ensure_ascii=False)
            kr = json.dumps(tr, ensure_ascii=False)
        elif dpo:
            p, x, y = prompt_col.iat[pos], c, r
            kc, kr = c, r
        else:
            hs = _hh_split(c, r) if isinstance(c, str) and isinstance(r, str) else None
            if hs is None:
                raise ctx.error(
                    pos, "chosen",
                    "the chosen and rejected dialogues do not share a history that ends with '\\n\\nAssistant:'",
                    "Give HH-RLHF dialogues ('\\n\\nHuman: ...\\n\\nAssistant: ...'), or add a 'prompt' column "
                    "and put only the two replies in 'chosen' and 'rejected'",
                )
            p, x, y = hs
            kc, kr = c, r
        prompts.append(p)
        chosen.append(x)
        rejected.append(y)
        keys_c.append(kc)
        keys_r.append(kr)
    chosen_a = np.array([hh_chosen_is_a(c, r) for c, r in zip(keys_c, keys_r, strict=True)], dtype=bool)
    ch = np.asarray(chosen, dtype=object)
    rj = np.asarray(rejected, dtype=object)
    extras = {}
    if "swapped" not in df.columns:
        extras["swapped"] = pd.Series(~chosen_a)
    return Built(
        prompt=pd.Series(prompts, dtype="str"),
        text_a=pd.Series(np.where(chosen_a, ch, rj), dtype="str"),
        text_b=pd.Series(np.where(chosen_a, rj, ch), dtype="str"),
        preferred=pd.Series(np.where(chosen_a, "a", "b"), dtype="str"),
        consumed={"chosen", "rejected"} | ({"prompt"} if dpo else set()), label_col=None, extras=extras,
        mapping={"prompt": "prompt" if dpo else "chosen/rejected (shared dialogue)",
                 "text_a": "chosen or rejected (keyed hash)", "text_b": "rejected or chosen (keyed hash)",
                 "preferred": "the side that holds 'chosen'"},
    )


FORMAT = InputFormat(
    name="hh_rlhf",
    description="Anthropic HH-RLHF and other chosen / rejected data (A/B order by a keyed hash)",
    signature=("chosen", "rejected"),
    build=build,
)
