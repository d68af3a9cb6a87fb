"""The SQLite file under the store: one connection per thread, WAL journaling, every write in a transaction.

A crash mid-run leaves the file consistent and readers never see half a batch. The tables' classes
(:mod:`detector_al.state.store` composes them) read with :meth:`Database.query` and write inside
:meth:`Database.transaction`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from detector_al.state.schema import create_schema


class Database:
    """Thread-safe access to the SQLite state file (created on first use, its schema brought up to date)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._shared = (
            sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if self.path == ":memory:"
            else None
        )
        with self._lock:
            create_schema(self._conn())

    def _conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, db: Database) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db._lock.acquire()
            try:
                self.conn = self.db._conn()
                self.conn.row_factory = sqlite3.Row
                self.conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.db._lock.release()  # a failed BEGIN (locked database, full disk) must not keep the lock
                raise
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                if exc_type is None:
                    try:
                        self.conn.execute("COMMIT")
                    except BaseException:
                        self.conn.execute("ROLLBACK")  # never leave a transaction open on this connection
                        raise
                else:
                    self.conn.execute("ROLLBACK")
            finally:
                self.db._lock.release()

    def transaction(self) -> _Tx:
        """``with db.transaction() as c:`` one write transaction (``BEGIN IMMEDIATE``), rolled back on an error."""
        return Database._Tx(self)

    def query(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        """The rows of one read (the lock held only for it)."""
        with self._lock:
            conn = self._conn()
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, tuple(args)).fetchall()
