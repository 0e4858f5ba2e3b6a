"""The embedder of the real-data clustering and discovery tests (tests/test_cluster.py,
test_discover.py): the product's model with sequences cut at 64 tokens (principles and the sampled
texts are short; 64 keeps embedding a 200-row sample under ~20 s on 2 busy cores), batches of 128, and a
sqlite cache in a temporary folder of the module, so a module embeds each distinct text once.

Import into a test module with::

    from tests.support.embedding import embedder_fixture, needs_data  # noqa: F401
"""

from __future__ import annotations

import pytest

from icai_core.embed import Embedder
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON

MAX_SEQ_LENGTH = 64
needs_data = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)


def small_embedder(**kw) -> Embedder:
    """A fresh embedder with the tests' settings (in-memory cache unless `cache_path` is given)."""
    return Embedder(max_seq_length=MAX_SEQ_LENGTH, **kw)


@pytest.fixture(name="embedder", scope="module")
def embedder_fixture(tmp_path_factory) -> Embedder:
    home = tmp_path_factory.mktemp("principia_home")
    return small_embedder(cache_path=home / "embeddings.sqlite", batch_size=128)
