"""Select a constitution (an ordered list of principles) from per-principle statistics.

A principle enters when it is relevant often enough, strong enough and (by default) significant
after Benjamini-Hochberg correction. A principle the annotator significantly *penalises* enters with
its ``inverse_text`` and ``inverted=True``: its votes are negated wherever the constitution is used,
so every entry of a constitution is a rule the annotator rewards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icai_core.stats import default_inverse_text, resolve_principles


@dataclass(frozen=True)
class ConstitutionEntry:
    """One rule of a constitution.

    ``text`` is the wording as it enters the constitution (the inverse wording when ``inverted``).
    ``strength`` and ``accuracy`` describe that wording, i.e. for an inverted entry they are the
    principle's strength negated and ``1 - accuracy``; both are therefore positive / above 0.5 for a
    selected entry. ``relevance`` and ``q_value`` do not depend on the direction.
    """

    key: str
    text: str
    strength: float
    accuracy: float
    relevance: float
    q_value: float
    inverted: bool = False

    @property
    def sign(self) -> int:
        """Multiply the principle's votes by this to get the votes of the entry's wording."""
        return -1 if self.inverted else 1

    @property
    def original_strength(self) -> float:
        """The strength of the principle as stated in the vote matrix (negative when inverted)."""
        return -self.strength if self.inverted else self.strength


def _json_float(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _from_json_float(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class Constitution:
    entries: list[ConstitutionEntry] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ConstitutionEntry]:
        return iter(self.entries)

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    @property
    def signs(self) -> dict[str, int]:
        """``{key: +1 or -1}`` in constitution order."""
        return {e.key: e.sign for e in self.entries}

    def signed_votes(self, votes: pd.DataFrame) -> pd.DataFrame:
        """The votes of the constitution's principles, negated for inverted entries (int8)."""
        missing = [k for k in self.keys if k not in votes.columns]
        if missing:
            raise KeyError(f"votes have no column for constitution principle(s): {missing}")
        signs = np.array([e.sign for e in self.entries], dtype=np.int8)
        arr = votes[self.keys].to_numpy().astype(np.int8) * signs
        return pd.DataFrame(arr.astype(np.int8), index=votes.index, columns=self.keys)

    def text(self) -> str:
        """The constitution as a numbered list, one "Select the response that ..." rule per line."""
        return "\n".join(f"{i}. {e.text}" for i, e in enumerate(self.entries, start=1))

    def to_frame(self) -> pd.DataFrame:
        cols = ["key", "text", "strength", "accuracy", "relevance", "q_value", "inverted"]
        return pd.DataFrame([asdict(e) for e in self.entries], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN is written as null)."""
        entries = []
        for e in self.entries:
            d = asdict(e)
            for name in ("strength", "accuracy", "relevance", "q_value"):
                d[name] = _json_float(d[name])
            d["inverted"] = bool(d["inverted"])
            entries.append(d)
        return {"entries": entries, "settings": _jsonable(self.settings)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constitution:
        entries = [
            ConstitutionEntry(
                key=str(d["key"]),
                text=str(d["text"]),
                strength=_from_json_float(d.get("strength")),
                accuracy=_from_json_float(d.get("accuracy")),
                relevance=_from_json_float(d.get("relevance")),
                q_value=_from_json_float(d.get("q_value")),
                inverted=bool(d.get("inverted", False)),
            )
            for d in data.get("entries", [])
        ]
        return cls(entries=entries, settings=dict(data.get("settings", {})))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _json_float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


SETTINGS_FIELDS = ("min_relevance", "min_abs_strength", "alpha", "max_size", "require_significant")


def settings_of(config: Any) -> dict:
    """The build_constitution keyword arguments held by a run config (AuditConfig, ICAIConfig)."""
    return {name: getattr(config, name) for name in SETTINGS_FIELDS}


def build_constitution(
    stats: pd.DataFrame,
    *,
    min_relevance: float = 0.05,
    min_abs_strength: float = 0.02,
    alpha: float = 0.05,
    max_size: int | None = 10,
    require_significant: bool = True,
    principles: Any = None,
) -> Constitution:
    """Select principles from a ``stats.principle_stats`` table.

    Kept: ``relevance >= min_relevance``, ``|strength| >= min_abs_strength`` and, when
    ``require_significant``, ``q_value < alpha``. Ordered by ``|strength|`` descending (ties by key),
    truncated to ``max_size`` (``None`` = no limit). A principle with negative strength enters with its
    inverse wording (from ``principles``; else a generated "other than" wording) and ``inverted=True``.
    """
    texts = resolve_principles(principles)
    df = stats.copy()
    strength = df["strength"].astype(float)
    keep = (df["relevance"].astype(float) >= min_relevance) & (strength.abs() >= min_abs_strength)
    if require_significant:
        keep &= df["q_value"].astype(float) < alpha
    keep &= strength.notna()
    chosen = df[keep].assign(_abs=strength[keep].abs(), _key=df.loc[keep, "key"].astype(str))
    chosen = chosen.sort_values(["_abs", "_key"], ascending=[False, True], kind="mergesort")
    n_candidates = int(len(chosen))
    if max_size is not None:
        chosen = chosen.head(max_size)

    entries = []
    for row in chosen.itertuples(index=False):
        key = str(row.key)
        stated = texts[key].text if key in texts else str(getattr(row, "text", key) or key)
        inverted = bool(row.strength < 0)
        if inverted:
            text = texts[key].inverse_text if key in texts else default_inverse_text(stated)
        else:
            text = stated
        sign = -1.0 if inverted else 1.0
        accuracy = float(row.accuracy)
        entries.append(
            ConstitutionEntry(
                key=key,
                text=text,
                strength=sign * float(row.strength),
                accuracy=(1.0 - accuracy) if inverted else accuracy,
                relevance=float(row.relevance),
                q_value=float(row.q_value),
                inverted=inverted,
            )
        )
    settings = {
        "min_relevance": min_relevance,
        "min_abs_strength": min_abs_strength,
        "alpha": alpha,
        "max_size": max_size,
        "require_significant": require_significant,
        "n_principles_tested": int(len(df)),
        "n_candidates": n_candidates,
        "n_pairs": int(df["n"].max()) if len(df) and "n" in df else 0,
    }
    return Constitution(entries=entries, settings=settings)
