"""`icai audit --discover` with a model that names the discovered directions (icai_core.naming), and
the CLI's output-writing errors. The model is the scripted OpenAI-compatible server (tests/support,
a TEST FIXTURE): it names every direction "... the apologetic one" and votes A on every pair, so the
expected counts follow from the run's own fidelity plan, recomputed here."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from icai_core.cli import main
from tests.support.scripted_openai import ScriptedOpenAI, last_user_message

DATA = "assets/icai_synthetic_mixed.csv"  # 60 real-format pairs; discovery keeps directions in seconds


def _namer(messages, body):
    words = last_user_message(messages).splitlines()[0].split(": ", 1)[-1].split(",")[:3]
    return json.dumps({"principle": "Select the response that uses words like " + ", ".join(w.strip() for w in words)})


def _voter(messages, body):
    return json.dumps({"votes": {"1": "A"}})


def _count(srv, marker: str) -> int:
    """Chat calls whose system prompt starts with `marker` (the preflight check sends none of these)."""
    return sum(1 for r in srv.chat_requests
               if str(r.body["messages"][0]["content"]).startswith(marker))


@pytest.fixture
def server():
    with ScriptedOpenAI() as srv:
        srv.register("TASK: name_direction", _namer)
        srv.register("TASK: vote_principles", _voter)
        yield srv


def test_model_options_without_discover_are_refused(tmp_path, capsys):
    rc = main(["audit", DATA, "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "home"), "--no-embeddings"])
    err = capsys.readouterr().err
    assert rc == 2 and "add --discover" in err and "Traceback" not in err


@pytest.mark.slow
def test_discover_with_a_model_writes_llm_names_and_fidelity_votes(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-naming-0123456789")
    out = tmp_path / "out"
    args = ["audit", DATA, "--discover", "--no-embeddings", "--base-url", server.base_url, "--model", "scripted",
            "--out", str(out), "--cache-dir", str(tmp_path / "home")]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    table = pd.read_csv(out / "discovered_principles.csv")
    kept = table[table["kept"]]
    assert len(kept) >= 1
    assert set(kept["name_source"]) == {"llm"}
    assert kept["text"].str.startswith("Select the response that uses words like ").all()
    votes = pd.read_csv(out / "discovery_fidelity_votes.csv")
    # one naming call per kept direction + one vote per distinct (name, held pair), nothing else (two
    # directions with the same name ask the same question: the client sends it once)
    assert _count(server, "TASK: name_direction") == len(kept)
    named = votes.merge(kept[["key", "text"]], on="key")
    assert len(named) == len(votes)
    assert _count(server, "TASK: vote_principles") == len(named.drop_duplicates(["text", "pair_id"]))
    summary = json.loads((out / "summary.json").read_text())
    discovered = [p for a in summary["annotators"].values() for p in a["principles"] if p.get("kind") == "discovered"]
    assert discovered and all(p["name_source"] == "llm" and p["fidelity"] is not None for p in discovered)
    assert "Calls:" in stdout
    # a rerun is served from the cache: no new request
    before = server.chat_count
    assert main(args) == 0
    assert server.chat_count == before + 1  # the preflight check only


def test_an_output_file_that_cannot_be_written_is_one_message(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "votes.csv").mkdir(parents=True)  # a folder where the audit writes a file
    rc = main(["audit", DATA, "--no-embeddings", "--out", str(out), "--cache-dir", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cannot write" in err and "votes.csv" in err and "icai report" in err and "Traceback" not in err
