"""Which real services the tests use: REDIS_URL / DATABASE_URL when set, else the Redis and
PostgreSQL that answer on localhost (as in CI), else the embedded Redis and SQLite."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import psycopg
import redis


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def local_redis_url() -> str | None:
    if not _port_open(6379):
        return None
    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return None
    return url


def local_rabbitmq_url() -> str | None:
    return "amqp://guest:guest@127.0.0.1:5672//" if _port_open(5672) else None


def create_postgres_database() -> tuple[str, str] | None:
    """A fresh database on the local PostgreSQL: (url, name), or None if none answers."""
    if not _port_open(5432):
        return None
    name = f"notifier_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/test", autocommit=True, connect_timeout=3
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def drop_postgres_database(name: str) -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def configure(home: Path) -> list[str]:
    """Set REDIS_URL and DATABASE_URL for this test session; returns what to clean up."""
    cleanup: list[str] = []
    os.environ["NOTIFIER_HOME"] = str(home)
    if not (os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL")):
        url = local_redis_url()
        if url:
            os.environ["REDIS_URL"] = url
    if not os.environ.get("DATABASE_URL"):
        created = create_postgres_database()
        if created:
            os.environ["DATABASE_URL"] = created[0]
            cleanup.append(created[1])
    return cleanup
