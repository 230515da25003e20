"""The directory, delivery status and webhook endpoint routes against their OpenAPI
document, with schemathesis' default checks (status codes, content types, response
schemas, Allow headers, schema-violating requests refused), not only server errors.

One check is left out: `positive_data_acceptance`. The schemas cannot say two things the
directory refuses with a 422: a NUL character anywhere (PostgreSQL cannot store one, and
`preferences` is free-form JSON), and an email address its parser rejects although it
matches the `email` format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from notifier.directory import import_document
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from tests.helpers import TENANT, directory, person

APP = create_app(api_docs=True)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture
def api_headers(db: None) -> Iterator[dict[str, str]]:
    import_document(directory(person("u1")))
    yield {"Authorization": f"Bearer {issue_api_key(TENANT)}"}


@schema.include(tag_regex="^(directory|status|webhook-endpoints)$").parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_directory_status_and_webhook_endpoints_keep_their_contract(
    case: Any, api_headers: dict[str, str]
) -> None:
    case.call_and_validate(headers=api_headers, excluded_checks=[positive_data_acceptance])
