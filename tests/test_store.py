"""RunStore: runs, resumable step items, interrupted marking, results, secret hygiene."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icai_core.llm import LLMConfig
from icai_core.store import RunStore, clean_config, default_store_path

KEY = "sk-store-SECRET-key-0123456789"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def test_default_path_uses_principia_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRINCIPIA_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "runs.sqlite"
    s = RunStore()
    assert Path(s.path).exists()
    s.close()
    monkeypatch.delenv("PRINCIPIA_HOME")
    assert default_store_path() == Path.home() / ".principia" / "runs.sqlite"


def test_create_update_get_list(store):
    run_id = store.create_run("offline_audit", "pairs.csv", "hash1", {"alpha": 0.05})
    run = store.get_run(run_id)
    assert run["status"] == "running" and run["kind"] == "offline_audit"
    assert run["config"] == {"alpha": 0.05} and run["dataset_name"] == "pairs.csv"

    store.update(run_id, done=5, total=10, message="half way")
    store.update(run_id, status="done", done=10, cost={"calls": 3, "dollars": 0.25})
    run = store.get_run(run_id)
    assert (run["status"], run["done"], run["total"], run["message"]) == ("done", 10, 10, "half way")
    assert run["cost"] == {"calls": 3, "dollars": 0.25}

    other = store.create_run("icai", "other.jsonl", "hash2", {})
    runs = store.list_runs()
    assert isinstance(runs, pd.DataFrame) and list(runs["id"]) == [other, run_id]
    assert {"id", "created", "kind", "dataset_name", "status", "done", "total", "message", "dollars"} <= set(
        runs.columns
    )
    assert runs.set_index("id").loc[run_id, "dollars"] == 0.25
    assert len(store.list_runs(limit=1)) == 1
    assert store.get_run("missing") is None

    with pytest.raises(ValueError):
        store.create_run("nonsense", "x", "h", {})
    with pytest.raises(ValueError):
        store.update(run_id, status="weird")
    with pytest.raises(KeyError):
        store.update("missing", done=1)


def test_config_secrets_are_stripped(store, tmp_path):
    config = {
        "api_key": KEY,
        "llm": {"model": "gpt-4o", "api_key": KEY, "openai_api_key": KEY, "max_tokens": 100},
        "judges": [{"name": "a", "password": "hunter2-hunter2"}],
        "note": f"key was {KEY}",
    }
    run_id = store.create_run("icai", "d", "h", config)
    stored = store.get_run(run_id)["config"]
    text = json.dumps(stored)
    assert "api_key" not in text and KEY not in text and "hunter2" not in text
    assert stored["llm"] == {"model": "gpt-4o", "max_tokens": 100}
    assert KEY not in json.dumps(clean_config(config))

    llm_config = LLMConfig(base_url="http://localhost:11434", model="llama3", api_key=KEY)
    run2 = store.create_run("icai", "d", "h", {"llm": llm_config, "k": 3})
    stored = store.get_run(run2)["config"]
    assert stored["llm"]["model"] == "llama3" and "api_key" not in stored["llm"]
    store.update(run2, status="failed", error=f"boom {KEY}", message=f"msg {KEY}")
    assert KEY not in store.get_run(run2)["error"]
    with pytest.raises(ValueError):
        store.put(run2, "s", "k", KEY.encode())  # raw bytes holding the key are refused
    store.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()
            assert b"hunter2" not in path.read_bytes()


def test_steps_put_get_has_and_resume(store):
    config = {"model": "m", "chunk": 10}
    run_id = store.create_run("icai", "d.csv", "dh", config)
    store.put(run_id, "votes", "chunk-0", {"votes": [1, -1, 0]})
    store.put_many(run_id, "votes", {"chunk-1": [1, 2], "chunk-2": "text"})
    store.put(run_id, "raw", "b", b"\x00\x01")
    store.put(run_id, "obj", "np", np.arange(3))
    assert store.has(run_id, "votes", "chunk-1") and not store.has(run_id, "votes", "chunk-9")
    assert store.get_many(run_id, "votes") == {
        "chunk-0": {"votes": [1, -1, 0]},
        "chunk-1": [1, 2],
        "chunk-2": "text",
    }
    assert store.get_many(run_id, "raw") == {"b": b"\x00\x01"}
    assert list(store.get_many(run_id, "obj")["np"]) == [0, 1, 2]
    assert store.keys(run_id, "votes") == {"chunk-0", "chunk-1", "chunk-2"}

    assert store.find_resumable("icai", "dh", config) is None  # still running in this process
    store.update(run_id, status="cancelled")
    assert store.find_resumable("icai", "dh", {"chunk": 10, "model": "m"}) == run_id  # key order irrelevant
    assert store.find_resumable("icai", "dh", {"model": "m", "chunk": 20}) is None
    assert store.find_resumable("icai", "other", config) is None
    assert store.find_resumable("iteralign", "dh", config) is None
    assert store.find_resumable("icai", "dh", {**config, "api_key": KEY}) == run_id  # secrets ignored

    # resume: skip keys already present, store the rest
    store.update(run_id, status="running")
    todo = [k for k in ("chunk-0", "chunk-1", "chunk-2", "chunk-3") if not store.has(run_id, "votes", k)]
    assert todo == ["chunk-3"]
    store.put(run_id, "votes", "chunk-3", [9])
    store.update(run_id, status="done", done=4, total=4)
    assert store.find_resumable("icai", "dh", config) is None  # done runs are not resumed


def test_interrupted_marking_for_dead_process(tmp_path):
    path = tmp_path / "runs.sqlite"
    code = (
        "import sys; from icai_core.store import RunStore; s = RunStore(sys.argv[1]);"
        "r = s.create_run('icai', 'd.csv', 'dh', {'m': 1}); s.put(r, 'step', 'k0', [1]); print(r)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True
    )
    run_id = out.stdout.strip()

    store = RunStore(path)  # the creating process has exited without finishing
    run = store.get_run(run_id)
    assert run["status"] == "interrupted" and "resumable" in run["message"]
    assert store.find_resumable("icai", "dh", {"m": 1}) == run_id
    assert store.has(run_id, "step", "k0")

    mine = store.create_run("icai", "d.csv", "dh", {"m": 1})
    store.close()
    reopened = RunStore(path)  # same process: its own running run is left alone
    assert reopened.get_run(mine)["status"] == "running"

    # the same pid but an older process (e.g. pid 1 in a restarted container) -> interrupted
    with reopened._lock:
        reopened._conn.execute(
            "UPDATE runs SET owner = ? WHERE id = ?", (f"{socket.gethostname()}:{os.getpid()}:12.0", mine)
        )
    assert reopened.mark_interrupted() == 1
    assert reopened.get_run(mine)["status"] == "interrupted"
    reopened.close()


def test_results_roundtrip(store):
    run_id = store.create_run("offline_audit", "d", "h", {})
    votes = pd.DataFrame({"p1": np.array([1, -1, 0], dtype="int8"), "p2": np.array([0, 0, 1], dtype="int8")})
    store.save_result(run_id, "votes", votes)
    loaded = store.load_result(run_id, "votes")
    pd.testing.assert_frame_equal(loaded, votes)
    assert loaded["p1"].dtype == np.int8

    store.save_result(run_id, "summary", {"accuracy": 0.7, "keys": ["a", "b"]})
    assert store.load_result(run_id, "summary") == {"accuracy": 0.7, "keys": ["a", "b"]}
    store.save_result(run_id, "tuple", ("a", 1))  # not JSON round-trippable -> pickle
    assert store.load_result(run_id, "tuple") == ("a", 1)
    mixed = pd.DataFrame({"x": [1, "a", None]})  # parquet cannot hold it -> pickle
    store.save_result(run_id, "mixed", mixed)
    assert list(store.load_result(run_id, "mixed")["x"]) == [1, "a", None]
    assert store.list_results(run_id) == ["mixed", "summary", "tuple", "votes"]
    with pytest.raises(KeyError):
        store.load_result(run_id, "missing")

    store.delete_run(run_id)
    assert store.get_run(run_id) is None
    with pytest.raises(KeyError):
        store.load_result(run_id, "votes")


def test_safe_across_threads(store):
    run_id = store.create_run("icai", "d", "h", {})

    def work(t: int) -> None:
        for i in range(40):
            store.put(run_id, "s", f"{t}-{i}", {"t": t, "i": i})
            store.update(run_id, done=i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.get_many(run_id, "s")) == 320


def test_two_connections_share_the_file(tmp_path):
    a = RunStore(tmp_path / "runs.sqlite")
    b = RunStore(tmp_path / "runs.sqlite")
    run_id = a.create_run("icai", "d", "h", {})
    a.put(run_id, "s", "k", 1)
    assert b.has(run_id, "s", "k") and b.get_run(run_id)["status"] == "running"
    a.close()
    b.close()


def test_damaged_store_is_replaced_keeping_readable_runs(tmp_path):
    """A garbage or truncated run store: named, moved aside, a fresh store started, readable runs kept."""
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    ids = [store.create_run("offline_audit", f"d{i}", "h", {"i": i}) for i in range(3)]
    store.update(ids[0], status="done")
    store.close()
    # damage the end of the file (the tail pages) but keep the header
    data = path.read_bytes()
    cut = len(data) // 2
    path.write_bytes(data[:cut] + b"\xde\xad" * ((len(data) - cut) // 2))
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"runs.sqlite{suffix}").unlink(missing_ok=True)
    again = RunStore(path)
    assert again.recovered is not None and "damaged" in again.recovered
    moved = [m for m in tmp_path.glob("runs.sqlite.damaged-*") if not m.name.endswith(("-wal", "-shm"))]
    assert moved and str(moved[0]) in again.recovered
    new_id = again.create_run("offline_audit", "after", "h", {})
    assert again.get_run(new_id)["dataset_name"] == "after"
    kept = set(again.list_runs()["id"])
    assert kept <= set(ids) | {new_id}
    again.close()
    # a file that is not a database at all
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    fresh = RunStore(bad)
    assert fresh.recovered is not None and "0 runs" in fresh.recovered
    assert len(fresh.list_runs()) == 0
    fresh.close()
