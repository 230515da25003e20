"""The OpenAPI document: FastAPI's, made exact where a generated client (and schemathesis)
would otherwise be misled.

- POST /events takes `Event`: a union of the 14 event types discriminated by `eventType`,
  each with its typed `data` (and `metadata.userId` required where the type is sent to that
  person), exactly as `notifier.events.validate_event` validates them.
- A string the server stores refuses NUL (PostgreSQL cannot store one): every string of
  the schemas without a stricter pattern or format says so, and free-form JSON (event
  extras, preferences, branding) is `JsonValue`, JSON without NUL.
- A 422 is the `ValidationProblem` the app answers (`{detail, errors: [{field, message}]}`),
  not FastAPI's default shape.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from config.routing import ROUTES
from notifier.events import DATA_SCHEMAS, Envelope, Metadata

NO_NUL = r"^[^\u0000]*$"
REF = "#/components/schemas/{model}"
JSON_VALUE: dict[str, Any] = {
    "description": "Any JSON value without a NUL character in a string or a key",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": REF.format(model="JsonValue")}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": REF.format(model="JsonValue")},
        },
    ],
}
_JSON_REF = {"$ref": REF.format(model="JsonValue")}


def _event_schemas() -> dict[str, Any]:
    """Event (the union), one envelope per type, its data, Metadata and AddressedMetadata."""
    models = [(Envelope, "validation"), (Metadata, "validation")]
    models += [(schema, "validation") for schema in DATA_SCHEMAS.values()]
    _, definitions = models_json_schema(models, by_alias=True, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = definitions["$defs"]
    envelope = schemas.pop("Envelope")
    addressed = copy.deepcopy(schemas["Metadata"])
    addressed["title"] = "AddressedMetadata"
    addressed["description"] = "The metadata of an event sent to one person: userId is required."
    addressed["properties"]["userId"] = {
        key: value
        for key, value in addressed["properties"]["userId"]["anyOf"][0].items()
        if key != "type"
    } | {"type": "string", "description": "The person the event is sent to"}
    addressed["required"] = ["userId"]
    schemas["AddressedMetadata"] = addressed
    mapping = {}
    for event_type, data in DATA_SCHEMAS.items():
        name = f"{data.__name__}Event"
        variant = copy.deepcopy(envelope)
        variant["title"] = name
        variant["description"] = f"A {event_type} event."
        variant["properties"]["eventType"] = {"type": "string", "const": event_type}
        variant["properties"]["data"] = {"$ref": REF.format(model=data.__name__)}
        if ROUTES[event_type].recipients == "event_user":
            variant["properties"]["metadata"] = {"$ref": REF.format(model="AddressedMetadata")}
            variant["required"] = [*variant["required"], "metadata"]
        schemas[name] = variant
        mapping[event_type] = REF.format(model=name)
    schemas["Event"] = {
        "title": "Event",
        "description": "One event: its eventType says which `data` it carries.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "eventType", "mapping": mapping},
    }
    return schemas


def _stored_strings(node: Any) -> None:
    """In place: strings get NO_NUL unless a pattern, format, enum or const says more, and
    free-form objects become JsonValue."""
    if isinstance(node, list):
        for item in node:
            _stored_strings(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(node):
        node["pattern"] = NO_NUL
    if node.get("additionalProperties") is True:
        node["additionalProperties"] = dict(_JSON_REF)
        node["propertyNames"] = {"pattern": NO_NUL}
    for key, value in node.items():
        if key not in ("const", "enum", "default", "examples", "example"):
            _stored_strings(value)


def _validation_problems(document: dict[str, Any]) -> None:
    """Every 422 answers the app's ValidationProblem."""
    problem = {"application/json": {"schema": {"$ref": REF.format(model="ValidationProblem")}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is None:
                continue
            content = answer.get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                answer["content"] = copy.deepcopy(problem)
                if answer.get("description") == "Validation Error":
                    answer["description"] = "A parameter or the body is invalid"
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi`: the document, built once."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_event_schemas())
            _validation_problems(document)
            _stored_strings(schemas)
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    _stored_strings(operation.get("parameters", []))
                    body = operation.get("requestBody", {}).get("content", {})
                    for media in body.values():
                        if media.get("schema", {}).get("type") != "object":  # provider bodies
                            _stored_strings(media.get("schema"))
            schemas["JsonValue"] = copy.deepcopy(JSON_VALUE)
            app.openapi_schema = document
        return app.openapi_schema

    return build
