"""Secret values: a wrapper that never prints itself, and the registry every output is scrubbed with.

Every secret the config loads is registered here; `scrub` (text) and `scrub_value` (any value: log
fields, alert bodies) replace it, and the encoded forms it takes in text, with `***`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, quote_plus

REDACTED: Final = "***"
# Shorter values are not registered: scrubbing a 3-character string would mangle ordinary words, and no
# real credential is that short (exchange keys and secrets are 32-64 characters, passphrases 7-32).
MIN_CHARS: Final = 6
# A cut left by code that shortened text before scrubbing it (`"sk-a1b2c3...`): that many leading
# characters of a secret, right before a cut marker, are treated as the secret.
CUT_PREFIX_CHARS: Final = 4
_CUT_MARKER = re.compile(r"\.\.\.|…")
# Containers nested deeper than this are scrubbed as their text (a list holding itself ends here).
MAX_DEPTH: Final = 32


@dataclass(frozen=True)
class _Registry:
    """One immutable state, swapped whole by register(): a thread scrubbing meanwhile sees the old
    state or the new one, never half of each."""

    values: tuple[str, ...] = ()  # the secrets as configured, longest first
    pattern: re.Pattern[str] | None = None  # every form of every secret


_state = _Registry()


class Secret:
    """A string that shows as `***` in repr, str, f-strings, logs and tracebacks. Use `reveal()` only
    at the point where the value is handed to a library."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register(value: str) -> None:
    """Remember a secret value so `scrub` removes it, and its encoded forms, from any text. Values
    shorter than MIN_CHARS are ignored (see MIN_CHARS); `Secret` still never prints them."""
    global _state
    state = _state
    if len(value) < MIN_CHARS or value in state.values:
        return
    values = tuple(sorted((*state.values, value), key=len, reverse=True))
    _state = _Registry(values, re.compile(_trie_pattern({form for v in values for form in variants(v)})))


def variants(value: str) -> frozenset[str]:
    """`value` and the forms it takes when written into other text: percent-encoded (a URL path, a
    query, a form body), JSON- and repr-escaped (quotes, backslashes, `\\/`), base64 (an HTTP Basic
    header: at each of the three byte alignments, the characters that depend on the secret alone).
    Forms shorter than MIN_CHARS are left out."""
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    # repr quotes with ' unless the text holds ' and no ": inside a longer text either style may apply.
    reprs = {repr(value)[1:-1], repr(value + "'\"")[1:-4]}
    forms = {value, quote(value), quote(value, safe=""), quote_plus(value), *reprs, *escaped}
    forms |= {form.replace("/", "\\/") for form in escaped}
    raw = value.encode()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        core = encoded[-(-4 * offset // 3) : 4 * (offset + len(raw)) // 3]
        forms |= {core, core.replace("+", "-").replace("/", "_")}
    return frozenset(form for form in forms if len(form) >= MIN_CHARS)


def _trie_pattern(words: set[str]) -> str:
    """One regex matching any of `words`, longest first, shaped as their prefix tree: the regex
    engine then walks one branch per position instead of trying every form in turn (3x faster
    than a plain alternation with a dozen secrets, each in a dozen forms)."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _subpattern(root)


def _subpattern(node: dict[str, Any]) -> str:
    # Runs of single-child nodes are followed in a loop: recursion only at branches, so a long key
    # (a PEM private key is thousands of characters) cannot exhaust the stack.
    branches = []
    for char, child in sorted(node.items()):
        if not char:
            continue
        run = [char]
        while len(child) == 1 and "" not in child:
            ((next_char, child),) = child.items()
            run.append(next_char)
        branches.append(re.escape("".join(run)) + _subpattern(child))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def scrub(text: str) -> str:
    """Replace every registered secret in `text`, in any of its `variants`, with `***`; also the
    leading characters of one cut off right before a `...` or `…` marker."""
    state = _state
    if state.pattern is None:
        return text
    text = state.pattern.sub(REDACTED, text)
    if "..." in text or "…" in text:
        text = _scrub_cut(text, state.values)
    return text


def _scrub_cut(text: str, values: tuple[str, ...]) -> str:
    spans: list[tuple[int, int]] = []
    for marker in _CUT_MARKER.finditer(text):
        end = marker.start()
        for value in values:
            length = _cut_prefix(text, end, value)
            if length:
                start = max(end - length, spans[-1][1] if spans else 0)
                spans.append((start, end))
                break
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], REDACTED]
        last = end
    out.append(text[last:])
    return "".join(out)


def _cut_prefix(text: str, end: int, value: str) -> int:
    """The length of the longest prefix of `value` (at least CUT_PREFIX_CHARS) ending at `end`, or 0."""
    for length in range(min(len(value), end), CUT_PREFIX_CHARS - 1, -1):
        if value[length - 1] == text[end - 1] and text.startswith(value[:length], end - length):
            return length
    return 0


def scrub_value(value: object, redact_keys: frozenset[str] = frozenset(), depth: int = MAX_DEPTH) -> Any:
    """`value` as plain data (str, 64-bit int, float, bool, None, lists, dicts with str keys) with every
    secret scrubbed, whatever its type: text, bytes (decoded), mapping keys and values, any container,
    and anything else by its text (an exception, an object whose str or repr holds a key). Values of
    mapping keys named in `redact_keys` (lower case) are `***` whatever they are."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return float(value)  # a subclass (a number type with a chatty repr) as the plain number
    if isinstance(value, int):
        # An IntEnum as its number; one beyond 64 bits as its digits, which JSON encoders refuse.
        number = int(value)
        return number if -(2**63) <= number < 2**64 else str(number)
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if depth > 0 and isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _text(key)
            redact = name.lower() in redact_keys and item is not None
            out[name] = REDACTED if redact else scrub_value(item, redact_keys, depth - 1)
        return out
    if depth > 0 and isinstance(value, list | tuple | set | frozenset):
        return [scrub_value(item, redact_keys, depth - 1) for item in value]
    return _text(value)


def _text(value: object) -> str:
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not stop a log line or an alert
        text = f"<{type(value).__name__} with a failing __str__>"
    return scrub(text)


def clip(text: str, limit: int, marker: str = "…") -> str:
    """`text` scrubbed, then cut to at most `limit` characters (`marker` included). The order matters:
    a cut through a secret leaves a prefix the scrubber no longer recognises."""
    text = scrub(text)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


@contextmanager
def isolated() -> Iterator[None]:
    """Start from an empty registry and forget whatever is registered inside (tests that draw many
    secrets must not leave them scrubbing every later test's output)."""
    global _state
    saved, _state = _state, _Registry()
    try:
        yield
    finally:
        _state = saved
