"""Shared pytest fixtures.

`SHARED_DATA` / the `shared_data` fixture locate the real shared data set (12 CSVs in the Principia
common schema): the directory in the environment variable PRINCIPIA_DATA_DIR, else
`<repo>/../shared/data`. Tests that need it are skipped, with the reason, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def find_shared_data() -> Path | None:
    """The real data directory, or None when it cannot be found."""
    env = os.environ.get("PRINCIPIA_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir() and any(c.glob("*.csv")):
            return c
    return None


SHARED_DATA: Path | None = find_shared_data()
SHARED_DATA_MISSING_REASON = (
    "real shared data not found: set PRINCIPIA_DATA_DIR to the folder with the shared CSVs "
    f"(looked in {REPO.parent / 'shared' / 'data'})"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real shared data directory; skips the test when it is absent."""
    if SHARED_DATA is None:
        pytest.skip(SHARED_DATA_MISSING_REASON)
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _hermetic_home(tmp_path_factory):
    """Tests never write into the user's ~/.principia: a session-wide PRINCIPIA_HOME (modules and tests
    that need their own override it), and one ONNX export of the embedding model shared by every home
    of the session (PRINCIPIA_MODELS_DIR), so it is exported once, not once per module."""
    base = tmp_path_factory.mktemp("session-home")
    old = {k: os.environ.get(k) for k in ("PRINCIPIA_HOME", "PRINCIPIA_MODELS_DIR")}
    os.environ.setdefault("PRINCIPIA_HOME", str(base / "home"))
    os.environ.setdefault("PRINCIPIA_MODELS_DIR", str(base / "models"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
