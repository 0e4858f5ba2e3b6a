"""What the hostile-input tests share (tests/test_hardening.py, test_hostile_files.py, test_safecsv.py).

`rows` (fixture): 30 real rows of the ICAI synthetic 'aligned' set, every cell as text, as pandas reads
them: the expectations of those tests come from these rows, never from the loader under test.
`offline_env` (autouse once imported): a per-test PRINCIPIA_HOME, Hugging Face offline, no API key in
the environment, so a CLI run in a test touches no home, network or credential. `is_number` and `LIVE`
state the CSV-injection rule the exports must follow (a cell may start with = + - @ tab or CR only
when it is a number).

Import into a test module with::

    from tests.support.hostile import offline_env_fixture, rows_fixture  # noqa: F401
"""

from __future__ import annotations

import pandas as pd
import pytest

COLS = ["id", "prompt", "text_a", "text_b", "preferred_text"]
LIVE = ("=", "+", "-", "@", "\t", "\r")  # what may not start an exported text cell


def is_number(cell: str) -> bool:
    """Whether a CSV cell is a number (the one kind of cell that may start with '-' or '+')."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


@pytest.fixture(name="rows", scope="module")
def rows_fixture(shared_data) -> pd.DataFrame:
    """30 real rows (ICAI synthetic 'aligned' set)."""
    return pd.read_csv(shared_data / "icai_synthetic_aligned.csv", dtype=str, keep_default_na=False)


@pytest.fixture(name="offline_env", autouse=True)
def offline_env_fixture(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRINCIPIA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PRINCIPIA_API_KEY", raising=False)
