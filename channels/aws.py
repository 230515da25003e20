"""The one way the notifier builds a boto3 client (SES, SNS, SQS, CloudWatch).

Every client makes exactly one request per call: botocore's own retries are off
(`total_max_attempts` counts the first request, so 1 means no retry; `max_attempts=1` would
mean two requests), so the pipeline's retry budget means what it says. The region is the
caller's or AWS_DEFAULT_REGION (us-east-1 when unset); AWS_ENDPOINT_URL points every client
at another endpoint (moto in tests), else botocore resolves endpoints itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class AwsSettings:
    """Where the AWS clients go, read once (a channel reads it when it is built). The
    credentials themselves are boto3's to read; the key id and profile are kept so that
    a client is built again when they change."""

    region: str
    endpoint_url: str
    access_key_id: str = field(default="", repr=False)
    profile: str = ""

    @classmethod
    def from_env(cls) -> AwsSettings:
        env = os.environ
        return cls(
            region=env.get("AWS_DEFAULT_REGION", "").strip() or DEFAULT_REGION,
            endpoint_url=env.get("AWS_ENDPOINT_URL", "").strip(),
            access_key_id=env.get("AWS_ACCESS_KEY_ID", "").strip(),
            profile=env.get("AWS_PROFILE", "").strip(),
        )

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key_id or self.profile)


def aws_client(
    service: str,
    *,
    settings: AwsSettings | None = None,
    region: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
) -> Any:
    import boto3
    from botocore.config import Config

    where = settings or AwsSettings.from_env()
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    session = boto3.session.Session(region_name=region or where.region)
    return session.client(service, config=config, endpoint_url=where.endpoint_url or None)
