"""Local SQLite run store: run records, per-item step results (for resume) and final results.

One file (default `$PRINCIPIA_HOME/runs.sqlite`, else `~/.principia/runs.sqlite`) in WAL mode, safe
to share between threads (one connection behind a lock) and processes (SQLite file locking with a
busy timeout).

Tables
------
* `runs`: id, created, updated, kind ('offline_audit' | 'icai' | 'iteralign'), dataset name and
  content hash, config JSON (secrets stripped — asserted), config hash, status ('running', 'done',
  'cancelled', 'failed', 'interrupted'), progress done/total, message, cost JSON, error, owner
  (host:pid:process-start of the process that runs it).
* `steps`: (run_id, step, item_key) -> value (JSON text or bytes or pickle). A pipeline stores each
  finished chunk and, on resume, skips the keys already present.
* `results`: (run_id, name) -> a saved object (JSON, parquet for DataFrames, else pickle).

Interrupted runs: when a store is opened, runs still marked 'running' whose owning process is gone
(same host, pid dead or pid reused by a newer process) become 'interrupted'; `find_resumable` offers
them (and cancelled / failed runs) for the same kind, dataset hash and config.

Secrets: config keys named like an API key / password / token are removed before storage, and no
value written anywhere (config, steps, results, messages, errors) may contain an API key known to
`icai_core.llm` or present in the environment: text is scrubbed, binary blobs are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import secrets
import socket
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from icai_core.llm import known_secrets, scrub

KINDS = ("offline_audit", "icai", "iteralign")
STATUSES = ("running", "done", "cancelled", "failed", "interrupted")
RESUMABLE = ("interrupted", "cancelled", "failed")

_PROCESS_START = time.time()
_HOST = socket.gethostname()
_OWNER = f"{_HOST}:{os.getpid()}:{_PROCESS_START:.6f}"
_SECRET_NAMES = {"api_key", "apikey", "authorization", "password", "secret", "token", "access_token"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    kind TEXT NOT NULL,
    dataset_name TEXT,
    dataset_hash TEXT,
    config_json TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    cost_json TEXT,
    error TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS runs_lookup ON runs (kind, dataset_hash, config_hash, created);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    item_key TEXT NOT NULL,
    encoding TEXT NOT NULL,
    value BLOB,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, step, item_key)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    encoding TEXT NOT NULL,
    value BLOB,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


def default_store_path() -> Path:
    home = os.environ.get("PRINCIPIA_HOME")
    return (Path(home) if home else Path.home() / ".principia") / "runs.sqlite"


# --------------------------------------------------------------------------------------------
# Secret hygiene
# --------------------------------------------------------------------------------------------
def _is_secret_name(name: str) -> bool:
    low = str(name).lower()
    return low in _SECRET_NAMES or low.endswith("api_key") or low.endswith("_secret")


def clean_config(config: Any) -> dict[str, Any]:
    """A JSON-safe dict of `config` (dict, dataclass, or object with `to_dict()`) without secrets."""
    if config is None:
        raw: Any = {}
    elif hasattr(config, "to_dict") and callable(config.to_dict):
        raw = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, dict):
        raw = config
    else:
        raise TypeError(f"config must be a dict or a dataclass, not {type(config).__name__}")

    def strip(value: Any) -> Any:
        if hasattr(value, "to_dict") and callable(value.to_dict) and not isinstance(value, dict):
            value = value.to_dict()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): strip(v) for k, v in value.items() if not _is_secret_name(k)}
        if isinstance(value, list | tuple | set | frozenset):
            items = [strip(v) for v in value]
            return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
        if isinstance(value, str):
            return scrub(value)  # known keys and key-looking tokens ("sk-...") become ***
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Path):
            return str(value)
        return repr(value) if not _contains_secret(repr(value)) else "***"

    cleaned = strip(raw)
    _assert_no_secret_keys(cleaned)
    return cleaned


def _assert_no_secret_keys(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert not _is_secret_name(k), f"refusing to store a config field named {k!r}"
            _assert_no_secret_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_no_secret_keys(v)


def _contains_secret(data: str | bytes) -> bool:
    for secret in known_secrets():
        needle: Any = secret.encode() if isinstance(data, bytes) else secret
        if needle in data:
            return True
    return False


def _safe_text(text: Any) -> str | None:
    if text is None:
        return None
    return scrub(str(text))


def _config_hash(cleaned: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cleaned, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Value encoding
# --------------------------------------------------------------------------------------------
def _encode(value: Any, *, allow_parquet: bool = False) -> tuple[str, bytes | str]:
    if isinstance(value, bytes | bytearray | memoryview):
        enc, blob = "bytes", bytes(value)
    else:
        enc, blob = "", b""
        if allow_parquet:
            try:
                import pandas as pd

                if isinstance(value, pd.DataFrame):
                    buf = io.BytesIO()
                    value.to_parquet(buf)
                    enc, blob = "parquet", buf.getvalue()
            except Exception:
                enc = ""
        if not enc:
            try:
                text = json.dumps(value, allow_nan=True, ensure_ascii=False)
                if json.loads(text) == value:  # round-trips exactly (no tuples, int keys, ...)
                    if _contains_secret(text):
                        text = scrub(text)
                    return "json", text
            except (TypeError, ValueError, RecursionError):
                pass
            enc, blob = "pickle", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if _contains_secret(blob):
        raise ValueError("refusing to store a value that contains an API key")
    return enc, blob


def _decode(encoding: str, value: Any) -> Any:
    if encoding == "json":
        return json.loads(value)
    if encoding == "bytes":
        return bytes(value)
    if encoding == "parquet":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(value))
    if encoding == "pickle":
        return pickle.loads(value)  # noqa: S301 - our own local store
    raise ValueError(f"unknown encoding {encoding!r}")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _salvage_rows(old: sqlite3.Connection, table: str, cols: list[str], max_gap: int = 20_000):
    """Every row of `table` in a damaged database that can still be read, in rowid order.

    A scan stops at the first page that cannot be read (cut off or garbled), but the rows of later
    pages are usually still reachable through the b-tree by rowid: after a failed scan the rowids past
    the last row read are probed one by one (cheap: a failed seek costs microseconds) and the scan
    resumes from the next readable one, until `max_gap` consecutive rowids give nothing (or past the
    largest rowid, when SQLite can still tell it)."""
    select = f"SELECT rowid, {', '.join(cols)} FROM {table}"
    last = 0
    try:
        top = old.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        top = None
    while True:
        try:
            cur = old.execute(f"{select} WHERE rowid > ? ORDER BY rowid", (last,))
            for row in cur:
                last = row[0]
                yield row[1:]
            return  # the scan reached the end
        except sqlite3.DatabaseError:
            pass
        probe, found = last + 1, False  # rows past a damaged page: find the next readable rowid
        limit = top if top is not None else last + max_gap
        while probe <= limit:
            try:
                row = old.execute(f"{select} WHERE rowid = ?", (probe,)).fetchone()
            except sqlite3.DatabaseError:
                row = None
            if row is not None:
                last, found = row[0], True
                yield row[1:]
                break
            probe += 1
        if not found:
            return


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------
class RunStore:
    """SQLite store of runs and their resumable step results. Safe across threads."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = str(path) if path is not None else str(default_store_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.recovered: str | None = None  # what happened when a damaged store was replaced
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if self.path == ":memory:":
                raise
            self._recover(exc)
        self.mark_interrupted()

    def _open(self) -> None:
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            if self.path != ":memory:":
                check = self._conn.execute("PRAGMA quick_check").fetchone()
                if not check or check[0] != "ok":
                    raise sqlite3.DatabaseError(f"integrity check failed: {check[0] if check else 'no answer'}")

    def _recover(self, exc: Exception) -> None:
        """A damaged store file: move it aside, start a new one, and copy every row still readable.
        Nothing readable is lost; what happened is kept in `self.recovered` (and logged once)."""
        import logging
        import shutil

        with contextlib.suppress(Exception):
            self._conn.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        damaged = f"{self.path}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                shutil.move(self.path + suffix, damaged + suffix)
        self._open()
        kept: dict[str, int] = {}
        try:
            old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
            # A cut file fails SQLite's schema check as a whole ("malformed") as soon as ONE table or
            # index has its root page past the end, which would make every table unreadable; with
            # writable_schema the schema is taken as written and each table is read as far as it goes.
            old.execute("PRAGMA writable_schema=ON")
        except sqlite3.Error:
            old = None
        for table in ("runs", "steps", "results"):
            kept[table] = 0
            if old is None:
                continue
            try:
                cols = [r[1] for r in old.execute(f"PRAGMA table_info({table})")]
                marks = ",".join("?" * len(cols))
                batch: list[tuple] = []
                for row in _salvage_rows(old, table, cols):
                    batch.append(row)
                    if len(batch) >= 200:
                        kept[table] += self._insert_ignore(table, cols, marks, batch)
                        batch = []
                if batch:
                    kept[table] += self._insert_ignore(table, cols, marks, batch)
            except sqlite3.DatabaseError:
                continue
        if old is not None:
            old.close()
        why = " ".join(str(exc).split())  # SQLite's integrity report spans lines: one paragraph
        why = why if len(why) <= 200 else why[:199] + "…"
        self.recovered = (
            f"The run store {self.path} was damaged ({type(exc).__name__}: {why}). It was moved to {damaged} "
            f"and a new store started; {kept['runs']} runs and {kept['results']} saved results could still be "
            "read and were copied into it. Runs that could not be read are gone from the list; the damaged "
            "file is kept in case you want to inspect it, and can be deleted."
        )
        logging.getLogger("principia.store").warning(self.recovered)

    def _insert_ignore(self, table: str, cols: list[str], marks: str, rows: list[tuple]) -> int:
        with self._tx() as conn:
            conn.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
        return len(rows)

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------------
    def mark_interrupted(self) -> int:
        """Mark 'running' runs whose process is gone as 'interrupted'; returns how many."""
        rows = self._query("SELECT id, owner FROM runs WHERE status = 'running'")
        stale = []
        for run_id, owner in rows:
            if owner == _OWNER:
                continue
            try:
                host, pid_s, start_s = str(owner).rsplit(":", 2)
                pid = int(pid_s)
                float(start_s)
            except (ValueError, AttributeError):
                stale.append(run_id)  # no usable owner: cannot be running
                continue
            if host != _HOST:
                continue  # another machine sharing the file: we cannot tell
            if pid == os.getpid() or not _pid_alive(pid):
                stale.append(run_id)  # our pid but an older process, or that process is gone
        if stale:
            now = time.time()
            with self._tx() as conn:
                conn.executemany(
                    "UPDATE runs SET status = 'interrupted', updated = ?,"
                    " message = 'interrupted (the process running it ended); resumable' WHERE id = ?",
                    [(now, r) for r in stale],
                )
        return len(stale)

    def create_run(self, kind: str, dataset_name: str, dataset_hash: str, config: Any) -> str:
        """Create a run with status 'running' owned by this process; returns its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}; expected one of {KINDS}")
        cleaned = clean_config(config)
        text = json.dumps(cleaned, sort_keys=True, default=str)
        assert '"api_key"' not in text and not _contains_secret(text), "config still holds a secret"
        now = time.time()
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + secrets.token_hex(3)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO runs (id, created, updated, kind, dataset_name, dataset_hash, config_json,"
                " config_hash, status, done, total, message, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', 0, 0, '', ?)",
                (run_id, now, now, kind, dataset_name, dataset_hash, text, _config_hash(cleaned), _OWNER),
            )
        return run_id

    def find_resumable(self, kind: str, dataset_hash: str, config: Any) -> str | None:
        """Newest interrupted / cancelled / failed run with the same kind, dataset hash and config."""
        chash = _config_hash(clean_config(config))
        marks = ",".join("?" * len(RESUMABLE))
        rows = self._query(
            f"SELECT id FROM runs WHERE kind = ? AND dataset_hash = ? AND config_hash = ? AND status IN ({marks})"
            " ORDER BY created DESC LIMIT 1",
            (kind, dataset_hash, chash, *RESUMABLE),
        )
        return rows[0][0] if rows else None

    def update(
        self,
        run_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
        cost: Any = None,
        error: str | None = None,
    ) -> None:
        """Set the given fields. Setting status='running' (a resume) makes this process the owner."""
        sets: list[str] = ["updated = ?"]
        args: list[Any] = [time.time()]
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
            sets.append("status = ?")
            args.append(status)
            if status == "running":
                sets.append("owner = ?")
                args.append(_OWNER)
        if done is not None:
            sets.append("done = ?")
            args.append(int(done))
        if total is not None:
            sets.append("total = ?")
            args.append(int(total))
        if message is not None:
            sets.append("message = ?")
            args.append(_safe_text(message))
        if cost is not None:
            if hasattr(cost, "to_dict"):
                cost = cost.to_dict()
            elif dataclasses.is_dataclass(cost) and not isinstance(cost, type):
                cost = dataclasses.asdict(cost)
            sets.append("cost_json = ?")
            args.append(_safe_text(json.dumps(cost, default=str)))
        if error is not None:
            sets.append("error = ?")
            args.append(_safe_text(error))
        args.append(run_id)
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", args)
            if cur.rowcount == 0:
                raise KeyError(f"no run {run_id!r}")

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT id, created, updated, kind, dataset_name, dataset_hash, config_json, status, done, total,"
            " message, cost_json, error FROM runs WHERE id = ?",
            (run_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "id": r[0],
            "created": r[1],
            "updated": r[2],
            "kind": r[3],
            "dataset_name": r[4],
            "dataset_hash": r[5],
            "config": json.loads(r[6]),
            "status": r[7],
            "done": r[8],
            "total": r[9],
            "message": r[10],
            "cost": json.loads(r[11]) if r[11] else None,
            "error": r[12],
        }

    def list_runs(self, limit: int = 20):
        """Newest first: a DataFrame with id, created (datetime), kind, dataset_name, status, done,
        total, message, dollars, error."""
        import pandas as pd

        rows = self._query(
            "SELECT id, created, kind, dataset_name, status, done, total, message, cost_json, error"
            " FROM runs ORDER BY created DESC LIMIT ?",
            (int(limit),),
        )
        records = []
        for r in rows:
            dollars = None
            if r[8]:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    cost = json.loads(r[8])
                    dollars = float(cost.get("dollars")) if cost.get("dollars") is not None else None
            records.append(
                {
                    "id": r[0],
                    "created": pd.Timestamp(datetime.fromtimestamp(r[1])),  # local time
                    "kind": r[2],
                    "dataset_name": r[3],
                    "status": r[4],
                    "done": r[5],
                    "total": r[6],
                    "message": r[7],
                    "dollars": dollars,
                    "error": r[9],
                }
            )
        columns = [
            "id",
            "created",
            "kind",
            "dataset_name",
            "status",
            "done",
            "total",
            "message",
            "dollars",
            "error",
        ]
        return pd.DataFrame.from_records(records, columns=columns)

    def delete_run(self, run_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM results WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- step items -----------------------------------------------------------------------------
    def put(self, run_id: str, step: str, key: str, value: Any) -> None:
        """Store one finished item (JSON if it round-trips, bytes as-is, else pickle)."""
        self.put_many(run_id, step, {key: value})

    def put_many(self, run_id: str, step: str, items: dict[str, Any]) -> None:
        """Store several items in one transaction."""
        now = time.time()
        rows = []
        for key, value in items.items():
            enc, blob = _encode(value)
            rows.append((run_id, step, str(key), enc, blob, now))
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO steps (run_id, step, item_key, encoding, value, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def get_many(self, run_id: str, step: str) -> dict[str, Any]:
        rows = self._query(
            "SELECT item_key, encoding, value FROM steps WHERE run_id = ? AND step = ? ORDER BY rowid",
            (run_id, step),
        )
        return {k: _decode(enc, v) for k, enc, v in rows}

    def has(self, run_id: str, step: str, key: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM steps WHERE run_id = ? AND step = ? AND item_key = ?", (run_id, step, str(key))
        )
        return bool(rows)

    def keys(self, run_id: str, step: str) -> set[str]:
        rows = self._query("SELECT item_key FROM steps WHERE run_id = ? AND step = ?", (run_id, step))
        return {r[0] for r in rows}

    # -- final results --------------------------------------------------------------------------
    def save_result(self, run_id: str, name: str, obj: Any) -> None:
        """Save a named result: DataFrame -> parquet (pickle if parquet cannot hold it), JSON-able ->
        JSON, anything else -> pickle."""
        enc, blob = _encode(obj, allow_parquet=True)
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO results (run_id, name, encoding, value, created) VALUES (?, ?, ?, ?, ?)",
                (run_id, name, enc, blob, time.time()),
            )

    def load_result(self, run_id: str, name: str) -> Any:
        """Load a saved result; KeyError if there is none."""
        rows = self._query(
            "SELECT encoding, value FROM results WHERE run_id = ? AND name = ?", (run_id, name)
        )
        if not rows:
            raise KeyError(f"run {run_id!r} has no result {name!r}")
        return _decode(rows[0][0], rows[0][1])

    def list_results(self, run_id: str) -> list[str]:
        return [
            r[0] for r in self._query("SELECT name FROM results WHERE run_id = ? ORDER BY name", (run_id,))
        ]


__all__ = ["KINDS", "RESUMABLE", "STATUSES", "RunStore", "clean_config", "default_store_path"]
