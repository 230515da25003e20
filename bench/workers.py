"""Celery worker subprocesses (`-c 2`, prefork) and the RSS of their pool processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    """`python -m celery -A APP worker -c 2` in the repository, logging to a file."""

    def __init__(self, app: str, log_dir: Path, concurrency: int = 2) -> None:
        self.app = app
        self.concurrency = concurrency
        self.log_path = log_dir / f"worker-{app.replace('.', '-')}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "worker not started"
        return self._process.pid

    def start(self, env: dict[str, str], timeout: float = 60.0) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child writes to it until stop)
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "-c",
                str(self.concurrency),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"{self.app}-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while len(self.pool()) < self.concurrency:
            if self._process.poll() is not None:
                raise RuntimeError(f"worker {self.app} exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.app} did not start; see {self.log_path}")
            time.sleep(0.1)
        return self

    def pool(self) -> list[psutil.Process]:
        """The prefork pool processes (the ones that run tasks)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.pid).children()
        return []

    def stop(self, timeout: float = 30.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        children = self.pool()
        self._process.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def rss_mb(processes: list[psutil.Process]) -> dict[int, float]:
    result: dict[int, float] = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            result[process.pid] = process.memory_info().rss / 2**20
    return result


class RssSampler:
    """Samples the RSS of a worker's pool processes every `interval` seconds in a thread;
    `peak` maps each pool pid to its largest RSS in MiB."""

    def __init__(self, worker: Worker, interval: float = 0.02) -> None:
        self.worker = worker
        self.interval = interval
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pool = self.worker.pool()
        while not self._stop.is_set():
            for pid, mb in rss_mb(pool).items():
                self.peak[pid] = max(self.peak.get(pid, 0.0), mb)
            self._stop.wait(self.interval)
