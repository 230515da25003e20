"""Hypothesis strategies for what a careless or hostile backend sends as an event: any JSON,
and valid events broken in place (keys dropped, values of the wrong type, huge strings,
unicode with NUL and lone surrogates, nested junk)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from notifier.events import EVENT_TYPES
from tests.helpers import event

LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
# Joined by hand: st.text() never yields a surrogate, and JSON text can carry one ("\ud800").
TEXT = st.lists(st.one_of(st.characters(), LONE_SURROGATES, st.just("\x00")), max_size=40).map(
    "".join
)
HUGE = st.sampled_from([5_000, 300_000, 1_100_000]).flatmap(
    lambda size: st.sampled_from(["x", "é", "漢", "😀"]).map(lambda c: c * (size // len(c)))
)
"""Strings around and far over the 256 KB payload limit (1.1 MB at most)."""
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


JUNK = st.one_of(JSON, st.integers(20, 200).map(deep))
WHERE = st.sampled_from(["top", "data", "metadata"])


@st.composite
def broken_events(draw: st.DrawFn, huge: bool = True) -> dict[str, Any]:
    """A valid event of some type, then 0 to 4 edits: drop a key, give one junk (a huge
    string too when `huge`), or add a junk key."""
    ev = copy.deepcopy(event(draw(st.sampled_from(EVENT_TYPES)), user="u1"))
    values = st.one_of(JUNK, HUGE) if huge else JUNK
    for _ in range(draw(st.integers(0, 4))):
        where = draw(WHERE)
        target = ev if where == "top" else ev.get(where)
        if not isinstance(target, dict):
            ev[where] = draw(values)
            continue
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        keys = sorted(target)
        if action == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(values)
        else:
            target[draw(TEXT)] = draw(values)
    return ev


@st.composite
def odd_text_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event carrying odd text where any text is allowed: extra data and metadata
    fields (kept as they are), the event id, the source. Valid in shape, so it gets as far
    as storage."""
    ev = copy.deepcopy(event(draw(st.sampled_from(EVENT_TYPES)), user="u1"))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["data", "metadata", "eventId", "source"]))
        if where in ("data", "metadata"):
            ev[where][draw(TEXT)] = draw(st.one_of(TEXT, JSON))
        else:
            ev[where] = draw(TEXT.filter(bool))
    return ev


def events(huge: bool = True) -> st.SearchStrategy[Any]:
    """Mostly broken events, some valid ones with odd text, some plain JSON."""
    return st.one_of(broken_events(huge), odd_text_events(), broken_events(huge), JSON)
