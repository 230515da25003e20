"""Read a large JSON document of sections (`{"users": [...], "courses": [...]}`) one item at
a time, in bounded memory: one document read a chunk at a time (its frame here, each item
by the json module's C decoder), or JSON Lines where each line is such a document (usually
holding a few items)."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any


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


CHUNK = 64 << 10
"""Bytes read at a time."""
MAX_ITEM_CHARS = 64 << 20
"""An item of a document larger than this is refused (memory stays bounded)."""
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DELIMITERS = frozenset(" \t\n\r,]}:")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


class _Reader:
    """The document's text, read a chunk at a time; `text[pos:]` is what is left of it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Read the next chunk (dropping what was consumed); False at the end."""
        if self.eof:
            return False
        chunk = self.stream.read(max(CHUNK, len(self.text) - self.pos))  # doubles for a big item
        try:
            decoded = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise MalformedDocument(f"malformed JSON: not UTF-8 ({exc.reason})") from None
        self.text = self.text[self.pos :] + decoded
        self.pos = 0
        self.eof = not chunk
        return True

    def skip(self) -> str:
        """The next character that is not whitespace ("" at the end of the text)."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        found = self.skip()
        if not found or found not in chars:
            raise MalformedDocument(what)
        self.pos += 1
        return found

    def value(self) -> Any:
        """The next JSON value, decoded by the json module (C): a value that ends where the
        text read so far ends may go on in the next chunk, so it is decoded again then."""
        self.skip()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except RecursionError:
                raise MalformedDocument("malformed JSON: nested too deeply") from None
            except ValueError as exc:
                if self.eof:
                    raise MalformedDocument(f"malformed JSON: {exc}") from None
                if len(self.text) - self.pos > MAX_ITEM_CHARS:
                    raise MalformedDocument(
                        f"an item is over {MAX_ITEM_CHARS:,} characters"
                    ) from None
                self.more()
                continue
            if not self.eof and (
                end == len(self.text)
                or (self.text[end] not in _DELIMITERS and len(self.text) - end < 64)
            ):  # a number may go on in the next chunk ("1.5" of "1.5e3")
                self.more()
                continue
            self.pos = end
            return value


def document_items(stream: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """(section, item) for each item of each section of the JSON object in `stream`, in
    file order, each item decoded alone: memory stays bounded by the largest item (at most
    MAX_ITEM_CHARS). The document's frame (`{"section": [` ... `]}`) is read here, each
    item by the json module's C decoder: per item, the import's parse costs what
    `json.loads` of it does."""
    reader = _Reader(stream)
    reader.expect("{", "expected an object of sections")
    if reader.skip() == "}":
        reader.pos += 1
    else:
        while True:
            if reader.skip() != '"':
                raise MalformedDocument("malformed JSON: expected a section name")
            section = reader.value()
            reader.expect(":", "malformed JSON: expected ':' after a section name")
            if reader.skip() != "[":
                raise MalformedDocument(f"{section}: expected a list")
            reader.pos += 1
            if reader.skip() == "]":
                reader.pos += 1
            else:
                while True:
                    yield section, reader.value()
                    if (
                        reader.expect(",]", f"malformed JSON: {section}: expected ',' or ']'")
                        == "]"
                    ):
                        break
            if reader.expect(",}", "malformed JSON: expected ',' or '}'") == "}":
                break
    if reader.skip():
        raise MalformedDocument("malformed JSON: trailing data after the document")
