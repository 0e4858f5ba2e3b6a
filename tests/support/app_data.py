"""Datasets and audited apps for the AppTest modules (test_app_audit, test_app_compare,
test_app_stakeholder): one way to put a pair table into the session and to run the offline audit
from the Principles page, as a user would (button, background job, polling).

`loaded(pairs, name)` wraps a pair table as the app's LoadedDataset (its hash computed the app's way);
`loaded_file(name)` loads a shared data file first; `audited_app(dataset)` opens the app with it,
clicks "Run offline audit" (no embeddings, no map: the fast path) and returns once the audit is in
the session.
"""

from __future__ import annotations

import pandas as pd
from streamlit.testing.v1 import AppTest

from icai_core.data import load_pairs
from tests.test_app_common import DATA, new_app, wait_for
from ui.common import LoadedDataset, pairs_hash


def loaded(pairs: pd.DataFrame, name: str, source: str = "upload") -> LoadedDataset:
    return LoadedDataset(name=name, pairs=pairs, hash=pairs_hash(pairs), source=source)


def loaded_file(name: str) -> LoadedDataset:
    """A file of the shared data set, loaded as an upload of that name."""
    return loaded(load_pairs(DATA / name).pairs, name)


def audited_app(dataset: LoadedDataset, **session) -> AppTest:
    at = new_app(dataset=dataset, use_embeddings=False, show_map=False, **session)
    at.switch_page("pages/principles.py").run()
    at.button(key="run_audit").click().run()
    return wait_for(at, "audit")
