"""Every route of the OpenAPI document against the app, with all of schemathesis' default
checks, not only server errors: status codes and content types as documented, responses
matching their schemas, Allow headers, authentication enforced, schema-violating requests
refused and schema-valid ones accepted (or answered 401/403/404/409, which the schema
cannot rule out: another tenant's id, a record that does not exist, a wrong signature).

The app runs as deployed with its providers configured: LINE_CHANNEL_SECRET is set (without
it POST /webhooks/line answers the documented 503, which the server-error check counts).

The same run from the command line, against `notifier web` with NOTIFIER_API_DOCS=1:
`schemathesis run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer <key>"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from config.settings import reset_settings
from notifier.directory import import_document
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from tests.helpers import TENANT, directory, person

APP = create_app(api_docs=True)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture
def api_headers(db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("LINE_CHANNEL_SECRET", "contract-test-line-secret")
    reset_settings()
    import_document(directory(person("u1")))
    yield {"Authorization": f"Bearer {issue_api_key(TENANT)}"}
    monkeypatch.delenv("LINE_CHANNEL_SECRET")
    reset_settings()


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_route_keeps_its_contract(case: Any, api_headers: dict[str, str]) -> None:
    case.call_and_validate(headers=api_headers)


def test_events_are_a_union_discriminated_by_event_type() -> None:
    from notifier.events import EVENT_TYPES

    document = APP.openapi()
    schemas = document["components"]["schemas"]
    union = schemas["Event"]
    assert union["discriminator"]["propertyName"] == "eventType"
    assert set(union["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(union["oneOf"]) == 14
    reminder = schemas["CourseReminderEvent"]
    assert reminder["properties"]["eventType"] == {"type": "string", "const": "course.reminder"}
    assert reminder["properties"]["data"] == {"$ref": "#/components/schemas/CourseReminder"}
    assert "metadata" in reminder["required"]  # sent to metadata.userId: it is required
    assert "metadata" not in schemas["SystemMaintenanceEvent"]["required"]
    assert schemas["AddressedMetadata"]["required"] == ["userId"]
    body = document["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][0] == {"$ref": "#/components/schemas/Event"}
    assert "HTTPValidationError" not in schemas


def test_every_answer_is_documented() -> None:
    paths = APP.openapi()["paths"]
    assert {"400", "404", "503"} <= set(paths["/u/{token}"]["post"]["responses"])
    assert paths["/c/{token}"]["get"]["parameters"][0]["schema"]["pattern"]
    assert "503" in paths["/webhooks/line"]["post"]["responses"]
    assert {"403", "409", "422"} <= set(paths["/events"]["post"]["responses"])
    assert "409" in paths["/bookings/{id}"]["put"]["responses"]
    security = APP.openapi()["components"]["securitySchemes"]
    assert {s["type"] for s in security.values()} == {"http", "apiKey"}
