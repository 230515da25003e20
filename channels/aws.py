"""The one way the notifier builds a boto3 client (SES, SNS, SQS, CloudWatch).

Every client makes exactly one request per call: botocore's own retries are off
(`total_max_attempts` counts the first request, so 1 means no retry; `max_attempts=1` would
mean two requests), so the pipeline's retry budget means what it says. The region is the
caller's or AWS_DEFAULT_REGION (us-east-1 when unset); AWS_ENDPOINT_URL points every client
at another endpoint (moto in tests), else botocore resolves endpoints itself.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_REGION = "us-east-1"


def aws_region() -> str:
    return os.environ.get("AWS_DEFAULT_REGION", "").strip() or DEFAULT_REGION


def aws_client(
    service: str,
    *,
    region: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip() or None
    session = boto3.session.Session(region_name=region or aws_region())
    return session.client(service, config=config, endpoint_url=endpoint)
