"""Read a large JSON document of sections (`{"users": [...], "courses": [...]}`) one item at
a time, in bounded memory: an incremental parser for one document, or JSON Lines where each
line is such a document (usually holding a few items)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

import ijson
from ijson.common import ObjectBuilder


class MalformedDocument(ValueError):
    pass


def _object(line: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise MalformedDocument(f"line {number}: malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MalformedDocument(f"line {number}: expected an object of sections")
    return value


def section_items(document: dict[str, Any], where: str = "") -> Iterator[tuple[str, Any]]:
    for section, items in document.items():
        if not isinstance(items, list):
            raise MalformedDocument(f"{where}{section}: expected a list")
        for item in items:
            yield section, item


def json_lines_items(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(section, item) for each item of each line's object; blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield from section_items(_object(line, number), f"line {number}: ")


def document_items(stream: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """(section, item) for each item of each section of the JSON object in `stream`, in
    file order, each item built alone: memory stays bounded by the largest item."""
    builder: ObjectBuilder | None = None
    depth = 0
    section = ""
    try:
        for prefix, event, value in ijson.parse(stream, use_float=True):
            if builder is not None:
                builder.event(event, value)
                if event in ("start_map", "start_array"):
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                if depth == 0:
                    yield section, builder.value
                    builder = None
                continue
            if prefix == "":
                if event not in ("start_map", "map_key", "end_map"):
                    raise MalformedDocument("expected an object of sections")
                if event == "map_key":
                    section = value
                continue
            if prefix == section:
                if event not in ("start_array", "end_array"):
                    raise MalformedDocument(f"{section}: expected a list")
                continue
            # an item of the current section
            if event in ("start_map", "start_array"):
                builder, depth = ObjectBuilder(), 1
                builder.event(event, value)
            else:
                yield section, value
    except ijson.JSONError as exc:
        raise MalformedDocument(f"malformed JSON: {exc}") from exc
