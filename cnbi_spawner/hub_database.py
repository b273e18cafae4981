"""The hub's SQLite database for lecture halls: commits that do not wait for the disk.

Policy: when the hub's database is SQLite, every connection the hub opens uses
``journal_mode=WAL`` and ``synchronous=NORMAL``. JupyterHub commits on its one event
loop, and with SQLite's default rollback journal each commit waits for two ``fsync`` calls:
the whole hub, every learner's request included, stands still meanwhile. In the launch
storm with a warm pool (``benchmarks/launch_storm.py --pool``, 1000 learners in 60 s,
py-spy of the hub) 23-37 % of the hub's event loop went to ``DefaultDialect.do_commit``
(10-16 ms a warm-pool claim, more on a shared disk). In WAL mode with ``synchronous=NORMAL``
a commit only appends to the write-ahead log; the disk is synced at checkpoints.

What it costs: a commit survives the hub process dying or restarting (the log is in the
file system), so a warm-pool claim is still never handed out twice across a hub restart;
only a crash of the machine (power loss, kernel panic) may lose the last commits. WAL
needs a local file system or a block volume (a Kubernetes PVC such as the Helm chart's
``sqlite-pvc``), not NFS. PostgreSQL and other databases are left alone.

The production config applies it (``CNBI_SQLITE_WAL``, on by default); a hand-written
config calls :func:`use_sqlite_wal` once, before the hub opens its database.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        for pragma in PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def use_sqlite_wal() -> None:
    """Apply the module's policy to every SQLite connection this process opens (idempotent)."""
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)
