"""The benchmark's phases, in one run, on one broker, one database and one pair of peers.

Every pipeline figure is paired with a figure of the same run that it is divided by: raw
Celery on the same broker (bench.baseline), or the peer's own limit when fed by a tight
client loop. Project modules are imported inside the functions: they read their settings
once, and bench.environment must fill the environment first.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.environment import LINE_TOKEN
from bench.peers import Arrivals, TimedLinePeer, TimedSmtpPeer
from bench.profiling import sampled
from bench.seed import TIMEZONE, People
from bench.workers import ROOT, RssSampler, Worker, rss_mb


@dataclass(frozen=True)
class Sizes:
    name: str
    noop_tasks: int
    chains: int
    single_events: int
    latency_events: int
    broadcast_people: int
    """People of the email broadcast."""
    line_people: int
    """People of the LINE broadcast (issue 12 point 4: 100,000)."""
    side_emails: int
    rounds: int
    """Single-person events and raw chains alternate in this many rounds."""
    limit_seconds: float
    scan_rows: tuple[int, int]
    scan_due: int
    scan_repeats: int


FULL = Sizes(
    name="full",
    noop_tasks=5_000,
    chains=2_000,
    single_events=2_000,
    latency_events=1_000,
    broadcast_people=20_000,
    line_people=100_000,
    side_emails=2_000,
    rounds=4,
    limit_seconds=5.0,
    scan_rows=(100_000, 1_000_000),
    scan_due=1_000,
    scan_repeats=3,
)
QUICK = Sizes(
    name="quick",
    noop_tasks=1_000,
    chains=400,
    single_events=300,
    latency_events=100,
    broadcast_people=2_000,
    line_people=5_000,
    side_emails=300,
    rounds=2,
    limit_seconds=2.0,
    scan_rows=(10_000, 100_000),
    scan_due=1_000,
    scan_repeats=1,
)
WARMUP_EVENTS = 20
LIMIT_CLIENTS = (1, 2)
SCAN_USERS = 10_000
MAINTENANCE = {
    "startsAt": "2026-11-30T02:00:00+08:00",
    "endsAt": "2026-11-30T06:00:00+08:00",
    "message": "The booking system is being upgraded; check-in at the desk still works.",
}


class PhaseFailed(RuntimeError):
    pass


def _wait(probe: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise PhaseFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        line_peer: TimedLinePeer,
        smtp_peer: TimedSmtpPeer,
        pipeline: Worker,
        baseline: Worker,
        home: Path,
        profile_dir: Path | None,
    ) -> None:
        self.sizes = sizes
        self.line_peer = line_peer
        self.smtp_peer = smtp_peer
        self.pipeline = pipeline
        self.baseline = baseline
        self.home = home
        self.profile_dir = profile_dir
        self.run_id = f"bench-{uuid.uuid4().hex[:8]}"
        n = sizes
        self.single = People("bench-single", WARMUP_EVENTS + n.single_events + n.latency_events)
        self.line = People("bench-line", n.line_people)
        self.mail = People("bench-mail", n.broadcast_people)
        self.side = People("bench-side", n.side_emails)
        self.idle_rss: dict[int, float] = {}

    # -- directory ------------------------------------------------------------------------

    def seed(self) -> None:
        from bench.seed import add_tenant, forget_bench_tenants

        forget_bench_tenants()
        add_tenant(self.single, {"medium": ["line", "email"]})
        add_tenant(self.line, {"high": ["line"]})
        add_tenant(self.mail, {"high": ["email"]})
        add_tenant(self.side, {"high": ["email"]})

    # -- events ---------------------------------------------------------------------------

    def _payment(self, index: int, phase: str) -> dict[str, Any]:
        return {
            "eventId": f"{self.run_id}-{phase}-{index}",
            "eventType": "payment.success",
            "tenantId": self.single.tenant,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "source": "bench",
            "data": {
                "paymentId": f"pay-{phase}-{index}",
                "amount": "1200.00",
                "currency": "TWD",
                "description": "Gold membership, monthly",
            },
            # One person, two channels, both real peers (no SNS topic copy).
            "metadata": {"userId": self.single.user_id(index), "channels": ["line", "email"]},
        }

    def _maintenance(self, people: People, channel: str) -> dict[str, Any]:
        return {
            "eventId": f"{self.run_id}-maintenance-{people.tenant}",
            "eventType": "system.maintenance",
            "tenantId": people.tenant,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "source": "bench",
            "data": dict(MAINTENANCE),
            "metadata": {"channels": [channel]},
        }

    def settle(self, tenant: str, phase: str, timeout: float = 120.0) -> dict[str, int]:
        """Wait until no delivery of the phase is queued or sending; its statuses."""
        from sqlalchemy import func, select

        from notifier.db import session_scope
        from notifier.models import Delivery, Event

        statuses: dict[str, int] = {}

        def settled() -> bool:
            nonlocal statuses
            with session_scope() as session:
                rows = session.execute(
                    select(Delivery.status, func.count())
                    .join(Event, Event.id == Delivery.event_pk)
                    .where(
                        Event.tenant_id == tenant, Event.event_id.like(f"{self.run_id}-{phase}%")
                    )
                    .group_by(Delivery.status)
                ).tuples()
                statuses = {str(status): int(count) for status, count in rows}
            return not (statuses.get("queued") or statuses.get("sending"))

        _wait(settled, timeout, f"the {phase} deliveries to settle", interval=0.2)
        return statuses

    # -- single-person events -------------------------------------------------------------

    def _send_singles(self, indexes: range, phase: str, rate: float | None) -> dict[int, float]:
        """notify.delay each event, as fast as possible or at `rate` per second; the
        perf_counter time each was handed to Celery."""
        from notifier import notify

        sent: dict[int, float] = {}
        start = time.perf_counter()
        for k, index in enumerate(indexes):
            if rate:
                delay = start + k / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            event = self._payment(index, phase)
            sent[index] = time.perf_counter()
            notify.delay(event)
        return sent

    def _await_singles(self, indexes: range, phase: str) -> tuple[dict[str, float], ...]:
        expected = len(indexes)
        timeout = 120 + expected / 5
        _wait(
            lambda: (
                min(self.line_peer.arrivals.distinct(), self.smtp_peer.arrivals.distinct())
                >= expected
            ),
            timeout,
            f"{phase} arrivals",
        )
        line = self.line_peer.arrivals.times(self.single.addresses("line", indexes))
        mail = self.smtp_peer.arrivals.times(self.single.addresses("email", indexes))
        if len(line) < expected or len(mail) < expected:
            raise PhaseFailed(f"{phase}: deliveries to unexpected addresses")
        return line, mail

    def _clear_peers(self) -> tuple[int, int]:
        self.line_peer.arrivals.clear()
        self.smtp_peer.arrivals.clear()
        return self.line_peer.arrivals.accepted, self.smtp_peer.arrivals.accepted

    def warm_up(self) -> None:
        """First tasks import modules, open connections and compile templates."""
        self._clear_peers()
        indexes = range(WARMUP_EVENTS)
        self._send_singles(indexes, "warmup", None)
        self._await_singles(indexes, "warmup")
        self.settle(self.single.tenant, "warmup")
        self.run_noops(200)
        self.run_chains(50)

    def _single_round(self, indexes: range, phase: str) -> dict[str, Any]:
        line0, mail0 = self._clear_peers()
        sent = self._send_singles(indexes, phase, None)
        line, mail = self._await_singles(indexes, phase)
        last = max(max(line.values()), max(mail.values()))
        return {
            "events": len(indexes),
            "seconds": last - min(sent.values()),
            "duplicates": (self.line_peer.arrivals.accepted - line0 - len(line))
            + (self.smtp_peer.arrivals.accepted - mail0 - len(mail)),
            "statuses": self.settle(self.single.tenant, phase),
        }

    def single_person(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Rounds of raw Celery chains, then as many single-person events: each pipeline
        figure has a baseline taken moments before it. Returns (chains, events)."""
        rounds = self.sizes.rounds
        events = self.sizes.single_events // rounds
        chains = self.sizes.chains // rounds
        chain_runs: list[float] = []
        long_runs: list[float] = []
        single_runs: list[dict[str, Any]] = []
        with sampled(self.pipeline.pool(), self.profile_dir, "single"):
            for r in range(rounds):
                chain_runs.append(self.run_chains(chains))
                long_runs.append(self.run_chains(chains, steps=3))
                first = WARMUP_EVENTS + r * events
                single_runs.append(self._single_round(range(first, first + events), f"single{r}"))
        statuses: dict[str, int] = {}
        for run in single_runs:
            for status, count in run["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        seconds = sum(run["seconds"] for run in single_runs)
        return (
            {
                "chains": chains * rounds,
                "chains_per_s": chains * rounds / sum(chain_runs),
                "chain_runs_per_s": [round(chains / s, 1) for s in chain_runs],
                # Raw chains as long as the pipeline's own (notify, resolve_recipients,
                # select_channels, then the two sends): not the baseline, the ceiling of
                # what Celery alone allows the pipeline on this machine.
                "long_chains_per_s": chains * rounds / sum(long_runs),
                "long_chain_runs_per_s": [round(chains / s, 1) for s in long_runs],
            },
            {
                "events": events * rounds,
                "deliveries": 2 * events * rounds,
                "seconds": round(seconds, 3),
                "events_per_s": events * rounds / seconds,
                "runs_per_s": [round(run["events"] / run["seconds"], 1) for run in single_runs],
                "ratio_by_round": [
                    round(chain_s / run["seconds"], 3)
                    for chain_s, run in zip(chain_runs, single_runs, strict=True)
                ],
                "duplicates": sum(run["duplicates"] for run in single_runs),
                "statuses": statuses,
            },
        )

    def latency(self, rate: float) -> dict[str, Any]:
        n = self.sizes.latency_events
        first = WARMUP_EVENTS + self.sizes.single_events // self.sizes.rounds * self.sizes.rounds
        indexes = range(first, first + n)
        self._clear_peers()
        sent = self._send_singles(indexes, "latency", rate)
        line, mail = self._await_singles(indexes, "latency")
        statuses = self.settle(self.single.tenant, "latency")
        both = [
            max(line[self.single.line_id(i)], mail[self.single.email(i)]) - sent[i] for i in indexes
        ]
        line_only = [line[self.single.line_id(i)] - sent[i] for i in indexes]
        mail_only = [mail[self.single.email(i)] - sent[i] for i in indexes]

        def ms(values: list[float], share: float) -> float:
            return round(1000 * percentile(values, share), 1)

        return {
            "events": n,
            "rate_per_s": rate,
            "p50_ms": ms(both, 0.50),
            "p95_ms": ms(both, 0.95),
            "p99_ms": ms(both, 0.99),
            "max_ms": ms(both, 1.0),
            "line_p50_ms": ms(line_only, 0.50),
            "email_p50_ms": ms(mail_only, 0.50),
            "statuses": statuses,
        }

    # -- broadcasts -----------------------------------------------------------------------

    def broadcast(self, people: People, channel: str, peer: Arrivals) -> dict[str, Any]:
        from notifier import notify

        peer.clear()
        accepted0 = peer.accepted
        event = self._maintenance(people, channel)
        phase = f"broadcast-{channel}"
        self.idle_rss = self.idle_rss or rss_mb(self.pipeline.pool())
        with (
            RssSampler(self.pipeline) as rss,
            sampled(self.pipeline.pool(), self.profile_dir, phase),
        ):
            start = time.perf_counter()
            notify.delay(event)
            _wait(
                lambda: peer.distinct() >= people.count,
                300 + people.count / 20,
                f"{phase} arrivals",
                interval=0.01,
            )
        times = peer.times(people.addresses(channel))
        if len(times) < people.count:
            raise PhaseFailed(f"{phase}: deliveries to unexpected addresses")
        statuses = self.settle(people.tenant, "maintenance")
        last = max(times.values()) - start
        return {
            "people": people.count,
            "channel": channel,
            "deliveries": len(times),
            "seconds_to_first": round(min(times.values()) - start, 3),
            "seconds_to_last": round(last, 3),
            "deliveries_per_s": len(times) / last,
            "duplicates": peer.accepted - accepted0 - len(times),
            "statuses": statuses,
            "rss_peak_mb": {str(pid): round(mb, 1) for pid, mb in rss.peak.items()},
            "rss_peak_ratio": max(
                rss.peak[pid] / self.idle_rss[pid] for pid in rss.peak if pid in self.idle_rss
            ),
        }

    # -- raw Celery -----------------------------------------------------------------------

    def _await_marks(self, key: str, count: int, timeout: float) -> float:
        """The time the marked task(s) finished, or later if the queues still held work."""
        import redis

        from bench import baseline
        from config.settings import get_settings

        client = redis.Redis.from_url(get_settings().broker_url)
        name = baseline.MARKS + key
        _wait(lambda: int(client.llen(name)) >= count, timeout, f"baseline {key}", 0.002)
        end = max(float(value) for value in client.lrange(name, 0, -1))
        client.delete(name)
        if any(client.llen(queue) for queue in baseline.queues()):
            _wait(
                lambda: not any(client.llen(q) for q in baseline.queues()),
                timeout,
                "baseline queues to drain",
                0.002,
            )
            end = time.time()
        return end

    def run_noops(self, n: int) -> float:
        """Seconds for `n` no-op tasks, from the first publish to the last done."""
        from bench.baseline import noop

        key = f"{self.run_id}-noop-{uuid.uuid4().hex[:6]}"
        start = time.time()
        for _ in range(n - 1):
            noop.apply_async()
        noop.apply_async(kwargs={"mark": key})
        return self._await_marks(key, 1, 60 + n / 20) - start

    def run_chains(self, n: int, steps: int = 2) -> float:
        """Seconds for `n` chains `chain(step, step, group(send, send))` (with `steps` steps
        before the group), first publish to last send."""
        from celery import chain, group

        from bench.baseline import send, step

        key = f"{self.run_id}-chain-{uuid.uuid4().hex[:6]}"
        start = time.time()
        for i in range(n):
            mark = key if i == n - 1 else None
            links = [step.s(i), *(step.s() for _ in range(steps - 1))]
            chain(*links, group(send.s(mark=mark), send.s(mark=mark))).apply_async()
        return self._await_marks(key, 2, 60 + n / 5) - start

    # -- the peers' own limits ------------------------------------------------------------

    def _tight_loop(
        self, kind: str, args: dict[str, Any], clients: int, counter: Callable[[], int]
    ) -> float:
        seconds = self.sizes.limit_seconds
        payload = json.dumps({**args, "seconds": seconds + 0.8})
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.clients", kind, payload],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(clients)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdin is not None
                if proc.stdout.readline().strip() != "ready":
                    raise PhaseFailed(f"{kind} client did not start")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            time.sleep(0.3)  # every client up to speed
            count0, start = counter(), time.perf_counter()
            time.sleep(seconds)
            count1, end = counter(), time.perf_counter()
            for proc in procs:
                proc.communicate(timeout=60)
                if proc.returncode:
                    raise PhaseFailed(f"{kind} client failed ({proc.returncode})")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        return (count1 - count0) / (end - start)

    def smtp_limit(self) -> dict[str, float]:
        """Messages/s the SMTP peer accepts from 1 and from 2 tight smtplib loops, each on one
        connection, replaying an email the pipeline sent."""
        sample = self.smtp_peer.handler.sample
        if sample is None:
            raise PhaseFailed("no pipeline email captured to replay")
        args = {
            "host": self.smtp_peer.host,
            "port": self.smtp_peer.port,
            "rcpt": "limit@bench.test",
            "message_b64": base64.b64encode(sample).decode(),
        }
        by_clients = {
            str(c): self._tight_loop("smtp", args, c, lambda: self.smtp_peer.arrivals.accepted)
            for c in LIMIT_CLIENTS
        }
        self._clear_peers()
        return by_clients

    def line_limits(self) -> dict[str, Any]:
        """Push requests/s and multicast (500 recipients) recipients/s the LINE peer takes
        from 1 and from 2 tight HTTP loops."""
        args = {
            "url": self.line_peer.url,
            "token": LINE_TOKEN,
            "text": MAINTENANCE["message"],
            "to": People("bench-limit", 500).addresses("line"),
        }
        push = {
            str(c): self._tight_loop(
                "line",
                {**args, "path": "/v2/bot/message/push"},
                c,
                lambda: self.line_peer.requests_accepted,
            )
            for c in LIMIT_CLIENTS
        }
        multicast = {
            str(c): self._tight_loop(
                "line",
                {**args, "path": "/v2/bot/message/multicast"},
                c,
                lambda: self.line_peer.arrivals.accepted,
            )
            for c in LIMIT_CLIENTS
        }
        self._clear_peers()
        return {
            "line_push_requests_per_s": max(push.values()),
            "line_push_by_clients": push,
            "line_multicast_recipients_per_s": max(multicast.values()),
            "line_multicast_by_clients": multicast,
        }

    def line_broadcast(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """No-op tasks, the database's executemany insert rate of as many delivery-shaped
        rows, the LINE broadcast, the insert rate and no-op tasks again: (no-op baseline,
        broadcast with its insert baseline)."""
        from bench.planning import insert_rate

        n = self.sizes.noop_tasks
        before = self.run_noops(n)
        insert_before = insert_rate(self.line.tenant, self.line)
        result = self.broadcast(self.line, "line", self.line_peer.arrivals)
        insert_after = insert_rate(self.line.tenant, self.line)
        after = self.run_noops(n)
        rows_per_s = (insert_before["per_second"] + insert_after["per_second"]) / 2
        result["executemany_rows_per_s"] = rows_per_s
        result["executemany_runs_per_s"] = [
            round(insert_before["per_second"]),
            round(insert_after["per_second"]),
        ]
        result["ratio_to_executemany"] = result["deliveries_per_s"] / rows_per_s
        return {
            "noop_tasks": 2 * n,
            "noop_tasks_per_s": 2 * n / (before + after),
            "noop_runs_per_s": [round(n / before, 1), round(n / after, 1)],
        }, result

    def email_broadcast(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The SMTP peer's limit, the email broadcast, the limit again: (limits, broadcast)."""
        before = self.smtp_limit()
        result = self.broadcast(self.mail, "email", self.smtp_peer.arrivals)
        after = self.smtp_limit()
        best = [max(before.values()), max(after.values())]
        return {
            "smtp_messages_per_s": sum(best) / 2,
            "smtp_runs": [before, after],
        }, result

    # -- what a user would otherwise write ------------------------------------------------

    def side_by_side(self) -> dict[str, Any]:
        self.smtp_peer.handler.capture = {}
        try:
            pipeline = self.broadcast(self.side, "email", self.smtp_peer.arrivals)
            captured = self.smtp_peer.handler.capture
        finally:
            self.smtp_peer.handler.capture = None
        messages = self.home / "side-by-side.jsonl"
        with messages.open("w") as handle:
            for address in self.side.addresses("email"):
                raw = base64.b64encode(captured[address]).decode()
                handle.write(json.dumps({"to": address, "raw": raw}) + "\n")
        loops: dict[str, Any] = {
            "emails": self.side.count,
            "pipeline_per_s": pipeline["deliveries_per_s"],
        }
        for kind in ("smtplib-loop", "apprise-loop"):
            self.smtp_peer.arrivals.clear()
            args = {
                "host": self.smtp_peer.host,
                "port": self.smtp_peer.port,
                "messages": str(messages),
            }
            done = subprocess.run(
                [sys.executable, "-m", "bench.clients", kind, json.dumps(args)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=1800,
                check=True,
            )
            outcome = json.loads(done.stdout.strip().splitlines()[-1])
            received = self.smtp_peer.arrivals.distinct()
            if received < self.side.count:
                raise PhaseFailed(f"{kind}: the peer received {received} of {self.side.count}")
            name = kind.split("-")[0]
            loops[f"{name}_per_s"] = outcome["sent"] / outcome["seconds"]
        return loops

    # -- the membership-expiry scan -------------------------------------------------------

    def scan(self) -> dict[str, Any]:
        from sqlalchemy import delete, select, text

        from bench.seed import add_memberships, add_tenant
        from config.settings import get_settings
        from notifier.db import get_engine, session_scope
        from notifier.models import Event, Tenant

        with session_scope() as session:
            others = session.scalar(select(Tenant.id).where(Tenant.id.not_like("bench-%")))
        if others is not None:
            # The scan reads every tenant: on a shared database it would publish real
            # reminders, and the row counts would not be the benchmark's.
            return {"skipped": "the database holds tenants other than the benchmark's"}
        small, large = self.sizes.scan_rows
        due_count = self.sizes.scan_due
        people = People("bench-scan", min(SCAN_USERS, small))
        add_tenant(people, {"medium": ["line", "email"]})
        settings = get_settings()
        local_now = dt.datetime.now(ZoneInfo(TIMEZONE)).replace(
            hour=settings.expiry_hour + 1, minute=0, second=0, microsecond=0
        )
        now = local_now.astimezone(dt.UTC)
        due_date = local_now.date() + dt.timedelta(days=max(settings.expiry_days))
        due = {k * small // due_count for k in range(due_count)}
        engine = get_engine()

        def analyze() -> None:
            if engine.dialect.name == "postgresql":
                with engine.begin() as conn:
                    conn.execute(text("ANALYZE memberships"))

        def timed() -> dict[str, Any]:
            from notifier.scans import scan_membership_expiry

            runs = []
            for _ in range(self.sizes.scan_repeats):
                # Forget the reminders of the previous run: every run does the same work.
                with session_scope() as session:
                    session.execute(
                        delete(Event).where(
                            Event.tenant_id == people.tenant, Event.event_id.like("expiry:%")
                        )
                    )
                start = time.perf_counter()
                result = scan_membership_expiry(now)
                runs.append(time.perf_counter() - start)
                if result.published != due_count:
                    raise PhaseFailed(f"scan published {result.published} of {due_count} due")
            return {"seconds": min(runs), "runs": [round(r, 3) for r in runs]}

        seeding = time.perf_counter()
        add_memberships(people, 0, small, due, due_date)
        analyze()
        seed_seconds = time.perf_counter() - seeding
        at_small = {"memberships": small, **timed()}
        seeding = time.perf_counter()
        add_memberships(people, small, large - small, set(), due_date)
        analyze()
        seed_seconds += time.perf_counter() - seeding
        at_large = {"memberships": large, **timed()}
        return {
            "due": due_count,
            "small": at_small,
            "large": at_large,
            "growth": at_large["seconds"] / at_small["seconds"],
            "seeding_seconds": round(seed_seconds, 1),
        }
