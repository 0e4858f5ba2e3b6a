"""Run settings, defined once and passed whole: split, selection, measurable judges, LLM stages, clustering.

Both engines take one `RunConfig`; the CLI's defaults, the app's defaults and the Python API's
defaults are these dataclass defaults (the CLI reads them with `defaults()` instead of repeating
numbers). Everything that changes a result is in here, so `asdict(config)` is the run's identity in
the run store and in cache keys.

For convenience a field can be read flat (`config.alpha` is `config.selection.alpha`): every field
name is unique across sections, which `_FLAT` checks at import time. `RunConfig.from_flat(**kw)`
builds a config from flat names, which is what the older `AuditConfig(...)` / `ICAIConfig(...)`
constructors do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

ENGINES = ("offline", "llm")
ANNOTATOR_VIEWS = ("each", "pooled", "both")


@dataclass(frozen=True)
class SplitConfig:
    """Held-out split: whole distinct pairs go to one side (several annotators never straddle it)."""

    test_size: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class SelectionConfig:
    """How principles are filtered into a constitution (on the training split only)."""

    alpha: float = 0.05
    min_relevance: float = 0.05
    min_abs_strength: float = 0.02
    max_size: int = 10
    require_significant: bool = True


@dataclass(frozen=True)
class MeasurableConfig:
    """The offline measurable judges (free, no network)."""

    include_measurable: bool = True
    use_embeddings: bool = True  # the MiniLM-based "semantically closer to the prompt" judge
    principles: tuple[str, ...] | None = None  # subset of judge keys; None = all


@dataclass(frozen=True)
class DiscoveryConfig:
    """Offline discovery of directions in the data (icai_core.discover), off unless asked for."""

    discover: bool = False
    n_directions: int = 16
    # LLM names for the kept directions, scored by fidelity (icai_core.naming; only with an LLM client)
    name_with_llm: bool = True
    name_examples: int = 5  # typical pairs shown to the namer
    fidelity_voted_pairs: int = 20  # held pairs where the direction votes (balanced A / B)
    fidelity_unvoted_pairs: int = 10  # held pairs where it does not
    fidelity_threshold: float = 0.7  # names below it are flagged low_fidelity


@dataclass(frozen=True)
class EvidenceConfig:
    """The evidence a reviewer asks for (icai_core.evidence): clustered inference, length-controlled
    effects, the cross-validated reconstruction verdict, the judge report card."""

    evidence: bool = True
    folds: int = 5
    n_boot: int = 200  # cluster-bootstrap draws for AUC CIs
    order_known: bool | None = None  # presentation order known? None = inferred from the data
    reference: str | None = None  # reference annotator for agreement (None = every pair of annotators)


@dataclass(frozen=True)
class LLMStagesConfig:
    """The LLM stages of ICAI: proposal, cluster merge, batched votes, LLM reconstruction."""

    n_principles_per_pair: int = 3
    max_propose_pairs: int = 200  # training pairs sent to the proposal step
    proposal_selection: str = "coverage"  # "coverage" (icai_core.selection) or "random"
    max_candidates: int = 30  # cluster representatives tested
    principle_batch_size: int = 10  # principles per vote call
    max_annotate_pairs: int = 300  # held-out pairs annotated per reconstruction condition
    flipped_check: bool = False  # also annotate with A/B swapped to expose position bias
    random_constitution: bool = True
    merge_with_llm: bool = False  # ask the LLM to summarise each multi-member cluster in one principle
    max_text_chars: int = 4000
    chunk_size: int = 128  # requests per stored chunk (progress + resume granularity)


@dataclass(frozen=True)
class RunConfig:
    """One run of the pipeline. `engine` picks the stages: "offline" (measurable judges) or "llm" (ICAI)."""

    engine: str = "offline"
    annotators: str = "each"  # "each": one audit per annotator; "pooled": all rows as one; "both"
    split: SplitConfig = field(default_factory=SplitConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    measurable: MeasurableConfig = field(default_factory=MeasurableConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    llm: LLMStagesConfig = field(default_factory=LLMStagesConfig)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        if self.annotators not in ANNOTATOR_VIEWS:
            raise ValueError(f"annotators must be one of {ANNOTATOR_VIEWS}, not {self.annotators!r}")
        if not 0 < self.split.test_size < 1:
            raise ValueError("test_size must be a fraction in (0, 1)")

    def __getattr__(self, name: str) -> Any:
        section = _FLAT.get(name)
        if section is None:
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, section), name)

    # -- constructors and views -------------------------------------------------------------
    @classmethod
    def from_flat(cls, engine: str = "offline", annotators: str = "each", **flat: Any) -> RunConfig:
        """Build a config from flat field names (`alpha=0.01, use_embeddings=False, ...`)."""
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            section = _FLAT.get(name)
            if section is None:
                raise TypeError(f"unknown setting {name!r}; known: {', '.join(sorted(_FLAT))}")
            if name == "principles" and value is not None:
                value = tuple(value)
            by_section.setdefault(section, {})[name] = value
        sections = {s: _SECTIONS[s](**kw) for s, kw in by_section.items()}
        return cls(engine=engine, annotators=annotators, **sections)

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with some flat fields (or `engine` / `annotators`) changed."""
        top = {k: flat.pop(k) for k in ("engine", "annotators") if k in flat}
        changes: dict[str, Any] = dict(top)
        for name, value in flat.items():
            section = _FLAT.get(name)
            if section is None:
                raise TypeError(f"unknown setting {name!r}")
            current = changes.get(section, getattr(self, section))
            changes[section] = dataclasses.replace(current, **{name: value})
        return dataclasses.replace(self, **changes)

    def constitution_settings(self) -> dict:
        """Keyword arguments of `constitution.build_constitution` (the selection section)."""
        return asdict(self.selection)

    def to_dict(self) -> dict:
        d = asdict(self)
        p = d["measurable"]["principles"]
        d["measurable"]["principles"] = list(p) if p else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        kw = {s: _SECTIONS[s](**{k: v for k, v in d.get(s, {}).items()
                                 if k in {f.name for f in dataclasses.fields(_SECTIONS[s])}})
              for s in _SECTIONS}
        if kw["measurable"].principles is not None:
            kw["measurable"] = dataclasses.replace(kw["measurable"], principles=tuple(kw["measurable"].principles))
        return cls(engine=d.get("engine", "offline"), annotators=d.get("annotators", "each"), **kw)


_SECTIONS = {"split": SplitConfig, "selection": SelectionConfig, "measurable": MeasurableConfig,
             "discovery": DiscoveryConfig, "evidence": EvidenceConfig, "llm": LLMStagesConfig}


def _flat_index() -> dict[str, str]:
    out: dict[str, str] = {}
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in out, f"setting {f.name!r} appears in two sections"
            out[f.name] = section
    return out


_FLAT = _flat_index()


def defaults() -> RunConfig:
    """The default run settings (what the CLI's and the app's defaults are read from)."""
    return RunConfig()
