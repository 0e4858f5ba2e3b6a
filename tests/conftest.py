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
