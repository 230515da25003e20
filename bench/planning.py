"""Planning rate of one broadcast, with 1 and 2 processes, beside the database's own insert rate.

    DATABASE_URL=postgresql://... python -m bench.planning --people 100000

Plans a LINE broadcast to `--people` members page by page (`notifier.pipeline.plan_page`,
what each `notifier.select_channels` task runs) on a pool of 1, then 2, processes, and
prints deliveries inserted per second; and, as the baseline, the rate of a plain
`executemany` INSERT of the same number of delivery-shaped rows. No broker, no sends: the
planning step alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.environment import configure
from bench.seed import TENANT_PREFIX, People, add_tenant, forget_bench_tenants


def _plan(task: tuple[int, dict[str, Any], str, str | None]) -> int:
    from notifier.pipeline import Audience, Page, plan_page

    event_pk, audience, first, before = task
    return sum(plan_page(event_pk, Audience(**audience), Page(first, before)).counts.values())


def _fresh_process() -> None:
    from notifier.db import dispose_engines

    dispose_engines()


def _broadcast(tenant: str) -> int:
    from notifier.pipeline import accept

    accepted = accept(
        {
            "eventId": f"bench-plan-{uuid.uuid4().hex}",
            "eventType": "system.maintenance",
            "tenantId": tenant,
            "timestamp": "2026-11-22T09:00:00+08:00",
            "source": "bench",
            "data": {
                "startsAt": "2026-11-23T01:00:00+08:00",
                "endsAt": "2026-11-23T03:00:00+08:00",
                "message": "bench",
            },
            "metadata": {"channels": ["line"]},
        }
    )
    assert accepted.event_pk is not None, accepted.errors
    return accepted.event_pk


def planning_rate(tenant: str, processes: int) -> dict[str, float]:
    from dataclasses import asdict

    from notifier.pipeline import resolve

    event_pk = _broadcast(tenant)
    started = time.perf_counter()
    resolution = resolve(event_pk)
    assert resolution is not None
    audience = asdict(resolution.audience)
    tasks = [(event_pk, audience, page.first, page.before) for page in resolution.pages]
    with get_context("fork").Pool(processes, initializer=_fresh_process) as pool:
        inserted = sum(pool.map(_plan, tasks, chunksize=1))
    seconds = time.perf_counter() - started
    return {"deliveries": inserted, "seconds": seconds, "per_second": inserted / seconds}


def insert_rate(tenant: str, people: People) -> dict[str, float]:
    """executemany of delivery-shaped rows, no conflict handling: the database's baseline."""
    from sqlalchemy import delete, insert

    from notifier.db import get_engine
    from notifier.models import Delivery, utcnow

    event_pk = _broadcast(tenant)
    now = utcnow()
    rows = [
        {
            "event_pk": event_pk,
            "tenant_id": tenant,
            "recipient": people.user_id(i),
            "channel": "line",
            "priority": "high",
            "status": "queued",
            "retry_key": uuid.uuid4().hex,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(people.count)
    ]
    started = time.perf_counter()
    with get_engine().begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(insert(Delivery), rows[start : start + 1000])
    seconds = time.perf_counter() - started
    with get_engine().begin() as conn:
        conn.execute(delete(Delivery).where(Delivery.event_pk == event_pk))
    return {"rows": len(rows), "seconds": seconds, "per_second": len(rows) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--processes", default="1,2", help="pool sizes, comma-separated")
    args = parser.parse_args()
    configure(Path(tempfile.mkdtemp(prefix="notifier-bench-plan-")))
    from notifier.migrate import upgrade

    upgrade()
    forget_bench_tenants()
    people = People(f"{TENANT_PREFIX}plan", args.people)
    add_tenant(people, {"high": ["line"]})
    try:
        baseline = insert_rate(people.tenant, people)
        report: dict[str, Any] = {"people": args.people, "executemany_insert": baseline}
        for processes in (int(p) for p in args.processes.split(",")):
            rate = planning_rate(people.tenant, processes)
            rate["ratio_to_insert"] = rate["per_second"] / baseline["per_second"]
            report[f"planning_{processes}_processes"] = rate
        print(json.dumps(report, indent=2))
    finally:
        forget_bench_tenants()


if __name__ == "__main__":
    main()
