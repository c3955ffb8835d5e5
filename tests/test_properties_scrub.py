"""Property tests for the scrubber, through the real log pipeline (structlog, then the JSON and the
console renderer): any value holding a registered secret renders without it, as is or escaped; a
value without one renders exactly as it would with nothing registered; clip() never leaves a cut
secret's prefix."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge import secrets
from bridge.ops import logs
from tests.test_logs import restore_logging

__all__ = ["restore_logging"]  # the fixture, used here by name

log = structlog.get_logger("bridge.test_properties_scrub")
FORMATS = ("json", "console")
# Characters an ISO timestamp is made of: a secret made of these alone could be "found" in the
# timestamp the line starts with. No real key looks like that.
_TIMESTAMP_CHARS = set("0123456789-:T.Z+")

# Secrets as config files hold them: printable ASCII, quotes, backslashes and spaces included.
secret_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=8, max_size=40
).filter(lambda s: not set(s) <= _TIMESTAMP_CHARS)
plain_text = st.text(max_size=20)
# Text around a secret: anything, or quotes and backslashes, which decide how a repr escapes it.
around = plain_text | st.text(alphabet="'\"\\ x", max_size=4)


class Holder:
    """An object showing its content in its repr (and so its str), as a client or a request might."""

    def __init__(self, content: object) -> None:
        self.content = content

    def __repr__(self) -> str:
        return f"Holder({self.content!r})"


def values(text: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """Nested values whose text comes from `text`: strings, bytes, exceptions, objects, numbers (big
    ones too), and lists, tuples, sets and dicts (text keys too) of them."""
    leaves = st.one_of(
        text,
        text.map(str.encode),
        text.map(lambda t: bytearray(t.encode())),
        text.map(ValueError),
        text.map(KeyError),  # its str is the repr of its argument: quotes and backslashes escaped
        text.map(Holder),
        st.integers(),
        st.floats(allow_nan=False),
        st.none(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.tuples(inner, inner),
            st.frozensets(text, max_size=3),
            st.dictionaries(text, inner, max_size=3),
        ),
        max_leaves=6,
    )


@st.composite
def secret_and_value(draw: st.DrawFn) -> tuple[str, object]:
    """A secret and a value holding it somewhere (in a string, a byte string, a key, an object)."""
    secret = draw(secret_values)
    carrier = st.tuples(around, around).map(lambda p: p[0] + secret + p[1])
    value = draw(values(st.one_of(plain_text, carrier)))
    where = draw(st.sampled_from(["value", "bytes", "key", "object", "exception"]))
    holding = draw(carrier)
    placed: object = {
        "value": holding,
        "bytes": holding.encode(),
        "key": {holding: 1},
        "object": Holder(holding),
        "exception": RuntimeError(holding),
    }[where]
    return secret, [value, placed]


def escapes(text: str) -> set[str]:
    """`text` JSON-escaped (ASCII or not) and repr-escaped in either quote style."""
    return {
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1],
        repr(text + "'\"")[1:-4],  # both quotes inside: repr picks ' and escapes them
    }


def shown(secret: str) -> set[str]:
    """How a renderer can show `secret`: as is, or JSON- or repr-escaped (either quote style), once
    or twice (a repr inside a repr: an object holding a container). Worked out here, not taken from
    the scrubber, so the property does not trust what it tests."""
    forms = {secret}
    for _ in range(2):
        forms |= {escaped for form in forms for escaped in escapes(form)}
    return forms


def render(value: object, fmt: str) -> str:
    stream = io.StringIO()
    logs.configure("debug", fmt, stream=stream, flood_limit=None)
    log.info("t.prop", value=value)
    return stream.getvalue()


def without_timestamp(line: str, fmt: str) -> object:
    if fmt == "json":
        event = json.loads(line)
        del event["timestamp"]
        return event
    return line.split(" ", 1)[1]


@pytest.fixture
def registry() -> Iterator[None]:
    with secrets.isolated():
        yield


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(case=secret_and_value(), fmt=st.sampled_from(FORMATS))
def test_a_value_holding_a_secret_never_renders_it(
    registry: None, case: tuple[str, object], fmt: str
) -> None:
    """Property: whatever nesting of text, bytes, exceptions, objects, numbers, lists, tuples, sets and
    dicts (keys included) carries a registered secret, the rendered line (JSON or console) shows it
    in no form: neither as is nor JSON- or repr-escaped."""
    secret, value = case
    with secrets.isolated():
        secrets.register(secret)
        line = render(value, fmt)
    assert "t.prop" in line
    assert not [form for form in shown(secret) if form in line], line


@PROPERTY
@given(secret=secret_values, value=values(plain_text), fmt=st.sampled_from(FORMATS))
def test_a_value_without_a_secret_renders_unchanged(
    registry: None, secret: str, value: object, fmt: str
) -> None:
    """Property: registering a secret changes nothing in a line that does not hold it (as is,
    escaped, or a cut-off start of it): the line is the one rendered with nothing registered."""
    with secrets.isolated():
        plain = render(value, fmt)
    assume(not any(form in plain for form in shown(secret)))
    assume(secret[: secrets.CUT_PREFIX_CHARS] not in plain)
    with secrets.isolated():
        secrets.register(secret)
        scrubbed = render(value, fmt)
    assert without_timestamp(scrubbed, fmt) == without_timestamp(plain, fmt)


@PROPERTY
@given(secret=secret_values, before=st.text(max_size=30), after=st.text(max_size=30), data=st.data())
def test_clip_never_leaves_a_prefix_of_a_secret(
    registry: None, secret: str, before: str, after: str, data: st.DataObject
) -> None:
    """Property: text holding a secret, clipped at any length, holds no prefix of it of
    CUT_PREFIX_CHARS or more (the text around it holding none either), and fits the limit."""
    head = secret[: secrets.CUT_PREFIX_CHARS]
    assume(head not in before + secrets.REDACTED + after)
    text = before + secret + after
    limit = data.draw(st.integers(min_value=1, max_value=len(text) + 2))
    with secrets.isolated():
        secrets.register(secret)
        clipped = secrets.clip(text, limit)
    assert len(clipped) <= limit
    assert head not in clipped
