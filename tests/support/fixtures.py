"""Pytest fixtures shared by test modules.

Import into a test module with (the fixture is named ``scripted_server``)::

    from tests.support.fixtures import scripted_server_fixture  # noqa: F401

``from tests.support.fixtures import scripted_server  # noqa: F401`` also works, but ruff then
reports F811 where a test takes ``scripted_server`` as an argument.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.scripted_openai import ScriptedOpenAI


@pytest.fixture(name="scripted_server")
def scripted_server_fixture() -> Iterator[ScriptedOpenAI]:
    """A started ScriptedOpenAI (echo responder, no faults) on 127.0.0.1; stopped after the test."""
    with ScriptedOpenAI() as server:
        yield server


scripted_server = scripted_server_fixture  # alias for `from tests.support.fixtures import scripted_server`
