"""The dataset gallery on Home: every real dataset the project may redistribute, as a bundled sample
with a data card; one click loads it and starts its audit.

The cards live in `assets/gallery.json` (source, licence, annotators, rows, distinct pairs, what the
dataset is good for); the samples are drawn by `assets/make_samples.py` from the shared real data.
Loading goes through the same intake as an upload (`icai_core.data.load_pairs`), so a gallery dataset
is audited exactly like a user's file; the audit uses the measurable judges without sentence
embeddings (the fast first audit; the Principles page can add them).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from ui import common as C
from ui import safe as S

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CARDS = ASSETS / "gallery.json"
CARD_KEY = "data_cards"  # session: dataset hash -> card dict (the report's data card)


@dataclass(frozen=True)
class Card:
    name: str
    file: str
    title: str
    good_for: str
    source: str
    licence: str
    annotators: str
    rows: int
    pairs: int
    n_annotators: int

    @property
    def path(self) -> Path:
        return ASSETS / self.file

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "good_for": self.good_for, "source": self.source,
                "licence": self.licence, "annotators": self.annotators, "rows": self.rows, "pairs": self.pairs}


@functools.lru_cache(maxsize=1)
def cards() -> tuple[Card, ...]:
    """The gallery's data cards whose sample file is present (a slim install may drop some)."""
    try:
        raw = json.loads(CARDS.read_text(encoding="utf-8"))["datasets"]
    except (OSError, ValueError, KeyError):
        return ()
    out = []
    for d in raw:
        card = Card(**{k: d[k] for k in Card.__dataclass_fields__})
        if card.path.is_file():
            out.append(card)
    return tuple(out)


def card_for(dataset_hash: str) -> dict | None:
    """The data card of a gallery dataset loaded in this session (for the report), or None."""
    return (st.session_state.get(CARD_KEY) or {}).get(dataset_hash)


def load_and_audit(card: Card, *, start: bool = True) -> C.LoadedDataset | None:
    """Load a gallery sample as the current dataset and start its audit (errors shown, never raised)."""
    from icai_core import data
    from icai_core.audit import AuditConfig

    try:
        result = data.load_pairs(card.path, name=card.file)
    except (data.DataError, OSError) as exc:
        st.error(f"Could not load {S.md(card.title)}: {S.md(exc)}")
        return None
    ds = C.dataset_from_load_result(result, name=card.name, source="bundled")
    st.session_state.setdefault(CARD_KEY, {})[ds.hash] = card.as_dict()
    C.set_dataset(ds)
    if start and C.get_audit() is None:
        C.start_audit(ds, AuditConfig(use_embeddings=False))
    return ds


def render(columns: int = 3) -> None:
    """The gallery: one bordered card per dataset with a "Load & audit" button and its data card."""
    items = cards()
    if not items:
        st.caption("No bundled datasets in this installation.")
        return
    st.caption(f"{len(items)} real public datasets, each a bundled sample (a few thousand rows at most). "
               "One click loads it and runs the offline audit: no key, no network. Licences apply to the "
               "annotations as released; CC BY-NC samples are for non-commercial research only.")
    clicked = None
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, card in zip(cols, items[start:start + columns], strict=False):
            with col, st.container(border=True):
                st.markdown(f"**{S.md(card.title)}**")
                st.caption(f"{card.pairs:,} pairs · {card.rows:,} judgements · {card.n_annotators} "
                           f"annotator{'s' if card.n_annotators != 1 else ''} · {S.md(card.licence)}")
                st.markdown(S.md(card.good_for))
                if st.button("Load & audit", key=f"gallery_{card.name}", icon=":material/play_arrow:"):
                    clicked = card
                with st.expander("Data card"):
                    st.markdown(
                        f"- **Annotators:** {S.md(card.annotators)}\n"
                        f"- **Source:** {S.md(card.source)}\n"
                        f"- **Licence:** {S.md(card.licence)}\n"
                        f"- **File:** {S.code(card.file)}"
                    )
    if clicked is not None and load_and_audit(clicked) is not None:
        st.rerun()  # so the status and progress above show the new dataset
