"""Engine settings (offline judges or an OpenAI-compatible LLM) held only in the browser session.

The API key lives in `st.session_state` and nowhere else: it is never written to disk, logged,
passed to a cached function, put in a query string or exported. `EngineSettings.__repr__` hides it
so that an accidental `st.write(settings)` or log line cannot leak it either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OFFLINE = "offline"
LLM = "llm"


@dataclass
class EngineSettings:
    mode: str = OFFLINE
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str = field(default="", repr=False)

    @property
    def llm_ready(self) -> bool:
        return self.mode == LLM and bool(self.base_url.strip()) and bool(self.model.strip())

    def public(self) -> dict:
        """What may be shown or exported: never the key, only whether one is set."""
        return {
            "mode": self.mode,
            "base_url": self.base_url if self.mode == LLM else "",
            "model": self.model if self.mode == LLM else "",
            "api_key_set": bool(self.api_key),
        }

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return f"EngineSettings(mode={self.mode!r}, base_url={self.base_url!r}, model={self.model!r}, api_key=***)"
