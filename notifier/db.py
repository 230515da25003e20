"""Engine and session factory: SQLite (embedded default) or PostgreSQL from DATABASE_URL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import get_settings
from notifier.files import private_file

_engines: dict[str, Engine] = {}
_factories: dict[tuple[Engine, bool], sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the worker processes read while one writes; busy_timeout makes writers queue
    # instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# A connection that sat in the pool for longer than this is pinged before use (a restarted
# server leaves dead connections behind). One in constant use is not: pinging on every
# checkout cost 8 of the ~49 round trips of a single-person event. A connection that dies
# while in use fails its statement; the pool is then invalidated and the task retried.
IDLE_PING_SECONDS = 2.0


def _mark_returned(_dbapi_connection: Any, record: Any) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    returned = record.info.get("returned_at")
    if returned is None or time.monotonic() - returned < IDLE_PING_SECONDS:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as exc:  # the pool replaces the connection and tries again
        raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    engine = _engines.get(url)
    if engine is None:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                database = Path(path)
                database.parent.mkdir(parents=True, exist_ok=True)
                private_file(database)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # Sending threads (NOTIFIER_SEND_CONCURRENCY) may each need a connection (the
            # outbox backend writes its row) beside the send task's own two.
            overflow = get_settings().send_concurrency + 5
            engine = create_engine(url, pool_size=5, max_overflow=overflow)
            event.listen(engine.pool, "checkin", _mark_returned)
            event.listen(engine.pool, "checkout", partial(_ping_if_idle, engine.dialect))
        _engines[url] = engine
    return engine


def dispose_engines() -> None:
    """Close pooled connections; called after a worker process forks."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _factories.clear()


def session_factory(*, autocommit: bool = False) -> sessionmaker[Session]:
    engine = get_engine()
    key = (engine, autocommit)
    factory = _factories.get(key)
    if factory is None:
        # The autocommit engine shares the pool; its connections go back in their mode.
        bind = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        factory = _factories[key] = sessionmaker(bind=bind, expire_on_commit=False)
    return factory


@contextmanager
def session_scope(*, autocommit: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    autocommit=True: every statement commits on its own, with no BEGIN and COMMIT round
    trips around it; for work whose statements need no common transaction (each is
    atomic and idempotent by itself)."""
    session = session_factory(autocommit=autocommit)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
