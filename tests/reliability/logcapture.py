"""A pytest plugin that keeps every log line the product writes at INFO and above, in this
process and in the worker subprocesses, for the secrets scan (tests/reliability/
test_secrets_in_logs.py).

Loaded by tests/reliability/conftest.py (or `pytest_plugins` in tests/conftest.py). It
captures from the start of the run, so the scan covers the whole test session: every test
that ran, not only the reliability ones. Tests marked `logscan` run last.

Records are taken where every record passes, `Logger.callHandlers`, rather than by a
handler on the root logger: the worker fixture and the CLI replace the root handlers
(notifier.logs.configure_logging), which would silently end a handler-based capture.
Lines are formatted by the product's JsonFormatter, i.e. exactly what it would print.
Loggers of the local stand-ins for providers (aiosmtpd, moto's server, tests.peers) are not
the product's and are left out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

STAND_IN_LOGGERS = ("mail.log", "werkzeug", "moto", "tests")

_lock = threading.Lock()
_lines: list[str] = []
_files: list[Path] = []
_secrets: set[str] = set()
_original: Callable[[logging.Logger, logging.LogRecord], None] | None = None
_root_level: int | None = None


def register_log_file(path: Path) -> None:
    """A subprocess's log (worker, Beat, publisher): scanned with the in-process lines."""
    with _lock:
        _files.append(path)


def secret(*values: str) -> None:
    """Values a test used that must never reach a log: tokens, keys, addresses, bodies."""
    with _lock:
        _secrets.update(v for v in values if v)


def secrets() -> set[str]:
    with _lock:
        return set(_secrets)


def captured_lines() -> list[str]:
    with _lock:
        return list(_lines)


def log_files() -> list[Path]:
    with _lock:
        return [path for path in _files if path.exists()]


def is_installed() -> bool:
    return _original is not None


def _is_stand_in(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in STAND_IN_LOGGERS)


def _install() -> None:
    global _original, _root_level
    if _original is not None:
        return
    from notifier.logs import JsonFormatter

    formatter = JsonFormatter()
    original = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        if record.levelno >= logging.INFO and not _is_stand_in(record.name):
            try:
                line = formatter.format(record)
            except Exception as exc:  # a bad record must not break the test
                line = f"<unformattable record from {record.name}: {type(exc).__name__}>"
            with _lock:
                _lines.append(line)
        original(self, record)

    _original = original
    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:
        # The product runs at INFO (NOTIFIER_LOG_LEVEL); lines it would print must exist.
        _root_level = root.level
        root.setLevel(logging.INFO)


def _uninstall() -> None:
    global _original, _root_level
    if _original is None:
        return
    logging.Logger.callHandlers = _original  # type: ignore[method-assign]
    _original = None
    if _root_level is not None:
        logging.getLogger().setLevel(_root_level)
        _root_level = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "logscan: reads the session's logs; runs last")
    _install()


def pytest_unconfigure(config: pytest.Config) -> None:
    _uninstall()


def pytest_collection_modifyitems(session: pytest.Session, config: Any, items: list[Any]) -> None:
    last = [item for item in items if item.get_closest_marker("logscan")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("logscan")] + last
