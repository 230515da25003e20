"""Files the notifier creates for itself (NOTIFIER_HOME, the SQLite database, logs, the dev
secret key): readable by their owner only, whatever the process's umask."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create `path` (empty) if missing, then make it owner-only."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    path.chmod(0o600)
    return path
