"""The hub's SQLite database in WAL mode (``cnbi_spawner.hub_database``), on the real
JupyterHub session factory and a real SQLite file."""

from __future__ import annotations

import pytest
from jupyterhub import orm
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from cnbi_spawner import hub_database
from cnbi_spawner.hub_database import use_sqlite_wal


@pytest.fixture
def wal():
    use_sqlite_wal()
    use_sqlite_wal()  # idempotent: one listener
    yield
    event.remove(Engine, "connect", hub_database._on_connect)  # not for the other tests


def pragmas(session) -> tuple[str, int]:
    mode = session.execute(text("PRAGMA journal_mode")).scalar()
    sync = session.execute(text("PRAGMA synchronous")).scalar()
    return mode, sync


def test_the_hubs_sqlite_connections_use_wal_without_an_fsync_per_commit(wal, tmp_path):
    session = orm.new_session_factory(f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}")()
    try:
        assert pragmas(session) == ("wal", 1)  # 1: NORMAL (the default FULL is 2)
        session.add(orm.User(name="learner"))
        session.commit()
        assert (tmp_path / "jupyterhub.sqlite-wal").exists()
    finally:
        session.close()
    again = orm.new_session_factory(f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}")()
    try:  # the committed row is there for the next process's connection (a hub restart)
        assert again.query(orm.User).filter_by(name="learner").one()
    finally:
        again.close()
