"""The `notifier` command line."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import click

from config.settings import get_settings, reset_settings

SETTLED = {"sent", "failed", "suppressed", "skipped", "deferred", "batched"}


def _read_json(source: TextIO) -> Any:
    from notifier.events import parse_json

    return parse_json(source.read())


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """notifier: events in, notifications out (LINE, email, SMS, Web Push, Slack, SNS).

    Broker and database come from REDIS_URL and DATABASE_URL; without them an embedded
    Redis and a SQLite file under NOTIFIER_HOME (default ./.notifier) are used.
    """
    from notifier.logs import configure_logging

    configure_logging(os.environ.get("NOTIFIER_LOG_LEVEL", "WARNING").upper())


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations to DATABASE_URL (or the embedded SQLite)."""
    from notifier.migrate import upgrade

    upgrade(revision)
    click.echo(f"database at {revision}: {_safe_url(get_settings().database_url)}")


def _safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


@main.command("import")
@click.argument("source", type=click.File("r", encoding="utf-8"))
def import_cmd(source: TextIO) -> None:
    """Upsert a directory document (tenants, users, memberships, courses, bookings) from
    FILE or - (stdin). Running it twice with the same document changes nothing."""
    from notifier.directory import import_document
    from notifier.events import InvalidEvent

    try:
        counts = import_document(_read_json(source))
    except InvalidEvent as exc:
        _echo_json({"errors": exc.errors})
        sys.exit(1)
    _echo_json({"changed": counts})


@main.command()
@click.argument("source", type=click.File("r", encoding="utf-8"))
def send(source: TextIO) -> None:
    """Publish events from FILE or - (stdin): one event object or a list of them.

    Each event is validated here; prints one line per event with its id or its errors.
    Exits 1 if any event was invalid (the valid ones are still sent).
    """
    from notifier import publish
    from notifier.events import InvalidEvent

    try:
        payload = _read_json(source)
    except InvalidEvent as exc:
        _echo_json({"status": "rejected", "errors": exc.errors})
        sys.exit(1)
    events = payload if isinstance(payload, list) else [payload]
    failures = 0
    for event in events:
        try:
            event_id = publish(event)
        except InvalidEvent as exc:
            failures += 1
            click.echo(json.dumps({"status": "rejected", "errors": exc.errors}, ensure_ascii=False))
        else:
            click.echo(json.dumps({"status": "queued", "eventId": event_id}))
    sys.exit(1 if failures else 0)


@main.command()
@click.argument("event_id")
@click.option("--tenant", help="Tenant id, when the same event id exists in several tenants.")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
def status(event_id: str, tenant: str | None, as_json: bool) -> None:
    """Show an event and its deliveries. Exit code 0 when the event is known, 1 when not."""
    from notifier.status import AmbiguousEvent, event_status

    try:
        doc = event_status(event_id, tenant)
    except AmbiguousEvent as exc:
        raise click.UsageError(str(exc)) from exc
    if doc is None:
        if as_json:
            _echo_json({"event": None, "deliveries": []})
        else:
            click.echo(f"unknown event {event_id}", err=True)
        sys.exit(1)
    if as_json:
        _echo_json(doc)
        return
    ev = doc["event"]
    click.echo(f"{ev['eventId']}  {ev['eventType']}  tenant={ev['tenantId']}  {ev['status']}")
    for error in ev["errors"]:
        click.echo(f"  error {error['field']}: {error['message']}")
    for d in doc["deliveries"]:
        extra = d["error"] or d["providerMessageId"] or ""
        click.echo(
            f"  {d['recipient']:<24} {d['channel']:<9} {d['status']:<10} "
            f"attempts={d['attempts']}  {extra}"
        )


@main.command()
@click.option("--tenant", help="Only this tenant's messages.")
@click.option("--limit", default=20, show_default=True)
def outbox(tenant: str | None, limit: int) -> None:
    """List the newest messages stored by the outbox backend (what would have been sent)."""
    from sqlalchemy import select

    from notifier.db import session_scope
    from notifier.models import OutboxMessage

    with session_scope() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
        if tenant:
            query = query.where(OutboxMessage.tenant_id == tenant)
        for row in session.scalars(query):
            click.echo(
                f"#{row.id} {row.channel:<9} {row.event_type:<28} to {row.recipient}: "
                f"{row.subject or ''}"
            )
            click.echo("    " + (row.body_text or "").replace("\n", "\n    "))


def _seed_and_fire(wait: float) -> list[str]:
    from notifier import demo, publish
    from notifier.directory import import_document
    from notifier.status import event_status

    now = dt.datetime.now(dt.UTC)
    import_document(demo.directory(now))
    run = uuid.uuid4().hex[:8]
    ids = [publish(event) for event in demo.events(now, run)]
    click.echo(f"published {len(ids)} demo events for tenant {demo.TENANT}")
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        docs = [event_status(i, demo.TENANT) for i in ids]
        if all(
            doc and doc["deliveries"] and all(d["status"] in SETTLED for d in doc["deliveries"])
            for doc in docs
        ):
            break
        time.sleep(0.5)
    for event_id in ids:
        doc = event_status(event_id, demo.TENANT)
        if doc is None:
            click.echo(f"  {event_id}: not processed yet")
            continue
        summary: dict[str, int] = {}
        for d in doc["deliveries"]:
            summary[d["status"]] = summary.get(d["status"], 0) + 1
        click.echo(
            f"  {doc['event']['eventType']:<28} {doc['event']['status']:<9} "
            + ", ".join(f"{k}={v}" for k, v in sorted(summary.items()))
        )
    return ids


@main.command("demo")
@click.option(
    "--wait",
    default=60.0,
    show_default=True,
    help="Seconds to wait for the deliveries to settle (0: don't wait).",
)
def demo_cmd(wait: float) -> None:
    """Seed the demo tenant and publish one event of every type (needs a running worker)."""
    from notifier.migrate import upgrade

    upgrade()
    _seed_and_fire(wait)


def _children_env(broker_url: str) -> dict[str, str]:
    settings = get_settings()
    return {
        **os.environ,
        "REDIS_URL": broker_url,
        "DATABASE_URL": settings.database_url,
        "NOTIFIER_HOME": str(settings.home),
    }


@main.command()
@click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    help="Seed the demo tenant and send one event of every type.",
)
@click.option(
    "--flower/--no-flower", default=True, show_default=True, help="Start Flower on --flower-port."
)
@click.option("--flower-port", default=5555, show_default=True)
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option("--once", is_flag=True, help="Stop after the demo has settled (for scripts).")
def dev(demo: bool, flower: bool, flower_port: int, concurrency: int, once: bool) -> None:
    """Start the whole pipeline on this machine: database migrations, the broker (embedded
    Redis unless REDIS_URL is set), a worker, Beat and Flower. Ctrl-C stops everything."""
    from channels.registry import available_backends
    from notifier.embedded import ensure_redis, stop_redis
    from notifier.migrate import upgrade

    settings = get_settings()
    started_redis = not settings.broker_url
    broker_url = settings.broker_url or ensure_redis(settings.home)
    os.environ["REDIS_URL"] = broker_url
    reset_settings()
    upgrade()
    click.echo(f"database: {_safe_url(settings.database_url)}")
    click.echo(f"broker:   {broker_url}" + ("  (embedded)" if started_redis else ""))
    for channel, backend in available_backends().items():
        click.echo(f"channel {channel:<9} -> {backend}")
    env = _children_env(broker_url)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "worker": [
            "worker",
            "-c",
            str(concurrency),
            "-n",
            f"notifier-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
        ],
        "beat": ["beat", "--loglevel", "INFO"],
    }
    if flower:
        commands["flower"] = ["flower", f"--port={flower_port}"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, args in commands.items():
        log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (lives as long as the child)
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        click.echo(f"started {name} (pid {procs[name].pid}), log: {logs / (name + '.log')}")
    if flower:
        click.echo(f"Flower:   http://localhost:{flower_port}")
    try:
        if demo:
            _seed_and_fire(120.0)
            click.echo("\nWhere to look:")
            click.echo("  notifier outbox --tenant kyo-demo       messages the outbox stored")
            click.echo("  notifier status <eventId> --json        one event's deliveries")
            click.echo(f"  {logs}/worker.log                 the worker's JSON log")
        if not once:
            click.echo("\nRunning; Ctrl-C to stop.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_redis:
            stop_redis(Path(settings.home))
        click.echo("stopped")


if __name__ == "__main__":
    main()
