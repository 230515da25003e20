"""`python -m bench.directory_import [--users N] [--output FILE]`: the directory import's
speed as a ratio against the same run's plain insert rate of user rows.

In one run, on one fresh database of the local PostgreSQL (127.0.0.1:5432, dropped after):
1. baseline: the same N user rows inserted by psycopg's executemany (plain INSERT, no
   conflict handling, no parsing or validation), rows per second;
2. `notifier import FILE` of a directory document of N users (contact points, locale and
   preferences; one in ten with a Web Push subscription), as a user runs it: users per
   second, the child processes' peak RSS;
3. the same document again (nothing changes): users per second.
The ratio (2 / 1) is the figure to compare across machines; the target is >= 0.3.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TENANT = "bench-import"
COLUMNS = ("tenant_id", "id", "name", "role", "addresses", "locale")


def user(i: int) -> dict[str, Any]:
    """A member as the directory document shows one; one in ten has a Web Push
    subscription (a browser that accepted notifications)."""
    doc: dict[str, Any] = {
        "id": f"u{i:07d}",
        "tenantId": TENANT,
        "name": f"Member {i}",
        "role": "member",
        "email": f"u{i:07d}@bench.example",
        "phone": f"+8869{i:08d}",
        "lineUserId": f"U{i:032x}",
        "locale": "zh-TW",
        "preferences": {"priority": {"high": ["line", "sms"], "medium": ["line", "email"]}},
    }
    if i % 10 == 0:
        endpoint = f"https://fcm.googleapis.com/fcm/send/{i}"
        doc["webPushSubscriptions"] = [{"endpoint": endpoint, "keys": {"p256dh": "k", "auth": "a"}}]
    return doc


def write_document(path: Path, users: int) -> None:
    """The directory document, written a user at a time (never whole in memory)."""
    with path.open("w", encoding="utf-8") as out:
        tenant = {"id": TENANT, "name": "Bench", "timezone": "Asia/Taipei"}
        out.write(f'{{"tenants": [{json.dumps(tenant)}],\n')
        out.write(' "users": [\n')
        for i in range(users):
            out.write(("," if i else "") + json.dumps(user(i)) + "\n")
        out.write("]}\n")


def baseline_rows(users: int) -> Iterator[tuple[Any, ...]]:
    for i in range(users):
        u = user(i)
        yield (
            TENANT,
            u["id"],
            u["name"],
            u["role"],
            json.dumps({"email": u["email"], "sms": u["phone"], "line": u["lineUserId"]}),
            u["locale"],
        )


def plain_insert_rate(url: str, users: int) -> float:
    """Rows per second of a plain executemany INSERT of the user rows (then removed)."""
    columns = ", ".join(COLUMNS)
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, timezone, locale, branding, created_at, updated_at) "
            "VALUES (%s, 'Bench', 'Asia/Taipei', 'en', '{}', now(), now())",
            (TENANT,),
        )
        started = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO users ({columns}, active, preferences, created_at, updated_at) "  # noqa: S608 (constant names)
                f"VALUES ({placeholders}, true, '{{}}', now(), now())",
                list(baseline_rows(users)),
            )
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DELETE FROM users WHERE tenant_id = %s", (TENANT,))
        conn.execute("DELETE FROM tenants WHERE id = %s", (TENANT,))
    return users / seconds


def notifier(env: dict[str, str], *args: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "notifier"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"notifier {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.directory_import", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--output", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()

    name = f"notifier_bench_import_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    home = Path(tempfile.mkdtemp(prefix="notifier-bench-import-"))
    env = {
        **os.environ,
        "DATABASE_URL": url.replace("postgresql://", "postgresql+psycopg://"),
        "NOTIFIER_HOME": str(home),
        "NOTIFIER_SECRET_KEY": os.environ.get("NOTIFIER_SECRET_KEY") or uuid.uuid4().hex * 2,
    }
    try:
        notifier(env, "db", "upgrade")
        document = home / "directory.json"
        write_document(document, args.users)
        document_mb = document.stat().st_size / 1e6
        plain = plain_insert_rate(url, args.users)
        first_seconds, first = notifier(env, "import", str(document))
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        again_seconds, again = notifier(env, "import", str(document))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)
    assert first["changed"]["users"] == args.users, first
    assert set(again["changed"].values()) == {0}, again
    results = {
        "users": args.users,
        "document_mb": round(document_mb, 1),
        "plain_executemany_rows_per_s": round(plain),
        "import_users_per_s": round(args.users / first_seconds),
        "reimport_users_per_s": round(args.users / again_seconds),
        "ratio_import_to_plain": round(args.users / first_seconds / plain, 3),
        "import_peak_rss_mb": round(peak_rss_mb, 1),
    }
    print(json.dumps(results, indent=2))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
