"""A backend process publishing one event, for the broker tests: run it with a cluster's
environment while the broker is down and see what the caller gets.

    python -m tests.reliability.publisher publish|notify '<event json>'

Prints one JSON line: {"result": ..., "seconds": ...} or {"error": "<exception type>",
"message": "...", "seconds": ...}; exit status 0 either way (the caller judges).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(mode: str, raw: str) -> dict[str, Any]:
    from notifier.logs import configure_logging

    configure_logging("INFO")
    event = json.loads(raw)
    # The clock times the call, not the imports (the Celery app is configured on import).
    from notifier import notify, publish

    started = time.monotonic()
    try:
        if mode == "publish":
            result: Any = publish(event)
        else:
            result = notify.delay(event).id
    except Exception as exc:  # reported to the test, which judges it
        return {
            "error": f"{type(exc).__module__}.{type(exc).__name__}",
            "message": str(exc)[:500],
            "seconds": time.monotonic() - started,
        }
    return {"result": result, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
