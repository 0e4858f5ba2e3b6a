"""The one judge type: anything that votes A / B / not relevant on a pair, or picks A / B outright.

Every engine produces `Judge` objects: the measurable library (`kind="measurable"`), principles an
LLM proposed and votes on (`"llm"`), directions discovered in the data offline (`"discovered"`), an
LLM asked to annotate the pair itself (`"llm_annotator"`) and a human or recorded annotator
(`"human"`). Stats, constitutions, reports and pages only ever see this type, so a principle found by
any engine reaches every page the same way.

`text` is phrased "Select the response that ..."; `inverse_text` is the opposite wording, shown when
an annotator rewards the reverse. `margin` says in words when the judge answers "not relevant".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KINDS = ("measurable", "llm", "discovered", "llm_annotator", "human")
SELECT_PREFIX = "Select the response that "


@dataclass(frozen=True)
class Judge:
    key: str
    text: str
    inverse_text: str
    family: str = ""
    margin: str = ""
    kind: str = "measurable"
    cluster: int = -1  # cluster of proposals this judge represents (-1: none)
    support: int = 1  # how many proposals (or pairs) stand behind it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"judge {self.key!r}: kind must be one of {KINDS}, not {self.kind!r}")

    @property
    def source(self) -> str:
        """Older name of `kind` (exports written before the one-judge refactor use it)."""
        return self.kind

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Judge:
        fields = {k: d[k] for k in ("key", "text", "inverse_text", "family", "margin", "cluster", "support")
                  if k in d}
        kind = d.get("kind") or d.get("source") or "measurable"
        return cls(kind=kind, **fields)


def inverse_of(text: str) -> str:
    """A reversed wording for a principle that comes without one.

    In a pair there are only two responses, so "the response other than the one that X" is exactly
    the principle with its votes negated.
    """
    body = " ".join(str(text).split())
    if body.lower().startswith(SELECT_PREFIX.lower()):
        return f"Select the response other than the one that {body[len(SELECT_PREFIX):]}"
    return f"Select the response that does the opposite of: {body}"


def as_principle_text(text: str) -> str:
    """Whitespace-normalised and phrased "Select the response that ..."."""
    t = " ".join(str(text).split())
    if not t.lower().startswith(SELECT_PREFIX.lower()):
        t = SELECT_PREFIX + t[:1].lower() + t[1:]
    return t
