"""Real worker and Beat processes for the reliability tests, on queues of their own.

    with Cluster(tmp_path, env={...}) as cluster:
        worker = cluster.start_worker()
        cluster.start_beat()                      # requeue_stalled every stale-claim period
        cluster.send("notifier.notify", event)    # through the cluster's broker and queues
        worker.kill_child_connected_to(port)      # SIGKILL one pool process mid-send
        worker.kill()                             # SIGKILL the whole worker

Each cluster has its own queue prefix: the session's in-process worker (the `celery_worker`
fixture of other tests) never takes its tasks, and its processes are killed by their own
ids only. Their logs (JSON lines on stderr) are kept and registered with the log capture,
so the secrets scan reads them too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from celery import Celery
from celery.result import AsyncResult

from config.celery import celery_config
from config.settings import CHANNELS, get_settings
from tests.helpers import CELERY
from tests.reliability import logcapture

ROOT = Path(__file__).resolve().parents[2]
STALE_CLAIM_SECONDS = 5
"""Claims older than this are taken over; Beat's requeue_stalled runs at this interval."""
BACKOFF_MAX_SECONDS = 2
SEND_CONCURRENCY = 4
"""Web Push requests one pool process has in flight at most (NOTIFIER_SEND_CONCURRENCY)."""


def broker_url() -> str:
    from notifier.embedded import ensure_redis

    settings = get_settings()
    return settings.broker_url or ensure_redis(settings.home)


def _tcp_ports(process: psutil.Process) -> set[int]:
    try:
        return {c.raddr.port for c in process.net_connections(kind="tcp") if c.raddr}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return set()


class Process:
    """A subprocess started by the cluster: its log file, and kill by its own id."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        logcapture.register_log_file(log_path)
        self._log = open(log_path, "ab")  # noqa: SIM115  (closed in stop/kill)
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches its children only
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.log_text():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.log_path.name} exited:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} in {self.log_path.name} within {timeout}s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process and every process of its group at once (a crashed host)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 20.0) -> None:
        """A warm shutdown (SIGTERM), then SIGKILL if it does not end in time."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=30)
        self._log.close()


class Worker(Process):
    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []

    def child_connected_to(self, port: int, timeout: float = 30.0) -> psutil.Process:
        """The pool process with a TCP connection to `port` (the one talking to a peer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children():
                if port in _tcp_ports(child):
                    return child
            time.sleep(0.01)
        raise AssertionError(f"no pool process of worker {self.pid} connected to port {port}")

    def kill_child_connected_to(self, port: int) -> int:
        """SIGKILL the pool process talking to `port`; returns its pid."""
        child = self.child_connected_to(port)
        child.send_signal(signal.SIGKILL)
        return int(child.pid)


class Cluster:
    """Worker and Beat subprocesses sharing one broker, one database and one queue prefix."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        broker: str | None = None,
        database_url: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"rel-{uuid.uuid4().hex[:8]}-"
        self.broker = broker or broker_url()
        self.processes: list[Process] = []
        self._names = 0
        self.env = self._environment(env or {}, database_url)
        self.app = self._client_app()

    def _environment(self, extra: dict[str, str], database_url: str | None) -> dict[str, str]:
        settings = get_settings()
        env = dict(os.environ)
        for name in ("REDIS_URL", "CELERY_BROKER_URL"):
            env.pop(name, None)
        env.update(
            {
                "CELERY_BROKER_URL": self.broker,
                "DATABASE_URL": database_url or settings.database_url,
                "NOTIFIER_HOME": str(self.workdir / "home"),
                "NOTIFIER_QUEUE_PREFIX": self.prefix,
                "NOTIFIER_STALE_CLAIM_SECONDS": str(STALE_CLAIM_SECONDS),
                "NOTIFIER_SEND_BACKOFF_MAX": str(BACKOFF_MAX_SECONDS),
                "NOTIFIER_SEND_MAX_RETRIES": str(settings.send_max_retries),
                "NOTIFIER_SEND_CONCURRENCY": str(SEND_CONCURRENCY),
                "NOTIFIER_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if not self.broker.startswith("redis"):
            # The rate limiter's buckets live in Redis even when the broker is RabbitMQ.
            env.setdefault("NOTIFIER_RATE_LIMIT_REDIS_URL", broker_url())
        for channel in CHANNELS:  # nothing leaks in from the test process's environment
            env[f"NOTIFIER_{channel.upper()}_BACKEND"] = "outbox"
        env.update(extra)
        return env

    def _client_app(self) -> Celery:
        settings = dataclasses.replace(
            get_settings(),
            queue_prefix=self.prefix,
            database_url=self.env["DATABASE_URL"],
            broker_url=self.broker,
        )
        app = Celery(f"reliability-client-{self.prefix}", set_as_current=False)
        app.conf.update(celery_config(settings, self.broker))
        return app

    # -- processes ----------------------------------------------------------------------

    def _name(self, kind: str) -> str:
        self._names += 1
        return f"{self.prefix}{kind}{self._names}"

    def start_worker(self, concurrency: int = 2, wait: bool = True) -> Worker:
        name = self._name("worker")
        args = [
            *CELERY,
            "worker",
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        worker = Worker(args, self.env, self.workdir / f"{name}.log")
        self.processes.append(worker)
        if wait:
            worker.wait_for_log(" ready.")
        return worker

    def start_beat(self) -> Process:
        name = self._name("beat")
        args = [
            *CELERY,
            "beat",
            "-s",
            str(self.workdir / f"{name}-schedule"),
            "-l",
            "INFO",
        ]
        beat = Process(args, self.env, self.workdir / f"{name}.log")
        self.processes.append(beat)
        beat.wait_for_log("beat: Starting")
        return beat

    def send(self, task: str, *args: Any) -> AsyncResult:
        return self.app.send_task(task, args=args)

    def purge(self) -> None:
        with self.app.connection_for_write() as conn:
            for queue in self.app.conf.task_queues:
                queue.bind(conn.default_channel).purge()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        with contextlib.suppress(Exception):  # a broker left down has nothing to purge
            self.purge()
        self.app.close()

    def print_logs(self, lines: int = 60) -> None:
        """The end of each process's log, for the report of a failed test."""
        for process in self.processes:
            tail = process.log_text().splitlines()[-lines:]
            print(f"----- {process.log_path.name} (last {len(tail)} lines)", *tail, sep="\n")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.print_logs()
        self.stop()
