"""Typed settings read from the environment, with embedded defaults for a fresh machine.

The channels' own settings are theirs: each channel module declares the variables it reads
and reads them when its backend is built (channels/registry.py). `CHANNELS` and `VARIABLES`
are computed from the registry on first use, so importing this module loads no channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # computed by __getattr__ below
    CHANNELS: tuple[str, ...]
    VARIABLES: tuple[Variable, ...]

TOPIC_CATEGORIES = (
    "FileProcessing",
    "MemberActivity",
    "CourseManagement",
    "PaymentUpdates",
    "SystemAlerts",
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int) -> int:
    raw = _env(name)
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = _env(name)
    return float(raw) if raw else default


def _flag(name: str) -> bool:
    return _env(name).lower() in ("1", "true", "yes", "on")


def _hosts(name: str, defaults: tuple[str, ...]) -> tuple[str, ...]:
    """Host names (a leading "*." matches any subdomain): the defaults plus a comma list."""
    extra = tuple(h.strip().lower() for h in _env(name).split(",") if h.strip())
    return defaults + extra


SECRET_KEY_MIN_BYTES = 32
SLACK_WEBHOOK_HOSTS = ("hooks.slack.com",)
PUSH_SERVICE_HOSTS = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "web.push.apple.com",
    "*.push.apple.com",
    "*.notify.windows.com",
)


class InsecureConfiguration(RuntimeError):
    """A setting that would make the deployment unsafe; the process refuses to start."""


def _offsets(name: str, default: str) -> tuple[int, ...]:
    """A comma-separated list of positive whole numbers ("7,3,1"), largest first."""
    raw = _env(name, default)
    try:
        values = {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"{name} must be comma-separated whole numbers, got {raw!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{name} must list at least one number, each 1 or more, got {raw!r}")
    return tuple(sorted(values, reverse=True))


def _hour(name: str, default: int) -> int:
    value = _int(name, default)
    if not 0 <= value <= 23:
        raise ValueError(f"{name} must be an hour from 0 to 23, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    """Empty when no broker is configured: the embedded Redis is used."""
    result_backend: str
    secret_key: str = field(repr=False)
    """Signs unsubscribe and click links and seals stored secrets; at least 32 bytes,
    required by the web app, the workers and Beat (`notifier dev` makes one under
    NOTIFIER_HOME)."""
    log_level: str
    quiet_hours_policy: str
    send_chunk_size: int
    send_concurrency: int
    """Messages of one chunk in flight at once on a per-message channel (threads)."""
    plan_page_size: int
    max_payload_bytes: int
    send_max_retries: int
    send_backoff_max: int
    stale_claim_seconds: int
    release_interval_seconds: float
    public_base_url: str
    rate_limit_redis_url: str
    queue_prefix: str
    digest_window_seconds: float
    digest_max_items: int
    backends: dict[str, str] = field(default_factory=dict)
    ses_feedback_topic_arns: tuple[str, ...] = ()
    """SNS topics whose SES bounce/complaint notifications POST /webhooks/ses accepts."""
    line_channel_secret: str = field(default="", repr=False)
    outbox_page: bool = False
    """Serve GET /outbox (every tenant's rendered messages): on for `notifier dev` only."""
    ingest_wait_seconds: int = 20
    """SQS long-poll wait of `notifier ingest sqs` (a stop request waits at most this long)."""
    ingest_mapping_file: str = ""
    """JSON {source: {detail-type: eventType}} added to config/ingest_mapping.py's defaults."""
    alarm_topic_arn: str = ""
    alarm_slack_webhook_url: str = field(default="", repr=False)
    alarm_window_seconds: int = 300
    """The same alarm key is published at most once per window, across all workers."""
    cloudwatch_enabled: bool = False
    cloudwatch_namespace: str = "Kyo/Notifications"
    expiry_days: tuple[int, ...] = (7, 3, 1)
    """Days before a membership's expiry date on which its reminder goes out."""
    expiry_hour: int = 9
    """Local hour (the tenant's timezone) from which a day's expiry reminders are sent."""
    reminder_hours: tuple[int, ...] = (24, 2)
    """Hours before a class starts at which its booked members are reminded."""
    expiry_scan_interval_seconds: float = 600.0
    reminder_scan_interval_seconds: float = 60.0
    digest_flush_interval_seconds: float = 5.0
    preference_link_days: int = 60
    """How long the signed preference center link of a message stays valid."""
    retention_days: int = 90
    """Events, deliveries, outbox messages and replayed dead letters older than this go."""
    cleanup_interval_seconds: float = 3600.0
    allow_private_urls: bool = False
    """Lift the outbound URL policy for tenant-supplied URLs (http, loopback and private
    addresses, any host): for tests against local peers and development only."""
    slack_webhook_hosts: tuple[str, ...] = SLACK_WEBHOOK_HOSTS
    """Hosts a tenant's Slack webhook may point at: hooks.slack.com plus
    NOTIFIER_SLACK_WEBHOOK_HOSTS (comma-separated; "*.example.com" matches subdomains)."""
    push_service_hosts: tuple[str, ...] = PUSH_SERVICE_HOSTS
    """Push services a Web Push endpoint may point at: the browsers' own plus
    NOTIFIER_PUSH_SERVICE_HOSTS."""
    max_request_bytes: int = 4 * 1024 * 1024
    """Largest HTTP request body the web app reads; larger ones get 413 before parsing."""
    metrics_token: str = field(default="", repr=False)
    """When set, GET /metrics needs `Authorization: Bearer <token>`."""
    api_docs: bool = False
    """Serve /docs and /openapi.json (NOTIFIER_API_DOCS=1)."""

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker_url


def channel_backends() -> dict[str, str]:
    """The backend per channel: explicit NOTIFIER_<CHANNEL>_BACKEND, else the first of its
    backends whose credentials are set, else the outbox."""
    from channels import registry

    return {
        name: _env(f"NOTIFIER_{name.upper()}_BACKEND").lower() or registry.default_backend(name)
        for name in registry.channel_names()
    }


def normalize_database_url(url: str) -> str:
    """PostgreSQL URLs use the psycopg 3 driver, whatever spelling the user gave."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings() -> Settings:
    home = Path(_env("NOTIFIER_HOME", ".notifier")).resolve()
    database_url = normalize_database_url(
        _env("DATABASE_URL") or f"sqlite:///{home / 'notifier.db'}"
    )
    broker_url = _env("CELERY_BROKER_URL") or _env("REDIS_URL")
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=broker_url,
        result_backend=_env("CELERY_RESULT_BACKEND"),
        secret_key=_env("NOTIFIER_SECRET_KEY"),
        log_level=_env("NOTIFIER_LOG_LEVEL", "INFO").upper(),
        quiet_hours_policy=_env("NOTIFIER_QUIET_HOURS_POLICY", "defer").lower(),
        send_chunk_size=_int("NOTIFIER_SEND_CHUNK_SIZE", 100),
        send_concurrency=max(1, _int("NOTIFIER_SEND_CONCURRENCY", 8)),
        plan_page_size=_int("NOTIFIER_PLAN_PAGE_SIZE", 2000),
        max_payload_bytes=_int("NOTIFIER_MAX_PAYLOAD_BYTES", 256 * 1024),
        send_max_retries=_int("NOTIFIER_SEND_MAX_RETRIES", 8),
        send_backoff_max=_int("NOTIFIER_SEND_BACKOFF_MAX", 600),
        stale_claim_seconds=_int("NOTIFIER_STALE_CLAIM_SECONDS", 300),
        release_interval_seconds=_float("NOTIFIER_RELEASE_INTERVAL", 30.0),
        public_base_url=_env("NOTIFIER_PUBLIC_BASE_URL", "http://localhost:8000"),
        rate_limit_redis_url=_env("NOTIFIER_RATE_LIMIT_REDIS_URL"),
        # Several deployments (or test runs) can share one broker with distinct prefixes.
        queue_prefix=_env("NOTIFIER_QUEUE_PREFIX"),
        digest_window_seconds=_float("NOTIFIER_DIGEST_WINDOW", 30.0),
        digest_max_items=_int("NOTIFIER_DIGEST_MAX_ITEMS", 100),
        backends=channel_backends(),
        ses_feedback_topic_arns=tuple(
            arn.strip()
            for arn in _env("NOTIFIER_SES_FEEDBACK_TOPIC_ARNS").split(",")
            if arn.strip()
        ),
        line_channel_secret=_env("LINE_CHANNEL_SECRET"),
        outbox_page=_env("NOTIFIER_OUTBOX_PAGE").lower() in ("1", "true", "yes", "on"),
        ingest_wait_seconds=_int("NOTIFIER_INGEST_WAIT_SECONDS", 20),
        ingest_mapping_file=_env("NOTIFIER_INGEST_MAPPING_FILE"),
        alarm_topic_arn=_env("NOTIFIER_ALARM_TOPIC_ARN"),
        alarm_slack_webhook_url=_env("NOTIFIER_ALARM_SLACK_WEBHOOK_URL"),
        alarm_window_seconds=_int("NOTIFIER_ALARM_WINDOW", 300),
        cloudwatch_enabled=_env("NOTIFIER_CLOUDWATCH_ENABLED").lower() in ("1", "true", "on"),
        cloudwatch_namespace=_env("NOTIFIER_CLOUDWATCH_NAMESPACE", "Kyo/Notifications"),
        expiry_days=_offsets("NOTIFIER_EXPIRY_DAYS", "7,3,1"),
        expiry_hour=_hour("NOTIFIER_EXPIRY_HOUR", 9),
        reminder_hours=_offsets("NOTIFIER_REMINDER_HOURS", "24,2"),
        expiry_scan_interval_seconds=_float("NOTIFIER_EXPIRY_SCAN_INTERVAL", 600.0),
        reminder_scan_interval_seconds=_float("NOTIFIER_REMINDER_SCAN_INTERVAL", 60.0),
        digest_flush_interval_seconds=_float("NOTIFIER_DIGEST_FLUSH_INTERVAL", 5.0),
        retention_days=_int("NOTIFIER_RETENTION_DAYS", 90),
        preference_link_days=max(1, _int("NOTIFIER_PREFERENCE_LINK_DAYS", 60)),
        cleanup_interval_seconds=_float("NOTIFIER_CLEANUP_INTERVAL", 3600.0),
        allow_private_urls=_flag("NOTIFIER_ALLOW_PRIVATE_URLS"),
        slack_webhook_hosts=_hosts("NOTIFIER_SLACK_WEBHOOK_HOSTS", SLACK_WEBHOOK_HOSTS),
        push_service_hosts=_hosts("NOTIFIER_PUSH_SERVICE_HOSTS", PUSH_SERVICE_HOSTS),
        max_request_bytes=_int("NOTIFIER_MAX_REQUEST_BYTES", 4 * 1024 * 1024),
        metrics_token=_env("NOTIFIER_METRICS_TOKEN"),
        api_docs=_flag("NOTIFIER_API_DOCS"),
    )


def secret_key_problem(key: str) -> str | None:
    """Why `key` cannot sign links, or None."""
    if not key:
        return "NOTIFIER_SECRET_KEY is not set"
    if len(key.encode()) < SECRET_KEY_MIN_BYTES:
        return f"NOTIFIER_SECRET_KEY is shorter than {SECRET_KEY_MIN_BYTES} bytes"
    if len(set(key)) < 10:  # "change-me" repeated, "aaaa...": not a secret
        return "NOTIFIER_SECRET_KEY is not random (too few distinct characters)"
    return None


def require_secret_key(settings: Settings | None = None) -> str:
    """The signing key, or InsecureConfiguration saying how to make one."""
    key = (settings or get_settings()).secret_key
    problem = secret_key_problem(key)
    if problem:
        raise InsecureConfiguration(
            f"{problem}: generate one with `python -c 'import secrets; "
            f"print(secrets.token_urlsafe(48))'` and set it for the web app, workers and Beat"
        )
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the dev launcher change the environment)."""
    get_settings.cache_clear()


# ---------------------------------------------------------------------------------------
# Every environment variable the notifier reads, as data: docs/configuration.md is generated
# from this list (`notifier docs configuration`), and tests/unit/test_docs.py fails when a
# variable read anywhere in the code is missing here, or a default here differs from the
# code's. Add a variable here when you read a new one, then regenerate the doc.
# ---------------------------------------------------------------------------------------

VariableKind = Literal["text", "integer", "number", "flag", "list", "url", "path", "secret"]


@dataclass(frozen=True)
class Variable:
    name: str
    kind: VariableKind
    default: str
    """As it would be written in the environment; "" means unset."""
    meaning: str
    section: str
    read_by_library: bool = False
    """Read by boto3 or another library, not by the notifier's own code."""


def _variables() -> tuple[Variable, ...]:
    core = "Processes, broker and database"
    pipeline = "The pipeline"
    schedule = "Scheduled scans, quiet hours, digests and retention (Beat)"
    web = "Web app and webhooks"
    ops = "Ingest, alarms and analytics"
    aws = "AWS (SES, SNS, SQS, CloudWatch)"
    items = [
        Variable(
            "NOTIFIER_HOME",
            "path",
            ".notifier",
            "Directory of the embedded SQLite database and the embedded Redis "
            "(used when DATABASE_URL / the broker URL are unset).",
            core,
        ),
        Variable(
            "DATABASE_URL",
            "url",
            "",
            "SQLAlchemy URL of the database (`postgresql://...` uses psycopg 3). "
            "Unset: `sqlite:///$NOTIFIER_HOME/notifier.db`.",
            core,
        ),
        Variable(
            "CELERY_BROKER_URL",
            "url",
            "",
            "Celery broker (`redis://...` or `amqp://...`); wins over REDIS_URL.",
            core,
        ),
        Variable(
            "REDIS_URL",
            "url",
            "",
            "Redis broker when CELERY_BROKER_URL is unset; both unset: the embedded Redis.",
            core,
        ),
        Variable(
            "CELERY_RESULT_BACKEND",
            "url",
            "",
            "Where `notify` keeps its result. Unset: the Redis broker, or the database "
            "(`db+DATABASE_URL`) with a RabbitMQ broker.",
            core,
        ),
        Variable(
            "NOTIFIER_QUEUE_PREFIX",
            "text",
            "",
            "Prefix of the queue names (`<prefix>notifier`, `<prefix>notifier.send`) and Redis "
            "keys, so several deployments can share one broker.",
            core,
        ),
        Variable(
            "NOTIFIER_LOG_LEVEL",
            "text",
            "INFO",
            "Level of the JSON log lines of the worker, Beat and web app (the `notifier` "
            "command logs at WARNING unless set).",
            core,
        ),
        Variable(
            "NOTIFIER_RATE_LIMIT_REDIS_URL",
            "url",
            "",
            "Redis holding the rate-limit token buckets. Unset: the embedded Redis under "
            "NOTIFIER_HOME.",
            core,
        ),
        Variable(
            "NOTIFIER_SECRET_KEY",
            "secret",
            "",
            "Signs the unsubscribe, tracked-click and preference center links and seals the "
            "stored tenant secrets (LINE tokens, webhook secrets): required by the web app, "
            f"the workers and Beat, at least {SECRET_KEY_MIN_BYTES} bytes of random text "
            "(`notifier dev` makes one under NOTIFIER_HOME). Whoever knows it can forge "
            "those links.",
            web,
        ),
        Variable(
            "NOTIFIER_ALLOW_PRIVATE_URLS",
            "flag",
            "",
            "Lift the outbound URL policy for tenant-supplied URLs (Slack webhooks, Web Push "
            "endpoints): http, loopback and private addresses and any host allowed. For "
            "tests against local peers and development only.",
            web,
        ),
        Variable(
            "NOTIFIER_SLACK_WEBHOOK_HOSTS",
            "list",
            "",
            "Hosts a tenant's Slack webhook may point at, besides "
            + ", ".join(SLACK_WEBHOOK_HOSTS)
            + " (`*.example.com` matches subdomains).",
            web,
        ),
        Variable(
            "NOTIFIER_PUSH_SERVICE_HOSTS",
            "list",
            "",
            "Push services a Web Push endpoint may point at, besides "
            + ", ".join(PUSH_SERVICE_HOSTS)
            + ".",
            web,
        ),
        Variable(
            "NOTIFIER_MAX_REQUEST_BYTES",
            "integer",
            str(4 * 1024 * 1024),
            "Largest HTTP request body the web app reads; larger ones get 413 before parsing.",
            web,
        ),
        Variable(
            "NOTIFIER_METRICS_TOKEN",
            "secret",
            "",
            "When set, `GET /metrics` needs `Authorization: Bearer <token>`.",
            web,
        ),
        Variable(
            "NOTIFIER_API_DOCS",
            "flag",
            "",
            "Serve `/docs` and `/openapi.json` (on in `notifier dev`).",
            web,
        ),
        Variable(
            "NOTIFIER_PUBLIC_BASE_URL",
            "url",
            "http://localhost:8000",
            "Public address of the web app, the base of the `/c/` click, `/u/` "
            "unsubscribe and `/p/` preference center links in messages.",
            web,
        ),
        Variable(
            "NOTIFIER_PREFERENCE_LINK_DAYS",
            "integer",
            "60",
            "Days the signed preference center link (`/p/<token>`) of a message stays valid "
            "(at least 1); an older link shows that it expired.",
            web,
        ),
        Variable(
            "NOTIFIER_OUTBOX_PAGE",
            "flag",
            "",
            "Serve `GET /outbox` (every tenant's rendered messages): development only, set "
            "by `notifier dev`.",
            web,
        ),
        Variable(
            "NOTIFIER_SES_FEEDBACK_TOPIC_ARNS",
            "list",
            "",
            "Comma-separated SNS topic ARNs whose SES bounce and complaint notifications "
            "`POST /webhooks/ses` accepts; other topics are refused.",
            web,
        ),
        Variable(
            "NOTIFIER_MAX_PAYLOAD_BYTES",
            "integer",
            str(256 * 1024),
            "Largest accepted event (its JSON, in bytes); larger ones are rejected.",
            pipeline,
        ),
        Variable(
            "NOTIFIER_SEND_CHUNK_SIZE",
            "integer",
            "100",
            "Deliveries carried by one send task.",
            pipeline,
        ),
        Variable(
            "NOTIFIER_SEND_CONCURRENCY",
            "integer",
            "8",
            "Messages of one chunk in flight at once on a per-message channel (threads of "
            "the worker process); 1 means at most one duplicate when a worker is killed.",
            pipeline,
        ),
        Variable(
            "NOTIFIER_PLAN_PAGE_SIZE",
            "integer",
            "2000",
            "Recipients per page when an event fans out: one notifier.select_channels task "
            "per page, run by every worker's pool processes together (2000 from measurements: "
            "bench/README.md, Planning rate).",
            pipeline,
        ),
        Variable(
            "NOTIFIER_SEND_MAX_RETRIES",
            "integer",
            "8",
            "Retries of a delivery after a transient provider error; then it is `failed` "
            "with a dead letter.",
            pipeline,
        ),
        Variable(
            "NOTIFIER_SEND_BACKOFF_MAX",
            "integer",
            "600",
            "Cap in seconds of the exponential retry backoff (with jitter).",
            pipeline,
        ),
        Variable(
            "NOTIFIER_STALE_CLAIM_SECONDS",
            "integer",
            "300",
            "Age after which an event not planned, or a delivery queued or claimed but not "
            "finished, is picked up again by `notifier.requeue_stalled` (also its Beat "
            "interval).",
            pipeline,
        ),
    ]
    from channels import registry

    declared = [registry.declared(name) for name in registry.channel_names()]
    for channel in declared:
        name = channel.channel.name
        choices = [f"`{backend}`" for backend in channel.backends] + ["`outbox`"]
        items.append(
            Variable(
                f"NOTIFIER_{name.upper()}_BACKEND",
                "text",
                "",
                f"Backend of the `{name}` channel: {', '.join(choices[:-1])} or {choices[-1]}. "
                "Unset: the real backend when its credentials are set, else `outbox`.",
                pipeline,
            )
        )
    for channel in declared:
        name = channel.channel.name
        rates = ", ".join(
            f"{backend} {cls.rate_per_sec:g}{' per tenant' if cls.rate_scope == 'tenant' else ''}"
            for backend, cls in channel.backends.items()
        )
        items.append(
            Variable(
                f"NOTIFIER_RATE_{name.upper()}",
                "number",
                "",
                f"Messages per second on the `{name}` channel, shared by all workers (token "
                f"bucket in Redis); 0 = no limit. Unset: the provider default ({rates}).",
                pipeline,
            )
        )
    items += [
        Variable(
            "NOTIFIER_QUIET_HOURS_POLICY",
            "text",
            "defer",
            "`defer` holds low and medium deliveries until a person's quiet hours end; "
            "`drop` skips them. A tenant's `quietHoursPolicy` wins.",
            schedule,
        ),
        Variable(
            "NOTIFIER_RELEASE_INTERVAL",
            "number",
            "30",
            "Seconds between two runs of `notifier.release_deferred` (quiet-hours deliveries).",
            schedule,
        ),
        Variable(
            "NOTIFIER_DIGEST_WINDOW",
            "number",
            "30",
            "Seconds a digest waits for more items after its first one.",
            schedule,
        ),
        Variable(
            "NOTIFIER_DIGEST_MAX_ITEMS",
            "integer",
            "100",
            "Items at which a digest goes out before its window ends.",
            schedule,
        ),
        Variable(
            "NOTIFIER_DIGEST_FLUSH_INTERVAL",
            "number",
            "5",
            "Seconds between two runs of `notifier.flush_digests`.",
            schedule,
        ),
        Variable(
            "NOTIFIER_EXPIRY_DAYS",
            "list",
            "7,3,1",
            "Days before a membership's expiry date on which its reminder goes out.",
            schedule,
        ),
        Variable(
            "NOTIFIER_EXPIRY_HOUR",
            "integer",
            "9",
            "Local hour (0-23, the tenant's timezone) from which a day's expiry reminders "
            "are sent.",
            schedule,
        ),
        Variable(
            "NOTIFIER_REMINDER_HOURS",
            "list",
            "24,2",
            "Hours before a class starts at which its booked members are reminded.",
            schedule,
        ),
        Variable(
            "NOTIFIER_EXPIRY_SCAN_INTERVAL",
            "number",
            "600",
            "Seconds between two membership expiry scans.",
            schedule,
        ),
        Variable(
            "NOTIFIER_REMINDER_SCAN_INTERVAL",
            "number",
            "60",
            "Seconds between two class reminder scans.",
            schedule,
        ),
        Variable(
            "NOTIFIER_RETENTION_DAYS",
            "integer",
            "90",
            "Events (with their deliveries), outbox messages and replayed dead letters older "
            "than this are deleted; never less than the longest reminder window + 2 days.",
            schedule,
        ),
        Variable(
            "NOTIFIER_CLEANUP_INTERVAL",
            "number",
            "3600",
            "Seconds between two retention cleanups.",
            schedule,
        ),
        Variable(
            "NOTIFIER_INGEST_WAIT_SECONDS",
            "integer",
            "20",
            "SQS long-poll wait of `notifier ingest sqs` (a stop request waits at most this long).",
            ops,
        ),
        Variable(
            "NOTIFIER_INGEST_MAPPING_FILE",
            "path",
            "",
            "JSON file `{source: {detail-type: eventType}}` added to the defaults of "
            "config/ingest_mapping.py.",
            ops,
        ),
        Variable(
            "NOTIFIER_ALARM_TOPIC_ARN",
            "text",
            "",
            "SNS topic that receives alarms (dead letters, disabled channels, quotas).",
            ops,
        ),
        Variable(
            "NOTIFIER_ALARM_SLACK_WEBHOOK_URL",
            "secret",
            "",
            "Slack incoming webhook that receives alarms.",
            ops,
        ),
        Variable(
            "NOTIFIER_ALARM_WINDOW",
            "integer",
            "300",
            "Seconds during which the same alarm key is published once, across all workers.",
            ops,
        ),
        Variable(
            "NOTIFIER_CLOUDWATCH_ENABLED",
            "flag",
            "",
            "Put each closed day's sent and clicked counts into CloudWatch (a Beat task).",
            ops,
        ),
        Variable(
            "NOTIFIER_CLOUDWATCH_NAMESPACE",
            "text",
            "Kyo/Notifications",
            "CloudWatch namespace of those metrics.",
            ops,
        ),
    ]
    for channel in declared:
        items.extend(channel.channel.variables)
    items += [
        Variable(
            "AWS_ACCESS_KEY_ID",
            "secret",
            "",
            "AWS credentials (or AWS_PROFILE): switch email to SES and SMS to SNS.",
            aws,
        ),
        Variable(
            "AWS_SECRET_ACCESS_KEY",
            "secret",
            "",
            "Secret of AWS_ACCESS_KEY_ID (read by boto3).",
            aws,
            read_by_library=True,
        ),
        Variable("AWS_PROFILE", "text", "", "Named AWS profile, instead of keys.", aws),
        Variable(
            "AWS_DEFAULT_REGION", "text", "us-east-1", "Region of SES, SNS and CloudWatch.", aws
        ),
        Variable(
            "AWS_ENDPOINT_URL",
            "url",
            "",
            "One endpoint for every AWS service (tests point it at moto).",
            aws,
        ),
    ]
    return tuple(items)


@cache
def _computed(name: str) -> Any:
    from channels import registry

    return registry.channel_names() if name == "CHANNELS" else _variables()


def __getattr__(name: str) -> Any:
    """`CHANNELS` (every channel's name) and `VARIABLES`, from the channel registry when
    first asked for: the registry's modules import this one."""
    if name in ("CHANNELS", "VARIABLES"):
        return _computed(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
