"""The `notifier` command line."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from config.settings import get_settings, reset_settings, secret_key_problem

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
@click.argument("source", type=click.File("rb"))
@click.option(
    "--json-lines/--document",
    "json_lines",
    default=None,
    help="SOURCE is JSON Lines, each line a document holding some items (default for a "
    ".jsonl or .ndjson file), or one JSON document (default otherwise).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the running counts on stderr (default: when stderr is a terminal).",
)
def import_cmd(source: BinaryIO, json_lines: bool | None, progress: bool | None) -> None:
    """Upsert a directory document (tenants, users, memberships, courses, bookings) from
    FILE or - (stdin). Running it twice with the same document changes nothing.

    The file is read as a stream and written in batches, in one transaction: a file of
    any size fits in memory, and an invalid item means nothing is imported. Sections
    are written parents first (tenants, users, courses, memberships, bookings); a
    streamed item may only refer to rows listed before it or already imported.
    Prints the counts read and changed as JSON; a summary goes to stderr.
    """
    from notifier.directory import ImportSummary, import_stream
    from notifier.events import InvalidEvent

    if json_lines is None:
        json_lines = str(getattr(source, "name", "")).endswith((".jsonl", ".ndjson"))
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.monotonic()

    def show(summary: ImportSummary) -> None:
        rate = summary.read["users"] / max(time.monotonic() - started, 1e-9)
        counts = ", ".join(f"{k} {v:,}" for k, v in summary.read.items() if v)
        click.echo(f"\rread {counts} ({rate:,.0f} users/s)", nl=False, err=True)

    try:
        summary = import_stream(source, json_lines=json_lines, progress=show if progress else None)
    except InvalidEvent as exc:
        if progress:
            click.echo(err=True)
        _echo_json({"errors": exc.errors})
        sys.exit(1)
    if progress:
        click.echo(err=True)
    changed = sum(summary.changed.values())
    users_rate = summary.read["users"] / max(summary.seconds, 1e-9)
    click.echo(
        f"imported {sum(summary.read.values()):,} rows in {summary.seconds:.1f} s "
        f"({users_rate:,.0f} users/s), {changed:,} created or changed",
        err=True,
    )
    _echo_json({"read": summary.read, "changed": summary.changed})


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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def web(host: str, port: int) -> None:
    """Serve the web app (POST /events, webhooks, tracked links, unsubscribe, /metrics,
    /healthz; /outbox when NOTIFIER_OUTBOX_PAGE is on) with uvicorn."""
    import uvicorn

    from config.settings import InsecureConfiguration, require_secret_key

    try:
        require_secret_key()
    except InsecureConfiguration as exc:
        raise click.ClickException(str(exc)) from None
    docs = "  (OpenAPI: /docs)" if get_settings().api_docs else ""
    click.echo(f"serving on http://{host}:{port}{docs}")
    # log_config=None keeps the JSON logging; access lines (their URLs carry signed link
    # tokens) stay below the CLI's default WARNING level.
    uvicorn.run("notifier.web.app:app", host=host, port=port, log_config=None)


@main.group()
def tenant() -> None:
    """Tenant administration."""


@tenant.command("api-key")
@click.argument("tenant_id")
def tenant_api_key(tenant_id: str) -> None:
    """Create a new API key for POST /events and print it once. Only its hash is stored;
    the tenant's previous key stops working."""
    from notifier.web.auth import UnknownTenant, issue_api_key

    try:
        key = issue_api_key(tenant_id)
    except UnknownTenant as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(key)


@main.group()
def operator() -> None:
    """Console operators: who may log in at /console/."""


@operator.command("add")
@click.argument("name")
@click.option(
    "--tenant",
    "tenants",
    multiple=True,
    help="A tenant the operator may see (repeatable); without it, every tenant.",
)
def operator_add(name: str, tenants: tuple[str, ...]) -> None:
    """Create an operator and print their console key once. Only its hash is stored."""
    from notifier.operators import OperatorProblem, add_operator

    try:
        key = add_operator(name, list(tenants))
    except OperatorProblem as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(key)


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
        "NOTIFIER_SECRET_KEY": settings.secret_key,
    }


def dev_commands(concurrency: int, flower_port: int | None) -> dict[str, list[str]]:
    """The Celery processes of `notifier dev`: a worker, Beat, and Flower on a port."""
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
    if flower_port is not None:
        # Flower shows task arguments and tracebacks, and has no login: this machine only.
        commands["flower"] = ["flower", "--address=127.0.0.1", f"--port={flower_port}"]
    return {
        name: [sys.executable, "-m", "celery", "-A", "worker", *args]
        for name, args in commands.items()
    }


def _dev_secret_key(home: Path) -> str:
    """NOTIFIER_SECRET_KEY for this machine's stack: made once, kept owner-only under
    NOTIFIER_HOME, so links sent yesterday still verify today."""
    from notifier.files import private_dir, private_file

    path = private_file(private_dir(home) / "secret_key")
    key = path.read_text().strip()
    if secret_key_problem(key):
        key = secrets.token_urlsafe(48)
        path.write_text(key + "\n")
    return key


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
@click.option(
    "--web/--no-web",
    default=True,
    show_default=True,
    help="Start the web app (with the /outbox page) on 127.0.0.1:--web-port.",
)
@click.option("--web-port", default=8000, show_default=True)
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option("--once", is_flag=True, help="Stop after the demo has settled (for scripts).")
def dev(
    demo: bool,
    flower: bool,
    flower_port: int,
    web: bool,
    web_port: int,
    concurrency: int,
    once: bool,
) -> None:
    """Start the whole pipeline on this machine: database migrations, the broker (embedded
    Redis unless REDIS_URL is set), a worker, Beat, Flower and the web app. Ctrl-C stops
    everything."""
    from channels.registry import available_backends
    from notifier.embedded import ensure_redis, stop_redis
    from notifier.files import private_dir, private_file
    from notifier.migrate import upgrade

    settings = get_settings()
    if secret_key_problem(settings.secret_key):
        os.environ["NOTIFIER_SECRET_KEY"] = _dev_secret_key(settings.home)
    started_redis = not settings.broker_url
    broker_url = settings.broker_url or ensure_redis(settings.home)
    os.environ["REDIS_URL"] = broker_url
    reset_settings()
    upgrade()
    click.echo(f"database: {_safe_url(settings.database_url)}")
    click.echo(f"broker:   {broker_url}" + ("  (embedded)" if started_redis else ""))
    for channel, backend in available_backends().items():
        click.echo(f"channel {channel:<9} -> {backend}")
    settings = get_settings()
    env = _children_env(broker_url)
    # Links in messages (unsubscribe, tracked clicks) point at this web app.
    env.setdefault("NOTIFIER_PUBLIC_BASE_URL", f"http://localhost:{web_port}")
    logs = private_dir(settings.home / "logs")
    argvs = dev_commands(concurrency, flower_port if flower else None)
    envs = dict.fromkeys(argvs, env)
    if web:
        argvs["web"] = [sys.executable, "-m", "notifier.cli", "web", "--port", str(web_port)]
        # The outbox page shows every tenant's messages: only this local stack (on
        # 127.0.0.1) serves it, and the API docs.
        envs["web"] = {**env, "NOTIFIER_OUTBOX_PAGE": "1", "NOTIFIER_API_DOCS": "1"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, argv in argvs.items():
        log_file = open(private_file(logs / f"{name}.log"), "ab")  # noqa: SIM115 (lives as long as the child)
        procs[name] = subprocess.Popen(  # noqa: S603 (our own fixed argv, no shell)
            argv,
            env=envs[name],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        click.echo(f"started {name} (pid {procs[name].pid}), log: {logs / (name + '.log')}")
    if flower:
        click.echo(f"Flower:   http://127.0.0.1:{flower_port}")
    if web:
        click.echo(f"Web:      http://127.0.0.1:{web_port}  (outbox: /outbox, API: /docs)")
    try:
        if demo:
            _seed_and_fire(120.0)
            click.echo("\nWhere to look:")
            click.echo("  notifier outbox --tenant kyo-demo       messages the outbox stored")
            if web:
                outbox_url = f"http://127.0.0.1:{web_port}/outbox"
                click.echo(f"  {outbox_url:<40}the same, as people see them")
            click.echo("  notifier status <eventId> --json        one event's deliveries")
            click.echo(f"  {logs}/worker.log                 the worker's JSON log")
        if not once:
            click.echo("\nRunning; Ctrl-C to stop.")
            # Blocked first, so a SIGTERM is received here (and the children are stopped
            # below) instead of killing this process and orphaning them.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
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


@main.command()
@click.argument("kind", type=click.Choice(["expiry", "reminders"]))
@click.option(
    "--now",
    "moment",
    metavar="ISO",
    help="Scan as if it were this time (ISO 8601 with an offset); default: the current time.",
)
def scan(kind: str, moment: str | None) -> None:
    """Run a Beat scan once, here: membership-expiry or class reminders.

    Publishes the reminders due (a worker delivers them) and prints the counts. Safe to run
    any time: a reminder already published is a duplicate, never sent twice.
    """
    from notifier.scans import parse_moment, scan_course_reminders, scan_membership_expiry
    from tasks.scheduled import run_scan

    try:
        now = parse_moment(moment)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--now") from exc
    scanner = scan_membership_expiry if kind == "expiry" else scan_course_reminders
    _echo_json(run_scan(scanner, now))


@main.group()
def ingest() -> None:
    """Take events from AWS: SQS queues fed directly, through SNS, or by EventBridge."""


@ingest.command("sqs")
@click.argument("queue_url")
@click.option(
    "--wait-seconds",
    type=click.IntRange(0, 20),
    default=None,
    help="Long-poll wait of each receive (default NOTIFIER_INGEST_WAIT_SECONDS, else 20); "
    "a stop request waits at most this long.",
)
@click.option(
    "--max-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many receives (default: run until stopped).",
)
def ingest_sqs(queue_url: str, wait_seconds: int | None, max_batches: int | None) -> None:
    """Consume events from the SQS queue QUEUE_URL until SIGTERM or Ctrl-C.

    A message body is an event (the wire shape), an SNS notification around one, or an
    EventBridge event (mapped by config/ingest_mapping.py). A message is deleted once its
    event is stored; an unreadable or invalid one becomes a dead letter (`notifier dlq
    list`) and is deleted; while the database is down messages stay in the queue. On
    SIGTERM/SIGINT the batch in hand is finished, then the counts are printed as JSON.
    """
    import threading

    from notifier.ingest import IngestConfigError, consume
    from tasks import enqueue

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    click.echo(f"consuming {queue_url}; SIGTERM or Ctrl-C stops after the current batch", err=True)
    try:
        stats = consume(
            queue_url,
            stop=stop,
            enqueue=enqueue,
            max_batches=max_batches,
            wait_seconds=wait_seconds,
        )
    except IngestConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _echo_json(stats.as_dict())


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _print_report(doc: dict[str, Any]) -> None:
    click.echo(
        f"tenant {doc['tenantId']}: {doc['from']} .. {doc['to']} ({doc['timezone']}, "
        f"{doc['days']} days)"
    )
    click.echo(
        f"sent {doc['totalSent']}  failed {doc['totalFailed']} "
        f"({_percent(doc['failureRate'])})  clicked {doc['totalClicked']} "
        f"(click rate {_percent(doc['clickRate'])})"
    )
    click.echo(f"\n{'date':<12}{'sent':>8}{'clicked':>9}")
    for day in doc["dailyBreakdown"]:
        click.echo(f"{day['date']:<12}{day['sent']:>8}{day['clicked']:>9}")
    for title, rows in (("channel", doc["byChannel"]), ("event type", doc["byEventType"])):
        click.echo(f"\n{title:<30}{'sent':>8}{'failed':>8}{'failure':>9}{'clicked':>9}")
        for name, counts in rows.items():
            click.echo(
                f"{name:<30}{counts['sent']:>8}{counts['failed']:>8}"
                f"{_percent(counts['failureRate']):>9}{counts['clicked']:>9}"
            )


@main.command("report")
@click.option("--tenant", required=True, help="The tenant to report on.")
@click.option(
    "--days",
    type=click.IntRange(1, 366),
    default=30,
    show_default=True,
    help="The tenant's last N local days, today included.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_cmd(tenant: str, days: int, as_json: bool) -> None:
    """A tenant's notifications: sent, failed and clicked, click and failure rates, per day
    (in the tenant's timezone), per channel and per event type. Exit code 1 for an unknown
    tenant."""
    from notifier.report import UnknownTenant, report

    try:
        doc = report(tenant, days)
    except UnknownTenant as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if as_json:
        _echo_json(doc)
    else:
        _print_report(doc)


@main.group()
def docs() -> None:
    """The generated reference pages of docs/ (events.md, configuration.md)."""


def _docs_command(page: str, summary: str) -> None:
    @docs.command(page, help=summary)
    @click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        help=f"Write the page to this file (docs/{page}.md in a checkout) instead of stdout.",
    )
    def command(output: Path | None) -> None:
        from notifier.docs import PAGES

        text = PAGES[page]()
        if output is None:
            click.echo(text, nl=False)
        else:
            output.write_text(text, encoding="utf-8")
            click.echo(f"wrote {output}", err=True)


_docs_command(
    "events",
    "The event types page: data fields with types and bounds, recipients, default "
    "priority, batching, topic category and an example, from notifier/events.py and "
    "config/routing.py.",
)
_docs_command(
    "configuration",
    "The configuration page: every environment variable with its type, default and "
    "meaning, from config/settings.py.",
)


@main.group()
def dlq() -> None:
    """Dead letters: deliveries that failed for good, and ingested messages that could not
    be read or were rejected."""


@dlq.command("list")
@click.option("--tenant", help="Only this tenant's dead letters.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--pending", is_flag=True, help="Only the dead letters not replayed yet.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def dlq_list(tenant: str | None, limit: int, pending: bool, as_json: bool) -> None:
    """List the newest dead letters (an ingested message's body is never printed)."""
    from notifier.dlq import list_dead_letters

    rows = list_dead_letters(tenant, limit, include_replayed=not pending)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        state = f"replayed {row['replayedAt'][:19]}" if row["replayedAt"] else "pending"
        payload = row["payload"]
        what = (
            f"message {payload['messageId']} ({payload['bodyBytes']} bytes)"
            if row["kind"] == "ingest"
            else f"delivery {row['deliveryId']} {payload['channel']} {payload['eventType']}"
        )
        click.echo(
            f"#{row['id']:<6} {row['kind']:<9} {row['tenantId'] or '-':<16} "
            f"{(row['createdAt'] or '')[:19]}  {state:<28} {what}"
        )
        click.echo(f"        {row['error'][:200]}")


@dlq.command("replay")
@click.option("--id", "ids", type=int, multiple=True, help="A dead letter's id (repeatable).")
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter not replayed yet.")
@click.option("--tenant", help="Only this tenant's dead letters.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def dlq_replay(ids: tuple[int, ...], replay_all: bool, tenant: str | None, as_json: bool) -> None:
    """Replay dead letters: a failed delivery is queued and sent again (needs a running
    worker); an ingested message goes through parsing and accept again. Replaying twice
    does nothing the second time. Exit code 1 when a replay failed."""
    from notifier.dlq import replay
    from tasks import enqueue

    if bool(ids) == replay_all:
        raise click.UsageError("give --id N (repeatable) or --all")
    result = replay(list(ids) if ids else None, enqueue=enqueue, all=replay_all, tenant=tenant)
    if as_json:
        _echo_json(result.as_dict())
    else:
        for dead_letter_id in result.replayed:
            click.echo(f"replayed #{dead_letter_id}")
        for dead_letter_id, why in result.skipped.items():
            click.echo(f"skipped  #{dead_letter_id}: {why}")
        for dead_letter_id, why in result.failed.items():
            click.echo(f"failed   #{dead_letter_id}: {why}")
        if not (result.replayed or result.skipped or result.failed):
            click.echo("nothing to replay")
    sys.exit(1 if result.failed else 0)


if __name__ == "__main__":
    main()
